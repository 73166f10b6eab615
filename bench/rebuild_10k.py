"""The one-file rebuild of a 10,000-file source against its floor, and what each
unchanged file costs: issue 26, goal 4.

    python bench/rebuild_10k.py [--runs 5]

Two trees, 2,000 and 10,000 small source files beside the example's server and
requirements (the example's manifest without its asset, so any version of the floor
lays it out). In each, one file is edited, then the floor (bench/floor_build.py: walk,
rehash every file, copy unchanged members out of the packs, write and hash the zip)
and the tool run one after the other from the same state, the tool as typed
(`pmcp-build build`, its tree printed) and as `build --json`, alternating, with
PMCP_BUILD_LOAD_CHECK=0 (the floor never loads the server); every pair checks that
both wrote the same sha256. Ratios are per pair; medians are printed.

The per-unchanged-file cost is the slope between the two trees: (median at 10k -
median at 2k) / 8,000 files, for the tool in both forms and for the floor (whose slope
is its full rehash of each file). The goal: the tool's below the floor's, and the 10k
one-file rebuild as typed within 1.5x the floor. Needs the wheelhouse (python
tests/wheelhouse.py): uv installs from it, offline.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _util import load, median

ROOT = Path(__file__).resolve().parent.parent
FLOOR = Path(__file__).resolve().parent / "floor_build.py"
SIZES = (2_000, 10_000)
FORMS = ("as typed", "--json")
Series = dict[tuple[int, str], list[float]]  # (files, "floor" or a form): seconds or ratios


def tool(project: Path, env: dict[str, str], form: str) -> str:
    """The sha256 the tool wrote: from the document, or the tree's `wrote` line."""
    json_out = form == "--json"
    cmd = [sys.executable, "-m", "pmcp_build", "-C", str(project), "build"]
    proc = subprocess.run(
        cmd + (["--json"] if json_out else []), check=True, capture_output=True, text=True, env=env
    )
    if json_out:
        return str(json.loads(proc.stdout)["package"]["sha256"])
    return proc.stdout.splitlines()[-1].rsplit("sha256 ", 1)[1].rstrip(")")


def floor(project: Path, cache: Path, env: dict[str, str]) -> str:
    dest = project.parent / f"{project.name}-floor.zip"
    cmd = [sys.executable, str(FLOOR), str(project), str(cache), str(dest)]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout.strip()


def timed(fn, *args):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def tree(base: Path, files: int, env: dict[str, str]) -> Path:
    """The example's server in a tree of `files` small modules, built once and settled
    (files written within two seconds are "racy" and always rehashed: package/rebuild.py)."""
    example = ROOT / "examples" / "python-server"
    project = base / f"tree{files}"
    project.mkdir()
    for name in ("server.py", "requirements.txt", "metorial.lock"):
        shutil.copy(example / name, project / name)
    manifest = (example / "metorial.toml").read_text()
    manifest = re.sub(r"\[\[assets\]\]\n(?:[a-z]+ = .*\n)+", "", manifest)
    (project / "metorial.toml").write_text(manifest)
    for n in range(files):
        path = project / "pkg" / f"m{n // 100:03d}" / f"f{n:05d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"VALUE_{n} = {n}\n" * (1 + n % 7))
    tool(project, env, "--json")
    time.sleep(2.1)
    tool(project, env, "--json")  # records every signature as settled
    return project


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    # As a pip install leaves it: bytecode for pmcp_build present (see bench/floors.py).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "pmcp_build")], check=True)
    print(f"before: {load()}")
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        env = {
            **os.environ,
            "PMCP_BUILD_CACHE_DIR": str(cache),
            "CI": "1",
            "UV_NO_INDEX": "1",
            "UV_FIND_LINKS": str(ROOT / ".wheelhouse"),
            "PMCP_BUILD_LOAD_CHECK": "0",
        }
        projects = {n: tree(Path(tmp), n, env) for n in SIZES}
        times: Series = {}
        ratios: Series = {}
        step = 0
        for _ in range(runs):
            for n, project in projects.items():
                for form in FORMS:
                    step += 1
                    edited = project / "pkg" / "m010" / "f01000.py"
                    edited.write_text(f"VALUE = {step}\n")
                    tf, floor_sha = timed(floor, project, cache, env)
                    to, our_sha = timed(tool, project, env, form)
                    if floor_sha != our_sha:
                        raise SystemExit(f"{n} files: floor zip {floor_sha} != tool zip {our_sha}")
                    times.setdefault((n, "floor"), []).append(tf)
                    times.setdefault((n, form), []).append(to)
                    ratios.setdefault((n, form), []).append(to / tf)
        report(times, ratios)
    print(f"after: {load()}")


def report(
    times: dict[tuple[int, str], list[float]], ratios: dict[tuple[int, str], list[float]]
) -> None:
    small, big = SIZES
    print(f"{'one-file rebuild, check off':<40} {'tool s':>8} {'floor s':>8} {'ratio':>7}")
    for n in SIZES:
        for form in FORMS:
            label = f"{n:,} files, {form}"
            ours, base = median(times[(n, form)]), median(times[(n, "floor")])
            print(f"{label:<40} {ours:>8.3f} {base:>8.3f} {median(ratios[(n, form)]):>6.2f}x")
    print(f"per unchanged file (slope {small:,} -> {big:,} files):")
    floor_us = (median(times[(big, "floor")]) - median(times[(small, "floor")])) / (big - small)
    for form in FORMS:
        ours_us = (median(times[(big, form)]) - median(times[(small, form)])) / (big - small)
        print(
            f"  tool {form:<10} {ours_us * 1e6:6.1f} us   floor {floor_us * 1e6:6.1f} us   "
            f"({ours_us / floor_us:.2f}x the floor's)"
        )


if __name__ == "__main__":
    main()
