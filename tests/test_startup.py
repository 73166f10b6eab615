"""Start-up: a command imports what it uses and no more (pmcp_build/entry.py).

`pmcp-build --version` is answered before the CLI is imported, `--help` registers the
commands without the manifest models, and the fast rebuild path prints its tree as
plain text without rich (tests/test_rebuild.py checks it against the full build).
Imports are read from the interpreter's own `-X importtime` report
(PYTHONPROFILEIMPORTTIME), through the installed script, as a user runs it.
"""

from __future__ import annotations

import importlib.metadata
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pmcp_build.layout.view import print_plain

from .conftest import ROOT
from .helpers import cli_commands

SCRIPT = str(Path(sys.executable).with_name("pmcp-build"))
HELP_PAGES = Path(__file__).resolve().parent / "fixtures" / "help.txt"


def imported(argv: list[str], **env: str) -> tuple[str, set[str]]:
    """The command's stdout, and every module it imported."""
    proc = subprocess.run(
        [SCRIPT, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1", **env},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    modules = {
        line.rsplit("|", 1)[1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }
    assert "pmcp_build.entry" in modules  # the report was read
    return proc.stdout, modules


def heavy(modules: set[str], *tops: str) -> set[str]:
    return {m for m in modules if m.split(".")[0] in tops or m.startswith("pmcp_build.cli")}


def test_version_is_the_metadatas_and_imports_nothing_of_the_cli(cli) -> None:
    out, modules = imported(["--version"])
    assert out == f"pmcp-build {importlib.metadata.version('pmcp-build')}\n"
    assert out == cli("--version").stdout  # as the CLI prints it
    assert heavy(modules, "typer", "click", "rich", "pydantic") == set()
    assert not any(m.startswith("importlib.metadata") for m in modules)  # ~10 ms
    assert not any(m.startswith("pmcp_build.") and m != "pmcp_build.entry" for m in modules)


def test_help_registers_the_commands_without_the_manifest_models() -> None:
    out, modules = imported(["--help"])
    assert "Usage" in out and "build" in out
    assert {m for m in modules if m.startswith(("pydantic", "pmcp_build.manifest"))} == set()
    # A command's own help: typer (0.2x) coerces option values through pydantic itself,
    # so only our models are absent.
    out, modules = imported(["build", "--help"])
    assert "--json" in out
    assert {m for m in modules if m.startswith("pmcp_build.manifest")} == set()


def test_manifest_name_is_the_models() -> None:
    from pmcp_build.cli.app import MANIFEST_NAME
    from pmcp_build.manifest.model import MANIFEST_NAME as MODELS

    assert MANIFEST_NAME == MODELS


def test_help_is_unchanged(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every command's --help, byte for byte as it was before start-up was made lazy
    (tests/fixtures/help.txt, written by the code of that time at 100 columns). After a
    deliberate change to the help, or a typer/rich upgrade that renders it otherwise,
    rewrite it: PMCP_WRITE_HELP=1 python -m pytest tests/test_startup.py -k unchanged"""
    import typer.rich_utils

    monkeypatch.setattr(typer.rich_utils, "FORCE_TERMINAL", None)  # CI's FORCE_COLOR
    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", None)
    env = {"COLUMNS": "100", "LINES": "40", "TERM": "dumb", "NO_COLOR": "1"}
    pages = []
    for path in cli_commands():
        result = cli(*path, "--help", env=env)
        assert result.exit_code == 0, (path, result.output)
        pages.append(f"$ pmcp-build {' '.join((*path, '--help'))}\n{result.stdout}")
    text = "".join(pages)
    if os.environ.get("PMCP_WRITE_HELP"):
        HELP_PAGES.write_text(text)
    assert text == HELP_PAGES.read_text()


def test_the_tree_prints_as_rich_printed_it(capsys: pytest.CaptureFixture[str]) -> None:
    """print_plain writes what the CLI's rich consoles wrote for the same text, and
    escapes what rich dropped (a carriage return) or passed to the terminal (ESC)."""
    from rich.console import Console

    lines = [
        "python3.12 · x86_64 · handler index.handler",
        "├─ source: 2 files, 281 B",
        "│   [bold]odd[/] :smile: name.py                644       281 B  ← x",
        "└─ total: 951 files, 29.4 MB unzipped, 9.4 MB zipped" + " long" * 40,
        "wrote /tmp/p/.pmcp/dist/x.zip (sha256 ab12)",
    ]
    buf = io.StringIO()
    console = Console(file=buf, highlight=False, soft_wrap=True, markup=False, emoji=False)
    for line in lines:
        console.print(line, markup=False)
    print_plain([("out", line) for line in lines])
    assert capsys.readouterr().out == buf.getvalue()

    print_plain([("out", "wrote /tmp/a\rb\x1b[2J/x.zip"), ("err", "note: tab\there")])
    shown = capsys.readouterr()
    assert shown.out == "wrote /tmp/a\\rb\\x1b[2J/x.zip\n"
    assert shown.err == "note: tab\\there\n"


def test_completion_is_left_to_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    from pmcp_build import entry

    monkeypatch.setenv("_PMCP_BUILD_COMPLETE", "complete_bash")
    assert entry.fast_version(["--version"]) is False
    assert entry.fast_build(["-C", str(ROOT), "build"]) is False
