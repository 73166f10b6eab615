"""The rebuild fast path: a build whose inputs are provably those of the last build,
give or take the content of some files, without loading the manifest again.

After every build of a python package, `record` writes `.pmcp/dist/.build-inputs.json`:
the layout's entries (in columns) with the stat signature (mode, size, mtime, inode,
ctime) of each file they came from, the sha256 of the zip they make, the names in every
folder under the source root (a file added, removed or renamed anywhere changes them;
editors that save by rename only change a file's signature), and the signatures of the
inputs that decide more than one file's content (the manifest, the requirements file,
the boot runtime, the handler template). `rebuild` checks all of them; if only the
content of recorded files changed, it rehashes those and splices their members into the
previous zip (package/splice.py: the bytes the writer would write, the previous zip
hashed first), or, when that zip is not the recorded one, writes the package through
the writer. Any other difference, any doubt, and the caller does the full build.

What a one-file rebuild of a 10,000-file source costs per unchanged file is one lstat,
its share of reading the record, and its row in the output: no open, no Path, no
member object. Its edits go to a small `.build-state.json` (the entries edited since the
record and the zip they make), so the record is rewritten only once they pile up.

Like git's index, a file whose mtime or ctime is within two seconds of the recording is
"racy" (it could change again within the clock's granularity): it is recorded as [-1]
and always rehashed. An edit that keeps the size and puts the mtime back still moves the
ctime, which no user call sets.
The module imports neither the manifest models nor the CLI framework: that is the point.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import sys
import time
from pathlib import Path
from typing import Any

from pmcp_build import __version__
from pmcp_build.layout.model import (
    UNZIPPED_LIMIT,
    Entry,
    Layout,
    normal_mode,
    warn_file_count,
)
from pmcp_build.package import cache as cache_store
from pmcp_build.package.cache import cache_dir
from pmcp_build.package.splice import Landed, NotTheRecordedZip, Replacement, splice
from pmcp_build.package.write import (
    CacheDamaged,
    Package,
    dependency_set,
    layout_fingerprint,
    record_uses,
    write_package,
)
from pmcp_build.package.zipwriter import BIG_MEMBER, FORMAT, write_order

RECORD = ".build-inputs.json"
STATE = ".build-state.json"
RECORD_VERSION = 2
_COLUMNS = ("path", "origin", "mode", "size", "sha256", "src", "detail", "sig", "inline")
_RACY_NS = 2_000_000_000
# Folders the source walk never enters, at any depth (source.tree.ALWAYS_EXCLUDED's
# folder names; tests/test_rebuild.py keeps the two in step), nor folders holding a
# pyvenv.cfg. Not imported from there: that module imports the manifest models.
SKIP_DIRS = frozenset(
    {".git", ".hg", ".svn", ".pmcp", ".venv", "venv", "__pycache__", ".mypy_cache",
     ".pytest_cache", ".ruff_cache", "node_modules"}
)  # fmt: skip

Sig = list[int]  # lstat mode, size, mtime_ns, inode, ctime_ns; [-1] racy


def _file_sig(path: Path | str, now_ns: int) -> Sig | None:
    """lstat's identity of a file; [-1] when too recent to trust; None when missing."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if now_ns - st.st_mtime_ns < _RACY_NS or now_ns - st.st_ctime_ns < _RACY_NS:
        return [-1]  # racy: always rehash
    return [st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]


