"""Workspaces (issue 24): `build`, `plan` and `apply --all-manifests DIR` over every
metorial.toml under a folder, a section per server, one server's failure reported beside
the others' results, exit codes as for one manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pmcp_build import workspace

from .helpers import python_project


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two servers, one broken manifest, and manifests where none is looked for."""
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    monkeypatch.setenv(workspace.JOBS_ENV, "2")
    root = tmp_path / "ws"
    python_project(root / "servers" / "alpha", name="alpha")
    python_project(root / "servers" / "beta", name="beta")
    broken = root / "servers" / "gamma"
    broken.mkdir(parents=True)
    (broken / "metorial.toml").write_text("[server\n")
    for hidden in ("node_modules/pkg", ".venv/lib", "servers/alpha/.pmcp/x"):
        python_project(root / hidden, name="hidden")
    return root


def _sections(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("== ")]


def test_find_manifests_skips_tool_folders(ws: Path) -> None:
    found = [p.parent.relative_to(ws).as_posix() for p in workspace.find_manifests(ws)]
    assert found == ["servers/alpha", "servers/beta", "servers/gamma"]


def test_build_all_manifests_reports_every_server(cli: Any, ws: Path) -> None:
    result = cli("build", "--all-manifests", str(ws), "--json")
    assert result.exit_code == 1, result.output  # gamma failed
    data = json.loads(result.stdout)
    assert data["ok"] is False
    by_folder = {s["folder"]: s for s in data["servers"]}
    assert sorted(by_folder) == ["servers/alpha", "servers/beta", "servers/gamma"]
    for name in ("alpha", "beta"):
        server = by_folder[f"servers/{name}"]
        assert server["ok"] and server["exit_code"] == 0
        package = server["result"]["package"]
        assert Path(package["path"]).is_file() and f"/{name}-" in package["path"]
    gamma = by_folder["servers/gamma"]
    assert (gamma["ok"], gamma["exit_code"], gamma["result"]) == (False, 1, None)
    assert any("invalid TOML" in line for line in gamma["errors"])

    text = cli("build", "--all-manifests", str(ws))
    assert text.exit_code == 1
    assert _sections(text.stdout) == ["== servers/alpha ==", "== servers/beta ==",
                                      "== servers/gamma =="]  # fmt: skip
    assert text.stdout.count("wrote ") == 2
    assert text.stdout.rstrip().endswith("3 servers: 2 ok, 1 failed (servers/gamma)")


def test_plan_all_manifests_exit_codes(cli: Any, ws: Path) -> None:
    (ws / "servers" / "gamma" / "metorial.toml").unlink()
    result = cli("plan", "--all-manifests", str(ws), "--refresh=false", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["ok"] and [s["folder"] for s in data["servers"]] == [
        "servers/alpha",
        "servers/beta",
    ]
    assert all("targets" in json.dumps(s["result"]) for s in data["servers"])
    detailed = cli("plan", "--all-manifests", str(ws), "--refresh=false", "--detailed-exitcode")
    assert detailed.exit_code in (0, 2)
    assert _sections(detailed.stdout) == ["== servers/alpha ==", "== servers/beta =="]
    # Options naming one server are usage errors: plan's usage exit code.
    usage = cli("plan", "--all-manifests", str(ws), "--out", "p.bin")
    assert usage.exit_code == 64
    missing = cli("plan", "--all-manifests", str(ws / "nope"))
    assert missing.exit_code == 1
    assert missing.stderr.strip() == f"error: --all-manifests: {ws / 'nope'} is not a folder"


def test_apply_all_manifests_needs_auto_approve(cli: Any, ws: Path) -> None:
    result = cli("apply", "--all-manifests", str(ws))
    assert result.exit_code == 2
    assert "--auto-approve" in result.stderr
    applied = cli("apply", "--all-manifests", str(ws), "--auto-approve", "--json")
    assert applied.exit_code == 1  # gamma
    data = json.loads(applied.stdout)
    assert [s["ok"] for s in data["servers"]] == [True, True, False]


def test_exit_code_is_plain_data() -> None:
    run = workspace.ServerRun
    ok, changes, bad = run("a", 0, "", ""), run("b", 2, "", ""), run("c", 1, "", "")
    assert workspace.exit_code([ok, changes], 2, detailed=True) == 2
    assert workspace.exit_code([ok, changes], 2) == 0
    assert workspace.exit_code([ok, changes, bad], 2, detailed=True) == 1
    assert workspace.exit_code([ok]) == 0
