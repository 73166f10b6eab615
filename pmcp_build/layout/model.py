"""The package layout: every file of the zip, where it came from, and Lambda's limits.

A Layout is pure data; it is decided before a single byte is compressed, so `plan`
can show it and its identity is fixed by its entries alone.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pmcp_build.errors import UserError
from pmcp_build.frozen import Frozen
from pmcp_build.text import UNSAFE, one_line

if TYPE_CHECKING:
    from typing import Literal

    Origin = Literal["source", "dependency", "boot", "generated", "asset", "artifact"]

# Lambda quotas (https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html).
# Lambda's "MB" is 2**20 bytes: GetAccountSettings reports CodeSizeUnzipped 262144000
# for its "250 MB" and CodeSizeZipped 52428800 for "50 MB". Sizes are shown in the same
# unit (`megabytes`), so the limit reads 250 MB as Lambda documents it, never 262 MB.
MB = 1024 * 1024
UNZIPPED_LIMIT = 250 * MB
DIRECT_UPLOAD_LIMIT = 50 * MB
PAYLOAD_LIMIT = 6 * MB  # a synchronous invocation's request and response


def megabytes(size: int) -> str:
    """A size in Lambda's own MB (2**20 bytes): `250.0 MB` for the unzipped limit."""
    return f"{size / MB:.1f} MB"


# Not a Lambda quota (Lambda documents none on a package's file count): past this many
# files, a package is more likely a virtualenv or node_modules swept in than a server, so
# the build says so, naming the largest folders, and goes on.
FILE_COUNT_WARNING = 20_000
_FOLDERS_NAMED = 3

MODE_FILE = 0o644
MODE_EXEC = 0o755


def normal_mode(st_mode: int) -> int:
    """Collapse any permission bits to the two modes a package may hold."""
    return MODE_EXEC if st_mode & 0o111 else MODE_FILE


class Entry(Frozen):
    """One file in the package. Content comes from `src` on disk or from `data`.

    Equality is by what lands in the zip and where it came from, not by where the bytes
    are read from (`src`, `data`)."""

    __slots__ = ("_src", "data", "detail", "mode", "origin", "path", "sha256", "size")
    _compared = ("path", "origin", "mode", "size", "sha256", "detail")
    path: str
    origin: Origin
    mode: int
    size: int
    sha256: str
    _src: Path | str | None
    data: bytes | None
    detail: str  # "humanize 4.9.0" for a dependency, the asset's `from`, ...

    def __init__(
        self,
        path: str,
        origin: Origin,
        mode: int,
        size: int,
        sha256: str,
        src: Path | str | None = None,
        data: bytes | None = None,
        detail: str = "",
    ) -> None:
        # Slot by slot, not through _init: a build makes one Entry per file (10,000 on
        # a big source) and the keyword dict doubles the cost of each (~0.9 vs 0.5 us).
        put = object.__setattr__
        put(self, "path", path)
        put(self, "origin", origin)
        put(self, "mode", mode)
        put(self, "size", size)
        put(self, "sha256", sha256)
        put(self, "_src", src)
        put(self, "data", data)
        put(self, "detail", detail)

    @property
    def src(self) -> Path | None:
        """The file the bytes come from. Given as a str (the rebuild fast path, which
        makes 10,000 entries and reads few of their files), it becomes a Path when first
        asked for: a Path costs ~2 us to make, three times the rest of the entry."""
        src = self._src
        if isinstance(src, str):
            src = Path(src)
            object.__setattr__(self, "_src", src)
        return src

    @property
    def src_text(self) -> str | None:
        """`src` as a str, without making a Path of it."""
        return None if self._src is None else str(self._src)

    def replace(self, **changes: Any) -> Entry:
        fields = {name: getattr(self, name) for name in self._compared or ()}
        return Entry(**{**fields, "src": self._src, "data": self.data, **changes})

    def __repr__(self) -> str:
        return (
            f"Entry(path={self.path!r}, origin={self.origin!r}, mode={self.mode:o}, "
            f"size={self.size}, sha256={self.sha256[:12]!r}, detail={self.detail!r})"
        )

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.src is not None
        return self.src.read_bytes()


def entry_from_bytes(
    path: str, data: bytes, origin: Origin, mode: int = MODE_FILE, detail: str = ""
) -> Entry:
    return Entry(
        path=path,
        origin=origin,
        mode=mode,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        data=data,
        detail=detail,
    )


