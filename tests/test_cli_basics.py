from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pmcp_build import __version__
from pmcp_build.manifest.load import load_manifest

from .conftest import EXAMPLES


def test_version(cli) -> None:
    result = cli("--version")
    assert result.exit_code == 0
    assert __version__ in result.stdout


def test_help_everywhere(cli) -> None:
    for cmd in ([], ["validate"], ["schema"], ["init"]):
        result = cli(*cmd, "--help")
        assert result.exit_code == 0, cmd
        assert "Usage" in result.stdout


def test_usage_error_exits_2(cli) -> None:
    result = cli("validate", "--no-such-flag")
    assert result.exit_code == 2


def test_validate_example(cli) -> None:
    result = cli("-C", str(EXAMPLES / "python-server"), "validate")
    assert result.exit_code == 0, result.output
    assert "text-tools" in result.stdout


def test_validate_missing_file(cli, tmp_path: Path) -> None:
    result = cli("-C", str(tmp_path), "validate")
    assert result.exit_code == 1
    assert "pmcp-build init" in result.stderr


def test_validate_file_flag(cli, tmp_path: Path) -> None:
    manifest = tmp_path / "other.toml"
    manifest.write_text('[server]\nname = "x"\n[runtime]\nkind = "python"\n')
    result = cli("validate", "-f", str(manifest))
    assert result.exit_code == 0, result.output


def test_schema_prints_json(cli) -> None:
    result = cli("schema")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["title"] == "metorial.toml"
    assert "server" in schema["properties"]


def test_init_detects_entrypoint_and_requirements(cli, tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text("print('hi')\n")
    (tmp_path / "app.py").write_text("print('hi')\n")
    (tmp_path / "requirements.txt").write_text("humanize\n")
    result = cli("-C", str(tmp_path), "init", "--name", "My Server")
    assert result.exit_code == 0, result.output
    m = load_manifest(tmp_path / "metorial.toml").manifest
    assert m.server.name == "my-server"
    assert m.runtime.kind == "python"
    assert m.runtime.entrypoint == "main.py"  # main.py comes before app.py
    assert m.runtime.requirements == "requirements.txt"
    assert "dev" in m.targets


def test_init_refuses_to_overwrite(cli, tmp_path: Path) -> None:
    (tmp_path / "metorial.toml").write_text("# mine\n")
    result = cli("-C", str(tmp_path), "init")
    assert result.exit_code == 1
    assert "--force" in result.stderr
    assert (tmp_path / "metorial.toml").read_text() == "# mine\n"


def test_init_rust_project_gets_binary_runtime(cli, tmp_path: Path) -> None:
    (tmp_path / "Cargo.toml").write_text('[package]\nname = "chinook"\n')
    result = cli("-C", str(tmp_path), "init", "--name", "chinook")
    assert result.exit_code == 0, result.output
    m = load_manifest(tmp_path / "metorial.toml").manifest
    assert m.runtime.kind == "binary"


def test_bad_directory_is_usage_error(cli, tmp_path: Path) -> None:
    result = cli("-C", str(tmp_path / "nope"), "validate")
    assert result.exit_code == 2


def test_console_script_runs_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "metorial.toml").write_text("[server\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pmcp_build", "-C", str(tmp_path), "validate"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "invalid TOML" in proc.stderr
    debug = subprocess.run(
        [sys.executable, "-m", "pmcp_build", "--debug", "-C", str(tmp_path), "validate"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "Traceback" in debug.stderr


@pytest.mark.parametrize("command", ["build", "plan", "validate"])
def test_a_reader_that_goes_away_is_sigpipe_not_an_error(command: str) -> None:
    """`pmcp-build plan | head`: the reader closes the pipe. Before, the command exited 1
    with nothing said (a user error by our own codes); now 141, as a tool killed by
    SIGPIPE does, so `set -o pipefail` never reads it as success or "no changes", and
    nothing is printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pmcp_build", "-C", str(EXAMPLES / "python-server"), command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first line
    stderr = proc.stderr.read().decode()
    assert proc.wait(120) == 141, stderr
    assert stderr == ""
