"""What the load check's sandbox shows at /var/task and /var/bytecode, made cheaply.

The task root. A dependency set's `site/` is sealed and the sandbox can only read it,
so a top-level folder (or file) of it whose files are exactly the layout's entries
there (same names, modes and bytes; no other file, folder or symlink) is bound
read-only into /var/task instead of copied. Only the rest (the source, `__metorial__/`,
the handler, the assets) is laid out in the slot's root, as before, which holds an empty
folder or file where each bound entry is mounted. Bytes are checked by sha256 once and
then by identity: `check/site.json` records each verified file's inode, size, mtime and
ctime (a write or chmod moves the ctime), as the slot's own root record does.

Bytecode. A dependency file's bytecode is compiled once per file content: the store
`pyc/<tag>/<xx>/<source sha256>.<pyc sha256>.pyc` (sealed: the name ends in the sha256
of its bytes, checked when it is linked) holds hash-checked .pyc files, which do not
depend on the source's path or mtime (the loader checks them against the source's
bytes and gives the code the path it was found at), so two dependency sets with the
same file share one. A check's pycache prefix (one per slot) holds hard links to the
store at the paths the worker sees its files at, so the sandbox shows the bytecode of
this package's files and no other project's. The standard library's bytecode is the
python installation's own (its `__pycache__`), mirrored once per installation as
symlinks under `stdlib/<key>/` and mounted over the prefix's copy of its path.

Everything here is written by the tool, outside the sandbox, from files it verified;
the worker runs with -B and sees all of it read-only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from pmcp_build.package import cache as cache_store

if TYPE_CHECKING:
    from pmcp_build.layout.model import Entry, Layout

SITE_RECORD = "site.json"
PREFIX_FORMAT = "v2"  # the slot prefix's record: links into the content store
# Folders of the standard library no server imports from: not mirrored (an import from
# one compiles in memory, as it would without the mirror).
STDLIB_SKIP = {"site-packages", "dist-packages", "test", "idlelib", "turtledemo", "tkinter"}
# Compiles one .pyc per line of stdin ([source, cfile, name shown]), hash-checked: valid
# for any source with these bytes, wherever it is and whatever its mtime. Runs in the
# target python, outside the sandbox, on files the tool verified: compiling runs nothing.
COMPILER = (
    "import json, py_compile, sys\n"
    "mode = py_compile.PycInvalidationMode.CHECKED_HASH\n"
    "for src, cfile, shown in json.load(sys.stdin):\n"
    "    py_compile.compile(src, cfile, shown, doraise=False, quiet=2, invalidation_mode=mode)\n"
)


# -- the task root: binds of the sealed site ------------------------------------------


def bindable(layout: Layout, folder: Path) -> tuple[dict[str, Path], Callable[[], bool]]:
    """The top-level names of the task root that can be bound from the dependency set at
    `folder` (name -> host path): every file under it is a dependency entry from this
    set's site/, and site/ holds exactly those files there, with their modes. And what
    confirms their bytes (True when each file not known by identity hashes to its
    entry's sha256; it records them), which may run while the worker loads: nothing the
    check reports counts before it says True."""
    site = folder / "site"
    prefix = f"{site}{os.sep}"
    by_top: dict[str, dict[str, Entry]] = {}
    blocked: set[str] = set()
    for entry in layout.entries:
        top = entry.path.split("/", 1)[0]
        src = str(entry.src) if entry.src is not None else ""
        if entry.origin == "dependency" and src == prefix + entry.path:
            by_top.setdefault(top, {})[entry.path] = entry
        else:
            blocked.add(top)
    record_path = folder / "check" / SITE_RECORD
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        record = {}
    verified: dict[str, list[object]] = {}
    to_hash: list[tuple[str, Entry, list[object]]] = []
    found: dict[str, Path] = {}
    for top, wanted in by_top.items():
        if top not in blocked and _same_files(site, top, wanted, record, verified, to_hash):
            found[top] = site / top

    def confirm() -> bool:
        if not _hashes_match(site, to_hash):
            return False
        verified.update((rel, now) for rel, _, now in to_hash)
        if verified != {p: record.get(p) for p in verified}:
            with contextlib.suppress(OSError):
                cache_store.write_atomic(record_path, json.dumps(verified).encode())
        return True

    return found, confirm


def _same_files(
    site: Path,
    top: str,
    wanted: dict[str, Entry],
    record: dict[str, list[object]],
    verified: dict[str, list[object]],
    to_hash: list[tuple[str, Entry, list[object]]],
) -> bool:
    """Whether site/<top> holds exactly `wanted` (paths relative to site/), nothing else,
    with their modes; the files not known by identity are added to `to_hash`."""
    root = site / top
    files: list[tuple[str, os.stat_result]] = []
    if top in wanted:
        try:
            files.append((top, os.lstat(root)))
        except OSError:
            return False
    else:
        for dirpath, dirnames, filenames in os.walk(root):
            if not dirnames and not filenames:
                return False  # an empty folder: the zip has none
            base = os.path.relpath(dirpath, site).replace(os.sep, "/")
            for name in dirnames:
                if os.path.islink(os.path.join(dirpath, name)):
                    return False
            for name in filenames:
                files.append((f"{base}/{name}", os.lstat(os.path.join(dirpath, name))))
    if len(files) != len(wanted):
        return False
    hashing: list[tuple[str, Entry, list[object]]] = []
    for rel, st in files:
        entry = wanted.get(rel)
        if entry is None or not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) != entry.mode:
            return False
        now: list[object] = [entry.sha256, entry.mode, st.st_ino, st.st_size, st.st_mtime_ns]
        now.append(st.st_ctime_ns)
        if record.get(rel) != now:
            hashing.append((rel, entry, now))
        else:
            verified[rel] = now
    to_hash += hashing
    return True


def _hashes_match(site: Path, files: list[tuple[str, Entry, list[object]]]) -> bool:
    """Every file's sha256 is its entry's (read on two threads: hashing frees the GIL)."""
    if not files:
        return True
    from concurrent.futures import ThreadPoolExecutor

    def same(item: tuple[str, Entry, list[object]]) -> bool:
        return cache_store.file_sha256(site / item[0]) == item[1].sha256

    with ThreadPoolExecutor(max_workers=2) as pool:
        return all(pool.map(same, files, chunksize=32))


def place_mountpoints(root: Path, bound: dict[str, Path]) -> None:
    """An empty folder (or file) in the slot's root where each bound entry is mounted: a
    read-only root cannot have one made in it."""
    for top, host in bound.items():
        target = root / top
        if host.is_dir():
            target.mkdir(exist_ok=True)
        else:
            target.touch(exist_ok=True)


# -- bytecode: the content-addressed store and a slot's prefix of links ----------------


def store_dir(tag: str) -> Path:
    return cache_store.cache_dir() / "pyc" / tag


def pyc_name(path: str, tag: str) -> str:
    """Where a source at `path` (as the worker sees it, absolute) has its bytecode under
    a pycache prefix: the path without its leading / and .py, plus .<tag>.pyc."""
    return f"{path.lstrip('/')[: -len('.py')]}.{tag}.pyc"


class Prefix:
    """A slot's pycache prefix: hard links into the store, and the record of them
    (prefix path -> [source sha256, the file's inode, its ctime]). Copies instead of
    links where the check runs without a sandbox (`linked` False): a server that can
    write there then reaches only this slot's copy, whose changed ctime has it copied
    again (a link's ctime moves whenever another slot links the same file, so only
    the inode is compared for links, which nothing but the tool can write through)."""

    def __init__(self, folder: Path, tag: str, linked: bool = True) -> None:
        self.folder, self.tag, self.linked = folder, tag, linked
        self.record_path = folder.with_name(f"{folder.name}.{PREFIX_FORMAT}.json")
        try:
            self.record: dict[str, list[object]] = json.loads(self.record_path.read_text())
        except (OSError, ValueError):
            # Written by an older version (timestamp .pyc files kept per mtime): start over.
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True, exist_ok=True)
            self.record = {}
        self.shards: dict[str, list[str]] = {}

    def link(self, wanted: dict[str, str]) -> dict[str, str]:
        """Make the prefix hold the store's bytecode for `wanted` (prefix path -> source
        sha256) and nothing it linked before for other paths; returns the wanted paths
        the store has no bytecode for."""
        for rel in [r for r in self.record if r not in wanted]:
            with contextlib.suppress(OSError):
                os.unlink(self.folder / rel)
            del self.record[rel]
        missing: dict[str, str] = {}
        for rel, sha in wanted.items():
            if not self._kept(rel, sha) and not self._link_one(rel, sha):
                missing[rel] = sha
        return missing

    def _kept(self, rel: str, sha: str) -> bool:
        known = self.record.get(rel)
        if not known or len(known) != 3 or known[0] != sha:
            return False
        try:
            st = os.lstat(self.folder / rel)
        except OSError:
            return False
        return st.st_ino == known[1] and (self.linked or st.st_ctime_ns == known[2])

    def _link_one(self, rel: str, sha: str) -> bool:
        shard = store_dir(self.tag) / sha[:2]
        if shard.name not in self.shards:
            self.shards[shard.name] = cache_store.listing(shard)
        for path in cache_store.find_sealed(self.shards[shard.name], shard, sha, ".pyc"):
            if cache_store.read_sealed(path, ".pyc", "bytecode") is not None:
                self._put(rel, sha, path)
                return True
        self.record.pop(rel, None)
        with contextlib.suppress(OSError):
            os.unlink(self.folder / rel)  # a stale link would only be refused by its hash
        return False

    def _put(self, rel: str, sha: str, stored: Path) -> None:
        target = self.folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target)
        try:
            if not self.linked:
                raise OSError("a copy")
            os.link(stored, target)
        except OSError:  # unsandboxed, another file system, or no hard links here
            shutil.copyfile(stored, target)
        st = os.lstat(target)
        self.record[rel] = [sha, st.st_ino, st.st_ctime_ns]

    def add(self, compiled: dict[str, tuple[str, Path]]) -> None:
        """Link freshly compiled store entries (prefix path -> (sha, stored))."""
        for rel, (sha, stored) in compiled.items():
            self._put(rel, sha, stored)

    def save(self) -> None:
        with contextlib.suppress(OSError):
            cache_store.write_atomic(self.record_path, json.dumps(self.record).encode())


def compile_into_store(
    python: str, jobs: Iterable[tuple[str, str, Path, str]], tag: str, workers: int = 2
) -> dict[str, tuple[str, Path]]:
    """Compile each job (prefix path, source sha256, source file, path shown) in the
    target python, on `workers` processes side by side, into the store; returns prefix
    path -> (sha256, stored file) for those that compiled (a source that does not
    compile has none: the worker reports its error)."""
    jobs = list(jobs)
    if not jobs:
        return {}
    store = store_dir(tag)
    store.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".stage-check-", dir=store))
    try:
        lines = [
            [str(src), str(stage / f"{i}.pyc"), shown] for i, (_, _, src, shown) in enumerate(jobs)
        ]
        _run_compilers(python, lines, workers)
        done: dict[str, tuple[str, Path]] = {}
        for i, (rel, sha, _, _) in enumerate(jobs):
            built = stage / f"{i}.pyc"
            try:
                data = built.read_bytes()
            except OSError:
                continue
            stored = cache_store.sealed_path(store / sha[:2], sha, data, ".pyc")
            stored.parent.mkdir(exist_ok=True)
            os.replace(built, stored)  # the stage is in the store: a rename, never a copy
            done[rel] = (sha, stored)
        return done
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _run_compilers(python: str, lines: list[list[str]], workers: int) -> None:
    """Split `lines` over `workers` compilers running at once; a failure only costs the
    next check the compile."""
    count = max(1, min(workers, len(lines) // 16 or 1))
    procs = []
    for part in range(count):
        with contextlib.suppress(OSError):
            proc = subprocess.Popen(
                [python, "-I", "-S", "-c", COMPILER],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                text=True,
                env={"PATH": "/usr/bin:/bin"},
            )
            procs.append((proc, json.dumps(lines[part::count])))
    for proc, text in procs:
        assert proc.stdin is not None
        with contextlib.suppress(OSError):
            proc.stdin.write(text)
            proc.stdin.close()
    for proc, _ in procs:
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- the standard library's own bytecode ------------------------------------------------


def stdlib_dir(python_prefix: Path, version: str) -> Path | None:
    folder = python_prefix / "lib" / f"python{version}"
    return folder if (folder / "os.py").is_file() else None


def stdlib_mirror(stdlib: Path, python: str, tag: str) -> Path | None:
    """stdlib/<key>/: for each module of the installation's standard library with its own
    bytecode, a symlink to it where a pycache prefix looks for it. Keyed by the python
    and the library's stat, made once per installation (a few ms of symlinks)."""
    try:
        stamp = [os.stat(stdlib / name) for name in ("os.py", "__pycache__")]
    except OSError:
        return None
    seen = [os.path.realpath(python), str(stdlib), tag]
    seen += [f"{st.st_ino}:{st.st_mtime_ns}:{st.st_ctime_ns}" for st in stamp]
    key = hashlib.sha256("\0".join(seen).encode()).hexdigest()[:32]
    mirror = cache_store.cache_dir() / "stdlib" / key
    if (mirror / ".complete").exists():
        return mirror
    mirror.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=mirror.parent))
    try:
        _mirror_into(stdlib, tmp, tag)
        (tmp / ".complete").touch()
        with contextlib.suppress(OSError):
            os.replace(tmp, mirror)  # a concurrent build's identical mirror may be there
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return mirror if (mirror / ".complete").exists() else None


def _mirror_into(stdlib: Path, dest: Path, tag: str) -> None:
    suffix = f".{tag}.pyc"
    for dirpath, dirnames, _ in os.walk(stdlib):
        dirnames[:] = [d for d in dirnames if d not in STDLIB_SKIP and d != "__pycache__"]
        cache = os.path.join(dirpath, "__pycache__")
        try:
            names = [n for n in os.listdir(cache) if n.endswith(suffix)]
        except OSError:
            continue
        rel = os.path.relpath(dirpath, stdlib)
        out = dest / rel
        out.mkdir(parents=True, exist_ok=True)
        for name in names:
            if os.path.isfile(os.path.join(dirpath, name[: -len(suffix)] + ".py")):
                os.symlink(os.path.join(cache, name), out / name)