def entry_from_file(
    path: str,
    src: Path,
    origin: Origin,
    mode: int | None = None,
    detail: str = "",
    keep: KeepBudget | None = None,
) -> Entry:
    """An entry for a file on disk, read and hashed once. With `keep`, the bytes are
    held while the budget lasts, so the zip writer and the load check do not open the
    file again (small source files, where the open costs more than the bytes held)."""
    with open(src, "rb") as fh:
        data = fh.read()
        st_mode = os.fstat(fh.fileno()).st_mode
    return Entry(
        path=path,
        origin=origin,
        mode=normal_mode(st_mode) if mode is None else mode,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        src=src,
        data=data if keep is not None and keep.take(len(data)) else None,
        detail=detail,
    )


class KeepBudget:
    """Which files' bytes a layout holds: files up to 64 KiB, 16 MiB in all. Bounded
    whatever the package's size, so memory still follows the largest file; on a
    10k-file source it saves the writer 10k opens."""

    FILE = 64 * 1024
    TOTAL = 16 * 1024 * 1024

    def __init__(self) -> None:
        self.left = self.TOTAL

    def take(self, size: int) -> bool:
        if size > self.FILE or size > self.left:
            return False
        self.left -= size
        return True


class Layout(Frozen):
    __slots__ = (
        "architecture",
        "entries",
        "handler",
        "left_out",
        "lock_changed",
        "lock_lines",
        "runtime",
    )
    entries: tuple[Entry, ...]
    runtime: str  # "python3.12" | "provided.al2023"
    handler: str  # "index.handler" | "bootstrap"
    architecture: str
    # Source paths the walk left out and why (.gitignore, exclude, secret-like files):
    # shown in the build summary, not part of the package.
    left_out: tuple[tuple[str, str], ...]
    # What the build did with metorial.lock (python_lock.Outcome.lines()): the first
    # line says it, the rest name the versions that moved. Empty for binary packages.
    lock_lines: tuple[str, ...]
    lock_changed: bool  # written, updated or unlocked: worth a line on stderr

    def __init__(
        self,
        entries: tuple[Entry, ...],
        runtime: str,
        handler: str,
        architecture: str,
        left_out: tuple[tuple[str, str], ...] = (),
        lock_lines: tuple[str, ...] = (),
        lock_changed: bool = False,
    ) -> None:
        self._init(
            entries=entries, runtime=runtime, handler=handler, architecture=architecture,
            left_out=left_out, lock_lines=lock_lines, lock_changed=lock_changed,
        )  # fmt: skip

    def __repr__(self) -> str:
        return (
            f"Layout({len(self.entries)} entries, runtime={self.runtime!r}, "
            f"handler={self.handler!r}, architecture={self.architecture!r})"
        )

    @property
    def unzipped_size(self) -> int:
        return sum(e.size for e in self.entries)

    def get(self, path: str) -> Entry | None:
        for entry in self.entries:
            if entry.path == path:
                return entry
        return None


def _check_path(entry: Entry) -> None:
    """Every package path is normalised, relative and inside the package."""
    path = entry.path
    parts = path.split("/")
    if (
        not path
        or path.startswith("/")
        or "\\" in path
        or any(p in ("", ".", "..") for p in parts)
        or len(path.encode()) > 1024
    ):
        raise UserError(
            f"package path {path[:200]!r} ({_describe(entry)}) is not a normalised relative "
            "path inside the package; fix the asset's 'to' or rename the file"
        )
    if UNSAFE.search(path):
        # Printed in every plan: a newline in a name would add a line of its own.
        raise UserError(
            f"package path {path[:200]!r} ({_describe(entry)}) holds a control or "
            "bidirectional-override character; rename the file or exclude it"
        )


def _assets_ship_once(entries: list[Entry]) -> list[Entry]:
    """A file of the source that an asset names ships once, where the asset puts it: with
    `[source] path = "."` it is also a source file, and would otherwise be packaged at
    both paths (a 300 MB database counted twice against the 250 MB limit)."""
    assets = {os.path.normpath(e.src) for e in entries if e.origin == "asset" and e.src}
    if not assets:
        return entries
    return [
        e
        for e in entries
        if not (e.origin == "source" and e.src is not None and os.path.normpath(e.src) in assets)
    ]


