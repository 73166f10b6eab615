"""The build-time load check loads exactly what the zip holds, from a task root laid out
from the Layout and kept between checks (only what changed is written again) instead of
extracting the zip; and the bytecode it keeps never stands in for an edited source."""

from __future__ import annotations

import json
import os
import shutil
import stat
import zipfile
from pathlib import Path
from typing import Any

import pytest

from pmcp_build.local.runner import task_root_from_layout
from pmcp_build.manifest.load import load_manifest
from pmcp_build.package.build import build

from .conftest import EXAMPLES


@pytest.fixture
def example(tmp_path: Path) -> Path:
    root = tmp_path / "example"
    shutil.copytree(EXAMPLES / "python-server", root, ignore=shutil.ignore_patterns(".pmcp"))
    return root


def _tree(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file with its mode and bytes, and every folder (mode 0, no bytes)."""
    found = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs:
            found[(Path(dirpath) / name).relative_to(root).as_posix() + "/"] = (0, b"")
        for name in files:
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            found[rel] = (stat.S_IMODE(full.lstat().st_mode), full.read_bytes())
    return found


def test_task_root_matches_the_zip_file_for_file_and_mode(example: Path, tmp_path: Path) -> None:
    # Modes a umask or an editor leaves: an executable script, a group-writable file.
    (example / "tools").mkdir()
    (example / "tools" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (example / "tools" / "run.sh").chmod(0o775)
    (example / "notes.txt").write_text("group writable\n")
    (example / "notes.txt").chmod(0o664)
    old = os.umask(0o077)  # a strict umask must not leak into the root's modes
    try:
        package = build(load_manifest(example / "metorial.toml"))
        root = tmp_path / "root"
        root.mkdir()
        assert task_root_from_layout(package.layout, root) is not None
    finally:
        os.umask(old)

    expected = _zip_tree(package.path)
    assert _tree(root) == expected  # same names, modes, bytes, folders: none missed or extra
    assert expected["tools/run.sh"][0] == 0o755 and expected["notes.txt"][0] == 0o644

    # Copies, never links: a server writing to its task root must not reach the cache.
    dependency = next(e for e in package.layout.entries if e.origin == "dependency")
    assert dependency.src is not None
    assert (root / dependency.path).stat().st_ino != dependency.src.stat().st_ino


def _zip_tree(path: Path) -> dict[str, tuple[int, bytes]]:
    """The same for a zip: its files, and the folders their paths imply."""
    with zipfile.ZipFile(path) as zf:
        found = {
            info.filename: (stat.S_IMODE(info.external_attr >> 16), zf.read(info))
            for info in zf.infolist()
        }
    for name in list(found):
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            found["/".join(parts[:i]) + "/"] = (0, b"")
    return found


def test_laying_out_again_rewrites_only_what_changed(example: Path, tmp_path: Path) -> None:
    """The check keeps its root between builds: whatever the last layout or the server
    left there must not survive into the next one."""
    (example / "lib").mkdir()
    (example / "lib" / "gone.py").write_text("X = 1\n")
    (example / "lib" / "kept.py").write_text("Y = 1\n")
    first = build(load_manifest(example / "metorial.toml"))
    root = tmp_path / "root"
    root.mkdir()
    done = task_root_from_layout(first.layout, root)
    assert done is not None
    record, written = done
    assert len(written) == len(first.layout.entries)

    # The server wrote into its root; a user removed one file and edited another.
    (root / "scratch").mkdir()
    (root / "scratch" / "out.txt").write_text("left by the server\n")
    (root / "stray.txt").write_text("also\n")
    (root / "requirements.txt").write_text("written through the root\n")
    (root / "lib" / "kept.py").chmod(0o755)
    (example / "lib" / "gone.py").unlink()
    (example / "server.py").write_text((example / "server.py").read_text() + "\n# edit\n")
    second = build(load_manifest(example / "metorial.toml"))

    again = task_root_from_layout(second.layout, root, json.loads(json.dumps(record)))
    assert again is not None
    assert _tree(root) == _zip_tree(second.path)
    assert set(again[1]) == {"server.py", "requirements.txt", "lib/kept.py"}


def test_a_source_edited_after_hashing_is_not_laid_out(example: Path, tmp_path: Path) -> None:
    """A small source's bytes are held by the layout (KeepBudget): the root gets them as
    hashed, as the zip does. A file too big to hold and edited since is refused."""
    (example / "big.bin").write_bytes(b"x" * (65 * 1024))
    package = build(load_manifest(example / "metorial.toml"))
    original = (example / "server.py").read_bytes()
    (example / "server.py").write_text("# edited after the layout was made\n")
    root = tmp_path / "root"
    root.mkdir()
    assert task_root_from_layout(package.layout, root) is not None
    assert (root / "server.py").read_bytes() == original
    (example / "big.bin").write_bytes(b"y" * (65 * 1024))
    shutil.rmtree(root)
    root.mkdir()
    assert task_root_from_layout(package.layout, root) is None  # the check extracts the zip


def test_the_check_of_a_source_edited_after_hashing_loads_the_zip(
    example: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check starts before the zip exists (it runs beside the writing); when the
    layout can no longer be laid out (a file it does not hold changed), it waits for the
    zip and loads what that holds."""
    from pmcp_build.local import runner
    from pmcp_build.package import load_check

    unpacked: list[Path] = []
    extract = runner.extract
    monkeypatch.setattr(runner, "extract", lambda z, d: (unpacked.append(z), extract(z, d)))
    monkeypatch.setenv("PMCP_BUILD_LOAD_CHECK", "1")
    (example / "big.bin").write_bytes(b"x" * (65 * 1024))  # too big for the layout to hold
    package = build(load_manifest(example / "metorial.toml"))
    (example / "big.bin").write_bytes(b"y" * (65 * 1024))
    report = load_check.check(package)
    assert report is not None and report.status == "ok" and report.tools > 0
    assert unpacked == [package.path]


def _build_json(cli: Any, example: Path) -> dict[str, Any]:
    result = cli("-C", str(example), "build", "--json", env={"PMCP_BUILD_LOAD_CHECK": "1"})
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


def test_an_edit_of_the_same_size_in_the_same_second_is_loaded(
    cli: Any, example: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A .pyc is valid for a source of the same mtime (whole seconds) and size: the
    bytecode kept under the check's pycache prefix must not serve the old server.py.
    Both checks' files are given the same second, as two quick builds would."""
    from pmcp_build.local import runner

    lay_out = runner.task_root_from_layout

    def same_second(layout: Any, dest: Path, held: Any = None) -> Any:
        done = lay_out(layout, dest, held)
        for entry in layout.entries:
            if entry.origin != "dependency":
                os.utime(dest / entry.path, ns=(1_700_000_000 * 10**9,) * 2)
        return done

    monkeypatch.setattr(runner, "task_root_from_layout", same_second)
    server = example / "server.py"
    original = server.read_text()
    server.write_text(original + "\nTOOLS = TOOLS[:2]\n")
    first = _build_json(cli, example)
    assert first["server"]["tools"] == 2

    server.write_text(original + "\nTOOLS = TOOLS[:1]\n")  # the same size
    again = _build_json(cli, example)
    assert again["package"]["sha256"] != first["package"]["sha256"]
    assert again["server"]["tools"] == 1
