"""metorial.lock and the dependency sources: what ships is exactly what the lock names.

Every test uses a local find-links wheelhouse of tiny wheels (tests/helpers.make_wheel)
beside the suite's .wheelhouse; "a new upstream release" is a newer wheel dropped into
it. A second machine is a fresh build cache (PMCP_BUILD_CACHE_DIR).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tomllib
import zipfile
from pathlib import Path

import pytest

from pmcp_build.layout.python_deps import _uv
from pmcp_build.layout.python_lock import Lock, Locked, choose_wheel, diff, render

from .helpers import HOST_PY, make_wheel, python_project


@pytest.fixture
def wheels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "wheels"
    make_wheel(folder, "tinydep", "1.0")
    make_wheel(folder, "otherdep", "1.0")
    monkeypatch.setenv("UV_FIND_LINKS", f"{os.environ['UV_FIND_LINKS']},{folder}")
    return folder


def _fresh_machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str) -> None:
    monkeypatch.setenv("PMCP_BUILD_CACHE_DIR", str(tmp_path / f"cache-{name}"))


def _shipped(cli, project: Path, module: str) -> str | None:
    res = cli("-C", str(project), "build", "--json")
    assert res.exit_code == 0, res.output
    path = json.loads(res.stdout)["package"]["path"]
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        member = f"{module}/__init__.py"
        return zf.read(member).decode().strip() if member in names else None


def _locked(project: Path) -> dict[str, str]:
    data = tomllib.loads((project / "metorial.lock").read_text())
    return {p["name"]: p["version"] for p in data["package"]}


def test_requirements_project_is_locked_and_a_new_release_does_not_change_it(
    cli, tmp_path: Path, wheels: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fails before the lock: a cold cache on another machine picked up tinydep 1.1."""
    project = python_project(tmp_path / "p", requirements="tinydep>=1.0\n")
    assert _shipped(cli, project, "tinydep") == "VERSION = '1.0'"
    lock = (project / "metorial.lock").read_text()
    locked = _locked(project)
    assert locked["tinydep"] == "1.0" and "mcp" in locked  # the boot runtime is locked too
    assert 'name = "mcp"' in lock and "boot = true" in lock
    make_wheel(wheels, "tinydep", "1.1")  # upstream releases
    _fresh_machine(monkeypatch, tmp_path, "b")
    assert _shipped(cli, project, "tinydep") == "VERSION = '1.0'"
    assert (project / "metorial.lock").read_text() == lock
    res = cli("-C", str(project), "lock", "--check")
    assert res.exit_code == 0, res.output
    res = cli("-C", str(project), "lock", "--upgrade")
    assert res.exit_code == 0, res.output
    assert "~ tinydep 1.0 -> 1.1" in res.stdout
    assert _shipped(cli, project, "tinydep") == "VERSION = '1.1'"


def test_changed_requirements_keep_other_pins_and_plan_shows_the_changes(
    cli, tmp_path: Path, wheels: Path
) -> None:
    project = python_project(tmp_path / "p", requirements="tinydep\n")
    assert cli("-C", str(project), "build").exit_code == 0
    make_wheel(wheels, "tinydep", "1.1")
    (project / "requirements.txt").write_text("tinydep\notherdep\n")
    res = cli("-C", str(project), "lock", "--check")
    assert res.exit_code == 1
    assert "metorial.lock: out of date (requirements.txt changed)" in res.stderr
    plan = cli("-C", str(project), "plan", "--no-refresh")
    assert plan.exit_code == 0, plan.output
    assert "dependencies: metorial.lock updated (requirements.txt changed" in plan.stdout
    assert "  + otherdep 1.0" in plan.stdout
    assert "tinydep" not in plan.stdout  # kept at 1.0: only what had to move moved
    assert _locked(project)["tinydep"] == "1.0"
    again = cli("-C", str(project), "plan", "--no-refresh")
    assert "locked in metorial.lock, unchanged" in again.stdout


