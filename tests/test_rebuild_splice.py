"""A one-file rebuild splices the edited members into the previous zip
(package/splice.py) and records the edit in a small state file (package/rebuild.py):
the zip must be the one the writer writes, byte for byte, and every edit the
filesystem lets us see must be seen."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from pmcp_build import entry
from pmcp_build.layout.model import Entry, Layout, entry_from_bytes, make_layout
from pmcp_build.layout.view import build_json, layout_json
from pmcp_build.package import rebuild
from pmcp_build.package.write import Package, layout_fingerprint
from pmcp_build.package.zipwriter import index_zip, write_zip

from .helpers import python_project

COMPRESSIBLE = b"the same words again and again, " * 200
RANDOM = hashlib.sha256(b"seed").digest() * 2048  # 64 KiB that deflate cannot shrink


def _layout(contents: dict[str, tuple[bytes, int]]) -> Layout:
    entries = [entry_from_bytes(p, data, "source", mode) for p, (data, mode) in contents.items()]
    return make_layout(entries, "python3.12", "index.handler", "x86_64")


BASE = {
    "a.py": (b"A = 1\n", 0o644),
    "données/é.txt": (COMPRESSIBLE, 0o644),
    "m/big.bin": (RANDOM, 0o644),
    "m/run.sh": (b"#!/bin/sh\necho hi\n" * 10, 0o755),
    "z.py": (b"Z = 26\n", 0o644),
}
EDITS = {
    "first, smaller": {"a.py": (b"A=2", 0o644)},
    "last, larger": {"z.py": (COMPRESSIBLE + b"more", 0o644)},
    "non-ascii name, now stored": {"données/é.txt": (b"short", 0o644)},
    "stored, now deflated; mode": {"m/big.bin": (COMPRESSIBLE, 0o755)},
    "several": {"a.py": (RANDOM, 0o644), "m/run.sh": (b"", 0o644), "z.py": (b"Z", 0o644)},
}


# Members of zipwriter.BIG_MEMBER bytes or more are written first, largest first: with
# two of them the zip's order is not the layout's, and the splice must follow the zip's.
HUGE = {
    "b/huge.db": (hashlib.sha256(b"huge").digest() * 40_000, 0o644),
    "c/larger.db": (COMPRESSIBLE * 300, 0o644),
}


@pytest.mark.parametrize("big", [False, True], ids=["small members", "big members first"])
@pytest.mark.parametrize("edit", list(EDITS))
def test_the_spliced_zip_is_the_one_the_writer_writes(tmp_path: Path, edit: str, big: bool) -> None:
    from pmcp_build.package.splice import Replacement, splice
    from pmcp_build.package.zipwriter import write_order

    base = {**BASE, **HUGE} if big else BASE
    old = _layout(base)
    write_zip(old, tmp_path / "old.zip")
    new = _layout({**base, **EDITS[edit]})
    order = write_order(new.entries)
    assert (order != sorted(order)) == big
    expected, expected_written = write_zip(new, tmp_path / "new.zip")
    replaced = [
        Replacement(i, e.path, e.mode, e.sha256, e.read())
        for i, e in enumerate(new.entries)
        if e != old.entries[i]
    ]
    digest, written = splice(
        tmp_path / "old.zip",
        tmp_path / "spliced.zip",
        [e.sha256 for e in new.entries],
        replaced,
        order=order,
    )
    assert (tmp_path / "spliced.zip").read_bytes() == (tmp_path / "new.zip").read_bytes()
    assert digest == expected
    assert written == [(w.sha256, w.method, w.crc, w.offset, w.length) for w in expected_written]
    # What the fast path writes beside it is what the writer would: the package index's
    # key and the previous-build pack's index.
    assert rebuild._fingerprint(new) == layout_fingerprint(new)
    rebuild._index_zip(tmp_path / "fast.json", tmp_path / "spliced.zip", written, digest)
    index_zip(tmp_path / "writer.json", tmp_path / "spliced.zip", expected_written, digest)
    fast, writer = (json.loads((tmp_path / f).read_text()) for f in ("fast.json", "writer.json"))
    assert fast == writer


def test_an_edit_that_can_move_a_member_goes_to_the_writer() -> None:
    """The splice keeps every member where it was; an edit of a member the writer puts
    first by size (or one that grows into one) would move it."""
    from pmcp_build.package.splice import Replacement
    from pmcp_build.package.zipwriter import BIG_MEMBER

    def edit(old_size: int, new_size: int) -> list[Replacement]:
        return [Replacement(0, "a", 0o644, "0" * 64, b"x" * new_size, old_size)]

    assert not rebuild._moves(edit(10, 20))
    assert rebuild._moves(edit(BIG_MEMBER, 20))
    assert rebuild._moves(edit(10, BIG_MEMBER))


@pytest.fixture
def project(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(rebuild, "_RACY_NS", 0)  # files written by the test are trusted
    root = python_project(tmp_path / "p", requirements="")
    (root / "pkg").mkdir()
    for n in range(20):
        (root / "pkg" / f"m{n:02d}.py").write_text(f"X = {n}\n")
    result = cli("-C", str(root), "build", "--json")
    assert result.exit_code == 0, result.output
    return root


def _fast(root: Path, capsys: pytest.CaptureFixture[str]) -> str | None:
    cwd = os.getcwd()
    try:
        done = entry.fast_build(["-C", str(root), "build", "--json"])
    finally:
        os.chdir(cwd)
    out = capsys.readouterr().out
    return str(json.loads(out)["package"]["sha256"]) if done else None


def _full(cli, root: Path) -> str:
    result = cli("-C", str(root), "build", "--json", env={"PMCP_NO_FAST_BUILD": "1"})
    assert result.exit_code == 0, result.output
    return str(json.loads(result.stdout)["package"]["sha256"])


def test_an_edit_keeping_size_and_mtime_is_spliced_in_and_the_record_stays(
    cli, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dist = project / ".pmcp" / "dist"
    record = (dist / rebuild.RECORD).read_bytes()
    original = _fast(project, capsys)
    target = project / "pkg" / "m07.py"
    st = target.stat()
    target.write_text("X = 8\n")  # same size
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the mtime put back
    edited = _fast(project, capsys)
    assert edited is not None and edited != original
    assert (dist / rebuild.RECORD).read_bytes() == record  # a state file says it instead
    assert json.loads((dist / rebuild.STATE).read_text())["zip"] == edited
    assert edited == _full(cli, project)  # the writer's zip, byte for byte
    # Back to the first content: the spliced zip is the first build's again.
    target.write_text("X = 9\n")
    assert _fast(project, capsys) == _full(cli, project)
    target.write_text("X = 7\n")
    assert _fast(project, capsys) == original


def test_a_previous_zip_changed_in_place_is_not_spliced_from(
    cli, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dist = project / ".pmcp" / "dist"
    (zipped,) = dist.glob("tiny-*.zip")
    data = bytearray(zipped.read_bytes())
    data[40] ^= 0xFF  # a payload byte: sizes, names and mtime-independent checks agree
    zipped.write_bytes(bytes(data))
    (project / "pkg" / "m03.py").write_text("X = 'edited'\n")
    assert _fast(project, capsys) == _full(cli, project)


def test_many_edits_are_folded_into_the_record(
    cli, project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rebuild, "_STATE_EDITS", 3)
    dist = project / ".pmcp" / "dist"
    for n in range(5):
        (project / "pkg" / f"m{n:02d}.py").write_text(f"X = {n} + 100\n")
    edited = _fast(project, capsys)
    assert edited is not None and not (dist / rebuild.STATE).exists()
    record = json.loads((dist / rebuild.RECORD).read_text())
    assert record["zip"] == edited
    (project / "pkg" / "m09.py").write_text("X = 'one more'\n")
    assert _fast(project, capsys) == _full(cli, project)


def test_the_compact_document_is_what_json_dumps_writes(tmp_path: Path) -> None:
    entries = [
        Entry('a"b\\c.py', "source", 0o644, 3, "ab" * 32, detail=""),
        Entry("é/ü.txt", "asset", 0o755, 5, "cd" * 32, detail='from "x"\u202e'),
    ]
    layout = Layout(tuple(entries), "python3.12", "index.handler", "x86_64", (("n\n", "why"),))
    package = Package(layout, tmp_path / "t.zip", "ef" * 32, 123)
    expected = {
        "package": {
            "path": str(package.path),
            "sha256": package.sha256,
            "code_sha256": package.code_sha256,
            "size": 123,
        },
        "layout": layout_json(layout),
    }
    assert build_json(package, None) == json.dumps(expected) + "\n"
