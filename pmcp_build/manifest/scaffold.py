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
    arch_flag = "--arm64" if arch == "arm64" else "--x86-64"
    if (folder / "Cargo.toml").exists():
        bin_name = cargo_bin_name(folder / "Cargo.toml") or name
        runtime = f"""[runtime]
kind = "binary"                  # a custom-runtime executable (provided.al2023)
architecture = "{arch}"          # "arm64" | "x86_64": must match the binary (this machine's)
# `cargo lambda build --release {arch_flag}` writes the executable here:
artifact = "target/lambda/{bin_name}/bootstrap"
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
    text = f'''#:schema https://metorial.com/schemas/metorial.schema.json
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
            name = found.group(1).lower()
            return (
                f'command = ["{name}"]  # the stdio server {name}\'s console script, kept '
                "warm per container"
            )
    return None


def write_manifest(folder: Path, name: str | None = None, force: bool = False) -> Path:
    path = folder / MANIFEST_NAME
    if path.exists() and not force:
        raise UserError(f"{path} already exists; edit it, or pass --force to overwrite it")
    path.write_text(render_manifest(folder, name), encoding="utf-8")
    return path
