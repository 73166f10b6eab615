"""The zip's bytes depend on the pinned deflate alone: not on the system zlib, the CPU's
instruction set, the number of worker threads, the cache state or memory bounds.

The golden sha256 below is the package format's contract. It changes only when the
deflate backend (pyproject pins `deflate` exactly), its level or the writer's format
changes, and then every package's sha256 changes once: say so in the release notes.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import pytest

from pmcp_build.layout.model import Entry, entry_from_bytes, make_layout
from pmcp_build.package import zipwriter
from pmcp_build.package.remote_steps import zip_problem
from pmcp_build.package.zipwriter import MemberCache, MemberPack, index_zip, write_pack, write_zip

GOLDEN_SHA256 = "00e833f4e2431c3fea466ba682dcf2f488ac78d82baaa106d4c7deeaf5a9ee96"


def corpus() -> list[Entry]:
    """Every kind of member the writer treats differently, from a fixed seed."""
    rng = random.Random(11)
    words = [
        bytes(rng.choice(b"etaoinshrdlu_") for _ in range(rng.randint(2, 9))) for _ in range(300)
    ]
    code = b"\n".join(
        b"def f%d(x):\n    return x * %d  # " % (i, i) + rng.choice(words) for i in range(4000)
    )
    files = {
        "empty.txt": b"",
        "tiny.txt": b"tiny",  # below the deflate threshold: stored
        "src/server.py": code,  # compressible, > 256 KiB: sampled, then deflated
        "src/words.txt": b" ".join(rng.choice(words) for _ in range(60_000)),
        "data/random.bin": rng.randbytes(300_000),  # sampled: stored without deflating
        "data/small-random.bin": rng.randbytes(5_000),  # deflated, does not shrink: stored
        "data/pages.db": b"".join(
            rng.randbytes(40) + bytes(4056) for _ in range(80)
        ),  # mostly zero pages
        "naïve/ünïcode.py": "print('é')\n".encode(),
    }
    entries = [entry_from_bytes(path, data, "source") for path, data in files.items()]
    entries.append(
        entry_from_bytes("bootstrap", b"#!/bin/sh\nexec python3 -m x\n" * 4, "source", 0o755)
    )
    return entries


def _zip(tmp_path: Path, name: str = "out.zip", cache: MemberCache | None = None) -> Path:
    layout = make_layout(corpus(), "python3.12", "index.handler", "x86_64")
    dest = tmp_path / name
    digest, _ = write_zip(layout, dest, cache)
    assert digest == hashlib.sha256(dest.read_bytes()).hexdigest()
    return dest


def test_golden_zip_and_it_unpacks(tmp_path: Path) -> None:
    dest = _zip(tmp_path)
    with zipfile.ZipFile(dest) as zf:
        assert zf.testzip() is None
        by_name = {i.filename: i for i in zf.infolist()}
        for entry in corpus():
            assert zf.read(entry.path) == entry.data
            assert by_name[entry.path].external_attr >> 16 == 0o100000 | entry.mode
        assert by_name["data/random.bin"].compress_type == zipfile.ZIP_STORED
        assert by_name["tiny.txt"].compress_type == zipfile.ZIP_STORED
        assert by_name["src/server.py"].compress_type == zipfile.ZIP_DEFLATED
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == GOLDEN_SHA256


def test_size_within_3_percent_of_zlib_level_6(tmp_path: Path) -> None:
    for entry in corpus():
        data = entry.data or b""
        if len(data) < 1000:
            continue
        ours = len(zipwriter.compress(data).payload)
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        theirs = min(len(c.compress(data) + c.flush()), len(data))
        assert ours <= theirs * 1.03, entry.path


def test_same_bytes_with_any_worker_count_memory_bound_and_pack_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = make_layout(corpus(), "python3.12", "index.handler", "x86_64")
    _, written = write_zip(layout, tmp_path / "a.zip")
    expected = (tmp_path / "a.zip").read_bytes()
    monkeypatch.setattr(zipwriter, "_workers", lambda: 1)
    assert _zip(tmp_path, "b.zip").read_bytes() == expected
    monkeypatch.setattr(zipwriter, "_workers", lambda: 4)
    monkeypatch.setattr(zipwriter, "_INFLIGHT_BYTES", 1)  # one member at a time
    assert _zip(tmp_path, "c.zip").read_bytes() == expected
    # Half the members from a pack (the previous zip), half compressed: same bytes.
    half = [w for i, w in enumerate(written) if i % 2]
    index_zip(tmp_path / "prev.json", tmp_path / "a.zip", half)
    cache = MemberCache((MemberPack(tmp_path / "prev.json"),))
    assert len(cache.packs[0]) == len(half)
    assert _zip(tmp_path, "d.zip", cache).read_bytes() == expected


def test_big_members_first_largest_first_and_compressing_ahead_changes_no_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Members of BIG_MEMBER bytes or more are written first, largest first, then the rest in
    layout order (a big file met last would be deflated on one core alone); members
    compressed ahead from the layout's bytes (a cold build's big assets) are taken by
    content, not compressed again, and the zip is byte for byte the same."""
    monkeypatch.setattr(zipwriter, "BIG_MEMBER", 4096)
    layout = make_layout(corpus(), "python3.12", "index.handler", "x86_64")
    digest, written = write_zip(layout, tmp_path / "a.zip")
    big = sorted((e for e in layout.entries if e.size >= 4096), key=lambda e: (-e.size, e.path))
    small = [e.path for e in layout.entries if e.size < 4096]
    assert len(big) >= 4 and small
    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        infos = zf.infolist()
        # Listed in layout order (the central directory); the bytes big-first.
        assert [i.filename for i in infos] == [e.path for e in layout.entries]
        by_offset = sorted(infos, key=lambda i: i.header_offset)
        assert [i.filename for i in by_offset] == [e.path for e in big] + small
        assert all(zf.read(e.path) == e.data for e in layout.entries)
    # What a pack records stays in layout order, and a shared cache's copy of this zip
    # is checked against the layout's order.
    assert [w.sha256 for w in written] == [e.sha256 for e in layout.entries]
    assert zip_problem((tmp_path / "a.zip").read_bytes(), layout) is None

    # The budget: one file per worker whatever its size, then the byte bound.
    monkeypatch.setattr(zipwriter, "_workers", lambda: 1)
    monkeypatch.setattr(zipwriter, "_INFLIGHT_BYTES", 1)
    assert zipwriter.compress_ahead(big[0].sha256, big[0].data or b"")
    assert not zipwriter.compress_ahead(big[1].sha256, big[1].data or b"")
    assert not zipwriter.compress_ahead("0" * 64, b"tiny")  # below BIG_MEMBER: the writer's
    zipwriter.drop_ahead()
    monkeypatch.setattr(zipwriter, "_INFLIGHT_BYTES", 32 * 1024 * 1024)
    assert all(zipwriter.compress_ahead(e.sha256, e.data or b"") for e in big)
    produced: list[str] = []
    produce = zipwriter._produce

    def spy(batch: list[Entry]) -> list[zipwriter.Member]:
        produced.extend(e.path for e in batch)
        return produce(batch)

    monkeypatch.setattr(zipwriter, "_produce", spy)
    again, _ = write_zip(layout, tmp_path / "b.zip")
    assert again == digest
    assert produced and not {e.path for e in big} & set(produced)
    assert not zipwriter._ahead  # the writer let go of what it took