def _dirs(root: Path) -> dict[str, list[str]]:
    """The names in every folder the source walk enters."""
    found: dict[str, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        found[dirpath] = sorted(dirnames + filenames)
        if dirpath != str(root) and "pyvenv.cfg" in filenames:
            dirnames[:] = []  # a virtualenv: never walked, never packaged
            found[dirpath] = []
            continue
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
    return found


def _is_file(entry: os.DirEntry[str]) -> bool:
    """A file, or a symlink to one; False for a broken link or a loop (excluded ones
    reach here: the walk refuses the others)."""
    try:
        return entry.is_file()
    except OSError:
        return False


def _tool_stamp() -> str:
    """The tool's own code: a rebuild must not replay a layout made by other code (the
    version alone does not change while someone works on pmcp-build itself)."""
    package = Path(__file__).resolve().parents[1]
    parts = []
    for dirpath, dirnames, filenames in os.walk(package):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith((".py", ".j2")):
                st = os.stat(os.path.join(dirpath, name))
                parts.append(f"{dirpath}/{name}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


def record(
    manifest: Path,
    source_root: Path,
    out_dir: Path,
    name: str,
    layout: Layout,
    strict: list[Path],
    allow_edits: bool,
) -> None:
    """Write what the fast path needs to prove a later build has the same inputs."""
    now_ns = time.time_ns()
    cache = cache_dir()
    inside = f"{cache}{os.sep}"
    cols: dict[str, list[Any]] = {key: [] for key in _COLUMNS}
    for e in layout.entries:
        src = str(e.src) if e.src is not None else None
        # Files in the cache are immutable (keyed by content); their sets are in `strict`.
        sig = None if src is None or src.startswith(inside) else _file_sig(src, now_ns)
        # Generated entries only: a file's bytes a layout holds (KeepBudget) are re-read
        # from its src when its signature changes.
        inline = e.data.decode("latin-1") if e.data is not None and src is None else None
        for key, value in zip(
            _COLUMNS,
            (e.path, e.origin, e.mode, e.size, e.sha256, src, e.detail, sig, inline),
            strict=True,
        ):
            cols[key].append(value)
    # Files at the source root that are not packaged still count, and so does every
    # .gitignore the walk reads (at any level): they decide which files are packaged.
    dirs = _dirs(source_root)
    sources = set(cols["src"])
    with os.scandir(source_root) as it:
        strict = [*strict, *(Path(f.path) for f in it if _is_file(f) and f.path not in sources)]
    strict += [Path(d) / ".gitignore" for d, names in dirs.items() if ".gitignore" in names]
    strict_sigs = {str(p): _file_sig(p, now_ns) for p in strict}
    data = {
        "version": RECORD_VERSION,
        "stamp": now_ns,  # which record a state file's edits apply to
        "tool": __version__,
        "python": sys.version,
        "code": _tool_stamp(),
        "format": FORMAT,
        "cache": str(cache),
        "manifest": str(manifest.resolve()),
        "name": name,
        "out_dir": str(out_dir),
        "layout": [layout.runtime, layout.handler, layout.architecture],
        "left_out": [list(x) for x in layout.left_out],
        "edits": allow_edits,
        "strict": strict_sigs,
        "root": str(source_root),
        "dirs": dirs,
        "entries": cols,
        "zip": _zip_of(layout, cache),
    }
    (out_dir / STATE).unlink(missing_ok=True)
    _write_json(out_dir / RECORD, data)


def _zip_of(layout: Layout, cache: Path) -> str | None:
    """The sha256 of the zip the build wrote (or reused) for `layout`, as the package
    index in the cache names it; None when there is none."""
    try:
        return (cache / "packages" / layout_fingerprint(layout)).read_text().split()[0]
    except (OSError, IndexError):
        return None


def _write_json(path: Path, data: object) -> None:
    with contextlib.suppress(OSError):
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(data, separators=(",", ":")))
        os.replace(tmp, path)


def forget(out_dir: Path) -> None:
    (out_dir / RECORD).unlink(missing_ok=True)
    (out_dir / STATE).unlink(missing_ok=True)


def rebuild(manifest: Path) -> Package | None:
    """The package, if the last build's record proves the inputs unchanged but for file
    contents; None when a full build is needed (also when a cached file it names failed
    its check: the full build makes that again)."""
    manifest = manifest.resolve()
    out_dir = manifest.parent / ".pmcp" / "dist"
    try:
        data = json.loads((out_dir / RECORD).read_text())
        if not _same_inputs(data, manifest, out_dir):
            return None
        cols = data["entries"]
        edits = _apply_state(out_dir, data)
        now_ns = time.time_ns()
        found = _changes(cols, edits, bool(data["edits"]), now_ns)
        if found is None:
            return None
        replaced, settled = found
        layout = _layout(data, cols)
    except Exception:  # any doubt: the full build decides, and reports
        return None
    try:
        package = _package(layout, out_dir, data, replaced)
    except CacheDamaged:
        return None  # warned; the full build evicts it and makes it again
    if replaced or settled or package.sha256 != data["zip"]:
        _save_state(out_dir, data, edits, package.sha256)
    return package


def _same_inputs(data: dict[str, Any], manifest: Path, out_dir: Path) -> bool:
    """The record is this tool's, for this manifest, and nothing but file contents moved:
    the inputs that decide many files, and the names in every folder of the source."""
    if (
        data.get("version") != RECORD_VERSION
        or data["tool"] != __version__
        or data["python"] != sys.version
        or data["format"] != FORMAT
        or data["code"] != _tool_stamp()
        or data["cache"] != str(cache_dir())
        or data["manifest"] != str(manifest)
        or data["out_dir"] != str(out_dir)
    ):
        return False
    now_ns = time.time_ns()
    for path, sig in data["strict"].items():
        if sig == [-1] or _file_sig(path, now_ns) != sig:
            return False
    return bool(_dirs(Path(data["root"])) == data["dirs"])


# A state file holds the entries edited since the record was written (and the zip they
# make), so a one-file rebuild writes a few hundred bytes, not the 2.5 MB record of a
# 10k-file source; past this many edited entries the record is written again instead.
_STATE_EDITS = 256


def _apply_state(out_dir: Path, data: dict[str, Any]) -> dict[str, list[Any]]:
    """The edits of the state file that belongs to this record, applied to its columns."""
    try:
        state = json.loads((out_dir / STATE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(state, dict) or state.get("stamp") != data["stamp"]:
        return {}
    cols = data["entries"]
    edits: dict[str, list[Any]] = state["edits"]
    for key, (mode, size, sha, sig) in edits.items():
        i = int(key)
        cols["mode"][i], cols["size"][i], cols["sha256"][i], cols["sig"][i] = mode, size, sha, sig
    data["zip"] = state["zip"]
    return edits


def _save_state(
    out_dir: Path, data: dict[str, Any], edits: dict[str, list[Any]], zip_sha: str
) -> None:
    if len(edits) > _STATE_EDITS:
        data["stamp"], data["zip"] = time.time_ns(), zip_sha
        (out_dir / STATE).unlink(missing_ok=True)
        _write_json(out_dir / RECORD, data)
        return
    _write_json(out_dir / STATE, {"stamp": data["stamp"], "zip": zip_sha, "edits": edits})


def _changes(
    cols: dict[str, list[Any]], edits: dict[str, list[Any]], allow_edits: bool, now_ns: int
) -> tuple[list[Replacement], bool] | None:
    """The entries whose content changed (their columns and `edits` updated in place),
    and whether a signature settled; None when the full build must decide.

    A file is read only when its lstat signature (mode, size, mtime, inode, ctime) moved
    or is racy: 10,000 unchanged files cost 10,000 lstat calls and no open."""
    import hashlib

    lstat = os.lstat
    sigs = cols["sig"]
    replaced: list[Replacement] = []
    settled = False
    for i, src in enumerate(cols["src"]):
        sig = sigs[i]
        if sig is None:
            continue  # generated, or in the cache (immutable, its set checked strictly)
        try:
            st = lstat(src)
        except OSError:
            return None  # gone: the full build says what that means
        # A recorded signature is a settled one ([-1] otherwise): equal, the file is the
        # one hashed then (a write moves the mtime or, if put back, the ctime).
        if [st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns] == sig:
            continue
        if (st.st_mode & 0o170000) != 0o100000:
            return None  # now a symlink or a folder
        current = _file_sig(src, now_ns)
        with open(src, "rb") as fh:
            content = fh.read()
            st_mode = os.fstat(fh.fileno()).st_mode
        digest = hashlib.sha256(content).hexdigest()
        mode = normal_mode(st_mode) if cols["origin"][i] != "boot" else cols["mode"][i]
        if digest != cols["sha256"][i] or mode != cols["mode"][i]:
            if not allow_edits:
                return None
            replaced.append(Replacement(i, cols["path"][i], mode, digest, content, cols["size"][i]))
        elif current == sig or current is None:
            continue  # racy and unchanged: rehashed again next time
        settled = settled or current != [-1]
        cols["mode"][i], cols["size"][i], cols["sha256"][i] = mode, len(content), digest
        sigs[i] = current
        edits[str(i)] = [mode, len(content), digest, current]
    return replaced, settled


def _layout(data: dict[str, Any], cols: dict[str, list[Any]]) -> Layout:
    """The layout of the last build with the edited contents. Its paths, origins and
    details are the last build's, which make_layout checked; only the sizes can break a
    limit. Entries keep their source as a str (made a Path when read)."""
    entries = tuple(
        map(
            Entry,
            cols["path"], cols["origin"], cols["mode"], cols["size"], cols["sha256"],
            cols["src"], [None if s is None else s.encode("latin-1") for s in cols["inline"]],
            cols["detail"],
        )
    )  # fmt: skip
    runtime, handler, architecture = data["layout"]
    left_out = tuple((str(a), str(b)) for a, b in data.get("left_out", []))
    layout = Layout(entries, runtime, handler, architecture, left_out)
    if sum(cols["size"]) > UNZIPPED_LIMIT:
        raise ValueError("over the unzipped limit: the full build says so")
    warn_file_count(cols["path"])
    return layout


def _package(
    layout: Layout, out_dir: Path, data: dict[str, Any], replaced: list[Replacement]
) -> Package:
    """The zip: the last one with the edited members spliced in, when it is there and
    unchanged (its sha256 is checked); otherwise through the writer."""
    name = data["name"]
    recorded = data.get("zip")
    if not replaced or not isinstance(recorded, str) or _moves(replaced):
        return write_package(layout, out_dir, name)
    started = time.time()
    old = out_dir / f"{name}-{recorded[:12]}.zip"
    tmp = out_dir / f".{name}-building.zip"
    try:
        shas = [e.sha256 for e in layout.entries]
        order = write_order(layout.entries)
        digest, written = splice(old, tmp, shas, replaced, old_sha256=recorded, order=order)
    except (NotTheRecordedZip, ValueError, struct.error, OSError):
        # Not the recorded zip, or not of the recorded shape: the writer makes it (and
        # warns about a changed zip as it would on a full build).
        return write_package(layout, out_dir, name)
    final = out_dir / f"{name}-{digest[:12]}.zip"
    os.replace(tmp, final)
    old.unlink(missing_ok=True)
    root = cache_dir()
    index = root / "packages" / _fingerprint(layout)
    cache_store.write_atomic(index, f"{digest}\n".encode())
    _index_zip(out_dir / f".{name}.members.json", final, written, digest)
    record_uses(root, layout, index, dependency_set(layout), started)
    return Package(layout=layout, path=final, sha256=digest, size=final.stat().st_size)


def _moves(replaced: list[Replacement]) -> bool:
    """Whether an edit can move a member in the zip: the writer puts members of
    BIG_MEMBER bytes or more first, by size, so an edit of one (or one that becomes one)
    changes the order, which the splice keeps; the writer then writes the zip."""
    return any(max(r.old_size, len(r.data)) >= BIG_MEMBER for r in replaced)


def _fingerprint(layout: Layout) -> str:
    """write.layout_fingerprint, hashed in one update instead of one per entry (the same
    bytes: tests/test_rebuild_splice.py compares the two)."""
    import hashlib

    h = hashlib.sha256(f"zip-v3 {FORMAT}\n".encode())
    h.update("".join([f"{e.path}\0{e.mode:o}\0{e.sha256}\n" for e in layout.entries]).encode())
    return h.hexdigest()


def _index_zip(index: Path, zip_path: Path, landed: list[Landed], digest: str) -> None:
    """zipwriter.index_zip's index of the spliced zip (the pack the next full build
    copies unchanged members from), written as text rather than through a dict of lists
    and json.dumps: a third of the cost on 10,000 members. The same document
    (tests/test_rebuild_splice.py parses both)."""
    from json.encoder import encode_basestring_ascii as text

    table: dict[str, str] = {}  # the last member of a content wins, as in index_zip
    for sha, method, crc, offset, length in landed:
        table[sha] = f"[{method},{crc},{offset},{length}]"
    members = ",".join([f"{text(sha)}:{row}" for sha, row in table.items()])
    head = {
        "format": FORMAT,
        "owner": index.parent.name,
        "file": os.path.relpath(zip_path, index.parent),
        "size": zip_path.stat().st_size,
        "sha256": digest,
    }
    body = json.dumps(head, separators=(",", ":"))[:-1] + ',"members":{' + members + "}}"
    cache_store.write_atomic(index, body.encode())
