"""`pmcp-build init`: write a commented manifest for a folder, detecting what it can."""

from __future__ import annotations

import re
from pathlib import Path

from pmcp_build.errors import UserError
from pmcp_build.manifest.load import parse_manifest
from pmcp_build.manifest.model import ENTRYPOINT_ORDER, MANIFEST_NAME


def server_name(raw: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")[:48].strip("-")
    return name or "mcp-server"


def render_manifest(folder: Path, name: str | None = None) -> str:
    name = server_name(name or folder.resolve().name)
    if (folder / "Cargo.toml").exists():
        runtime = f"""[runtime]
kind = "binary"                  # a custom-runtime executable (provided.al2023)
architecture = "arm64"           # "arm64" | "x86_64": must match the binary
# `cargo lambda build --release --arm64` writes the executable here:
artifact = "target/lambda/{name}/bootstrap"
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
        req_line = (
            'requirements = "requirements.txt"'
            if (folder / "requirements.txt").is_file()
            else '# requirements = "requirements.txt"'
        )
        runtime = f"""[runtime]
kind = "python"                  # "python" | "binary"
python = "3.12"                  # Lambda runtime python3.X
architecture = "arm64"           # "arm64" | "x86_64"
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
