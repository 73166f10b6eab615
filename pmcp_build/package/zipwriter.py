"""A deterministic zip writer.

We write the format ourselves (local headers, central directory, end record) rather
than through `zipfile` for two reasons: every byte is under our control (fixed
1980-01-01 timestamps, Unix modes, no extra fields, UTF-8 names), and members can be
deflated in parallel threads (zlib releases the GIL) and reused from a cache keyed
by content, so a rebuild only compresses what changed.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pmcp_build.layout.model import Entry, Layout

LEVEL = 6
_DOS_DATE = (0 << 9) | (1 << 5) | 1  # 1980-01-01
_DOS_TIME = 0
_VERSION_MADE_BY = (3 << 8) | 20  # Unix, spec 2.0
_VERSION_NEEDED = 20
_FLAG_UTF8 = 0x0800
_STORED, _DEFLATED = 0, 8
# Below this size deflate rarely pays for its header; above it a member that does not
# shrink (already compressed: .db pages, .png, .so sections) is stored as is.
_MIN_DEFLATE = 64


@dataclass(frozen=True)
class Member:
    name: str
    mode: int
    method: int
    crc: int
    size: int
    payload: bytes  # compressed (or stored) bytes


class BlobCache:
    """Compressed members by (content sha256, level): rebuilds skip zlib entirely."""

    def __init__(self, root: Path | None) -> None:
        self.root = root

    def _path(self, sha256: str) -> Path | None:
        if self.root is None:
            return None
        return self.root / sha256[:2] / f"{sha256}.z{LEVEL}"

    def get(self, sha256: str) -> tuple[int, int, bytes] | None:
        path = self._path(sha256)
        if path is None:
            return None
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        if len(raw) < 8:
            return None
        method, crc = struct.unpack("<II", raw[:8])
        return method, crc, raw[8:]

    def put(self, sha256: str, method: int, crc: int, payload: bytes) -> None:
        path = self._path(sha256)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}-{threading.get_ident()}")
        tmp.write_bytes(struct.pack("<II", method, crc) + payload)
        os.replace(tmp, path)


def _compress(entry: Entry, cache: BlobCache) -> Member:
    cached = cache.get(entry.sha256)
    if cached is not None:
        method, crc, payload = cached
        return Member(entry.path, entry.mode, method, crc, entry.size, payload)
    data = entry.read()
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        raise RuntimeError(f"{entry.path} changed while the package was being built")
    crc = zlib.crc32(data)
    method, payload = _STORED, data
    if len(data) >= _MIN_DEFLATE:
        comp = zlib.compressobj(LEVEL, zlib.DEFLATED, -15)
        deflated = comp.compress(data) + comp.flush()
        if len(deflated) < len(data):
            method, payload = _DEFLATED, deflated
    cache.put(entry.sha256, method, crc, payload)
    return Member(entry.path, entry.mode, method, crc, len(data), payload)


def compress_all(
    entries: Iterable[Entry], cache: BlobCache, workers: int | None = None
) -> list[Member]:
    entries = list(entries)
    members: dict[int, Member] = {}
    misses: list[tuple[int, Entry]] = []
    for index, entry in enumerate(entries):  # cache hits need no thread
        cached = cache.get(entry.sha256)
        if cached is None:
            misses.append((index, entry))
        else:
            method, crc, payload = cached
            members[index] = Member(entry.path, entry.mode, method, crc, entry.size, payload)
    workers = workers or min(8, os.cpu_count() or 1)
    if workers <= 1 or len(misses) < 4:
        members.update((i, _compress(e, cache)) for i, e in misses)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            done = pool.map(lambda item: (item[0], _compress(item[1], cache)), misses)
            members.update(done)
    return [members[i] for i in range(len(entries))]


def write_zip(layout: Layout, dest: Path, cache: BlobCache | None = None) -> None:
    """Write the layout's entries, in layout order, to `dest` (atomically)."""
    members = compress_all(layout.entries, cache or BlobCache(None))
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        _write_members(fh, members)
    os.replace(tmp, dest)


def _write_members(fh: object, members: list[Member]) -> None:
    write = fh.write  # type: ignore[attr-defined]
    central: list[bytes] = []
    offset = 0
    for m in members:
        name = m.name.encode("utf-8")
        flags = 0 if name.isascii() else _FLAG_UTF8
        header = struct.pack(
            "<IHHHHHIIIHH",
            0x04034B50,
            _VERSION_NEEDED,
            flags,
            m.method,
            _DOS_TIME,
            _DOS_DATE,
            m.crc,
            len(m.payload),
            m.size,
            len(name),
            0,
        )
        write(header)
        write(name)
        write(m.payload)
        external = ((0o100000 | m.mode) << 16) & 0xFFFFFFFF
        central.append(
            struct.pack(
                "<IHHHHHHIIIHHHHHII",
                0x02014B50,
                _VERSION_MADE_BY,
                _VERSION_NEEDED,
                flags,
                m.method,
                _DOS_TIME,
                _DOS_DATE,
                m.crc,
                len(m.payload),
                m.size,
                len(name),
                0,
                0,
                0,
                0,
                external,
                offset,
            )
            + name
        )
        offset += len(header) + len(name) + len(m.payload)
    cd = b"".join(central)
    if len(members) > 0xFFFF or offset > 0xFFFFFFFF:
        raise ValueError("package too large for a non-zip64 archive")
    write(cd)
    write(
        struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(cd), offset, 0)
    )
