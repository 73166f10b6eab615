"""The build steps the remote cache (package/remote.py) stands in for, and what each
hands it: the points where the local cache looks up or stores a dependency set, a
downloaded source zip and a package zip. Every function is a no-op without a remote
cache, and none raises: a remote miss or fault means the step runs locally.

  dependency set  ac/deps/<key>     -> the sha256s of its members.pack, members.json,
                                       origins.json, entries.json and seal.json; site/
                                       is rebuilt from the pack, every file checked
                                       against entries.json
  source zip      cas/<[source].sha256>  (no action entry: the manifest pins it)
  package zip     ac/package/<key>  -> the zip's sha256; a fetched zip is used only if
                                       it holds exactly the layout's files, modes and
                                       bytes
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pmcp_build.package import cache as cache_store
from pmcp_build.package import remote

if TYPE_CHECKING:
    from pmcp_build.layout.model import Layout

# Objects an action entry named that the store did not have (deleted, or damaged and
# not used): this build makes them and stores them again, where write-once allows.
_missing: set[str] = set()
_fetched: set[str] = set()  # source zips this process read from the store
_absent: set[str] = set()  # action keys this process looked up and did not find


def _lookup(store: remote.RemoteCache, key: str) -> dict[str, Any] | None:
    """An action entry, asked for once per process (publishing after a miss does not
    ask again)."""
    if key in _absent:
        return None
    doc = store.get_action(key)
    if doc is None:
        _absent.add(key)
    return doc


SET_FILES = ("members.pack", "members.json", "origins.json", "entries.json", "seal.json")


def _set_action(key: str) -> str:
    from pmcp_build.layout.python_deps import CACHE_FORMAT
    from pmcp_build.package.zipwriter import FORMAT

    return remote.action_key("deps", key, CACHE_FORMAT, str(FORMAT))


def _published(kind: str, key: str, store: remote.RemoteCache) -> Path:
    """A local note that this machine stored `key` in `store` (spares the requests)."""
    where = hashlib.sha256(store.url.encode()).hexdigest()[:16]
    return cache_store.cache_dir() / "remote" / where / kind / key.replace("/", "-")


# -- dependency sets -------------------------------------------------------------------


def restore_set(key: str, dest: Path) -> bool:
    """Fill deps/<key>/ from the remote cache; False (and nothing written) on a miss or
    on anything that does not check out."""
    store = remote.active()
    if store is None:
        return False
    doc = _lookup(store, _set_action(key))
    files = doc.get("files") if doc else None
    if not isinstance(files, dict) or sorted(files) != sorted(SET_FILES):
        return False
    found = remote.get_many(store, [str(v) for v in files.values()])
    blobs = {name: found.get(str(sha)) for name, sha in files.items()}
    if any(data is None for data in blobs.values()):
        _missing.update(str(sha) for sha, data in found.items() if data is None)
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".remote-", dir=dest.parent))
    try:
        for name, data in blobs.items():
            (tmp / name).write_bytes(data or b"")
        problem = _unpack_site(tmp)
        if problem is not None:
            remote.warn(f"{store.url}: dependency set {key[:12]}: {problem}; installing it")
            return False
        with contextlib.suppress(OSError):
            os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _note(_published("deps", key, store))  # it is there: nothing to store
    return dest.exists()


def _unpack_site(folder: Path) -> str | None:
    """Write site/ from the member pack: every file of entries.json, inflated and
    checked against its size and sha256. What is wrong, or None."""
    try:
        index = json.loads((folder / "members.json").read_text())
        entries = json.loads((folder / "entries.json").read_text())
        table = index["members"]
        pack = (folder / "members.pack").read_bytes()
        if index.get("file") != "members.pack" or len(pack) != index.get("size"):
            return "its pack index names another file"
        for path, (mode, size, sha256) in entries.items():
            method, _, offset, length = table[sha256]
            payload = pack[offset : offset + length]
            data = zlib.decompress(payload, -15) if method == 8 else payload
            if len(data) != size or hashlib.sha256(data).hexdigest() != sha256:
                return f"site/{path} does not match entries.json"
            target = folder / "site" / path
            if ".." in Path(path).parts or Path(path).is_absolute():
                return f"site/{path} is outside the set"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            os.chmod(target, int(mode) & 0o777)
    except (OSError, ValueError, KeyError, TypeError, zlib.error) as exc:
        return f"cannot be unpacked ({type(exc).__name__}: {exc})"
    return None


def publish_set(dest: Path | None) -> None:
    """Store a dependency set this build used (sound: its pack matches its index and its
    seal its files), once per machine and store."""
    store = remote.active()
    if store is None or dest is None:
        return
    marker = _published("deps", dest.name, store)
    if marker.exists():
        return
    digests = {name: cache_store.file_sha256(dest / name) for name in SET_FILES}
    if any(d is None for d in digests.values()) or not _sound(dest, digests):
        return
    key = _set_action(dest.name)
    entry = _lookup(store, key)
    if entry is not None and entry.get("files") == digests:
        repaired = [store.put(str(d), dest / n) for n, d in digests.items() if d in _missing]
        if all(repaired):
            _note(marker)
        return
    # The objects first, the entry naming them last: a reader never meets an entry whose
    # objects are still on their way.
    stored = [store.put(str(sha), dest / name) for name, sha in digests.items()]
    if all(stored) and store.put_action(key, {"files": digests}):
        _note(marker)


def _sound(dest: Path, digests: dict[str, str | None]) -> bool:
    try:
        index = json.loads((dest / "members.json").read_text())
        seal = json.loads((dest / "seal.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(
        index.get("sha256") == digests["members.pack"]
        and index.get("file") == "members.pack"
        and seal.get("key") == dest.name
        and seal.get("origins") == digests["origins.json"]
        and seal.get("entries") == digests["entries.json"]
    )


def _note(marker: Path) -> None:
    with contextlib.suppress(OSError):
        cache_store.write_atomic(marker, b"")


# -- downloaded sources -----------------------------------------------------------------


def fetch_source(sha256: str, archive: Path) -> str | None:
    """The pinned source zip from the remote cache into `archive`: its sha256, or None."""
    store = remote.active()
    data = store.get(sha256) if store is not None else None
    if data is None:
        return None
    archive.write_bytes(data)
    _fetched.add(sha256)
    return sha256


def publish_source(sha256: str, archive: Path) -> None:
    store = remote.active()
    if store is not None and sha256 not in _fetched:
        store.put(sha256, archive)


# -- package zips -----------------------------------------------------------------------


def fetch_package(layout: Layout, out_dir: Path, name: str) -> None:
    """Put the layout's zip from the remote cache where write_package reuses it (its
    dist/ name, and the local index from the layout's fingerprint)."""
    from pmcp_build.package.write import layout_fingerprint

    store = remote.active()
    if store is None:
        return
    fingerprint = layout_fingerprint(layout)
    index = cache_store.cache_dir() / "packages" / fingerprint
    if index.exists() or not _has_pack(layout):
        return
    key = remote.action_key("package", fingerprint)
    doc = _lookup(store, key)
    sha256 = doc.get("zip") if doc else None
    if not isinstance(sha256, str):
        return
    data = store.get(sha256)
    if data is None:
        _missing.add(sha256)
        return
    problem = zip_problem(data, layout)
    if problem is not None:
        remote.warn(f"{store.url}/cas/{sha256}: {problem}; writing the package locally")
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_store.write_atomic(out_dir / f"{name}-{sha256[:12]}.zip", data)
    cache_store.write_atomic(index, f"{sha256}\n".encode())
    _note(_published("package", key, store))


