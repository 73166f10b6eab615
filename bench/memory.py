"""Peak RSS of writing a package: does it follow the largest file or the package?

    python bench/memory.py [--runs 3]

Builds zips of the synthetic trees of zip_throughput.py (100 MB and 230 MB, largest file
a few MB), and of the 100 MB tree plus one 60 MB file, each in a fresh child process:
layout (read + hash every file) then write_zip with a cold cache. Reports the layout
stage's peak RSS, then resets the high-water mark (/proc/self/clear_refs) and reports
the writer's own peak over the RSS it started from.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
from pathlib import Path

from _util import load, median
from zip_throughput import make_tree

CHILD = r"""
import sys
from pathlib import Path
from pmcp_build.layout.model import KeepBudget, entry_from_file, make_layout
from pmcp_build.package.zipwriter import write_zip

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
root, dest = Path(sys.argv[1]), Path(sys.argv[2])
keep = KeepBudget()  # as the build reads sources: small files' bytes held, 16 MiB at most
entries = [entry_from_file(p.relative_to(root).as_posix(), p, "source", keep=keep)
           for p in sorted(root.rglob("*")) if p.is_file()]
layout = make_layout(entries, "python3.12", "index.handler", "x86_64")
layout_peak = hwm()
with open("/proc/self/clear_refs", "w") as fh:  # reset the high-water mark (Linux)
    fh.write("5")
start = hwm()
write_zip(layout, dest)
print(layout_peak, start, hwm())
"""


def measure(root: Path, dest: Path, runs: int) -> tuple[float, float, float]:
    rows = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(root), str(dest)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        rows.append([float(x) for x in out])
    layout_peak, start, writer_peak = (median([r[i] for r in rows]) for i in range(3))
    return layout_peak, start, writer_peak


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, mb, big in (
            ("100 MB tree", 100, 0),
            ("230 MB tree", 230, 0),
            ("100 MB tree + one 60 MB file", 100, 60),
        ):
            root = Path(tmp) / f"tree{mb}-{big}"
            size = make_tree(root, mb)
            if big:
                (root / "big.bin").write_bytes(random.Random(1).randbytes(big * 1024 * 1024))
                size += big * 1024 * 1024
            largest = max(p.stat().st_size for p in root.rglob("*") if p.is_file())
            rows.append((label, size, largest, *measure(root, Path(tmp) / "out.zip", runs)))
    print(
        f"{'tree':<30} {'size':>7} {'largest':>8} {'layout peak':>12} {'RSS at write':>13} "
        f"{'writer peak':>12} {'writer adds':>12}"
    )
    for label, size, largest, layout_peak, start, peak in rows:
        print(
            f"{label:<30} {size / 2**20:>5.0f}Mi {largest / 2**20:>6.1f}Mi "
            f"{layout_peak / 2**20:>10.0f}Mi {start / 2**20:>11.0f}Mi {peak / 2**20:>10.0f}Mi "
            f"{(peak - start) / 2**20:>10.0f}Mi"
        )
    print(load())


if __name__ == "__main__":
    main()
