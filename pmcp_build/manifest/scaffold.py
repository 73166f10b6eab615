"""`pmcp-build init`: write a commented manifest for a folder, detecting what it can."""

from __future__ import annotations

import platform
import re
import tomllib
from pathlib import Path

from pmcp_build.errors import UserError
from pmcp_build.manifest.load import parse_manifest
from pmcp_build.manifest.model import ENTRYPOINT_ORDER, MANIFEST_NAME


def server_name(raw: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")[:48].strip("-")
    return name or "mcp-server"


def host_architecture() -> str:
    """This machine's Lambda architecture: a new manifest matches it, so `serve` runs the
    package here (native wheels and binaries are per architecture)."""
    return "arm64" if platform.machine().lower() in ("arm64", "aarch64") else "x86_64"


def cargo_bin_name(cargo_toml: Path) -> str | None:
    """The binary `cargo lambda build` writes: the first [[bin]]'s name, else the
    package's name (Cargo's default binary)."""
    try:
        data = tomllib.loads(cargo_toml.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    bins = data.get("bin")
    if isinstance(bins, list):
        for item in bins:
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                return str(item["name"])
    package = data.get("package")
    if isinstance(package, dict) and isinstance(package.get("name"), str):
        return str(package["name"])
    return None


def cargo_artifact(folder: Path, bin_name: str, arch: str) -> tuple[str, str]:
    """Where the crate's executable is, and what writes it: cargo-lambda's output when it
    is there, else what a plain `cargo build --release` writes (for this machine, whose
    architecture the manifest says)."""
    lambda_path = f"target/lambda/{bin_name}/bootstrap"
    if (folder / lambda_path).is_file():
        flag = " --arm64" if arch == "arm64" else ""
        return lambda_path, f"cargo lambda build --release{flag}"
    return f"target/release/{bin_name}", "cargo build --release"


def installed_console_scripts(folder: Path, dist_name: str) -> list[str]:
    """The console scripts `dist_name` declares in its installed entry_points.txt: in the
    folder's own virtualenv first, then wherever this interpreter finds distributions.
    Empty when it is not installed here (the build then names the real ones)."""
    import configparser
    import importlib.metadata
    import sys

    wanted = _normal_name(dist_name)
    venvs = [
        str(p) for v in (".venv", "venv") for p in folder.glob(f"{v}/lib/python3*/site-packages")
    ]
    for dist in importlib.metadata.distributions(path=venvs + sys.path):
        if _normal_name(dist.metadata["Name"] or "") != wanted:
            continue
        text = dist.read_text("entry_points.txt") or ""
        parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        try:
            parser.read_string(text)
        except configparser.Error:
            return []
        if parser.has_section("console_scripts"):
            return [name for name, _ in parser.items("console_scripts")]
        return []
    return []


def _normal_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


SCHEMA_COPY = ".pmcp/metorial.schema.json"


def schema_directive(folder: Path) -> str:
    """A `#:schema` path the user's editor can open: the schema file that ships beside
    the tool (a source or editable install), relative to the folder; else a copy written
    under .pmcp/ for this folder."""
    import os

    shipped = Path(__file__).resolve().parents[2] / "schemas" / "metorial.schema.json"
    if shipped.is_file():
        relative = Path(os.path.relpath(shipped, folder.resolve())).as_posix()
        return relative if relative.startswith(".") else f"./{relative}"
    from pmcp_build.manifest.schema import schema_text

    copy = folder / SCHEMA_COPY
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text(schema_text(), encoding="utf-8")
    return f"./{SCHEMA_COPY}"


def ignore_pmcp(folder: Path) -> bool:
    """Add `.pmcp/` (builds, deployments: a 20 MB zip `git add -A` would stage) to the
    folder's .gitignore; False when it already ignores it."""
    path = folder / ".gitignore"
    text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
    if any(ln.strip() in (".pmcp", ".pmcp/", "/.pmcp", "/.pmcp/") for ln in text.splitlines()):
        return False
    prefix = "" if not text or text.endswith("\n") else "\n"
    path.write_text(f"{text}{prefix}.pmcp/\n", encoding="utf-8")
    return True


def detected(folder: Path) -> list[str]:
    """What `init` found, said to the user after writing the manifest."""
    from pmcp_build.layout.python_sources import detect

    notes = [f"architecture = {host_architecture()!r}: this machine's (Lambda supports both)"]
    if (folder / "Cargo.toml").exists():
        bin_name = cargo_bin_name(folder / "Cargo.toml")
        if bin_name:
            notes.append(f"artifact: the crate's binary {bin_name!r} (Cargo.toml)")
        return notes
    try:
        source = detect(folder, None)
    except Exception:
        source = None
    notes.append(f"dependencies: {source.label}" if source else "dependencies: none declared")
    return notes


def render_manifest(folder: Path, name: str | None = None) -> str:
    name = server_name(name or folder.resolve().name)
    arch = host_architecture()
    if (folder / "Cargo.toml").exists():
        bin_name = cargo_bin_name(folder / "Cargo.toml") or name
        artifact, built_by = cargo_artifact(folder, bin_name, arch)
        runtime = f"""[runtime]
kind = "binary"                  # a custom-runtime executable (provided.al2023)
architecture = "{arch}"          # "arm64" | "x86_64": must match the binary (this machine's)
# `{built_by}` writes the executable here:
artifact = "{artifact}"
"""
    else:
        entry = next((e for e in ENTRYPOINT_ORDER if (folder / e).is_file()), None)
        entry_line = (
            f'entrypoint = "{entry}"'
            if entry
            else '# entrypoint = "server.py"      # none found; detected in the order '
            + ", ".join(ENTRYPOINT_ORDER)
        )
        entry_line = _server_kind_line(folder, entry) or entry_line
        from pmcp_build.layout.python_sources import detect

        try:
            source = detect(folder, None)
        except Exception:  # an unreadable pyproject.toml: the build will say why
            source = None
        req_line = (
            f'requirements = "{source.label}"  # dependencies (also: requirements.txt, '
            "pyproject.toml, uv.lock, pylock.toml); locked in metorial.lock"
            if source
            else '# requirements = "requirements.txt"  # or pyproject.toml, uv.lock, pylock.toml'
        )
        runtime = f"""[runtime]
kind = "python"                  # "python" | "binary"
python = "3.12"                  # Lambda runtime python3.X
architecture = "{arch}"          # "arm64" | "x86_64" (this machine's, so `serve` runs it)
{entry_line}
{req_line}
"""
    text = f'''#:schema {schema_directive(folder)}
# pmcp-build manifest: `pmcp-build validate`, `pmcp-build plan`, `pmcp-build apply`.

[server]
name = "{name}"                  # [a-z0-9-], used in function names and S3 keys
description = ""

[source]
path = "."
exclude = ["tests/**", ".venv/**", "**/__pycache__/**"]

{runtime}
# [[assets]]
# from = "data/app.db"           # a file, folder or glob relative to the source
# to = "app.db"                  # where it lands in the package

[targets.dev]
kind = "local"                   # no cloud: `pmcp-build apply --target dev`, then `serve`

# [targets.prod]
# kind = "lambda"
# region = "eu-west-1"
# function = "{name}"
# bucket = "my-artifacts-bucket"
# prefix = "builds/{name}"
# role = "auto"                  # or an IAM role ARN
# memory = 512
# timeout = 30
# url = {{ auth = "NONE" }}
# environment = {{ LOG_LEVEL = "info", API_TOKEN = "${{env:API_TOKEN}}" }}
'''
    parse_manifest(text)  # what we write must validate
    return text


# A module-level server instance: `app = MCPServer(...)`, `mcp = FastMCP(...)`, `Server(...)`.
_INSTANCE = re.compile(
    r"^([A-Za-z_]\w*)\s*(?::[^=]+)?=\s*(?:[\w.]+\.)?(MCPServer|FastMCP|Server)\(", re.M
)
# PyPI stdio servers are mostly named mcp-server-X or X-mcp(-server), with a console
# script of the same name; the build checks the name against the installed scripts.
_STDIO_PACKAGE = re.compile(
    r"^\s*((?:mcp-server-[\w.-]+)|(?:[\w.-]+-mcp(?:-server)?))\b", re.M | re.I
)


def _server_kind_line(folder: Path, entry: str | None) -> str | None:
    """`entrypoint = "server.py:app"` for an instance, `command = [...]` for a stdio package."""
    if entry is not None:
        try:
            source = (folder / entry).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
        if "metorial.create_server" in source:
            return None
        names = list(dict.fromkeys(m.group(1) for m in _INSTANCE.finditer(source)))
        if len(names) == 1:
            kind = _INSTANCE.search(source).group(2)  # type: ignore[union-attr]
            return f'entrypoint = "{entry}:{names[0]}"  # the module-level {kind} to serve'
        return None
    requirements = folder / "requirements.txt"
    if requirements.is_file():
        found = _STDIO_PACKAGE.search(requirements.read_text(encoding="utf-8", errors="replace"))
        if found:
            package = found.group(1)
            scripts = installed_console_scripts(folder, package)
            if scripts:  # what its installed entry_points.txt declares
                return (
                    f'command = ["{scripts[0]}"]  # the console script of {package} '
                    "(its entry_points.txt), kept warm per container"
                )
            name = package.lower()
            return (
                f'command = ["{name}"]  # {package} is not installed here, so this name is '
                "a guess: the build names its real console scripts"
            )
    return None


def write_manifest(folder: Path, name: str | None = None, force: bool = False) -> Path:
    path = folder / MANIFEST_NAME
    if path.exists() and not force:
        raise UserError(f"{path} already exists; edit it, or pass --force to overwrite it")
    path.write_text(render_manifest(folder, name), encoding="utf-8")
    ignore_pmcp(folder)
    return path
