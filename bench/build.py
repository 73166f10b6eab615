"""Build timings of examples/python-server: cold (empty caches), warm, one-file change.

    python bench/build.py [--runs 5]

Prints medians. Needs the registry for the cold run unless UV_FIND_LINKS/UV_NO_INDEX
point at a wheelhouse (python tests/wheelhouse.py fills one).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build(project: Path, cache: Path) -> float:
    env = {**os.environ, "PMCP_BUILD_CACHE_DIR": str(cache), "CI": "1"}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pmcp_build", "-C", str(project), "build", "--json"],
        check=True,
        capture_output=True,
        env=env,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    cold, warm, edit = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "p"
        shutil.copytree(
            ROOT / "examples" / "python-server", project, ignore=shutil.ignore_patterns(".pmcp")
        )
        for i in range(runs):
            cache = Path(tmp) / f"cache-{i}"
            cold.append(build(project, cache))
            warm.append(build(project, cache))
            server = project / "server.py"
            server.write_text(server.read_text() + f"\n# edit {i}\n")
            edit.append(build(project, cache))
    print(f"{'build of examples/python-server':<40} {'median s':>9}")
    print(f"{'cold (empty build cache)':<40} {statistics.median(cold):>9.2f}")
    print(f"{'warm (nothing changed)':<40} {statistics.median(warm):>9.2f}")
    print(f"{'one-file change':<40} {statistics.median(edit):>9.2f}")


if __name__ == "__main__":
    main()
