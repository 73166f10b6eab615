"""A deterministic, streaming zip writer with a pinned deflate.

We write the format ourselves (local headers, central directory, end record) rather
than through `zipfile` because every byte must be under our control: fixed 1980-01-01
timestamps, Unix modes, no extra fields, UTF-8 names.

Deflate is libdeflate (the `deflate` package, pinned to one exact version in
pyproject.toml), not the system zlib: the bytes a deflater emits are not part of any
standard, and distributions that ship zlib-ng as their zlib (or a future zlib) emit
different ones, which would give the same inputs a different sha256 on another machine
and make `plan` see a code change that is not one. libdeflate's compressor has no
run-time CPU dispatch (only its checksums and decompressor do, and those compute
defined values), so its output depends on its version alone; tests/test_zip_pinned.py
forces every dispatch path this CPU offers and checks a golden sha256.

Streaming: members are written in a fixed order (write_order: big ones first, then
layout order) as they become ready, with a bounded number being compressed in threads
(libdeflate releases the GIL), so peak memory follows the largest files (one per
worker), not the package. Compressed members are reused by content from packs read
through mmap (a dependency set's pack, and the previous build's zip),
so a rebuild compresses only what changed and opens two files to reuse the rest.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import deflate

from pmcp_build.layout.model import Entry, Layout
from pmcp_build.package import cache as cache_store

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

# libdeflate level 5: the size of zlib level 6 (1.000x on the example's dependencies,
# 0.987x on the 111 MB bench tree) at about 3x its speed; level 6 is <1% smaller and
# ~15% slower. See bench/README.md.
LEVEL = 5
# Part of every cache key and of the layout fingerprint: a new deflate backend or level
# changes the bytes of every package once, so nothing compressed by another may be reused.
FORMAT = f"libdeflate{deflate.__version__}-L{LEVEL}"

_DOS_DATE = (0 << 9) | (1 << 5) | 1  # 1980-01-01
_DOS_TIME = 0
_VERSION_MADE_BY = (3 << 8) | 20  # Unix, spec 2.0
_VERSION_NEEDED = 20
_FLAG_UTF8 = 0x0800
_STORED, _DEFLATED = 0, 8
# Below this size deflate rarely pays for its header.
_MIN_DEFLATE = 64
# Members at least this big are sampled before being deflated whole: if three 8 KiB
# slices (start, middle, end) do not shrink by 3% at level 1, the member is stored as
# is (already compressed: .png, .whl, .gz, encrypted or random data). A pure function
# of the content, so still deterministic. On the 111 MB bench tree this takes 23% off
# single-core compression time and changes no member's method.
_SAMPLE_FROM = 32 * 1024
_SAMPLE = 8 * 1024
# Bounds on what is being compressed at once (memory follows the largest files: 32 MiB,
# or one file per worker if they are larger).
_INFLIGHT_BYTES = 32 * 1024 * 1024
_BATCH_BYTES = 1024 * 1024
_BATCH_FILES = 256
_INLINE_BYTES = 256 * 1024
# Batches in flight per worker (the byte bound above holds too): enough that the workers
# keep compressing what comes next while the writer waits for a big member at the front
# (two were too few: the workers stood idle while a 24 MB member was deflated ahead).
_BATCHES_PER_WORKER = 8
# Members at least this big are written first, largest first (then the rest in layout
# order): a big file met last would be deflated on one core while the others wait (a
# 24 MB bootstrap sorts after every asset). Largest-first keeps every worker busy to
# the end, and the order is a pure function of the layout (sizes and paths).
BIG_MEMBER = _BATCH_BYTES


def _workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


# Plain slotted classes, not dataclasses or NamedTuples: those generate code at import
# (~0.3 ms a class), and start-up is most of a rebuild.
class Member:
    """A compressed (or stored) member, ready to be written."""

    __slots__ = ("crc", "method", "payload")

    def __init__(self, method: int, crc: int, payload: bytes | memoryview) -> None:
        self.method = method
        self.crc = crc
        self.payload = payload


class Written:
    """Where a member landed in the zip (what a pack records)."""

    __slots__ = ("crc", "length", "method", "offset", "sha256")

    def __init__(self, sha256: str, method: int, crc: int, offset: int, length: int) -> None:
        self.sha256 = sha256
        self.method = method
        self.crc = crc
        self.offset = offset  # of the payload, in the zip
        self.length = length


def compress(data: bytes) -> Member:
    """The one compression decision: stored or deflated, by content alone."""
    crc = deflate.crc32(data)
    if len(data) < _MIN_DEFLATE or _incompressible(data):
        return Member(_STORED, crc, data)
    deflated = deflate.deflate_compress(data, LEVEL)
    if len(deflated) < len(data):
        return Member(_DEFLATED, crc, bytes(deflated))
    return Member(_STORED, crc, data)


def _incompressible(data: bytes) -> bool:
    if len(data) < _SAMPLE_FROM:
        return False
    view = memoryview(data)
    middle = len(data) // 2
    sample = b"".join(
        (view[:_SAMPLE], view[middle : middle + _SAMPLE], view[len(data) - _SAMPLE :])
    )
    return len(deflate.deflate_compress(sample, 1)) > len(sample) * 0.97


DEPENDENCY_PACK = "the dependency set's member pack"  # what warnings call it


class MemberPack:
    """Compressed members of many files in one file, indexed by content sha256.

    Two kinds: a dependency set's pack (its ~1,000 members in one file, shared by every
    project using the set) and the previous build's zip itself, so a rebuild copies the
    unchanged members out of one mmap instead of opening one cache file per member.

    The index (JSON beside it) names the file, its size and its sha256, and the folder
    it belongs in (`owner`: an index moved to another dependency set is not that set's).
    The file is hashed once per process before any member is copied out of it (the
    writer's one extra read on a rebuild); one that does not match is a warning, and
    its members are compressed again from their sources. An index written by another
    version of the tool (another format, no sha256) is passed over quietly.
    """

    def __init__(self, index: Path, label: str = "member pack") -> None:
        self.index_path = index
        self.label = label  # what the warning calls it: "the dependency set's member pack"
        self._meta: dict[str, Any] | None = None
        self._index: dict[str, list[int]] | None = None
        self._map: mmap.mmap | None = None
        self.rejected = False  # the pack failed its check (and has been warned about)

    def _read_index(self) -> dict[str, Any]:
        """The index if it is one this version wrote for this folder; {} otherwise."""
        if self._meta is None:
            self._meta = {}
            try:
                meta = json.loads(self.index_path.read_text())
                if meta.get("format") == FORMAT and isinstance(meta.get("sha256"), str):
                    if meta.get("owner") != self.index_path.parent.name:
                        where = self.index_path.parent / str(meta.get("file"))
                        self._reject(where, f"its index {self.index_path} is another folder's")
                    elif isinstance(meta.get("members"), dict):
                        self._meta = meta
            except (OSError, ValueError, TypeError, AttributeError):
                pass
        return self._meta

    def _load(self) -> dict[str, list[int]]:
        if self._index is None:
            self._index = {}
            meta = self._read_index()
            if not meta:
                return self._index
            try:
                path = self.index_path.parent / meta["file"]
                with open(path, "rb") as fh:
                    size = os.fstat(fh.fileno()).st_size
                    if size != meta["size"]:
                        self._reject(path, f"{path} is {size} bytes, its index says {meta['size']}")
                        return self._index
                    if cache_store.file_sha256(path, fh) != meta["sha256"]:
                        self._reject(path, f"{path} does not match the sha256 it was written with")
                        return self._index
                    if size:
                        self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
                self._index = meta["members"]
            except (OSError, ValueError, KeyError, TypeError):
                self._index = {}
        return self._index

    def _reject(self, path: Path, why: str) -> None:
        """Warned once per file (the zip a reuse check found changed is not warned
        about again as a pack)."""
        self.rejected = True
        cache_store.warn(path, f"{self.label}: {why}; compressing its members again")

    def get(self, sha256: str) -> Member | None:
        found = self._load().get(sha256)
        if found is None or self._map is None:
            return None
        method, crc, offset, length = found
        return Member(method, crc, memoryview(self._map)[offset : offset + length])

    def __len__(self) -> int:
        return len(self._load())

    def needs_writing(self) -> bool:
        """No usable pack: never written, written by another version, or one that failed
        its check. Reads the index only: the file is hashed when a member is wanted."""
        return self.rejected or not self._read_index()


def _write_index(index: Path, meta: dict[str, object]) -> None:
    data = {"format": FORMAT, "owner": index.parent.name, **meta}
    cache_store.write_atomic(index, json.dumps(data, separators=(",", ":")).encode())


def index_zip(
    index: Path, zip_path: Path, members: list[Written], digest: str | None = None
) -> None:
    """Make a freshly written zip (whose sha256 is `digest`; hashed when not given) a
    pack for the next build."""
    size = zip_path.stat().st_size
    digest = digest or cache_store.file_sha256(zip_path)
    table = {m.sha256: [m.method, m.crc, m.offset, m.length] for m in members}
    rel = os.path.relpath(zip_path, index.parent)
    _write_index(index, {"file": rel, "size": size, "sha256": digest, "members": table})


def write_pack(index: Path, zip_path: Path, members: list[Written]) -> None:
    """Copy `members`' payloads out of `zip_path` into a pack file beside `index`."""
    index.parent.mkdir(parents=True, exist_ok=True)
    pack = index.with_suffix(".pack")
    tmp = pack.with_name(f".{pack.name}.tmp{os.getpid()}")
    table: dict[str, list[int]] = {}
    digest = hashlib.sha256()
    offset = 0
    try:
        with open(zip_path, "rb") as src, open(tmp, "wb") as out:
            for m in members:
                if m.sha256 in table:
                    continue
                src.seek(m.offset)
                payload = src.read(m.length)
                out.write(payload)
                digest.update(payload)
                table[m.sha256] = [m.method, m.crc, offset, m.length]
                offset += m.length
        os.replace(tmp, pack)
    finally:
        tmp.unlink(missing_ok=True)
    _write_index(
        index, {"file": pack.name, "size": offset, "sha256": digest.hexdigest(), "members": table}
    )


class MemberCache:
    """Where already compressed members come from: packs, first hit wins."""

    def __init__(self, packs: tuple[MemberPack, ...] = ()) -> None:
        self.packs = packs

    def get(self, sha256: str) -> Member | None:
        for pack in self.packs:
            found = pack.get(sha256)
            if found is not None:
                return found
        return None


# -- compressing ahead of the writer ----------------------------------------------------
#
# A cold build reads and hashes every asset to make the layout, then the writer would
# read each file again and deflate it. A big file can instead be deflated from the
# bytes that were just hashed (one read, one hash), on a worker, while the rest of the
# layout is still being resolved: the writer takes the member by content. Only while
# the budget lasts (one file per worker, then 32 MiB in all), so memory still follows
# the largest files; what the writer does not take (a zip reused after all) is dropped
# at its end. A pure function of the bytes, as every member: the zip is the same.

_ahead: dict[str, Future[list[Member]]] = {}
_ahead_bytes = 0
_ahead_pool: ThreadPoolExecutor | None = None


def compress_ahead(sha256: str, data: bytes) -> bool:
    """Start deflating `data` (whose sha256 is `sha256`) for the next write_zip; False
    when it is small or the budget is spent (the writer then reads the file itself)."""
    global _ahead_bytes, _ahead_pool
    if len(data) < BIG_MEMBER or sha256 in _ahead:
        return False
    if len(_ahead) >= _workers() and _ahead_bytes + len(data) > _INFLIGHT_BYTES:
        return False
    if _ahead_pool is None:
        from concurrent.futures import ThreadPoolExecutor

        _ahead_pool = ThreadPoolExecutor(max_workers=_workers(), thread_name_prefix="ahead")
    _ahead[sha256] = _ahead_pool.submit(lambda: [compress(data)])
    _ahead_bytes += len(data)
    return True


def drop_ahead() -> None:
    """Forget what was compressed ahead (a write took what it needed, or none is due)."""
    global _ahead_bytes
    for future in _ahead.values():
        future.cancel()
    _ahead.clear()
    _ahead_bytes = 0


class ContentChanged(Exception):
    """A file's bytes are not those its layout entry hashed: edited during the build, or
    (a cached file) changed in the cache. The writer stops; the caller decides."""

    def __init__(self, entry: Entry) -> None:
        super().__init__(f"{entry.path} changed while the package was being built")
        self.entry = entry


def _produce(batch: list[Entry]) -> list[Member]:
    members = []
    for entry in batch:
        data = entry.read()
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            raise ContentChanged(entry)
        members.append(compress(data))
    return members


class _Sink:
    """The output file, hashed as it is written (no second read for the sha256).

    Small writes (headers, names, small members) are gathered into 1 MiB blocks: one
    write and one hash update per block instead of two per member."""

    _BLOCK = 1024 * 1024

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.digest = hashlib.sha256()
        self.offset = 0
        self._buf = bytearray()

    def write(self, data: bytes | memoryview) -> None:
        self.offset += len(data)
        if len(data) >= self._BLOCK:
            self.flush()
            self.fh.write(data)
            self.digest.update(data)
            return
        self._buf += data
        if len(self._buf) >= self._BLOCK:
            self.flush()

    def flush(self) -> None:
        if self._buf:
            self.fh.write(self._buf)
            self.digest.update(self._buf)
            self._buf.clear()


def write_zip(
    layout: Layout, dest: Path, cache: MemberCache | None = None
) -> tuple[str, list[Written]]:
    """Write the layout's entries to `dest` (atomically): their bytes in write_order,
    the central directory in layout order.

    Returns the zip's sha256 and where each member landed, in layout order (what a pack
    records).
    """
    cache = cache or MemberCache()
    order = write_order(layout.entries)
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            sink = _Sink(fh)
            written = _write_members(sink, layout.entries, order, cache)
            sink.flush()
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return sink.digest.hexdigest(), written


def write_order(entries: tuple[Entry, ...]) -> list[int]:
    """The order members are written in (indices into `entries`, which are in layout
    order): members of BIG_MEMBER bytes or more first, largest first (ties by path), then the
    rest in layout order. Only the members' bytes follow it: the central directory lists
    the layout's order."""
    big = sorted(
        (i for i, e in enumerate(entries) if e.size >= BIG_MEMBER),
        key=lambda i: (-entries[i].size, entries[i].path),
    )
    return big + [i for i, e in enumerate(entries) if e.size < BIG_MEMBER]


def _members(entries: tuple[Entry, ...], cache: MemberCache) -> Iterator[tuple[Entry, Member]]:
    """Members in the order given; cache hits and members compressed ahead inline, misses
    compressed by a bounded pool.

    Misses go to the pool in batches of consecutive entries (up to 1 MiB or 256 files:
    one future per file costs more than deflating a small file). At most 8 x workers
    batches, and 32 MiB of their input (or one batch per worker, if larger), are in
    flight; whatever is ready at the front is written at once. The pool (and
    concurrent.futures) only comes to be at the first miss: a rebuild from packs never
    starts a thread.
    """
    # (entries, their members when known, or the future that computes them, and whether
    # that future is one of ours, counted in flight, or one compressing ahead)
    pending: deque[tuple[list[Entry], list[Member] | None, Future[list[Member]] | None, bool]] = (
        deque()
    )
    batch: list[Entry] = []
    batch_bytes = inflight = inflight_bytes = 0
    workers = _workers()
    pool: ThreadPoolExecutor | None = None

    def front() -> Iterator[tuple[Entry, Member]]:
        nonlocal inflight, inflight_bytes
        group, members, future, counted = pending.popleft()
        if future is not None:
            if counted:
                inflight -= 1
                inflight_bytes -= sum(e.size for e in group)
            members = future.result()
        assert members is not None
        yield from zip(group, members, strict=True)

    def ready() -> bool:
        return bool(pending) and (pending[0][2] is None or pending[0][2].done())

    def submit() -> Iterator[tuple[Entry, Member]]:
        nonlocal batch, batch_bytes, inflight, inflight_bytes, pool
        # Every worker may hold a batch, however big (two large files deflate side by
        # side); past that, the byte bound holds.
        while inflight >= workers and (
            inflight >= _BATCHES_PER_WORKER * workers
            or inflight_bytes + batch_bytes > _INFLIGHT_BYTES
        ):
            yield from front()
        if pool is None and batch_bytes <= _INLINE_BYTES and not pending:
            # A small first miss (the one edited file of a rebuild) costs less than
            # starting a pool: compress it here.
            pending.append((batch, _produce(batch), None, False))
            batch, batch_bytes = [], 0
            return
        if pool is None:
            from concurrent.futures import ThreadPoolExecutor

            pool = ThreadPoolExecutor(max_workers=workers)
        pending.append((batch, None, pool.submit(_produce, batch), True))
        inflight += 1
        inflight_bytes += batch_bytes
        batch, batch_bytes = [], 0

    try:
        for entry in entries:
            hit = cache.get(entry.sha256)
            # Taken out, not looked at: a drop_ahead elsewhere no longer reaches it.
            ahead = _ahead.pop(entry.sha256, None) if hit is None else None
            if hit is not None or ahead is not None:
                if batch:
                    yield from submit()
                pending.append(([entry], None if hit is None else [hit], ahead, False))
            else:
                batch.append(entry)
                batch_bytes += entry.size
                if batch_bytes >= _BATCH_BYTES or len(batch) >= _BATCH_FILES:
                    yield from submit()
            while ready():
                yield from front()
        if batch:
            yield from submit()
        while pending:
            yield from front()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        drop_ahead()


def _write_members(
    sink: _Sink,
    entries: tuple[Entry, ...],
    order: list[int],
    cache: MemberCache,
) -> list[Written]:
    """The members' data in `order`, then the central directory in layout order: what
    every reader lists (unzip -l, zipfile, Lambda) stays the sorted layout (DESIGN 5:
    "sorted entries"); only where each member's bytes sit follows the write order.
    Returns where each member landed, in layout order."""
    central: list[bytes] = [b""] * len(entries)
    written: list[Written | None] = [None] * len(entries)
    in_order = tuple(entries[i] for i in order)
    for position, (entry, m) in enumerate(_members(in_order, cache)):
        name = entry.path.encode("utf-8")
        flags = 0 if name.isascii() else _FLAG_UTF8
        offset = sink.offset
        size = len(m.payload)
        sink.write(
            struct.pack(
                "<IHHHHHIIIHH",
                0x04034B50,
                _VERSION_NEEDED,
                flags,
                m.method,
                _DOS_TIME,
                _DOS_DATE,
                m.crc,
                size,
                entry.size,
                len(name),
                0,
            )
            + name
        )
        written[order[position]] = Written(entry.sha256, m.method, m.crc, sink.offset, size)
        sink.write(m.payload)
        external = ((0o100000 | entry.mode) << 16) & 0xFFFFFFFF
        central[order[position]] = (
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
                size,
                entry.size,
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
    start = sink.offset
    cd = b"".join(central)
    sink.write(cd)
    sink.write(end_records(len(central), len(cd), start))
    return cast("list[Written]", written)  # every place filled: `order` is a permutation


def end_records(count: int, cd_size: int, cd_start: int) -> bytes:
    """The end of central directory record, preceded by the ZIP64 end record and its
    locator (APPNOTE 4.3.14-4.3.15) when the members number more than the classic
    record's 16-bit counts hold (65,535): a function of the three values alone, so
    still deterministic. Offsets stay 32-bit: the members' own headers would need ZIP64
    extra fields past 4 GiB, which the 250 MB unzipped limit never reaches."""
    if max(cd_start, cd_size) > 0xFFFFFFFF:
        raise ValueError("package too large for a zip without ZIP64 offsets (over 4 GiB)")
    if count <= 0xFFFF:
        return struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, cd_size, cd_start, 0)
    zip64_at = cd_start + cd_size
    made_by, needed = (3 << 8) | 45, 45  # Unix; spec 4.5, the first with ZIP64
    record = struct.pack(
        "<IQHHIIQQQQ", 0x06064B50, 44, made_by, needed, 0, 0, count, count,
        cd_size, cd_start,
    )  # fmt: skip
    locator = struct.pack("<IIQI", 0x07064B50, 0, zip64_at, 1)
    classic = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, cd_size, cd_start, 0)
    return record + locator + classic
