"""A one-file rebuild's zip, spliced from the previous one.

When a layout differs from the one the previous zip was written from only in the bytes
(and mode) of some entries, the new zip is the old one with those members replaced: the
members in between are copied as a few large slices, and the central directory is the
old one with the replaced records rewritten and the later records' offsets moved. The
bytes are those `zipwriter.write_zip` writes for the new layout (same headers, same
compression decision through `zipwriter.compress`, same end records), which
tests/test_rebuild_splice.py checks member by member against it; the caller has checked
the old zip's sha256 against the one recorded with its layout, so it is the zip of
that layout, not merely a file with its name.

What it costs per unchanged member is one short unpack of its central directory record
(and, after the first replaced member, one 4-byte patch), instead of the writer's
headers and bookkeeping objects, and no read of its source file.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
from pathlib import Path

from pmcp_build.package import cache as cache_store
from pmcp_build.package.zipwriter import (
    _DOS_DATE,
    _DOS_TIME,
    _FLAG_UTF8,
    _VERSION_MADE_BY,
    _VERSION_NEEDED,
    Member,
    compress,
    end_records,
)

# Of a central directory record: method, crc, compressed size, name/extra/comment
# lengths, local header offset (APPNOTE 4.3.12).
_RECORD = struct.Struct("<10xH4xII4xHHH8xI")
_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_LOCAL_SIZE = 30
_CENTRAL_SIZE = 46


# Where a member landed: sha256, method, crc, payload offset, payload length (what the
# previous-build pack records; zipwriter.Written's fields, without an object each).
Landed = tuple[str, int, int, int, int]


class Replacement:
    """A member's new content: where it sits in the layout, and its bytes."""

    __slots__ = ("data", "index", "mode", "old_size", "path", "sha256")

    def __init__(
        self, index: int, path: str, mode: int, sha256: str, data: bytes, old_size: int = 0
    ) -> None:
        self.index = index
        self.path = path
        self.mode = mode
        self.sha256 = sha256
        self.data = data
        self.old_size = old_size  # what it replaces: a member's size decides its place


def _central_directory(view: memoryview, count: int) -> tuple[int, int]:
    """(start, size) of the central directory, from the end records this writer wrote;
    ValueError when the zip is not one of its shape for `count` members."""
    classic = view[len(view) - 22 :]
    sig, _, _, _, total, size, start, comment = struct.unpack("<IHHHHIIH", classic)
    if sig != 0x06054B50 or comment:
        raise ValueError("no end of central directory record at the end")
    if total == 0xFFFF and count > 0xFFFF:
        total = struct.unpack_from("<Q", view, len(view) - 22 - 20 - 56 + 32)[0]
    if total != count or start + size > len(view):
        raise ValueError("the central directory does not match the recorded layout")
    return start, size


class NotTheRecordedZip(Exception):
    """The previous zip is gone or is not the one recorded: write the package anew."""


def splice(
    old_zip: Path,
    new_zip: Path,
    shas: list[str],
    replaced: list[Replacement],
    old_sha256: str | None = None,
    order: list[int] | None = None,
) -> tuple[str, list[Landed]]:
    """Write `new_zip` from `old_zip` (the zip of a layout of len(shas) members) with
    the `replaced` members (in layout order) changed; `shas` are the new layout's.
    `order` is zipwriter.write_order of both layouts (the caller checks that no replaced
    member moves); the identity when not given. Returns its sha256 and where each
    member landed, in layout order (what the previous-build pack records).
    With `old_sha256`, the very file opened is hashed first and must match it (raises
    NotTheRecordedZip): a zip replaced or edited since it was recorded is not used."""
    try:
        fh = open(old_zip, "rb")  # noqa: SIM115 (closed below, after the mapping)
    except OSError:
        raise NotTheRecordedZip(str(old_zip)) from None
    with fh:
        if old_sha256 is not None and cache_store.file_sha256(old_zip, fh) != old_sha256:
            raise NotTheRecordedZip(str(old_zip))
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        view = memoryview(mm)
        try:
            return _splice(view, new_zip, shas, replaced, order or list(range(len(shas))))
        finally:
            view.release()
            mm.close()