def make_layout(
    entries: list[Entry],
    runtime: str,
    handler: str,
    architecture: str,
    left_out: tuple[tuple[str, str], ...] = (),
    lock_lines: tuple[str, ...] = (),
    lock_changed: bool = False,
) -> Layout:
    """Sort, check for collisions and limits; the one way a Layout comes to be."""
    by_path: dict[str, Entry] = {}
    for entry in _assets_ship_once(entries):
        _check_path(entry)
        other = by_path.get(entry.path)
        if other is not None:
            raise UserError(
                f"two files want the package path {entry.path!r}: "
                f"{_describe(other)} and {_describe(entry)}; change the asset's 'to' "
                "or exclude one of them"
            )
        by_path[entry.path] = entry
    _check_dir_file_clash(by_path)
    layout = Layout(
        entries=tuple(sorted(by_path.values(), key=lambda e: e.path)),
        runtime=runtime,
        handler=handler,
        architecture=architecture,
        left_out=tuple(left_out),
        lock_lines=lock_lines,
        lock_changed=lock_changed,
    )
    if layout.unzipped_size > UNZIPPED_LIMIT:
        biggest = sorted(layout.entries, key=lambda e: -e.size)[:3]
        names = ", ".join(f"{e.path} ({megabytes(e.size)})" for e in biggest)
        raise UserError(
            f"package is {megabytes(layout.unzipped_size)} unzipped; Lambda allows "
            f"{megabytes(UNZIPPED_LIMIT)}. Largest files: {names}. Exclude what the server "
            "does not need, or use a container image"
        )
    warn_file_count([e.path for e in layout.entries])
    return layout


def file_count_warning(paths: list[str]) -> str | None:
    """The warning for a package of more than FILE_COUNT_WARNING files, naming its
    largest folders by file count; None below that."""
    if len(paths) <= FILE_COUNT_WARNING:
        return None
    return (
        f"package has {len(paths):,} files, more than a server usually needs; largest "
        f"folders: {_largest_folders(paths)}. If a virtualenv or node_modules was swept in, "
        "add it to [source].exclude"
    )


def warn_file_count(paths: list[str]) -> None:
    """Say it on stderr, once per process (a build lays its package out once)."""
    import sys

    message = file_count_warning(paths)
    if message is not None and message not in _warned:
        _warned.add(message)
        sys.stderr.write(f"warning: {one_line(message)}\n")
        sys.stderr.flush()


_warned: set[str] = set()


def _largest_folders(paths: list[str]) -> str:
    """`a/ (12,000 files), b/c/ (9,000 files)`: the top-level folders holding the most
    files, each named down to where its files divide (a folder whose files all sit in
    one subfolder is named by that subfolder: `.venv-old/lib/python3.12/site-packages/`)."""
    counts: dict[str, int] = {}
    for path in paths:
        cut = path.find("/")
        while cut > 0:
            counts[path[:cut]] = counts.get(path[:cut], 0) + 1
            cut = path.find("/", cut + 1)
    tops = sorted((p for p in counts if "/" not in p), key=lambda p: (-counts[p], p))
    shown = []
    for top in tops[:_FOLDERS_NAMED]:
        folder = top
        while True:
            inner = [p for p in _children(counts, folder) if counts[p] == counts[folder]]
            if len(inner) != 1:
                break
            folder = inner[0]
        shown.append(f"{one_line(folder)}/ ({counts[folder]:,} files)")
    return ", ".join(shown) or "none (all at the package root)"


def _children(counts: dict[str, int], folder: str) -> list[str]:
    prefix = folder + "/"
    return [p for p in counts if p.startswith(prefix) and "/" not in p[len(prefix) :]]


def _check_dir_file_clash(by_path: dict[str, Entry]) -> None:
    for path, entry in by_path.items():
        parts = path.split("/")
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            if prefix in by_path:
                raise UserError(
                    f"{_describe(by_path[prefix])} is a file at {prefix!r}, but "
                    f"{_describe(entry)} needs {prefix!r} to be a folder"
                )


def _describe(entry: Entry) -> str:
    label = {
        "source": "source file",
        "asset": "asset",
        "dependency": "dependency file",
        "boot": "boot runtime file",
        "generated": "generated file",
        "artifact": "artifact file",
    }[entry.origin]
    detail = f" from {one_line(entry.detail)}" if entry.detail else ""
    return f"{label} {entry.path!r}{detail}"
