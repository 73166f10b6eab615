"""Issue 14 item 6: `pmcp-build logs` through the CLI against the moto server's
CloudWatch Logs, and the pure parts (--since, formatting, following) on plain data."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from pmcp_build.deploy import logs as cwlogs
from pmcp_build.errors import UserError

GROUP = "/aws/lambda/tiny-prod"
STREAM = "2026/11/25/[1]0123456789abcdef"
NOW = 1_764_054_000_000  # 2025-11-25T07:00:00Z


def _now() -> int:
    return int(time.time() * 1000)


def _put(*events: tuple[int, str], stream: str = STREAM) -> None:
    client = boto3.client("logs")
    groups = client.describe_log_groups(logGroupNamePrefix=GROUP)["logGroups"]
    if not groups:
        client.create_log_group(logGroupName=GROUP)
    streams = client.describe_log_streams(logGroupName=GROUP)["logStreams"]
    if stream not in {s["logStreamName"] for s in streams}:
        client.create_log_stream(logGroupName=GROUP, logStreamName=stream)
    client.put_log_events(
        logGroupName=GROUP,
        logStreamName=stream,
        logEvents=[{"timestamp": ts, "message": m} for ts, m in events],
    )


# -- through the CLI ------------------------------------------------------------------------


def test_logs_since_json_and_markup(cli, project: Path) -> None:
    now = _now()
    _put(
        (now - 20 * 60_000, "old line\n"),
        (now - 60_000, "START RequestId: 1 Version: 1\n"),
        (now - 30_000, "[bold]not markup[/bold] :thumbs_up: \x1b[31mred\tok\n"),
    )
    recent = cli("-C", str(project), "logs", "-t", "prod")
    assert recent.exit_code == 0, recent.output
    lines = recent.stdout.splitlines()
    assert len(lines) == 2, recent.stdout  # --since defaults to 10m
    assert lines[0].endswith("Z [1] START RequestId: 1 Version: 1")
    # the function's text as written: no markup, no emoji, no terminal escapes
    assert lines[1].endswith("Z [1] [bold]not markup[/bold] :thumbs_up: \\x1b[31mred\tok")

    hour = cli("-C", str(project), "logs", "-t", "prod", "--since", "1h", "--json")
    assert hour.exit_code == 0, hour.output
    rows = [json.loads(line) for line in hour.stdout.splitlines()]
    assert rows[0]["message"] == "old line"
    assert len(rows) == 3
    assert rows[0]["version"] == "1" and rows[0]["stream"] == STREAM
    assert rows[0]["time"].endswith("Z") and isinstance(rows[0]["timestamp"], int)


def test_logs_missing_group_and_bad_input_are_one_line(cli, project: Path) -> None:
    missing = cli("-C", str(project), "logs", "-t", "prod")
    assert missing.exit_code == 1, missing.output
    assert f"log group {GROUP} does not exist" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1 and "Traceback" not in missing.output
    for args, says in [
        (["-t", "prod", "--since", "10 parsecs"], "--since '10 parsecs': use a duration"),
        (["-t", "artifact"], "target 'artifact' is s3; logs are for lambda"),
        (["-t", "nope"], "no target 'nope'"),
    ]:
        result = cli("-C", str(project), "logs", *args)
        assert result.exit_code == 1, (args, result.output)
        assert says in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_logs_follow_prints_each_line_once_and_stops_on_ctrl_c(
    cli, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = _now()
    pauses: list[float] = []

    def pause(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 1:  # the group appears while we wait
            _put((now - 2000, "first\n"), (now - 1000, "second\n"))
        elif len(pauses) == 2:
            _put((now - 1000, "same millisecond\n"), (now + 500, "third\n"))
        else:
            raise KeyboardInterrupt

    monkeypatch.setattr(cwlogs, "_sleep", pause)
    result = cli("-C", str(project), "logs", "-t", "prod", "--follow")
    assert result.exit_code == 0, result.output
    messages = [line.split(" ", 2)[-1] for line in result.stdout.splitlines()]
    assert messages == ["first", "second", "same millisecond", "third"], result.stdout
    assert result.stderr.count("does not exist") == 1  # said once, then waited
    assert "waiting for it" in result.stderr
    assert "interrupted" not in result.output and "Traceback" not in result.output
    assert pauses == [cwlogs.POLL_SECONDS] * 3


def test_follow_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    class Client:
        def filter_log_events(self, **params: Any) -> dict[str, Any]:
            calls.append(params)
            return {"events": []}

    monkeypatch.setattr(cwlogs, "MAX_POLLS", 4)
    monkeypatch.setattr(cwlogs, "_sleep", lambda s: None)
    cwlogs.follow(Client(), GROUP, 5, lambda e: None)
    assert len(calls) == 4 and all(c["startTime"] == 5 for c in calls)


def test_read_pages_through_next_token(project: Path) -> None:
    now = _now()
    _put(*((now - 1000 + i, f"line {i}\n") for i in range(5)))
    client = boto3.client("logs")
    events = list(cwlogs.read_events(client, GROUP, now - 60_000, page_limit=2))
    assert [e["message"] for e in events] == [f"line {i}\n" for i in range(5)]


# -- pure parts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "back_ms"),
    [
        ("30s", 30_000),
        ("10m", 600_000),
        ("2h", 7_200_000),
        ("1d", 86_400_000),
        ("1h30m", 5_400_000),
        ("1W", 604_800_000),
    ],
)
def test_since_durations(text: str, back_ms: int) -> None:
    assert cwlogs.parse_since(text, NOW) == NOW - back_ms


def test_since_times_and_refusals() -> None:
    assert cwlogs.parse_since("2025-11-25T06:00:00Z", NOW) == NOW - 3_600_000
    assert cwlogs.parse_since("2025-11-25T06:00:00", NOW) == NOW - 3_600_000  # UTC
    assert cwlogs.parse_since("2025-11-25T07:00:00+01:00", NOW) == NOW - 3_600_000
    for bad in ("", "10", "m", "yesterday", "10 m", "-5m"):
        with pytest.raises(UserError, match="use a duration"):
            cwlogs.parse_since(bad, NOW)
    with pytest.raises(UserError, match="in the future"):
        cwlogs.parse_since("2025-11-25T08:00:00Z", NOW)


def test_format_event() -> None:
    event = {"timestamp": NOW + 5, "message": "hello\n", "logStreamName": "x/[$LATEST]ab"}
    assert cwlogs.format_event(event) == "2025-11-25T07:00:00.005Z [$LATEST] hello"
    assert cwlogs.format_event({"timestamp": NOW, "message": "a\nb\n"}).endswith("Z a\nb")
    assert cwlogs.event_json(event)["version"] == "$LATEST"


def test_logs_into_a_closed_pipe_stops_quietly(project: Path, moto_url: str) -> None:
    """`pmcp-build logs | head -1`: the reader leaves after one line; a real process and
    a real pipe (the in-process runner has neither)."""
    import os
    import subprocess
    import sys

    now = _now()
    _put(*((now - 5000 + i, f"line {i} " + "x" * 2000 + "\n") for i in range(200)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PMCP_")}
    cli = [sys.executable, "-m", "pmcp_build", "-C", str(project), "logs", "-t", "prod"]
    proc = subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # as `head -1` does
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, stderr
    assert first.startswith(b"20") and b" [1] line 0 " in first
    assert stderr == "", stderr