def test_packs_serve_members_and_a_stale_pack_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = make_layout(corpus(), "python3.12", "index.handler", "x86_64")
    digest, written = write_zip(layout, tmp_path / "a.zip")
    index = tmp_path / "set" / "members.json"
    write_pack(index, tmp_path / "a.zip", written)
    assert len(MemberPack(index)) == len({e.sha256 for e in layout.entries})
    index_zip(tmp_path / "prev.json", tmp_path / "a.zip", written)
    for source in (index, tmp_path / "prev.json"):
        # Everything from the pack: no compression at all, same bytes.
        with monkeypatch.context() as m:
            m.setattr(zipwriter, "compress", None)
            again, _ = write_zip(layout, tmp_path / "b.zip", MemberCache((MemberPack(source),)))
        assert again == digest
    # A pack of another format (a deflate bump), a truncated pack, a zip changed in
    # place since it was indexed (same size and mtime): not used.
    meta = json.loads(index.read_text())
    index.write_text(json.dumps({**meta, "format": "zlib-L6"}))
    assert len(MemberPack(index)) == 0
    index.write_text(json.dumps(meta))
    pack = index.with_suffix(".pack")
    pack.write_bytes(pack.read_bytes()[:-1])
    assert len(MemberPack(index)) == 0
    zip_path = tmp_path / "a.zip"
    st = zip_path.stat()
    data = bytearray(zip_path.read_bytes())
    data[len(data) // 2] ^= 1
    zip_path.write_bytes(bytes(data))
    os.utime(zip_path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert len(MemberPack(tmp_path / "prev.json")) == 0


# -- every code path libdeflate can take on this CPU ------------------------------------

# libdeflate picks CPU-specific code at run time from a feature word it fills on first
# use; bit 31 means "already detected". In this wheel only the checksums (crc32,
# adler32) and the decompressor dispatch; the compressor's SIMD (matchfinder init and
# rebase) is chosen at compile time and computes the same values. Forcing the word
# before first use drives every path this CPU supports; a feature it lacks is never
# forced (that would be an illegal instruction, not a path).
_KNOWN = 1 << 31
_SYMBOLS = ("libdeflate_x86_cpu_features", "libdeflate_arm_cpu_features")

_CHILD = r"""
import ctypes, hashlib, json, sys, tempfile, zlib
from pathlib import Path
import deflate, deflate._deflate as native
sys.path.insert(0, sys.argv[1])
from test_zip_pinned import corpus, _SYMBOLS
from pmcp_build.layout.model import make_layout
from pmcp_build.package.zipwriter import write_zip
lib = ctypes.CDLL(native.__file__)
word = None
for name in _SYMBOLS:
    try:
        word = ctypes.c_uint32.in_dll(lib, name)
    except ValueError:
        continue
force = int(sys.argv[2])
if word is not None and force >= 0:
    word.value = force
layout = make_layout(corpus(), "python3.12", "index.handler", "x86_64")
with tempfile.TemporaryDirectory() as tmp:
    digest, _ = write_zip(layout, Path(tmp) / "x.zip")
ok = True
for e in layout.entries:
    data = e.data or b""
    packed = deflate.deflate_compress(data, 6)
    ok &= deflate.deflate_decompress(packed, len(data)) == data
    ok &= deflate.crc32(data) == zlib.crc32(data) and deflate.adler32(data) == zlib.adler32(data)
print(json.dumps({"word": None if word is None else word.value, "sha256": digest, "ok": ok}))
"""


def _child(force: int) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(Path(__file__).parent), str(force)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def test_identical_output_on_every_cpu_dispatch_path() -> None:
    detected = _child(-1)  # as this CPU would run it
    assert detected["ok"] and detected["sha256"] == GOLDEN_SHA256
    word = detected["word"]
    if word is None:
        pytest.skip("this libdeflate build has no run-time CPU dispatch to force")
    assert isinstance(word, int) and word & _KNOWN
    features = [1 << b for b in range(31) if word & (1 << b)]
    # Generic C only; all; all but each feature (the next best path for each).
    masks = {0, word & ~_KNOWN} | {(word & ~_KNOWN) & ~f for f in features}
    for mask in sorted(masks):
        forced = _child(_KNOWN | mask)
        assert forced["word"] == _KNOWN | mask
        assert forced["ok"], f"checksums or round trip differ with features {mask:#x}"
        assert forced["sha256"] == GOLDEN_SHA256, f"zip differs with features {mask:#x}"


def test_the_writer_does_not_use_the_system_zlib_for_deflate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A different system zlib (zlib-ng, a new release) changes nothing."""

    def refuse(*args: object, **kwargs: object) -> object:
        raise AssertionError("system zlib used for deflate")

    monkeypatch.setattr(zlib, "compressobj", refuse)
    monkeypatch.setattr(zlib, "compress", refuse)
    assert hashlib.sha256(_zip(tmp_path).read_bytes()).hexdigest() == GOLDEN_SHA256
