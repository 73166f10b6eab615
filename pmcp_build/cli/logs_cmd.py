"""`pmcp-build logs`: a lambda target's CloudWatch log lines, once or followed."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from pmcp_build.cli.app import (
    MANIFEST_NAME,
    JsonOption,
    ManifestOption,
    app,
    check_targets,
    err,
    guard,
    load,
)
from pmcp_build.errors import UserError


@app.command()
@guard
def logs(
    target: Annotated[str, typer.Option("--target", "-t", help="The lambda target.")],
    file: ManifestOption = Path(MANIFEST_NAME),
    follow: Annotated[
        bool, typer.Option("--follow", help="Keep printing new lines until Ctrl-C.")
    ] = False,
    since: Annotated[
        str,
        typer.Option(
            "--since", help="How far back: 30s, 10m, 2h, 1d, or an ISO 8601 time.", metavar="WHEN"
        ),
    ] = "10m",
    json_out: JsonOption = False,
) -> None:
    """Print the function's log lines from CloudWatch Logs (/aws/lambda/FUNCTION)."""
    from pmcp_build.deploy import aws
    from pmcp_build.deploy import logs as cwlogs

    loaded = load(file)
    check_targets(loaded, [target])
    t = loaded.manifest.targets[target]
    if t.kind != "lambda":
        raise UserError(f"{loaded.path}: target {target!r} is {t.kind}; logs are for lambda")
    start = cwlogs.parse_since(since, int(time.time() * 1000))
    group = cwlogs.log_group(t.function)

    def emit(event: dict[str, Any]) -> None:
        # The function's own text, written as is (never through rich: no markup, no
        # emoji codes, no wrapping), flushed per event for --follow.
        line = json.dumps(cwlogs.event_json(event)) if json_out else cwlogs.format_event(event)
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    client = aws.clients(aws.connection(t)).logs
    try:
        with aws.translating(f"reading {group}"):
            if follow:
                cwlogs.follow(
                    client,
                    group,
                    start,
                    emit,
                    waiting=lambda line: err.print(line, markup=False, highlight=False),
                )
            else:
                for event in cwlogs.read_events(client, group, start):
                    emit(event)
    except KeyboardInterrupt:
        if not follow:
            raise  # guard: "interrupted", exit 130
        return  # Ctrl-C is how a follow ends: no "interrupted", exit 0
    except BrokenPipeError:
        # The reader went away (`logs --follow | head`): stop quietly, and point stdout
        # at /dev/null so the interpreter's final flush does not complain either.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
