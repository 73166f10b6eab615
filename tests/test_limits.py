"""What a package may hold: only Lambda's own limits refuse a build (250 MB unzipped);
a package of many files is a warning naming its largest folders, and a zip of more
than 65,535 members carries ZIP64 end records."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from pmcp_build.layout.model import entry_from_bytes, make_layout
from pmcp_build.package.zipwriter import write_zip

from .helpers import python_project


def test_a_30k_file_source_builds_with_a_warning_naming_its_largest_folders(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = python_project(tmp_path / "big", requirements="")
    # Hard links to one small file a folder: a link costs a quarter of a new file, and
    # the build reads, hashes and zips each path as a file of its own.
    for d in range(30):
        folder = root / ("data" if d < 21 else "more") / f"d{d:02d}"
        folder.mkdir(parents=True)
        first = folder / "f0000.txt"
        first.write_text(f"{d}\n")
        for n in range(1, 1000):
            os.link(first, folder / f"f{n:04d}.txt")
    from pmcp_build.package import rebuild

    monkeypatch.setattr(rebuild, "_RACY_NS", 0)  # files written by the test are trusted
    result = cli("-C", str(root), "build", "--json")
    assert result.exit_code == 0, result.output
    warning = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1, result.stderr
    assert "files, more than a server usually needs" in warning[0]
    assert "data/ (21,000 files), more/ (9,000 files)" in warning[0]
    assert "[source].exclude" in warning[0]
    built = json.loads(result.stdout)
    assert built["layout"]["file_count"] > 30_000
    with zipfile.ZipFile(built["package"]["path"]) as zf:
        assert len(zf.namelist()) == built["layout"]["file_count"]
    # A one-file rebuild takes the fast path, and says the same.
    from pmcp_build import entry
    from pmcp_build.layout import model

    monkeypatch.setattr(model, "_warned", set())  # once per process: this is a new one
    (root / "more" / "d25" / "f0000.txt").write_text("edited\n")
    assert entry.fast_build(["-C", str(root), "build", "--json"])
    out, err = capsys.readouterr()
    assert [line for line in err.splitlines() if line.startswith("warning:")] == warning
    assert json.loads(out)["package"]["sha256"] != built["package"]["sha256"]


def test_the_largest_folder_is_named_down_to_where_its_files_divide() -> None:
    from pmcp_build.layout.model import FILE_COUNT_WARNING, file_count_warning

    site = ".venv-old/lib/python3.12/site-packages"
    paths = [f"{site}/pkg{n % 2}/m{n}.py" for n in range(FILE_COUNT_WARNING)]
    paths += ["server.py", "data/a.txt"]
    message = file_count_warning(paths)
    assert message is not None
    assert f"largest folders: {site}/ ({FILE_COUNT_WARNING:,} files), data/ (1 files)" in message
    assert file_count_warning(paths[: FILE_COUNT_WARNING - 10]) is None


def test_a_70k_member_zip_has_zip64_end_records_and_reads_back(tmp_path: Path) -> None:
    count = 70_000
    entries = [entry_from_bytes(f"f/{n:05d}", b"%d" % n, "source") for n in range(count)]
    layout = make_layout(entries, "python3.12", "index.handler", "x86_64")
    digest, _ = write_zip(layout, tmp_path / "a.zip")
    again, _ = write_zip(layout, tmp_path / "b.zip")
    assert digest == again  # deterministic, ZIP64 records included
    data = (tmp_path / "a.zip").read_bytes()
    assert hashlib.sha256(data).hexdigest() == digest
    assert data[-22:-18] == b"PK\x05\x06" and data[-98:-94] == b"PK\x06\x06"  # record, locator
    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        names = zf.namelist()
        assert len(names) == count and names[-1] == "f/69999"
        assert zf.read("f/12345") == b"12345"
        assert zf.testzip() is None
    if shutil.which("unzip"):
        proc = subprocess.run(
            ["unzip", "-tqq", str(tmp_path / "a.zip")], capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("count", [0, 1, 0xFFFF])
def test_up_to_65535_members_the_end_record_is_the_classic_one(count: int) -> None:
    from pmcp_build.package.zipwriter import end_records

    assert end_records(count, 10, 20) == (
        b"PK\x05\x06" + bytes(4) + count.to_bytes(2, "little") * 2 + (10).to_bytes(4, "little")
        + (20).to_bytes(4, "little") + bytes(2)
    )  # fmt: skip
