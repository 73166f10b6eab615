"""Writing a layout as the package zip: reuse of an identical earlier zip, the member
packs, and recording what the build needed from the cache.

Kept apart from build.py (which resolves a manifest into a layout) so the fast path of
`pmcp-build build` (cli/fast_build.py) can write a package without importing the
manifest models.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from pathlib import Path

from pmcp_build.errors import UserError
from pmcp_build.layout.model import Entry, Layout
from pmcp_build.package import cache as cache_store
from pmcp_build.package import zipwriter
from pmcp_build.package.cache import cache_dir
from pmcp_build.package.zipwriter import (
    DEPENDENCY_PACK,
    FORMAT,
    ContentChanged,
    MemberCache,
    MemberPack,
    index_zip,
    write_pack,
    write_zip,
)


class Package:
    """A written package. A plain class: no code generated at import (see zipwriter)."""

    __slots__ = ("layout", "path", "sha256", "size")

    def __init__(self, layout: Layout, path: Path, sha256: str, size: int) -> None:
        self.layout = layout
        self.path = path
        self.sha256 = sha256
        self.size = size

    def __repr__(self) -> str:
        return f"Package(path={self.path!s}, sha256={self.sha256}, size={self.size})"

    @property
    def code_sha256(self) -> str:
        """What Lambda reports as CodeSha256: base64 of the zip's sha256 digest."""
        return base64.b64encode(bytes.fromhex(self.sha256)).decode()


def layout_fingerprint(layout: Layout) -> str:
    """The zip is a pure function of this (and of the writer's format). v3: members of
    1 MiB or more are written first, largest first (zipwriter.write_order)."""
    h = hashlib.sha256(f"zip-v3 {FORMAT}\n".encode())
    for e in layout.entries:
        h.update(f"{e.path}\0{e.mode:o}\0{e.sha256}\n".encode())
    return h.hexdigest()


def dependency_set(layout: Layout) -> Path | None:
    """The runtime's cached dependency set (deps/<key>/) the layout's dependency files
    come from: the one whose `site/<path>` is an entry's source. A stdio command's own
    set is packaged under `__command__/`, so its entries (which sort first) do not
    match and are passed over."""
    for e in layout.entries:
        if e.origin == "dependency" and e.src is not None:
            site = e.src.parents[e.path.count("/")]  # src is <set>/site/<path>
            if site.name == "site" and site / e.path == e.src:
                return site.parent
    return None


class CacheDamaged(Exception):
    """A cached file the layout was built from no longer holds the bytes the layout
    hashed: `item` (a cache item's folder or file) is to be evicted and the layout
    resolved again. Warned about already."""

    def __init__(self, item: Path) -> None:
        super().__init__(str(item))
        self.item = item


def _reuse(index: Path, out_dir: Path, name: str) -> tuple[str, Path] | None:
    """The zip of an earlier build of the same layout, if it is still there unchanged.

    The index records the zip's sha256; the zip is hashed before it is reused (once per
    process: ~1 GB/s), so a zip changed in place, whatever its size and mtime, is
    written again rather than deployed."""
    try:
        digest = index.read_text().split()[0]
        existing = out_dir / f"{name}-{digest[:12]}.zip"
        if not existing.is_file():
            return None
    except (OSError, ValueError, IndexError):
        return None
    if cache_store.file_sha256(existing) != digest:
        cache_store.warn(
            existing,
            f"{existing}: does not match the sha256 it was built with ({digest[:12]}); "
            "writing it again",
        )
        return None
    cache_store.touch(index)
    return digest, existing


def write_package(layout: Layout, out_dir: Path, name: str) -> Package:
    """Write (or reuse) the layout's zip in `out_dir`. Raises CacheDamaged when a cached
    file the layout names changed in the cache, UserError when a source file changed
    while it was being packaged."""
    started = time.time()
    out_dir.mkdir(parents=True, exist_ok=True)
    root = cache_dir()
    index = root / "packages" / layout_fingerprint(layout)
    deps = dependency_set(layout)
    reused = _reuse(index, out_dir, name)
    if reused is not None:
        zipwriter.drop_ahead()  # nothing to compress after all
        digest, final = reused
    else:
        digest, final = _write(layout, out_dir, name, deps)
        cache_store.write_atomic(index, f"{digest}\n".encode())
    for old in out_dir.glob(f"{name}-*.zip"):
        if old != final:  # dist/ holds the current build; deployments keep their own copy
            old.unlink(missing_ok=True)
    record_uses(root, layout, index, deps, started)
    return Package(layout=layout, path=final, sha256=digest, size=final.stat().st_size)


def _write(layout: Layout, out_dir: Path, name: str, deps: Path | None) -> tuple[str, Path]:
    """Write the zip: unchanged members come out of the previous build's zip and the
    dependency set's pack (two mmaps, whatever the file count, each checked against
    its sha256 before use), the rest is compressed."""
    previous = MemberPack(out_dir / f".{name}.members.json", "the previous build's zip")
    dep_pack = MemberPack(deps / "members.json", DEPENDENCY_PACK) if deps else None
    packs = (previous, dep_pack) if dep_pack is not None else (previous,)
    tmp = out_dir / f".{name}-building.zip"
    try:
        digest, written = write_zip(layout, tmp, MemberCache(packs))
    except ContentChanged as exc:
        raise _changed(exc.entry) from None
    final = out_dir / f"{name}-{digest[:12]}.zip"
    os.replace(tmp, final)
    index_zip(out_dir / f".{name}.members.json", final, written, digest)
    if deps is not None and dep_pack is not None and dep_pack.needs_writing():
        in_deps = [
            w for e, w in zip(layout.entries, written, strict=True) if e.origin == "dependency"
        ]
        write_pack(deps / "members.json", final, in_deps)
    return digest, final


def _changed(entry: Entry) -> Exception:
    """What a file whose bytes moved under the writer means: a cached one is the cache's
    fault (warned, and rebuilt by the caller), a source file was edited mid-build."""
    root = cache_dir()
    src = entry.src
    item = cache_store.item_path(root, src) if src is not None else None
    if src is None or item is None:
        return UserError(
            f"{src or entry.path}: changed while the package was being built; build again"
        )
    cache_store.warn(
        item, f"{src}: changed in the build cache since it was written; rebuilding {item}"
    )
    return CacheDamaged(item)


def record_uses(root: Path, layout: Layout, index: Path, deps: Path | None, started: float) -> None:
    """What this build needed from the cache, so `pmcp-build cache prune` keeps it, and
    a fresh mtime ("last use") on what it read."""
    needed = [index]
    if deps is not None:
        needed.append(deps)
        cache_store.touch(deps / "used")
    inside = f"{root}{os.sep}"
    for e in layout.entries:
        if e.origin == "dependency":
            continue
        # The source as text: a Path is made only for the few in the cache (a rebuild's
        # layout of 10,000 entries would make one per entry).
        src = e.src_text
        if src is not None and src.startswith(inside):
            path = Path(src)
            needed.append(path)  # bytecode, a downloaded source
            if e.path.endswith(".pyc"):
                cache_store.touch_if_stale(path, started)
        if e.origin == "generated":
            for rendered in _rendered(root / "index", e):
                needed.append(rendered)
                cache_store.touch_if_stale(rendered, started)
    for item in cache_store.record_build(root, needed, started):
        if item.startswith("sources/"):
            cache_store.touch(root / item / "used")


def _rendered(folder: Path, entry: Entry) -> list[Path]:
    """The render cache's copy of a generated file (sealed: its name ends in its sha256)."""
    return sorted(folder.glob(f"*.{entry.sha256}.py"))
