"""The build cache: where it is, what a build used from it, what it holds, pruning,
and the checks that nothing it serves has changed since this tool wrote it.

Everything in the cache is derived data keyed by content, so any item may be removed
at any time; the cost is only a slower next build. Nothing is trusted on stat alone:
every object a package is built from is checked against the sha256 recorded when it
was written (in its name, or in an index written with it), and one that fails is a
`warning:` line and a rebuild of that object, never a shipped byte. Entries are written
once, into a temporary name, and renamed into place. Pruning removes the least recently
used items first and never what the last build needed, which every build records
(`uses/last-build.json`). "Last use" is the item's mtime: builds touch what they read.

Items, by kind:
  dependency set  deps/<key>/          an installed requirements set and its member pack
  blob            blobs/<xx>/<sha>.*   one compressed member (written by versions before
                                       the member packs; no build needs them now)
  package         packages/<print>     a layout fingerprint -> the zip's sha256
  download        sources/<sha>/       an unpacked source zip ([source].url)
  bytecode        pyc/<tag>/<xx>/*     a compiled .pyc, <key>.<its sha256>.pyc (the key is
                                       the source's sha256, and for a shipped .pyc its
                                       path's: the load check's are hash-checked and
                                       shared by every source with those bytes)
  stdlib bytecode stdlib/<key>/        a python installation's own standard-library
                                       bytecode, as symlinks where the load check's
                                       pycache prefix looks for it (package/check_view.py)
  handler         index/*.py           a rendered handler module, <key>.<its sha256>.py
  load check      loadcheck/<print>.json  what loading a layout's server found
                                       (package/load_check.py; kept while its
                                       package entry is needed)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterable
from io import BufferedReader
from pathlib import Path

from pmcp_build.text import one_line

KINDS = (
    "dependency set", "blob", "package", "download", "bytecode", "stdlib bytecode", "handler",
    "load check",
)  # fmt: skip
LAST_BUILD = Path("uses") / "last-build.json"


def cache_dir() -> Path:
    explicit = os.environ.get("PMCP_BUILD_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pmcp-build"


def touch(path: Path) -> None:
    """Record a use by mtime (best effort: a read-only cache still builds)."""
    with contextlib.suppress(OSError):
        path.touch()


def touch_if_stale(path: Path, now: float, older_than: float = 3600.0) -> None:
    """Record a use, but spare the write when the last one is recent (a stat only)."""
    with contextlib.suppress(OSError):
        if now - path.stat().st_mtime > older_than:
            os.utime(path)


# -- checking what the cache serves ----------------------------------------------------

_warned: set[str] = set()
# sha256 of files hashed in this process, by identity: path, device, inode, size, mtime
# and ctime (any write since, and any utime that puts the mtime back, moves the ctime).
# So a file is hashed once per build however many readers check it.
_digests: dict[tuple[str, int, int, int, int, int], str] = {}


def warn(subject: Path | str, problem: str) -> None:
    """One `warning:` line on stderr for a cache object that failed its check (the
    caller rebuilds it): once per object per process, however many readers find it."""
    key = str(subject)
    if key in _warned:
        return
    _warned.add(key)
    sys.stderr.write(f"warning: {one_line(problem)}\n")
    sys.stderr.flush()


def file_sha256(path: Path, fh: BufferedReader | None = None) -> str | None:
    """The sha256 of the file at `path` (None when it cannot be read), hashed once per
    process while the file stays the same (by inode, size, mtime and ctime). With `fh`
    (open on `path`), that very file is hashed, whatever is at `path` by then. Read, not
    mapped: a file truncated under a mapping would kill the process with SIGBUS."""
    try:
        with contextlib.ExitStack() as stack:
            if fh is None:
                fh = stack.enter_context(open(path, "rb"))
            st = os.fstat(fh.fileno())
            key = (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            known = _digests.get(key)
            if known is not None:
                return known
            fh.seek(0)
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None
    _digests[key] = digest
    return digest


def write_atomic(path: Path, data: bytes) -> None:
    """Write `path` whole or not at all: a temporary name beside it, then a rename (so a
    reader, or a build killed halfway, never sees part of an entry)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def evict(path: Path) -> None:
    """Remove a cache entry that failed its check (renamed away first, as `remove`)."""
    remove(path.parent, [Item("", path.name, 0, 0.0, False)])


