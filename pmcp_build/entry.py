"""The `pmcp-build` entry point: `--version` and the fast path of `pmcp-build build`.

`pmcp-build --version` is answered here from the version constant, before anything
else is imported (the CLI would import typer and the manifest models, ~8x a bare
interpreter; tests/test_startup.py keeps the constant equal to the installed metadata).

A `build` whose inputs are provably unchanged but for file contents (package/rebuild.py)
is done here, before the CLI framework and the manifest models are imported. Only the
plain forms are handled: `pmcp-build [-C DIR] build [--json] [-f FILE]`. Anything
else, or any change beyond file contents, goes to the Typer app in pmcp_build.cli as
usual, so every error is still reported by the one code path. The output is the full
build's, line for line (tests/test_rebuild.py compares them).

This module is outside pmcp_build.cli on purpose: importing that package registers
every command, which imports typer. The text is printed here as plain text, without
rich (layout/view.py print_plain; the full build prints through the same function).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

# What a Unix tool killed by SIGPIPE exits with (128 + 13): the reader of our output
# went away (`plan | head`). Not 0: under `set -o pipefail` a `--detailed-exitcode`
# plan must not read as "no changes".
BROKEN_PIPE_EXIT = 141


def main() -> None:
    try:
        if fast_version(sys.argv[1:]) or fast_build(sys.argv[1:]):
            return
        from pmcp_build.cli import main as cli_main

        cli_main()
    except BrokenPipeError:
        _quiet_stdout()
        sys.exit(BROKEN_PIPE_EXIT)
    except SystemExit as exc:
        if isinstance(exc.__context__, BrokenPipeError):
            _quiet_stdout()
            sys.exit(BROKEN_PIPE_EXIT)
        raise


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


# Set by a shell asking click for completions: always the full CLI, which answers it.
COMPLETE_VAR = "_PMCP_BUILD_COMPLETE"


def fast_version(argv: list[str]) -> bool:
    """`pmcp-build --version`, exactly as the CLI prints it; False for any other form."""
    if argv != ["--version"] or os.environ.get(COMPLETE_VAR):
        return False
    from pmcp_build import __version__

    sys.stdout.write(f"pmcp-build {__version__}\n")
    sys.stdout.flush()
    return True


def _parse(argv: list[str]) -> tuple[Path | None, Path, bool] | None:
    """(directory, manifest, json) for the plain forms, None for anything else."""
    from pathlib import Path

    args = list(argv)
    directory = None
    if args[:1] in (["-C"], ["--directory"]) and len(args) >= 2:
        directory = Path(args[1])
        args = args[2:]
    if args[:1] != ["build"]:
        return None
    manifest, json_out = Path("metorial.toml"), False
    rest = args[1:]
    while rest:
        if rest[0] == "--json":
            json_out, rest = True, rest[1:]
        elif rest[0] in ("-f", "--file") and len(rest) >= 2:
            manifest, rest = Path(rest[1]), rest[2:]
        else:
            return None
    return directory, manifest, json_out


def fast_build(argv: list[str]) -> bool:
    """True when the build was done here (and printed); False: run the full CLI."""
    if os.environ.get("PMCP_NO_FAST_BUILD") or os.environ.get(COMPLETE_VAR):
        return False
    parsed = _parse(argv)
    if parsed is None:
        return False
    from pathlib import Path

    directory, manifest, json_out = parsed
    base = directory if directory is not None else Path.cwd()
    path = manifest if manifest.is_absolute() else base / manifest
    if not path.is_file():
        return False
    from pmcp_build.package.rebuild import rebuild

    package = rebuild(path)
    if package is None:
        return False
    from pmcp_build.errors import UserError
    from pmcp_build.layout.view import build_json, build_text, print_plain
    from pmcp_build.package.load_check import check

    try:
        report = check(package)  # the same load check as the full build
    except UserError:
        return False  # the full CLI reports it, through its one error path

    if json_out:
        sys.stdout.write(build_json(package, report))
    else:
        print_plain(build_text(package, report))
    return True