def test_locked_env_refuses_to_change_the_lock(
    cli, tmp_path: Path, wheels: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = python_project(tmp_path / "p", requirements="tinydep\n")
    monkeypatch.setenv("PMCP_LOCKED", "1")
    res = cli("-C", str(project), "build")
    assert res.exit_code == 1
    assert "out of date (no lock yet); run `pmcp-build lock`" in res.stderr
    assert not (project / "metorial.lock").exists()


def test_pyproject_only_project_with_extras(cli, tmp_path: Path, wheels: Path) -> None:
    project = python_project(tmp_path / "p")
    text = (project / "metorial.toml").read_text()
    text = text.replace('architecture = "', 'extras = ["more"]\narchitecture = "', 1)
    (project / "metorial.toml").write_text(text)
    (project / "pyproject.toml").write_text(
        '[project]\nname = "srv"\nversion = "0"\ndependencies = ["tinydep<2"]\n'
        '[project.optional-dependencies]\nmore = ["otherdep==1.0"]\nunused = ["nothere"]\n'
    )
    make_wheel(wheels, "tinydep", "1.1")
    assert _shipped(cli, project, "tinydep") == "VERSION = '1.1'"
    assert _shipped(cli, project, "otherdep") == "VERSION = '1.0'"
    assert {"tinydep": "1.1", "otherdep": "1.0"}.items() <= _locked(project).items()
    text = (project / "metorial.toml").read_text().replace('["more"]', '["mor"]')
    (project / "metorial.toml").write_text(text)
    res = cli("-C", str(project), "build")
    assert res.exit_code == 1
    assert "[runtime].extras: 'mor' is not in" in res.stderr and "more, unused" in res.stderr


def _uv_env(wheels: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(UV_OFFLINE="1", UV_NO_INDEX="1", UV_FIND_LINKS=str(wheels))
    return env


def test_uv_lock_project_ships_uv_locks_versions_and_checks_its_hashes(
    cli, tmp_path: Path, wheels: Path
) -> None:
    project = python_project(tmp_path / "p")
    (project / "pyproject.toml").write_text(
        f'[project]\nname = "srv"\nversion = "0"\nrequires-python = ">={HOST_PY}"\n'
        'dependencies = ["tinydep"]\n'
    )
    subprocess.run(
        [_uv(), "lock", "--no-config", "--directory", str(project)],
        check=True,
        capture_output=True,
        env=_uv_env(wheels),
    )
    # A local find-links folder leaves hashes out of uv.lock; an index puts them in.
    uv_lock = project / "uv.lock"
    wheel = wheels / "tinydep-1.0-py3-none-any.whl"
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    data = uv_lock.read_text().replace(
        f'{{ path = "{wheel}" }}', f'{{ path = "{wheel}", hash = "sha256:{sha}" }}'
    )
    assert sha in data
    uv_lock.write_text(data)
    make_wheel(wheels, "tinydep", "1.1")  # newer than uv.lock's pin
    assert _shipped(cli, project, "tinydep") == "VERSION = '1.0'"
    assert _locked(project)["tinydep"] == "1.0"
    # uv.lock's hashes are honoured: a wheel it does not name is refused.
    uv_lock.write_text(data.replace(sha, "0" * 64))
    res = cli("-C", str(project), "build")
    assert res.exit_code == 1
    assert "tinydep 1.0: the wheel for " in res.stderr
    assert "is not one uv.lock names" in res.stderr


def test_pylock_project_ships_its_pins(cli, tmp_path: Path, wheels: Path) -> None:
    project = python_project(tmp_path / "p")
    make_wheel(wheels, "tinydep", "1.1")
    subprocess.run(
        [
            _uv(),
            "pip",
            "compile",
            "--no-config",
            "--format",
            "pylock.toml",
            "-",
            "-o",
            str(project / "pylock.toml"),
            "--python-version",
            HOST_PY,
        ],
        input=b"tinydep==1.0\n",
        check=True,
        capture_output=True,
        env=_uv_env(wheels),
    )
    assert _shipped(cli, project, "tinydep") == "VERSION = '1.0'"
    assert _locked(project)["tinydep"] == "1.0"


def test_init_names_the_dependency_source_it_found(cli, tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    (project / "server.py").write_text("x = 1\n")
    (project / "pyproject.toml").write_text('[project]\nname="s"\ndependencies=["a"]\n')
    res = cli("-C", str(project), "init")
    assert res.exit_code == 0, res.output
    assert 'requirements = "pyproject.toml"' in (project / "metorial.toml").read_text()


# -- units -------------------------------------------------------------------------------


def test_the_most_specific_compatible_wheel_is_locked() -> None:
    wheels: list[dict[str, object]] = [
        {"name": f"foo-1.0-{tag}.whl", "hashes": {"sha256": tag}}
        for tag in (
            "py3-none-any",
            "cp312-cp312-manylinux2014_x86_64",
            "cp312-cp312-manylinux_2_34_x86_64",
            "cp312-abi3-manylinux_2_28_x86_64",
        )
    ]
    assert choose_wheel(wheels, "3.12", "x86_64-manylinux_2_34")[1] == (  # type: ignore[index]
        "cp312-cp312-manylinux_2_34_x86_64"
    )
    assert choose_wheel(wheels, "3.11", "x86_64-manylinux2014")[1] == "py3-none-any"  # type: ignore[index]
    assert choose_wheel(wheels[1:2], "3.12", "aarch64-manylinux_2_34") is None


def test_lock_diff_and_render_are_stable() -> None:
    a = Lock("3.12", "x", "d", (Locked("a", "1", "a.whl", "1" * 64, False),))
    b = Lock("3.12", "x", "d", (Locked("b", "2", "b.whl", "2" * 64, True),))
    assert [c.line() for c in diff(a, b)] == ["- a 1", "+ b 2"]
    assert render(b) == render(b) and "boot = true" in render(b)
