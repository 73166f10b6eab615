"""`pmcp-build cache`: what the build cache holds, and pruning it."""

from __future__ import annotations

import json
import re
import sys
import time
from typing import Annotated

import typer

from pmcp_build.cli.app import JsonOption, app, guard, out

cache_app = typer.Typer(
    help="Show what the build cache holds (`cache`), or prune it (`cache prune`).",
    invoke_without_command=True,
    no_args_is_help=False,
)
app.add_typer(cache_app, name="cache")

_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_AGES = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_size(text: str) -> int:
    """500MB, 1.5G, 2GiB, 1000000 -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)(b?)\s*", text.lower())
    if not m:
        raise typer.BadParameter(f"{text!r} is not a size; use e.g. 500MB, 2GB, 1.5GiB")
    number, unit, binary, _ = m.groups()
    scale = 1024 ** " kmgt".index(unit) if binary and unit else _UNITS[unit]
    return int(float(number) * scale)


def parse_age(text: str) -> float:
    """30d, 12h, 90m, 2w, 3600s -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text.lower())
    if not m:
        raise typer.BadParameter(f"{text!r} is not an age; use e.g. 30d, 12h, 2w")
    return float(m.group(1)) * _AGES[m.group(2)]


def _mb(size: int) -> str:
    return f"{size / 1e6:,.1f} MB" if size >= 100_000 else f"{size / 1e3:,.1f} kB"


def _ago(when: float, now: float) -> str:
    seconds = max(0.0, now - when)
    for unit, span in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= span:
            return f"{seconds / span:.0f} {unit} ago"
    return "just now"


@cache_app.callback(invoke_without_command=True)
@guard
def cache_show(ctx: typer.Context, json_out: JsonOption = False) -> None:
    """Show what the build cache holds: kinds, sizes, last use."""
    if ctx.invoked_subcommand is not None:
        return
    from pmcp_build.package import cache

    root = cache.cache_dir()
    items = cache.inventory(root)
    now = time.time()
    if json_out:
        data = {
            "path": str(root),
            "size": sum(i.size for i in items),
            "items": [
                {
                    "kind": i.kind,
                    "path": i.path,
                    "size": i.size,
                    "last_use": i.last_use,
                    "needed_by_last_build": i.needed,
                }
                for i in items
            ],
        }
        sys.stdout.write(json.dumps(data) + "\n")
        return
    total = sum(i.size for i in items)
    out.print(f"cache: {root} ({_mb(total)} in {len(items)} items)", markup=False)
    if not items:
        return
    out.print(f"  {'kind':<16} {'items':>6} {'size':>12}  last use", markup=False)
    for kind in cache.KINDS:
        group = [i for i in items if i.kind == kind]
        if group:
            size = sum(i.size for i in group)
            last = max(i.last_use for i in group)
            line = f"  {kind:<16} {len(group):>6} {_mb(size):>12}  {_ago(last, now)}"
            out.print(line, markup=False)
    for i in items:
        if i.kind in ("dependency set", "download"):
            note = ", needed by the last build" if i.needed else ""
            name = i.path if len(i.path) <= 24 else i.path[:23] + "…"
            line = f"  {name:<24} {_mb(i.size):>12}  {_ago(i.last_use, now)}{note}"
            out.print(line, markup=False)
    needed = [i for i in items if i.needed]
    out.print(
        f"needed by the last build: {len(needed)} items, {_mb(sum(i.size for i in needed))} "
        "(never pruned); prune with `pmcp-build cache prune --max-size 1GB --max-age 30d`",
        markup=False,
    )


@cache_app.command("prune")
@guard
def cache_prune(
    max_size: Annotated[
        str | None,
        typer.Option("--max-size", help="Remove least recently used items until under this."),
    ] = None,
    max_age: Annotated[
        str | None,
        typer.Option("--max-age", help="Remove items unused for longer than this (30d, 12h)."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would go.")] = False,
    json_out: JsonOption = False,
) -> None:
    """Prune the cache by size and age, least recently used first; what the last
    build needed is never removed."""
    from pmcp_build.package import cache

    if max_size is None and max_age is None:
        raise typer.BadParameter("give --max-size, --max-age or both", param_hint="prune")
    size_limit = parse_size(max_size) if max_size is not None else None
    age_limit = parse_age(max_age) if max_age is not None else None
    root = cache.cache_dir()
    result = cache.plan_prune(cache.inventory(root), size_limit, age_limit)
    if not dry_run:
        cache.remove(root, result.removed)
    if json_out:
        data = {
            "dry_run": dry_run,
            "removed": [{"kind": i.kind, "path": i.path, "size": i.size} for i in result.removed],
            "freed": result.freed,
            "size": result.kept_size,
        }
        sys.stdout.write(json.dumps(data) + "\n")
        return
    verb = "would remove" if dry_run else "removed"
    out.print(
        f"{verb} {len(result.removed)} items ({_mb(result.freed)}); the cache "
        f"{'would hold' if dry_run else 'holds'} {_mb(result.kept_size)} in "
        f"{len(result.kept)} items",
        markup=False,
    )
    if size_limit is not None and result.kept_size > size_limit:
        out.print(
            f"note: still over {_mb(size_limit)}: what the last build needed is kept",
            markup=False,
        )