def _has_pack(layout: Layout) -> bool:
    """Whether the layout's dependency set (if any) has its member pack. One installed
    here has none until its first zip is written locally, which writes the pack: so
    that set's zip is written, not fetched, and the set can be stored again whole."""
    from pmcp_build.package.write import dependency_set
    from pmcp_build.package.zipwriter import MemberPack

    deps = dependency_set(layout)
    return deps is None or not MemberPack(deps / "members.json").needs_writing()


def zip_problem(data: bytes, layout: Layout) -> str | None:
    """What differs between a zip and the layout (names in order, modes, bytes)."""
    entries = layout.entries
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
            if [i.filename for i in infos] != [e.path for e in entries]:
                return "its files are not the layout's"
            for info, entry in zip(infos, entries, strict=True):
                if info.external_attr >> 16 != 0o100000 | entry.mode:
                    return f"{entry.path} has another mode"
                if hashlib.sha256(zf.read(info)).hexdigest() != entry.sha256:
                    return f"{entry.path} holds other bytes"
    except (zipfile.BadZipFile, OSError, ValueError, zlib.error) as exc:
        return f"is not a readable zip ({exc})"
    return None


def publish_package(layout: Layout, path: Path, sha256: str) -> None:
    from pmcp_build.package.write import layout_fingerprint

    store = remote.active()
    if store is None:
        return
    key = remote.action_key("package", layout_fingerprint(layout))
    marker = _published("package", key, store)
    if marker.exists():
        return
    entry = _lookup(store, key)
    if entry is not None and entry.get("zip") == sha256:
        stored = sha256 not in _missing or store.put(sha256, path)
    else:
        stored = store.put(sha256, path) and store.put_action(key, {"zip": sha256})
    if stored:
        _note(marker)