# Sealed files: a cache file whose name ends in the sha256 of its bytes,
# <key>.<sha256><suffix>. The key says what it was made from (a template and its
# variables, a source file), the digest what it holds, so reading it back checks it.


def sealed_path(folder: Path, key: str, data: bytes, suffix: str) -> Path:
    return folder / f"{key}.{hashlib.sha256(data).hexdigest()}{suffix}"


def write_sealed(folder: Path, key: str, data: bytes, suffix: str) -> Path:
    path = sealed_path(folder, key, data, suffix)
    write_atomic(path, data)
    return path


def sealed_digest(path: Path, suffix: str) -> str:
    """The sha256 a sealed file's name promises ('' if the name is not one)."""
    name = path.name[: -len(suffix)] if path.name.endswith(suffix) else ""
    digest = name.rpartition(".")[2]
    return digest if len(digest) == 64 else ""


def listing(folder: Path) -> list[str]:
    """The names in `folder`; none when it does not exist (yet)."""
    try:
        return os.listdir(folder)
    except OSError:
        return []


def find_sealed(names: Iterable[str], folder: Path, key: str, suffix: str) -> list[Path]:
    """The sealed files for `key` among `names` (a listing of `folder`), in name order."""
    prefix = f"{key}."
    return [
        folder / n
        for n in sorted(names)
        if n.startswith(prefix) and n.endswith(suffix) and len(n) == len(prefix) + 64 + len(suffix)
    ]


def read_sealed(path: Path, suffix: str, what: str) -> bytes | None:
    """A sealed file's bytes if they are those its name promises; otherwise one warning,
    the file removed, and None (the caller makes it again)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if hashlib.sha256(data).hexdigest() == sealed_digest(path, suffix):
        return data
    warn(path, f"{path}: this cached {what} does not match its sha256; making it again")
    with contextlib.suppress(OSError):
        path.unlink()
    return None


# -- recording what a build needed ------------------------------------------------------


def record_build(root: Path, needed: Iterable[Path], started: float) -> list[str]:
    """Write the last build's needs: the cache items (relative paths) it read or wrote."""
    items = sorted({item for p in needed if (item := _item_of(root, p)) is not None})
    path = root / LAST_BUILD
    with contextlib.suppress(OSError):
        data = {"started": started, "items": items}
        write_atomic(path, json.dumps(data, separators=(",", ":")).encode())
    return items


