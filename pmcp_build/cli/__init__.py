"""The `pmcp-build` command line: argument parsing and output, nothing else.

Every command body runs under `guard` (cli/app.py), which turns a UserError into one
line on stderr and exit 1; the traceback is shown only with --debug. The command modules
register themselves on the one Typer app when imported, in the order of `--help`.
"""

from pmcp_build.cli import (  # noqa: F401  (imported to register the commands)
    build_cmds,
    cache_cmds,
    deploy_cmds,
    image_cmd,
    local_cmds,
    lock_cmd,
    logs_cmd,
    manifest_cmds,
    outputs_cmd,
)
from pmcp_build.cli.app import app, main

__all__ = ["app", "main"]
