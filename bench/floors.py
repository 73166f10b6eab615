"""Rebuilds against their floor, side by side: goals 1 and 4 of issue 11.

    python bench/floors.py [--runs 7]

The floor (bench/floor_build.py) writes the byte-identical zip from the same cached
inputs with the standard library and the pinned deflate only; every run checks that its
sha256 equals the tool's. Floor and tool alternate, each from the same state (the floor
first: it leaves no state behind), and the ratio is taken per run; medians are printed.
Every scenario runs the tool twice per run, alternating: with the build-time load check
as it ships (package/load_check.py: the server is loaded once per new package sha256)
and with PMCP_BUILD_LOAD_CHECK=0; the floor never loads the server.

Scenarios:
  example, one-file rebuild    examples/python-server, server.py edited
  example, warm no-change      nothing edited (the tool reuses its zip by fingerprint)
  10k files, cold              10,000 small source files + the example's requirements;
                               dependency set cached, no earlier build of the project
  10k files, one-file rebuild  one of the 10,000 edited

Also: the tool's own start-up (`pmcp-build --version`) with bytecode as installed, and
with PYTHONDONTWRITEBYTECODE=1 and no bytecode to read (every start compiles).
Needs the wheelhouse (python tests/wheelhouse.py): uv installs from it, offline.
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

from _util import load, median, run

ROOT = Path(__file__).resolve().parent.parent
FLOOR = Path(__file__).resolve().parent / "floor_build.py"


def tool(project: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "pmcp_build", "-C", str(project), "build", "--json"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    import json

    return str(json.loads(proc.stdout)["package"]["sha256"])


def floor(project: Path, cache: Path, dest: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(
        [sys.executable, str(FLOOR), str(project), str(cache), str(dest)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return proc.stdout.strip()


def timed(fn, *args):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def settle(project: Path, env: dict[str, str]) -> None:
    """Files written within two seconds are "racy" (package/rebuild.py): a fresh copy
    always takes the full build. Wait that out, and build once to record."""
    time.sleep(2.1)
    tool(project, env)


VARIANTS = {"load check as shipped": {}, "PMCP_BUILD_LOAD_CHECK=0": {"PMCP_BUILD_LOAD_CHECK": "0"}}


def scenario(label, runs, prepare, project, cache, env, results):  # type: ignore[no-untyped-def]
    """Both variants in every run, alternating, each after its own `prepare` and with
    its own floor run: the floor writes the same zip and never loads the server."""
    ours: dict[str, list[float]] = {v: [] for v in VARIANTS}
    floors: dict[str, list[float]] = {v: [] for v in VARIANTS}
    ratios: dict[str, list[float]] = {v: [] for v in VARIANTS}
    step = 0
    for _ in range(runs):
        for variant, extra in VARIANTS.items():
            prepare(step)
            step += 1
            tf, floor_sha = timed(floor, project, cache, project.parent / "floor.zip", env)
            to, our_sha = timed(tool, project, {**env, **extra})
            if floor_sha != our_sha:
                raise SystemExit(f"{label}: floor zip {floor_sha} != tool zip {our_sha}")
            ours[variant].append(to)
            floors[variant].append(tf)
            ratios[variant].append(to / tf)
    for variant in VARIANTS:
        results.append(
            (
                f"{label}, {variant}",
                median(ours[variant]),
                median(floors[variant]),
                median(ratios[variant]),
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    results: list[tuple[str, float, float, float]] = []
    # As a pip install leaves it: bytecode for pmcp_build present. (This environment sets
    # PYTHONDONTWRITEBYTECODE=1 and an editable install compiles nothing, so without this
    # every run would compile every pmcp_build module; see the start-up figure.)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "pmcp_build")], check=True)
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(f"commit {commit}; before: {load()}")
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        env = {
            **os.environ,
            "PMCP_BUILD_CACHE_DIR": str(cache),
            "CI": "1",
            "UV_NO_INDEX": "1",
            "UV_FIND_LINKS": str(ROOT / ".wheelhouse"),
        }
        example = Path(tmp) / "example"
        shutil.copytree(
            ROOT / "examples" / "python-server", example, ignore=shutil.ignore_patterns(".pmcp")
        )
        tool(example, env)  # install the dependency set, first build
        settle(example, env)
        server = example / "server.py"
        original = server.read_text()

        def edit(i: int) -> None:
            server.write_text(original + f"\n# edit {i}\n")

        scenario("example, one-file rebuild", runs, edit, example, cache, env, results)
        tool(example, env)  # load-checked once, as the last rebuild's would have been
        scenario("example, warm no-change", runs, lambda i: None, example, cache, env, results)

        big = Path(tmp) / "tenk"
        shutil.copytree(example, big, ignore=shutil.ignore_patterns(".pmcp"))
        for n in range(10_000):
            path = big / "pkg" / f"m{n // 100:03d}" / f"f{n:05d}.py"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"VALUE_{n} = {n}\n" * (1 + n % 7))

        def cold(i: int) -> None:
            shutil.rmtree(big / ".pmcp", ignore_errors=True)
            (big / "pkg" / "m000" / "f00000.py").write_text(f"VALUE = {i}\n")

        scenario("10k files, cold", runs, cold, big, cache, env, results)

        def one(i: int) -> None:
            (big / "pkg" / "m050" / "f05000.py").write_text(f"VALUE = {i}\n")

        tool(big, env)
        settle(big, env)
        scenario("10k files, one-file rebuild", runs, one, big, cache, env, results)

        # Start-up: with bytecode as installed vs compiling every module on every start.
        version = [sys.executable, "-m", "pmcp_build", "--version"]
        with_pyc, without = [], []
        for _ in range(runs):
            with_pyc.append(run(version, env))
            empty = Path(tmp) / "no-pyc"
            shutil.rmtree(empty, ignore_errors=True)
            no_pyc = {**env, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": str(empty)}
            without.append(run(version, no_pyc))

    print(f"{'scenario':<64} {'tool s':>8} {'floor s':>8} {'ratio':>7}")
    for label, ours, base, ratio in results:
        print(f"{label:<64} {ours:>8.3f} {base:>8.3f} {ratio:>6.2f}x")
    print(
        f"start-up (pmcp-build --version): {median(with_pyc):.3f} s with bytecode, "
        f"{median(without):.3f} s with PYTHONDONTWRITEBYTECODE=1 and none to read "
        f"({median(without) / median(with_pyc):.1f}x)"
    )
    print(f"after: {load()}")


if __name__ == "__main__":
    main()
