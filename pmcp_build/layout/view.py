"""Human-readable and JSON views of a layout."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Literal

from pmcp_build.layout.model import DIRECT_UPLOAD_LIMIT, Entry, Layout
from pmcp_build.text import mask_known, one_line

if TYPE_CHECKING:
    from pmcp_build.package.load_check import LoadReport
    from pmcp_build.package.write import Package

_ORDER = ("generated", "source", "asset", "boot", "artifact", "dependency")
_TITLES = {
    "generated": "generated",
    "source": "source",
    "asset": "assets",
    "boot": "boot runtime (__metorial__/)",
    "artifact": "artifact",
    "dependency": "dependencies",
}


def human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


_LEFT_OUT_SHOWN = 20


def layout_lines(layout: Layout, zipped: int | None = None) -> list[str]:
    groups: dict[str, list[Entry]] = defaultdict(list)
    for entry in layout.entries:
        groups[entry.origin].append(entry)
    lines = [f"{layout.runtime} · {layout.architecture} · handler {layout.handler}"]
    for origin in _ORDER:
        members = groups.get(origin)
        if not members:
            continue
        total = sum(e.size for e in members)
        lines.append(f"├─ {_TITLES[origin]}: {len(members)} files, {human(total)}")
        if origin == "dependency":
            by_dist: dict[str, list[Entry]] = defaultdict(list)
            for e in members:
                by_dist[one_line(e.detail) or "unknown"].append(e)
            for dist in sorted(by_dist, key=str.lower):
                files = by_dist[dist]
                size = sum(e.size for e in files)
                lines.append(f"│   {dist:<40} {len(files):>5} files {human(size):>10}")
        elif origin == "boot":
            continue
        else:
            for e in members:
                mode = "x" if e.mode & 0o111 else " "
                shown = one_line(e.detail)
                note = f"  ← {shown}" if shown and origin in ("asset", "generated") else ""
                path = one_line(e.path)
                lines.append(f"│   {path:<48} {oct(e.mode)[2:]}{mode} {human(e.size):>10}{note}")
    for path, why in layout.left_out[:_LEFT_OUT_SHOWN]:
        lines.append(f"├─ left out: {one_line(path)}  ({one_line(why)})")
    if len(layout.left_out) > _LEFT_OUT_SHOWN:
        lines.append(f"├─ left out: {len(layout.left_out) - _LEFT_OUT_SHOWN} more")
    summary = f"└─ total: {len(layout.entries)} files, {human(layout.unzipped_size)} unzipped"
    if zipped is not None:
        summary += f", {human(zipped)} zipped"
        if zipped > DIRECT_UPLOAD_LIMIT:
            summary += " (over 50 MB: deployed through S3 only)"
    lines.append(summary)
    return lines


Stream = Literal["out", "err"]


def build_text(package: Package, report: LoadReport | None) -> list[tuple[Stream, str]]:
    """`build`'s text, line by line with the stream each goes to, in order: the full
    build and the fast path (entry.py) both print it with `print_plain`."""
    shown: list[tuple[Stream, str]] = [
        ("out", line) for line in layout_lines(package.layout, zipped=package.size)
    ]
    if report is not None:
        shown.append(("out", report.line()))
        shown += [("err", f"note: {note}") for note in report.notes]
    shown.append(("out", f"wrote {package.path} (sha256 {package.sha256})"))
    return shown


def print_plain(lines: list[tuple[Stream, str]]) -> None:
    """Each line as plain text on its stream, as the CLI's rich consoles print text
    (markup, emoji codes and highlighting off) but without importing rich (~70 modules,
    ~50 ms of a rebuild): every `${env:}` secret masked, and anything unsafe escaped
    (text.one_line) where rich would drop a carriage return or pass an escape through.
    Consecutive lines on one stream are written at once (a 10k-file tree is 10k lines),
    and each stream is flushed before the other is written, as rich does, so that the
    two interleave in order on one terminal."""
    from itertools import groupby

    for stream, run in groupby(lines, key=lambda shown: shown[0]):
        target = sys.stderr if stream == "err" else sys.stdout
        target.write("".join(f"{one_line(mask_known(line))}\n" for _, line in run))
        target.flush()


def layout_json(layout: Layout) -> dict[str, Any]:
    return {
        "runtime": layout.runtime,
        "handler": layout.handler,
        "architecture": layout.architecture,
        "left_out": [{"path": p, "reason": why} for p, why in layout.left_out],
        "files": [
            {
                "path": e.path,
                "origin": e.origin,
                "detail": e.detail,
                "mode": f"{e.mode:04o}",
                "size": e.size,
                "sha256": e.sha256,
            }
            for e in layout.entries
        ],
        "file_count": len(layout.entries),
        "unzipped_size": layout.unzipped_size,
    }


def build_json(package: Package, report: LoadReport | None) -> str:
    """`build --json`'s document, one line: the full build and the fast path print it.

    It lists every file (path, origin, detail, mode, size, sha256): it is the layout a
    script reads (what shipped where, from which distribution), and `file_count` alone
    would not say that. Indented for a person; in a pipe, the compact text json.dumps
    writes, with the files written by _files_json (the same bytes, 3-4x faster: on a
    10k-file source the document is 1.9 MB, and dumping it was a tenth of a rebuild)."""
    head = {
        "path": str(package.path),
        "sha256": package.sha256,
        "code_sha256": package.code_sha256,
        "size": package.size,
    }
    server = report.to_json() if report is not None else None
    if sys.stdout.isatty():
        data: dict[str, Any] = {"package": head, "layout": layout_json(package.layout)}
        if server is not None:
            data["server"] = server
        return json.dumps(data, indent=2) + "\n"
    layout = package.layout
    about = json.dumps(
        {
            "runtime": layout.runtime,
            "handler": layout.handler,
            "architecture": layout.architecture,
            "left_out": [{"path": p, "reason": why} for p, why in layout.left_out],
        }
    )
    tail = f'"file_count": {len(layout.entries)}, "unzipped_size": {layout.unzipped_size}}}'
    parts = [f'{{"package": {json.dumps(head)}, "layout": {about[:-1]}, "files": ']
    parts += [_files_json(layout.entries), ", ", tail]
    if server is not None:
        parts.append(f', "server": {json.dumps(server)}')
    parts.append("}\n")
    return "".join(parts)


def _files_json(entries: tuple[Entry, ...]) -> str:
    """layout_json's `files`, as json.dumps writes it (ASCII, `, ` and `: `)."""
    from json.encoder import encode_basestring_ascii as text

    # Origins are a handful of names: quoted once, not escaped file by file (a name
    # outside the set is escaped as any string).
    origins = {o: f'"{o}"' for o in _ORDER}
    row = '{"path": %s, "origin": %s, "detail": %s, "mode": "%04o", "size": %d, "sha256": %s}'
    return (
        "["
        + ", ".join(
            [
                row
                % (
                    text(e.path),
                    origins.get(e.origin) or text(e.origin),
                    text(e.detail),
                    e.mode,
                    e.size,
                    text(e.sha256),
                )
                for e in entries
            ]
        )
        + "]"
    )
