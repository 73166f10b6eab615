"""Zip throughput on a ~100 MB synthetic tree: our packager vs `zip -X -r -6` vs zipfile.

    python bench/zip_throughput.py [--mb 100] [--runs 5] [--tree DIR]

Runs alternate between the tools; medians are reported, and the ratio is per run.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import subprocess
import tempfile
import time
import zipfile
from pathlib import Path

from _util import load

from pmcp_build.layout.model import entry_from_file, make_layout
from pmcp_build.package.zipwriter import MemberCache, MemberPack, index_zip, write_zip


def make_tree(root: Path, mb: int) -> int:
    rng = random.Random(42)
    words = [bytes(rng.choice(b"abcdefghij") for _ in range(rng.randint(2, 9))) for _ in range(500)]
    total, i = 0, 0
    while total < mb * 1024 * 1024:
        kind = i % 3
        path = root / f"d{i % 20}" / f"f{i}.{['txt', 'bin', 'py'][kind]}"
        path.parent.mkdir(parents=True, exist_ok=True)
        size = rng.randint(2_000, 400_000)
        if kind == 1:
            data = rng.randbytes(size)  # already-compressed-like
        else:
            data = b" ".join(rng.choice(words) for _ in range(size // 6))
        path.write_bytes(data)
        total += len(data)
        i += 1
    db = root / "data.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (id INTEGER, v TEXT)")
        conn.executemany("INSERT INTO t VALUES (?, ?)", ((n, str(n) * 20) for n in range(50_000)))
    return total + db.stat().st_size


def ours(root: Path, dest: Path, previous: Path | None) -> None:
    """Layout (read + hash every file), then the zip; `previous` is a packed earlier zip."""
    entries = [
        entry_from_file(p.relative_to(root).as_posix(), p, "source")
        for p in sorted(root.rglob("*"))
        if p.is_file()
    ]
    packs = (MemberPack(previous),) if previous is not None else ()
    layout = make_layout(entries, "python3.12", "index.handler", "arm64")
    _, written = write_zip(layout, dest, MemberCache(packs))
    index_zip(dest.with_suffix(".json"), dest, written)


def plain_zipfile(root: Path, dest: Path) -> None:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(root).as_posix())


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "tree"
        size = make_tree(root, args.mb)
        out = Path(tmp) / "out.zip"
        results: dict[str, list[float]] = {
            "pmcp-build (cold cache)": [],
            "zip -X -r -6": [],
            "zipfile level 6": [],
            "pmcp-build rebuild": [],
        }
        ratios, sizes = [], []
        prev = Path(tmp) / "prev.zip"
        for _ in range(args.runs):
            a = timed(lambda: ours(root, prev, None))
            ours_size = prev.stat().st_size
            b = timed(
                lambda: subprocess.run(
                    ["zip", "-X", "-r", "-6", "-q", str(out), "."], cwd=root, check=True
                )
            )
            sizes.append(ours_size / out.stat().st_size)
            out.unlink()
            c = timed(lambda: plain_zipfile(root, out))
            out.unlink()
            (root / "d0" / "f0.txt").write_bytes(os.urandom(1000))
            d = timed(lambda: ours(root, out, prev.with_suffix(".json")))
            out.unlink()
            for key, value in zip(results, (a, b, c, d), strict=True):
                results[key].append(value)
            ratios.append(b / a)
        mb = size / 1e6
        print(f"tree: {mb:.0f} MB; {load()} after the runs")
        print(f"{'tool':<28} {'median s':>9} {'MB/s':>8}")
        for key, values in results.items():
            med = statistics.median(values)
            print(f"{key:<28} {med:>9.2f} {mb / med:>8.0f}")
        print(f"zip -6 time / ours (same run, median): {statistics.median(ratios):.2f}x")
        print(f"our size / zip -6 size: {statistics.median(sizes):.3f}")


if __name__ == "__main__":
    main()
