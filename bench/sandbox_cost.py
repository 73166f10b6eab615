"""What the sandboxed load check costs (issue 20, item 4): a one-file rebuild of
examples/python-server with the check as shipped, by the code before the sandbox
(`--before`, default the commit this branch started from) and by this checkout, side
by side. Offline from `.wheelhouse/`, with a uv cache of its own.

    python bench/sandbox_cost.py [--runs 7] [--before 3d4b27d]

The code before is `git archive`d into a temporary folder and run from there
(PYTHONPATH first, so it shadows the editable install); each side has its own project
copy and its own cache, warmed by two builds first, and the two alternate within each
run. Every build is `build --json` with PMCP_BUILD_LOAD_CHECK=1 after appending a line
to server.py, so the check really runs (its cached result is keyed by the layout).
Prints the medians, the median of the per-run ratios (after / before) and the load.
Also times the same rebuild with the sandbox forced off (PMCP_BUILD_SANDBOX=0) as a
floor for what bwrap itself adds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _util import load, median

ROOT = Path(__file__).resolve().parent.parent


def _build(project: Path, cache: Path, code: Path | None, **extra: str) -> float:
    env = {**os.environ, "PMCP_BUILD_CACHE_DIR": str(cache), "PMCP_BUILD_LOAD_CHECK": "1"}
    # Offline, from the wheelhouse, with uv's cache of its own: nothing shared is touched.
    env.update(UV_OFFLINE="1", UV_NO_INDEX="1", UV_FIND_LINKS=str(ROOT / ".wheelhouse"))
    env["UV_CACHE_DIR"] = str(cache.parent / "uv-cache")
    env.update(extra)
    if code is not None:
        env["PYTHONPATH"] = str(code)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pmcp_build", "-C", str(project), "build", "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=project.parent,  # not the checkout: `-m` puts the cwd first on sys.path
    )
    took = time.perf_counter() - start
    if done.returncode != 0 or '"status": "ok"' not in done.stdout.replace('":"', '": "'):
        raise SystemExit(f"build failed ({code or 'this checkout'}):\n{done.stdout}{done.stderr}")
    return took


def _project(tmp: Path, name: str) -> Path:
    project = tmp / name
    shutil.copytree(
        ROOT / "examples" / "python-server", project, ignore=shutil.ignore_patterns(".pmcp")
    )
    return project


def _edit(project: Path, i: int) -> None:
    server = project / "server.py"
    server.write_text(server.read_text() + f"\n# edit {i}\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--before", default="3d4b27d")
    args = parser.parse_args()
    print(load())
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        old = tmp / "before"
        old.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", args.before, "pmcp_build", "boot"],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        # Both sides start from bytecode, as a pip install leaves them (this environment
        # sets PYTHONDONTWRITEBYTECODE=1: without it each build would compile the tool).
        for code in (old, ROOT / "pmcp_build", ROOT / "boot"):
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(code)], check=True)
        sides = {
            "before": (_project(tmp, "p-before"), tmp / "cache-before", old, {}),
            "after": (_project(tmp, "p-after"), tmp / "cache-after", None, {}),
            "after, no sandbox": (
                _project(tmp, "p-nosandbox"),
                tmp / "cache-nosandbox",
                None,
                {"PMCP_BUILD_SANDBOX": "0"},
            ),
        }
        for i, (project, cache, code, extra) in enumerate(sides.values()):
            for warm in range(2):  # dependencies installed, the check's root and bytecode made
                _edit(project, 100 * i + warm)
                _build(project, cache, code, **extra)
        times: dict[str, list[float]] = {name: [] for name in sides}
        for run in range(args.runs):
            for name, (project, cache, code, extra) in sides.items():
                _edit(project, 1000 + run)
                times[name].append(_build(project, cache, code, **extra))
    ratios = [a / b for a, b in zip(times["after"], times["before"], strict=True)]
    floor = [a / b for a, b in zip(times["after"], times["after, no sandbox"], strict=True)]
    print(f"one-file rebuild of examples/python-server, check as shipped, {args.runs} runs")
    for name, values in times.items():
        print(f"  {name:<20} median {median(values):.3f} s  ({min(values):.3f}-{max(values):.3f})")
    print(f"  after / before           {median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})")
    print(f"  after / no sandbox       {median(floor):.2f}x ({min(floor):.2f}-{max(floor):.2f})")
    print(load())


if __name__ == "__main__":
    main()
