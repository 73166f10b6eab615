"""The command line's shared parts: the Typer app, consoles, the error guard, options.

Every command body runs under `guard`, which turns a UserError into one line on
stderr and exit 1, and any other exception into a short "internal error" line; the
traceback is shown only with --debug.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from typer.exceptions import TyperException

from pmcp_build import __version__
from pmcp_build.cli.help_text import TidyGroup
from pmcp_build.errors import UserError

if TYPE_CHECKING:
    from rich.console import Console

    from pmcp_build.manifest.load import LoadedManifest
    from pmcp_build.package.build import Package
    from pmcp_build.package.load_check import LoadReport

# manifest.model.MANIFEST_NAME, spelled here so that registering the commands (their
# `-f` defaults) does not import the manifest models and pydantic: `--help` need not
# (tests/test_startup.py keeps the two equal).
MANIFEST_NAME = "metorial.toml"

app = typer.Typer(
    name="pmcp-build",
    help="Turn MCP servers into AWS Lambda deployments, declaratively.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # typer's --install-completion / --show-completion
    cls=TidyGroup,  # help with real metavars (cli/help_text.py)
    context_settings={"help_option_names": ["-h", "--help"]},
)


class _LazyConsole:
    """A rich Console made on first use: `build --json` never imports rich (~12 ms)."""

    def __init__(self, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._made(), name)

    def _made(self) -> Console:
        if self._console is None:
            from rich.console import Console

            # What we print is text. markup=False: a server name "[/red]", a key "[/]"
            # or our own "[runtime].architecture" comes out as written, never styled or
            # a markup error; emoji=False: a tag "pmcp-build:package:" or "team:smile:x"
            # is not an emoji code; highlight=False: nothing is recoloured by pattern.
            self._console = Console(
                stderr=self._stderr, highlight=False, soft_wrap=True, markup=False, emoji=False
            )
        return self._console

    def print(self, *objects: Any, **kwargs: Any) -> None:
        """Console.print, with every `${env:}` secret masked in any string printed and
        the text rules enforced whatever a caller passes."""
        from pmcp_build.text import mask_known

        shown = [mask_known(o) if isinstance(o, str) else o for o in objects]
        kwargs.update(markup=False, emoji=False, highlight=False)
        self._made().print(*shown, **kwargs)


out: Console = _LazyConsole(stderr=False)  # type: ignore[assignment]
err: Console = _LazyConsole(stderr=True)  # type: ignore[assignment]


class _State:
    debug = False


F = TypeVar("F", bound=Callable[..., Any])


def guard(func: F) -> F:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from pmcp_build.text import forget, mask_known

        try:
            return func(*args, **kwargs)
        except UserError as exc:
            if _State.debug:
                _traceback_and_exit(exc.exit_code)
            for line in mask_known(str(exc)).splitlines() or [""]:
                err.print(styled("error:", "red"), shorten(line))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            if _State.debug:
                _traceback_and_exit(130)
            err.print("interrupted")  # Ctrl-C is an answer, not a crash: no traceback
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort, TyperException):
            raise  # usage errors keep click's exit code 2
        except BrokenPipeError:
            raise  # the reader went away (`build | head`): entry.py exits 141, says nothing
        except Exception as exc:
            if _State.debug:
                _traceback_and_exit(1)
            err.print(
                styled("internal error:", "red"),
                shorten(mask_known(f"{type(exc).__name__}: {exc}")),
                "(rerun with --debug for the traceback)",
            )
            raise typer.Exit(1) from None
        finally:
            forget()  # the next command (a test's, in one process) resolves its own

    return wrapper  # type: ignore[return-value]


def _traceback_and_exit(code: int) -> None:
    """--debug: the traceback of the exception being handled, with every secret masked
    (an AWS error can quote the request it was sent), written as plain text."""
    import sys
    import traceback

    from pmcp_build.text import mask_known

    sys.stderr.write(mask_known(traceback.format_exc()))
    sys.stderr.flush()
    raise typer.Exit(code) from None


MAX_LINE = 400


def shorten(text: str, limit: int = MAX_LINE) -> str:
    """One line of bounded length: a 10 MB key must not come back as a 10 MB error, and
    a terminal escape or carriage return in quoted input is shown, not obeyed."""
    from pmcp_build.text import one_line

    text = one_line(" ".join(text.split("\n")))
    return text if len(text) <= limit else text[: limit - 15] + f"… ({len(text)} chars)"


def styled(text: str, style: str) -> Any:
    """A styled label, built as rich Text so nothing in it is parsed as markup."""
    from rich.text import Text

    return Text(text, style=style)


def _version(value: bool) -> None:
    if value:
        out.print(f"pmcp-build {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    directory: Annotated[
        Path | None,
        typer.Option("-C", "--directory", help="Run as if started in DIR.", metavar="DIR"),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    _State.debug = debug or bool(os.environ.get("PMCP_DEBUG"))
    if directory is not None:
        if not directory.is_dir():
            raise typer.BadParameter(f"{directory} is not a folder", param_hint="-C")
        os.chdir(directory)


ManifestOption = Annotated[
    Path,
    typer.Option("-f", "--file", help="The manifest to read.", metavar="FILE"),
]


SourceUrlOption = Annotated[
    str | None,
    typer.Option("--source-url", help="Manifest-less: the source zip's URL (default: $ZIP_URL)."),
]
Sha256Option = Annotated[
    str | None,
    typer.Option(
        "--sha256", help="Manifest-less: pin the source zip (default: pinned on download)."
    ),
]
S3Option = Annotated[
    str | None,
    typer.Option("--s3", help="Manifest-less: s3://BUCKET/KEY.zip (default: $S3_BUCKET/$S3_KEY)."),
]
PythonOption = Annotated[
    str | None,
    typer.Option("--python", help="Manifest-less: Lambda python version (default 3.12)."),
]
ArchOption = Annotated[
    str | None,
    typer.Option("--architecture", help="Manifest-less: arm64 or x86_64 (default x86_64)."),
]
RemoteCacheOption = Annotated[
    str | None,
    typer.Option(
        "--remote-cache",
        metavar="s3://BUCKET/PREFIX",
        help="Read and write a shared build cache (default: $PMCP_BUILD_REMOTE_CACHE).",
    ),
]
AllManifestsOption = Annotated[
    Path | None,
    typer.Option(
        "--all-manifests",
        metavar="DIR",
        help="Every metorial.toml under DIR, a few at a time ($PMCP_BUILD_JOBS).",
    ),
]


def load(file: Path, *synth: str | None) -> LoadedManifest:
    """`load_with_text` without the text; `synth` are its manifest-less options."""
    return load_with_text(file, *synth)[0]


def load_with_text(
    file: Path,
    source_url: str | None = None,
    sha256: str | None = None,
    s3: str | None = None,
    python: str | None = None,
    architecture: str | None = None,
) -> tuple[LoadedManifest, str]:
    """A committed manifest when there is one; otherwise one synthesised from flags and
    ZIP_URL / S3_BUCKET / S3_KEY (the build image's contract)."""
    from pmcp_build.manifest.load import load_manifest

    if file.exists():
        loaded = load_manifest(file)
        return loaded, loaded.path.read_text()
    from pmcp_build.manifest.manifestless import SynthInputs, synthesize

    inputs = SynthInputs.from_env(source_url, sha256, s3, python, architecture)
    if not inputs.wanted:
        load_manifest(file)  # raises the usual "no such file; run init" error
    from pmcp_build.package.build import cache_dir

    return synthesize(inputs, cache_dir(), Path.cwd())


JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def emit_json(data: Any, indent: int | None = 2) -> None:
    """`data` as JSON on stdout, every `${env:}` value masked: in each string before
    encoding (so a secret holding '"' is not split by its escaping), and in the text."""
    import json
    import sys

    from pmcp_build.text import mask_known

    def masked(value: Any) -> Any:
        if isinstance(value, str):
            return mask_known(value)
        if isinstance(value, dict):
            return {masked(k): masked(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [masked(v) for v in value]
        return value

    sys.stdout.write(mask_known(json.dumps(masked(data), indent=indent)) + "\n")


def quiet(json_mode: bool) -> bool:
    """Progress output only for a person at a terminal, never in CI or --json."""
    return json_mode or not err.is_terminal or bool(os.environ.get("CI"))


def _progress(json_mode: bool, text: str) -> AbstractContextManager[Any]:
    return nullcontext() if quiet(json_mode) else err.status(text)


def build_quietly(loaded: LoadedManifest, json_mode: bool) -> Package:
    """Build, with a spinner for a person at a terminal (dependency installs take time)."""
    from pmcp_build.package.build import build as build_package

    with _progress(json_mode, BUILDING):
        package = build_package(loaded, quiet=True)
    _say_lock(package)
    return package


def build_and_check(loaded: LoadedManifest, json_mode: bool) -> tuple[Package, LoadReport | None]:
    """Build and load the server (package/load_check.py): the check starts once the
    layout is known and runs while the zip is being written."""
    from pmcp_build.package import load_check
    from pmcp_build.package.build import package_layout, resolve_layout

    with _progress(json_mode, BUILDING):
        layout = resolve_layout(loaded, quiet=True)
        declared = load_check.declared_environment(loaded.manifest.targets.values())
        pending = load_check.begin(layout, declared)
        package = package_layout(loaded, layout)
    _say_lock(package)
    with _progress(json_mode, "loading the server to check it…"):
        return package, pending.result(package)


BUILDING = "building package (dependencies are cached after the first run)…"


def _say_lock(package: Package) -> None:
    if package.layout.lock_changed:
        # A build that wrote, updated or could not keep the lock says so; `plan` lists
        # the versions that moved.
        err.print(package.layout.lock_lines[0], markup=False)


def check_targets(loaded: LoadedManifest, targets: list[str] | None) -> list[str]:
    names = list(loaded.manifest.targets)
    for name in targets or []:
        if name not in loaded.manifest.targets:
            known = ", ".join(names) or "none are declared"
            raise UserError(f"{loaded.path}: no target {name!r}; targets: {known}")
    return list(targets) if targets else names


def check_layer_regions(loaded: LoadedManifest, names: list[str]) -> None:
    """A lambda target without its own region deploys to AWS_REGION: its layers must be
    there too (the model checks the targets that name a region)."""
    from pmcp_build.manifest.model import LambdaTarget
    from pmcp_build.manifest.model import check_layer_regions as check

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    for name in names:
        target = loaded.manifest.targets[name]
        if isinstance(target, LambdaTarget) and target.region is None and region:
            try:
                check(target.layers, region, "AWS_REGION, as the target names no region")
            except ValueError as exc:
                raise UserError(f"{loaded.path}: targets.{name}: {exc}") from None


TargetsOption = Annotated[
    list[str] | None,
    typer.Option("--target", "-t", help="Target name; repeat for several (default: all)."),
]


def main() -> None:
    app()