def _splice(
    view: memoryview,
    new_zip: Path,
    shas: list[str],
    replaced: list[Replacement],
    order: list[int],
) -> tuple[str, list[Landed]]:
    count = len(shas)
    cd_start, cd_size = _central_directory(view, count)
    cd = bytearray(view[cd_start : cd_start + cd_size])
    records = _walk(cd, count)
    if len(order) != count:
        raise ValueError("the write order does not match the recorded layout")
    changes = {r.index: r for r in replaced}
    digest = hashlib.sha256()
    written: list[Landed] = [("", 0, 0, 0, 0)] * count  # in layout order
    tmp = new_zip.with_name(f".{new_zip.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as out:

            def put(data: bytes | bytearray | memoryview) -> None:
                out.write(data)
                digest.update(data)

            copied_to = shift = 0  # how far the old zip is copied; how far later members move
            # The members' bytes are in write order, their records in layout order.
            for p, i in enumerate(order):
                pos, method, crc, size, name_len, offset = records[i]
                change = changes.get(i)
                if change is None:
                    if shift:
                        struct.pack_into("<I", cd, pos + 42, offset + shift)
                    at = offset + shift + _LOCAL_SIZE + name_len
                    written[i] = (shas[i], method, crc, at, size)
                    continue
                end = records[order[p + 1]][5] if p + 1 < count else cd_start
                if end < offset:
                    raise ValueError("the members are not in the write order")
                put(view[copied_to:offset])
                new_offset = offset + shift
                header, central, member = _member(change, new_offset)
                put(header)
                put(member.payload)
                cd[pos : pos + len(central)] = central
                at = new_offset + len(header)
                new_size = len(member.payload)
                written[i] = (change.sha256, member.method, member.crc, at, new_size)
                shift += len(header) + new_size - (end - offset)
                copied_to = end
            put(view[copied_to:cd_start])
            put(cd)
            put(end_records(count, len(cd), cd_start + shift))
        os.replace(tmp, new_zip)
    finally:
        tmp.unlink(missing_ok=True)
    return digest.hexdigest(), written


def _walk(cd: bytearray, count: int) -> list[tuple[int, int, int, int, int, int]]:
    """Each record's (position in the central directory, method, crc, compressed size,
    name length, local header offset), in layout order."""
    unpack = _RECORD.unpack_from
    found = []
    pos = 0
    for _ in range(count):
        method, crc, size, name_len, extra, comment, offset = unpack(cd, pos)
        if extra or comment:
            raise ValueError("a central directory record with extra fields or a comment")
        found.append((pos, method, crc, size, name_len, offset))
        pos += _CENTRAL_SIZE + name_len
    if pos != len(cd):
        raise ValueError("the central directory is not the recorded layout's")
    return found


def _member(change: Replacement, offset: int) -> tuple[bytes, bytes, Member]:
    """The local header (with the name), the central record and the compressed member,
    as zipwriter writes them."""
    m = compress(change.data)
    name = change.path.encode("utf-8")
    flags = 0 if name.isascii() else _FLAG_UTF8
    size = len(m.payload)
    usize = len(change.data)
    header = _LOCAL.pack(
        0x04034B50, _VERSION_NEEDED, flags, m.method, _DOS_TIME, _DOS_DATE, m.crc, size,
        usize, len(name), 0,
    ) + name  # fmt: skip
    external = ((0o100000 | change.mode) << 16) & 0xFFFFFFFF
    central = _CENTRAL.pack(
        0x02014B50, _VERSION_MADE_BY, _VERSION_NEEDED, flags, m.method, _DOS_TIME,
        _DOS_DATE, m.crc, size, usize, len(name), 0, 0, 0, 0, external, offset,
    ) + name  # fmt: skip
    return header, central, m
