"""The fast path of `pmcp-build build` (pmcp_build/entry.py, package/rebuild.py): it
prints exactly what the full build prints and writes the same zip, and it steps aside
for anything but file-content edits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pmcp_build import entry
from pmcp_build.package import rebuild

from .helpers import python_project


@pytest.fixture
def project(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(rebuild, "_RACY_NS", 0)  # files written by the test are trusted
    root = python_project(tmp_path / "p", requirements="")
    (root / "pkg").mkdir()
    (root / "pkg" / "util.py").write_text("X = 1\n")
    result = cli("-C", str(root), "build", "--json")
    assert result.exit_code == 0, result.output
    return root


def _fast(root: Path, capsys: pytest.CaptureFixture[str], *args: str) -> dict | None:
    cwd = os.getcwd()
    try:
        done = entry.fast_build(["-C", str(root), "build", *args])
    finally:
        os.chdir(cwd)
    out = capsys.readouterr().out
    return (json.loads(out) if "--json" in args else {"text": out}) if done else None


def _full(cli, root: Path, *args: str) -> str:
    result = cli("-C", str(root), "build", *args)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_no_change_and_content_edits_match_the_full_build(
    cli, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    warm = _fast(project, capsys, "--json")
    assert warm is not None and warm == json.loads(_full(cli, project, "--json"))
    (project / "pkg" / "util.py").write_text("X = 2  # edited\n")
    (project / "server.py").write_text((project / "server.py").read_text() + "\n# edit\n")
    edited = _fast(project, capsys, "--json")
    assert edited is not None
    assert edited["package"]["sha256"] != warm["package"]["sha256"]
    full = json.loads(_full(cli, project, "--json"))
    assert edited == full  # same zip, same layout, same output
    text = _fast(project, capsys)
    assert text is not None and text["text"] == _full(cli, project)


@pytest.mark.parametrize(
    "change",
    [
        "new file",
        "removed file",
        "renamed file",
        "manifest",
        "requirements",
        "now a symlink",
        "unpackaged root file",
        "nested .gitignore",
        "tool code",
    ],
)
def test_anything_but_content_edits_takes_the_full_build(
    cli,
    project: Path,
    capsys: pytest.CaptureFixture[str],
    change: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    util = project / "pkg" / "util.py"
    if change == "new file":
        (project / "pkg" / "new.py").write_text("Y = 1\n")
    elif change == "removed file":
        util.unlink()
    elif change == "renamed file":
        util.rename(project / "pkg" / "other.py")
    elif change == "manifest":
        manifest = project / "metorial.toml"
        manifest.write_text(manifest.read_text().replace('name = "tiny"', 'name = "tiny2"'))
    elif change == "requirements":
        (project / "requirements.txt").write_text("# nothing, but different\n")
    elif change == "unpackaged root file":  # e.g. an ignore file a walk could read
        manifest = project / "metorial.toml"
        manifest.write_text(f'[source]\nexclude = ["notes.txt"]\n\n{manifest.read_text()}')
        (project / "notes.txt").write_text("one\n")
        _full(cli, project, "--json")
        assert _fast(project, capsys, "--json") is not None
        (project / "notes.txt").write_text("two\n")
    elif change == "nested .gitignore":  # packaged or not, it decides what is packaged
        (project / "pkg" / ".gitignore").write_text("# nothing yet\n")
        _full(cli, project, "--json")
        assert _fast(project, capsys, "--json") is not None
        (project / "pkg" / ".gitignore").write_text("util.py\n")
    elif change == "tool code":
        monkeypatch.setattr(rebuild, "_tool_stamp", lambda: "pmcp-build edited since")
    else:
        (project / "pkg" / "real.py").write_text("X = 3\n")
        util.unlink()
        util.symlink_to("real.py")
    assert _fast(project, capsys, "--json") is None


def test_folders_skipped_are_those_the_source_walk_never_enters() -> None:
    from pmcp_build.source.tree import ALWAYS_EXCLUDED

    folders = {p for p in ALWAYS_EXCLUDED if not p.startswith("*") and p != ".DS_Store"}
    folders |= {p.removeprefix("**/") for p in ALWAYS_EXCLUDED if p.startswith("**/")}
    assert folders == rebuild.SKIP_DIRS


def test_forms_it_does_not_handle_go_to_the_cli(project: Path) -> None:
    for argv in (
        ["build", "--target", "dev"],
        ["-C", str(project), "plan"],
        ["--debug", "build"],
        ["-C", str(project), "build", "--json", "extra"],
    ):
        assert entry.fast_build(argv) is False


def test_bytecode_packages_rebuild_only_when_nothing_changed(
    cli, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = project / "metorial.toml"
    manifest.write_text(manifest.read_text().replace("[runtime]\n", "[runtime]\nbytecode = true\n"))
    _full(cli, project, "--json")
    assert _fast(project, capsys, "--json") is not None
    (project / "server.py").write_text((project / "server.py").read_text() + "\n# edit\n")
    assert _fast(project, capsys, "--json") is None  # the .pyc must be recompiled


@pytest.mark.parametrize("form", [["--json"], []], ids=["json", "as typed"])
def test_the_installed_command_takes_the_fast_path(project: Path, form: list[str]) -> None:
    """Through the real entry point: no typer, no pydantic imported for a rebuild, and
    no rich for its tree either (it costs what --json costs)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    code = (
        "import sys; from pmcp_build.package import rebuild; rebuild._RACY_NS = 0; "
        "from pmcp_build.entry import main; sys.argv[1:] = ['-C', sys.argv[1], 'build', "
        "*sys.argv[2:]]; main(); print(json.dumps(sorted(m for m in ('typer', 'pydantic', "
        "'rich') if m in sys.modules)), file=sys.stderr)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", "import json; " + code, str(project), *form],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stderr.strip().splitlines()[-1]) == []
    if form:
        assert json.loads(proc.stdout)["package"]["sha256"]
    else:
        assert proc.stdout.splitlines()[-1].startswith(f"wrote {project}")


def test_the_load_checks_task_root_is_the_zips_contents(cli, project: Path, tmp_path: Path) -> None:
    """The build-time load check lays the task root out from the layout instead of
    inflating the zip: it must hold exactly the zip's files, byte for byte, on the full
    build and on the fast path alike (a missed or altered entry fails here)."""
    import zipfile

    from pmcp_build.local.runner import task_root_from_layout
    from pmcp_build.manifest.load import load_manifest
    from pmcp_build.package.build import build

    def same_as_zip(package: Any) -> None:
        root = tmp_path / f"root-{package.sha256[:8]}"
        root.mkdir()
        assert task_root_from_layout(package.layout, root) is not None
        laid = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
        with zipfile.ZipFile(package.path) as zf:
            zipped = {n: zf.read(n) for n in zf.namelist() if not n.endswith("/")}
        assert laid == zipped

    warm = rebuild.rebuild(project / "metorial.toml")
    assert warm is not None
    same_as_zip(warm)
    (project / "server.py").write_text((project / "server.py").read_text() + "# edited\n")
    edited = rebuild.rebuild(project / "metorial.toml")
    assert edited is not None
    same_as_zip(edited)
    (project / "data.txt").write_text("a new file: the full build\n")
    same_as_zip(build(load_manifest(project / "metorial.toml")))
