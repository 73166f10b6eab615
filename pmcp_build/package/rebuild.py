"""The rebuild fast path: a build whose inputs are provably those of the last build,
give or take the content of some files, without loading the manifest again.

After every build of a python package, `record` writes `.pmcp/dist/.build-inputs.json`:
the layout's entries with the stat signature (size, mtime, inode, ctime) of each file
they came from, the names in every folder under the source root (a file added, removed
or renamed anywhere changes them; editors that save by rename only change a file's
signature), and the signatures of the inputs that decide more than one file's content
(the manifest, the requirements file, the boot runtime, the handler template).
`rebuild` checks all of them; if only the content of recorded files changed, it
rehashes those, rebuilds the layout with the same checks (make_layout) and writes the
package through the same writer, so the zip is the one a full build writes. Any other
difference, any doubt, and the caller does the full build.

Like git's index, a file whose mtime is within two seconds of the recording is "racy"
(it could change again within the clock's granularity) and is always rehashed.
The module imports neither the manifest models nor the CLI framework: that is the point.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from pmcp_build import __version__
from pmcp_build.layout.model import Entry, Layout, make_layout, normal_mode
from pmcp_build.package.cache import cache_dir
from pmcp_build.package.write import CacheDamaged, Package, write_package
from pmcp_build.package.zipwriter import FORMAT

RECORD = ".build-inputs.json"
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
    entries = []
    for e in layout.entries:
        src = str(e.src) if e.src is not None else None
        # Files in the cache are immutable (keyed by content); their sets are in `strict`.
        sig = None if src is None or src.startswith(inside) else _file_sig(src, now_ns)
        # Generated entries only: a file's bytes a layout holds (KeepBudget) are re-read
        # from its src when its signature changes.
        inline = e.data.decode("latin-1") if e.data is not None and src is None else None
        entries.append([e.path, e.origin, e.mode, e.size, e.sha256, src, e.detail, sig, inline])
    # Files at the source root that are not packaged still count, and so does every
    # .gitignore the walk reads (at any level): they decide which files are packaged.
    dirs = _dirs(source_root)
    sources = {row[5] for row in entries}
    with os.scandir(source_root) as it:
        strict = [*strict, *(Path(f.path) for f in it if _is_file(f) and f.path not in sources)]
    strict += [Path(d) / ".gitignore" for d, names in dirs.items() if ".gitignore" in names]
    strict_sigs = {str(p): _file_sig(p, now_ns) for p in strict}
    data = {
        "tool": __version__,
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
        "entries": entries,
    }
    path = out_dir / RECORD
    with contextlib.suppress(OSError):
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(data, separators=(",", ":")))
        os.replace(tmp, path)


def forget(out_dir: Path) -> None:
    (out_dir / RECORD).unlink(missing_ok=True)


def rebuild(manifest: Path) -> Package | None:
    """The package, if the last build's record proves the inputs unchanged but for file
    contents; None when a full build is needed (also when a cached file it names failed
    its check: the full build makes that again)."""
    manifest = manifest.resolve()
    out_dir = manifest.parent / ".pmcp" / "dist"
    try:
        data = json.loads((out_dir / RECORD).read_text())
        if (
            data["tool"] != __version__
            or data["format"] != FORMAT
            or data["code"] != _tool_stamp()
            or data["cache"] != str(cache_dir())
            or data["manifest"] != str(manifest)
            or data["out_dir"] != str(out_dir)
        ):
            return None
        now_ns = time.time_ns()
        for path, sig in data["strict"].items():
            if sig == [-1] or _file_sig(path, now_ns) != sig:
                return None
        names = data["dirs"]
        if _dirs(Path(data["root"])) != names:
            return None
        found = _entries(data["entries"], bool(data["edits"]), now_ns)
        if found is None:
            return None
        entries, changed = found
        runtime, handler, architecture = data["layout"]
        left_out = tuple((str(a), str(b)) for a, b in data.get("left_out", []))
        layout = make_layout(entries, runtime, handler, architecture, left_out)
    except Exception:  # any doubt: the full build decides, and reports
        return None
    try:
        package = write_package(layout, out_dir, data["name"])
    except CacheDamaged:
        return None  # warned; the full build evicts it and makes it again
    if changed:
        # Edited files: record their new signatures so the next build need not rehash.
        path = out_dir / RECORD
        with contextlib.suppress(OSError):
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
            tmp.write_text(json.dumps(data, separators=(",", ":")))
            os.replace(tmp, path)
    return package


def _entries(
    rows: list[list[object]], allow_edits: bool, now_ns: int
) -> tuple[list[Entry], bool] | None:
    """The recorded entries, edited files rehashed (and their rows updated in place)."""
    import hashlib

    entries: list[Entry] = []
    changed = False
    for row in rows:
        path, origin, mode, size, sha, src, detail, sig, data = row
        src_path = Path(src) if isinstance(src, str) else None
        if src_path is not None and sig is not None:
            current = _file_sig(src_path, now_ns)
            if current is None or (current != [-1] and (current[0] & 0o170000) != 0o100000):
                return None  # gone, or now a symlink: the full build says what that means
            if current != sig or sig == [-1]:
                content = src_path.read_bytes()
                digest = hashlib.sha256(content).hexdigest()
                new_mode = normal_mode(os.stat(src_path).st_mode) if origin != "boot" else mode
                if digest != sha or new_mode != mode:
                    if not allow_edits:
                        return None
                    sha, size, mode = digest, len(content), new_mode
                if current != sig and current != [-1]:
                    # A settled signature is worth recording; a racy file (just saved)
                    # is rehashed next time anyway, so the record is left as it is.
                    row[2:5] = [mode, size, sha]
                    row[7] = current
                    changed = True
        entries.append(
            Entry(
                path=str(path),
                origin=origin,  # type: ignore[arg-type]
                mode=int(mode),  # type: ignore[call-overload]
                size=int(size),  # type: ignore[call-overload]
                sha256=str(sha),
                src=src_path,
                data=data.encode("latin-1") if isinstance(data, str) else None,
                detail=str(detail),
            )
        )
    return entries, changed
