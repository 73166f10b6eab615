"""Rebuilds against their floor, side by side: goals 1 and 4 of issue 11, and the
command as a user types it (issue 26, goal 2).

    python bench/floors.py [--runs 5]

The floor (bench/floor_build.py) writes the byte-identical zip from the same cached
inputs with the standard library and the pinned deflate only; every run checks that its
sha256 equals the tool's. Floor and tool alternate, each from the same state (the floor
first: it leaves no state behind), and the ratio is taken per run; medians are printed.
Every scenario runs the tool in several variants per run, alternating: the command as
typed (`pmcp-build build`, which prints the layout tree) and `build --json`, each with the
build-time load check as it ships (package/load_check.py: the server is loaded once per
new package sha256) and with PMCP_BUILD_LOAD_CHECK=0; the floor never loads the server.
The cold 10k-file scenario runs the typed command only. "as typed / --json" is the ratio
of the two forms within each run (the tree printer's cost; the goal is within 10%).

Scenarios:
  example, one-file rebuild    examples/python-server, server.py edited
  example, warm no-change      nothing edited (the tool reuses its zip by fingerprint)
  10k files, cold              10,000 small source files + the example's requirements;
                               dependency set cached, no earlier build of the project
  10k files, one-file rebuild  one of the 10,000 edited

Start-up, against a bare interpreter (`python -c pass`), interleaved, ratio per pair:
`pmcp-build --version` and `--help`, with bytecode as installed; `--version` also with
PYTHONDONTWRITEBYTECODE=1 and no bytecode to read (every start compiles). Modules
imported (`-X importtime`) by each of those and by a one-file rebuild in both forms.
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


def tool(project: Path, env: dict[str, str], json_out: bool = True) -> str:
    """The package's sha256, from `build --json`'s document or, as typed, from the
    tree's last line: `wrote PATH (sha256 SHA)`."""
    proc = subprocess.run(
        [sys.executable, "-m", "pmcp_build", "-C", str(project), "build"]
        + (["--json"] if json_out else []),
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    if not json_out:
        return proc.stdout.splitlines()[-1].rsplit("sha256 ", 1)[1].rstrip(")")
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


SHIPPED = "load check as shipped"
OFF = "PMCP_BUILD_LOAD_CHECK=0"
CHECKS = {SHIPPED: {}, OFF: {"PMCP_BUILD_LOAD_CHECK": "0"}}
TYPED, JSON = "as typed", "--json"
# (form, check): every variant a scenario runs, in this order within a run.
ALL = [(TYPED, SHIPPED), (JSON, SHIPPED), (TYPED, OFF), (JSON, OFF)]
TYPED_ONLY = [(TYPED, SHIPPED), (TYPED, OFF)]
# (scenario, check): the median of as typed / --json within each run, filled by scenario.
forms: list[tuple[str, float]] = []


def scenario(label, runs, prepare, project, cache, env, results, variants=ALL):  # type: ignore[no-untyped-def]
    """Every variant in every run, alternating, each after its own `prepare` and with
    its own floor run: the floor writes the same zip and never loads the server."""
    ours: dict[tuple[str, str], list[float]] = {v: [] for v in variants}
    floors: dict[tuple[str, str], list[float]] = {v: [] for v in variants}
    ratios: dict[tuple[str, str], list[float]] = {v: [] for v in variants}
    step = 0
    for _ in range(runs):
        for variant in variants:
            form, check = variant
            prepare(step)
            step += 1
            tf, floor_sha = timed(floor, project, cache, project.parent / "floor.zip", env)
            to, our_sha = timed(tool, project, {**env, **CHECKS[check]}, form == JSON)
            if floor_sha != our_sha:
                raise SystemExit(f"{label}: floor zip {floor_sha} != tool zip {our_sha}")
            ours[variant].append(to)
            floors[variant].append(tf)
            ratios[variant].append(to / tf)
    for variant in variants:
        form, check = variant
        results.append(
            (
                f"{label}, {form}, {check}",
                median(ours[variant]),
                median(floors[variant]),
                median(ratios[variant]),
            )
        )
    for check in CHECKS:
        if (TYPED, check) in variants and (JSON, check) in variants:
            pairs = zip(ours[(TYPED, check)], ours[(JSON, check)], strict=True)
            forms.append((f"{label}, {check}", median([a / b for a, b in pairs])))


def modules(cmd: list[str], env: dict[str, str]) -> int:
    """How many modules the command imports, as `-X importtime` reports them."""
    proc = subprocess.run(
        cmd, check=True, capture_output=True, text=True, env={**env, "PYTHONPROFILEIMPORTTIME": "1"}
    )
    return sum(1 for line in proc.stderr.splitlines() if line.startswith("import time:")) - 1


def startup(runs: int, env: dict[str, str], tmp: Path) -> list[str]:
    """--version and --help against `python -c pass`, interleaved, ratio per pair."""
    bare = [sys.executable, "-c", "pass"]
    commands = {
        "--version": [sys.executable, "-m", "pmcp_build", "--version"],
        "--help": [sys.executable, "-m", "pmcp_build", "--help"],
    }
    times: dict[str, list[float]] = {"bare": [], **{k: [] for k in commands}}
    ratios: dict[str, list[float]] = {k: [] for k in commands}
    without: list[float] = []
    for _ in range(runs * 2):
        for name, cmd in commands.items():
            base = run(bare, env)
            ours = run(cmd, env)
            times["bare"].append(base)
            times[name].append(ours)
            ratios[name].append(ours / base)
        empty = tmp / "no-pyc"
        shutil.rmtree(empty, ignore_errors=True)
        no_pyc = {**env, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": str(empty)}
        without.append(run(commands["--version"], no_pyc))
    lines = [f"python -c pass: {median(times['bare']) * 1000:.1f} ms, {modules(bare, env)} modules"]
    for name, cmd in commands.items():
        lines.append(
            f"pmcp-build {name}: {median(times[name]) * 1000:.1f} ms, "
            f"{median(ratios[name]):.2f}x python -c pass, {modules(cmd, env)} modules"
        )
    lines.append(
        f"pmcp-build --version with PYTHONDONTWRITEBYTECODE=1 and no bytecode to read: "
        f"{median(without) * 1000:.1f} ms"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
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

        scenario("10k files, cold", runs, cold, big, cache, env, results, TYPED_ONLY)

        def one(i: int) -> None:
            (big / "pkg" / "m050" / "f05000.py").write_text(f"VALUE = {i}\n")

        tool(big, env)
        settle(big, env)
        scenario("10k files, one-file rebuild", runs, one, big, cache, env, results)

        # Modules a one-file rebuild imports, check off, in both forms.
        off = {**env, "PMCP_BUILD_LOAD_CHECK": "0"}
        rebuild_modules = []
        for form in ([], ["--json"]):
            edit(10_000 + len(form))
            cmd = [sys.executable, "-m", "pmcp_build", "-C", str(example), "build", *form]
            rebuild_modules.append(f"{' '.join(['build', *form])} {modules(cmd, off)}")
        started = startup(runs, env, Path(tmp))

    print(f"{'scenario':<64} {'tool s':>8} {'floor s':>8} {'ratio':>7}")
    for label, ours, base, ratio in results:
        print(f"{label:<64} {ours:>8.3f} {base:>8.3f} {ratio:>6.2f}x")
    print(f"{'as typed / --json, same run (tree printer; goal <= 1.10x)':<64} {'ratio':>7}")
    for label, ratio in forms:
        print(f"{label:<64} {ratio:>6.2f}x")
    print(f"modules imported by a one-file rebuild: {', '.join(rebuild_modules)}")
    for line in started:
        print(line)
    print(f"after: {load()}")


if __name__ == "__main__":
    main()
