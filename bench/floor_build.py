"""The floor for a python package build: the least code that writes the byte-identical
zip from the same cached inputs, with the standard library and the pinned deflate only.

    python bench/floor_build.py PROJECT CACHE_DIR OUT.zip

It reads what pmcp-build's cache holds after an earlier build of PROJECT (the installed
dependency set with its entries.json and member pack, the rendered handler, the previous
zip's member index in PROJECT/.pmcp/dist) and does only what cannot be skipped: walk the
source, hash every file, copy unchanged members out of the two packs, deflate what
changed, write and hash the zip. No manifest validation, no CLI, no layout checks, no
cache bookkeeping, no output but the sha256. It knows the example's shape (python
runtime, requirements.txt with its metorial.lock, file assets only, the default
excludes) rather than reading the
manifest; bench/floors.py checks its zip is byte-identical to the tool's.

Used by bench/floors.py for the one-file rebuild, the warm no-change build and the
10k-file tree.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import re
import struct
import sys

import deflate  # the pinned deflate: the only way to the same bytes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOOT = os.path.join(ROOT, "boot")
SKIP_DIRS = {
    ".git",
    ".hg",
    ".svn",
    ".pmcp",
    ".venv",
    "venv",
    "__pycache__",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
}
LEVEL = 5  # as pmcp_build/package/zipwriter.py
FORMAT = f"libdeflate{deflate.__version__}-L{LEVEL}"


def walk(root: str) -> list[tuple[str, str]]:
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
        rel = os.path.relpath(dirpath, root)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        for name in filenames:
            if name.endswith((".pyc", ".pyo")) or name == ".DS_Store":
                continue
            if prefix + name in ("metorial.toml", "metorial.lock"):  # inputs, never packaged
                continue
            files.append((prefix + name, os.path.join(dirpath, name)))
    return files


def entry(path: str, full: str, mode: int | None = None) -> tuple[str, int, int, str, str]:
    with open(full, "rb") as fh:
        data = fh.read()
        st = os.fstat(fh.fileno())
    if mode is None:
        mode = 0o755 if st.st_mode & 0o111 else 0o644
    return (path, mode, len(data), hashlib.sha256(data).hexdigest(), full)


def dependency_set(cache: str) -> str:
    """The installed dependency set, as the last build recorded using it (its cache key
    hashes the requirements after pmcp-build's policy checks, which a floor need not
    redo: the set is a cached input like the packs)."""
    with open(os.path.join(cache, "uses", "last-build.json")) as fh:
        items = json.load(fh)["items"]
    return os.path.join(cache, next(i for i in items if i.startswith("deps/")))


def handler(cache: str) -> bytes:
    """The rendered handler (index.py), as the last build recorded using it: like the
    dependency set, a cached input whose key (template, server kind, entrypoint, boot
    modules, version) a floor need not recompute."""
    with open(os.path.join(cache, "uses", "last-build.json")) as fh:
        items = json.load(fh)["items"]
    with open(os.path.join(cache, next(i for i in items if i.startswith("index/"))), "rb") as fh:
        return fh.read()


def pack(index_path: str) -> tuple[dict[str, list[int]], mmap.mmap | None]:
    try:
        with open(index_path) as fh:
            index = json.load(fh)
        with open(os.path.join(os.path.dirname(index_path), index["file"]), "rb") as fh:
            return index["members"], mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError:
        return {}, None


def compress(data: bytes) -> tuple[int, int, bytes]:
    crc = deflate.crc32(data)
    if len(data) < 64:
        return 0, crc, data
    if len(data) >= 32 * 1024:
        m, k = len(data) // 2, 8 * 1024
        sample = data[:k] + data[m : m + k] + data[-k:]
        if len(deflate.deflate_compress(sample, 1)) > len(sample) * 0.97:
            return 0, crc, data
    out = bytes(deflate.deflate_compress(data, LEVEL))
    return (8, crc, out) if len(out) < len(data) else (0, crc, data)


def main() -> None:
    project, cache, dest = sys.argv[1:4]
    with open(os.path.join(project, "metorial.toml")) as fh:
        toml = fh.read()
    name = re.search(r'name = "([^"]+)"', toml).group(1)  # type: ignore[union-attr]

    entries = [entry(p, f) for p, f in walk(project)]
    entries += [
        entry(f"__metorial__/{n}", os.path.join(BOOT, n), 0o644)
        for n in os.listdir(BOOT)
        if n.endswith(".py")
    ]
    for src, to in re.findall(r'from = "([^"]+)"\s*\nto = "([^"]+)"', toml):  # file assets
        # A source file an asset names ships once, where the asset puts it.
        entries = [e for e in entries if e[0] != os.path.normpath(src)]
        entries.append(entry(to, os.path.join(project, src)))
    text = handler(cache)
    entries.append(("index.py", 0o644, len(text), hashlib.sha256(text).hexdigest(), ""))
    deps = dependency_set(cache)
    with open(os.path.join(deps, "entries.json")) as fh:
        known = json.load(fh)
    site = os.path.join(deps, "site")
    entries += [(p, m, s, h, os.path.join(site, p)) for p, (m, s, h) in known.items()]
    entries.sort()

    packs = [
        pack(os.path.join(project, ".pmcp", "dist", f".{name}.members.json")),
        pack(os.path.join(deps, "members.json")),
    ]
    digest = hashlib.sha256()
    central = []
    offset = 0
    with open(dest, "wb") as out:

        def write(b: bytes | memoryview) -> None:
            out.write(b)
            digest.update(b)

        for path, mode, size, sha, full in entries:
            for members, mm in packs:
                hit = members.get(sha)
                if hit is not None and mm is not None:
                    method, crc, start, length = hit
                    payload: bytes | memoryview = memoryview(mm)[start : start + length]
                    break
            else:
                if full:
                    with open(full, "rb") as fh:
                        data = fh.read()
                else:
                    data = text
                method, crc, payload = compress(data)
            raw = path.encode()
            flags = 0 if raw.isascii() else 0x800
            header = struct.pack(
                "<IHHHHHIIIHH",
                0x04034B50,
                20,
                flags,
                method,
                0,
                33,
                crc,
                len(payload),
                size,
                len(raw),
                0,
            )
            write(header + raw)
            write(payload)
            central.append(
                struct.pack(
                    "<IHHHHHHIIIHHHHHII",
                    0x02014B50,
                    0x314,
                    20,
                    flags,
                    method,
                    0,
                    33,
                    crc,
                    len(payload),
                    size,
                    len(raw),
                    0,
                    0,
                    0,
                    0,
                    ((0o100000 | mode) << 16),
                    offset,
                )
                + raw
            )
            offset += len(header) + len(raw) + len(payload)
        cd = b"".join(central)
        write(cd)
        write(
            struct.pack(
                "<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central), len(cd), offset, 0
            )
        )
    print(digest.hexdigest())


if __name__ == "__main__":
    main()