def _item_of(root: Path, path: Path) -> str | None:
    """The cache item (relative path) that holds `path`, or None if outside the cache."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return None
    if not parts:
        return None
    depth = {"deps": 2, "sources": 2, "packages": 2, "index": 2, "blobs": 3, "pyc": 4,
             "loadcheck": 2, "stdlib": 2}  # fmt: skip
    n = depth.get(parts[0])
    if n is None or len(parts) < n:
        return None
    return "/".join(parts[:n])


def item_path(root: Path, path: Path) -> Path | None:
    """The cache item (a dependency set's folder, a download's, one .pyc) holding `path`."""
    item = _item_of(root, path)
    return root / item if item is not None else None


def last_build(root: Path) -> tuple[set[str], float]:
    try:
        data = json.loads((root / LAST_BUILD).read_text())
        return set(data["items"]), float(data["started"])
    except (OSError, ValueError, KeyError, TypeError):
        return set(), 0.0


# -- inventory ---------------------------------------------------------------------------


class Item:
    """One cache item. A plain class: no code generated at import (see zipwriter)."""

    __slots__ = ("kind", "last_use", "needed", "path", "size")

    def __init__(self, kind: str, path: str, size: int, last_use: float, needed: bool) -> None:
        self.kind = kind
        self.path = path  # relative to the cache root
        self.size = size
        self.last_use = last_use  # epoch seconds
        self.needed = needed  # by the last build


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _mtime(path: Path, *stamps: str) -> float:
    for stamp in stamps:
        with contextlib.suppress(OSError):
            return (path / stamp).stat().st_mtime
    return path.stat().st_mtime


def inventory(root: Path) -> list[Item]:
    """Every item in the cache, oldest use first."""
    needed, _ = last_build(root)
    items: list[Item] = []

    def add(kind: str, path: Path, last_use: float, needed_as: str | None = None) -> None:
        rel = path.relative_to(root).as_posix()
        items.append(Item(kind, rel, _size(path), last_use, (needed_as or rel) in needed))

    def children(path: Path) -> list[Path]:
        try:
            return sorted(p for p in path.iterdir() if not p.name.startswith("."))
        except OSError:
            return []

    for d in children(root / "deps"):
        add("dependency set", d, _mtime(d, "used", "origins.json"))
    for d in children(root / "sources"):
        add("download", d, _mtime(d, "used", ".complete"))
    for d in children(root / "stdlib"):
        add("stdlib bytecode", d, _mtime(d, ".complete"))
    for f in children(root / "packages"):
        add("package", f, f.stat().st_mtime)
    for f in children(root / "index"):
        add("handler", f, f.stat().st_mtime)
    for f in children(root / "loadcheck"):
        # Keyed by the layout's fingerprint, as packages/ is: needed with its package.
        add("load check", f, f.stat().st_mtime, f"packages/{f.stem}")
    for shard in children(root / "blobs"):
        for f in children(shard):
            add("blob", f, f.stat().st_mtime)
    for tag in children(root / "pyc"):
        for shard in children(tag):
            for f in children(shard):
                add("bytecode", f, f.stat().st_mtime)
    items.sort(key=lambda i: (i.last_use, i.path))
    return items


# -- pruning -----------------------------------------------------------------------------


class PruneResult:
    __slots__ = ("kept", "removed")

    def __init__(self, removed: list[Item], kept: list[Item]) -> None:
        self.removed = removed
        self.kept = kept

    @property
    def freed(self) -> int:
        return sum(i.size for i in self.removed)

    @property
    def kept_size(self) -> int:
        return sum(i.size for i in self.kept)


def plan_prune(
    items: list[Item], max_size: int | None, max_age: float | None, now: float | None = None
) -> PruneResult:
    """Pure: which items to remove. Anything unused for longer than `max_age` seconds
    goes; then the least recently used go until the cache fits in `max_size` bytes.
    What the last build needed is never removed."""
    now = time.time() if now is None else now
    removed: list[Item] = []
    kept: list[Item] = []
    for item in sorted(items, key=lambda i: (i.last_use, i.path)):
        if not item.needed and max_age is not None and now - item.last_use > max_age:
            removed.append(item)
        else:
            kept.append(item)
    if max_size is not None:
        total = sum(i.size for i in kept)
        survivors: list[Item] = []
        for item in kept:  # oldest first
            if total > max_size and not item.needed:
                removed.append(item)
                total -= item.size
            else:
                survivors.append(item)
        kept = survivors
    return PruneResult(removed=removed, kept=kept)


def remove(root: Path, items: Iterable[Item]) -> None:
    for item in items:
        path = root / item.path
        if path.is_dir() and not path.is_symlink():
            # Rename first so a concurrent build never sees half a dependency set.
            doomed = path.with_name(f".rm-{path.name}-{os.getpid()}")
            try:
                os.replace(path, doomed)
            except OSError:
                continue
            import shutil

            shutil.rmtree(doomed, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
