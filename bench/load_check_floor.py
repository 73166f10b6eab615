"""The load check against its floor (issue 26, item 1), from one interleaved run.

    python bench/load_check_floor.py [--runs 7] [--both]

Two goals, each as the user types the command (`pmcp-build -C DIR build`, text output):

- cold build of examples/python-server with the check as shipped / the same build with
  PMCP_BUILD_LOAD_CHECK=0 (goal <= 2.5x). Both sides start from an empty build cache
  (uv's cache is warm and shared: the install is not what is measured here), in
  alternating order.
- one-file rebuild (server.py edited) with the check as shipped / (its stdlib floor +
  the bare-import floor) (goal <= 1.3x). The stdlib floor is bench/floors.py's
  (bench/floor_build.py writes the byte-identical zip from the same cached inputs with
  the standard library only; its sha256 is compared). The bare-import floor is a bare
  interpreter importing the handler module (`index`, which loads the server) from the
  same prepared task root, in the same sandbox, with the same read-only bytecode: the
  check's own command line with the worker replaced by `-c "import index"`, taken from
  the check itself (its PythonInvoker is swapped for one that runs that instead).
  Since a Metorial-API server's import loads no part of the SDK, that floor is about a
  bare interpreter's start; a second floor has the bare interpreter answer the same
  `discover` through the handler (which imports mcp_types, the check's largest cost
  beyond the import), so the check's own overhead shows apart from what answering costs.

`--both` adds a third cold side, the check with its first bytecode compiled before the
load, all of the package's files on both cores while the zip is written
(PMCP_BUILD_CHECK_COMPILE=first), instead of after it for what the worker imported (as
shipped: the worker compiles those in memory, the tool compiles them again afterwards).

Offline from .wheelhouse/ (python tests/wheelhouse.py), caches under a temporary folder.
Prints medians, the per-run ratios' medians and ranges, and the load before and after.
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
from typing import Any

from _util import load, median
from floors import floor

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "python-server"


def typed_build(project: Path, env: dict[str, str]) -> tuple[float, str]:
    """`pmcp-build -C DIR build` as typed (text output), timed, and the zip's sha256."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pmcp_build", "-C", str(project), "build"],
        capture_output=True,
        text=True,
        env=env,
        cwd=project.parent,
    )
    took = time.perf_counter() - start
    if done.returncode != 0 or "server: " not in done.stdout:
        raise SystemExit(f"build failed:\n{done.stdout}{done.stderr}")
    return took, done.stdout.rsplit("(sha256 ", 1)[-1].split(")")[0]


def bare_import(project: Path, discover: bool = False) -> float:
    """The bare-import floor for `project`'s current layout: the check's task root and
    sandbox, a bare `import index` instead of the worker (timed alone); with `discover`,
    the bare interpreter also answers the platform's discover through the handler (what
    the check asks for, without the worker and its protocol)."""
    from pmcp_build.local import runner
    from pmcp_build.manifest.load import load_manifest
    from pmcp_build.package import load_check
    from pmcp_build.package.build import resolve_layout

    layout = resolve_layout(load_manifest(project / "metorial.toml"))
    took: list[float] = []

    class Bare:
        def __init__(self, root: Path, module: str, python: str, *args: Any, **kw: Any) -> None:
            spec = runner._WorkerSpec(root, module, python, kw["python_options"], kw["runtime"])
            argv, env, cwd = runner._python_command(spec, kw["settings"], kw["sandboxed"])
            task_root = argv[-2]
            code = f"import sys; sys.path.insert(0, {task_root!r}); import {module}"
            if discover:
                code += f"; assert {module}.handler({{'action': 'discover'}}, None)['success']"
            argv = [*argv[:-3], "-c", code]
            start = time.perf_counter()
            subprocess.run(argv, check=True, capture_output=True, env=env, cwd=cwd)
            took.append(time.perf_counter() - start)
            self.server_info: dict[str, Any] = {}
            self.opened_files: list[str] = []

        def invoke(self, event: Any, timeout: float | None = None) -> Any:
            return {"success": True, "discovery": {}}

        def loaded_files(self) -> list[str]:
            return []

        def close(self) -> None:
            pass

    real = runner.PythonInvoker
    runner.PythonInvoker = Bare  # type: ignore[misc,assignment]
    try:
        load_check._load(layout, None, {})
    finally:
        runner.PythonInvoker = real  # type: ignore[misc]
    return took[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--both", action="store_true", help="also compile-first, cold")
    args = parser.parse_args()
    runs = args.runs
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "pmcp_build")], check=True)
    print(f"before: {load()}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        base = dict(os.environ, CI="1", UV_NO_INDEX="1", UV_FIND_LINKS=str(ROOT / ".wheelhouse"))
        base["UV_CACHE_DIR"] = str(tmp / "uv")
        base.pop("PMCP_BUILD_LOAD_CHECK", None)
        cold = cold_builds(tmp, base, runs, args.both)
        rebuild = rebuilds(tmp, base, runs + 2)
    print(f"{'examples/python-server, check as shipped':<48} {'median s':>9} {'ratio':>7}  range")
    report("cold build / check off", cold)
    if args.both:
        first = [a / b for a, b in zip(cold["first"], cold["off"], strict=True)]
        spread = f"{min(first):.2f}-{max(first):.2f}x"
        label = "cold build, compiled first / check off"
        print(f"{label:<48} {median(cold['first']):>9.3f} {median(first):>6.2f}x  {spread}")
    report("one-file rebuild / floors", rebuild)
    print("goals: cold <= 2.5x the build with PMCP_BUILD_LOAD_CHECK=0; rebuild <= 1.3x")
    print(f"after: {load()}")


def cold_builds(tmp: Path, base: dict[str, str], runs: int, both: bool) -> dict[str, list[float]]:
    """Cold builds, check as shipped and off (and compiled first), rotating the order."""
    sides = {"check": {}, "off": {"PMCP_BUILD_LOAD_CHECK": "0"}}
    if both:
        sides["first"] = {"PMCP_BUILD_CHECK_COMPILE": "first"}
    out: dict[str, list[float]] = {side: [] for side in sides}
    out["ratio"] = []
    warm = tmp / "warm"
    shutil.copytree(EXAMPLE, warm, ignore=shutil.ignore_patterns(".pmcp"))
    typed_build(warm, dict(base, PMCP_BUILD_CACHE_DIR=str(tmp / "warm-cache")))  # uv's cache
    names = list(sides)
    for i in range(runs):
        for side in names[i % len(names) :] + names[: i % len(names)]:
            project = tmp / f"cold-{i}-{side}"
            shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns(".pmcp"))
            env = dict(base, PMCP_BUILD_CACHE_DIR=str(tmp / f"cache-{i}-{side}"), **sides[side])
            os.sync()  # the last build's writeback is not this one's
            out[side].append(typed_build(project, env)[0])
        out["ratio"].append(out["check"][-1] / out["off"][-1])
    return out


def rebuilds(tmp: Path, base: dict[str, str], runs: int) -> dict[str, list[float]]:
    """One-file rebuilds with the check, against the stdlib floor plus the bare import,
    all three on the same edit."""
    project = tmp / "rebuild"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns(".pmcp"))
    cache = tmp / "rebuild-cache"
    env = dict(base, PMCP_BUILD_CACHE_DIR=str(cache))
    os.environ.update(PMCP_BUILD_CACHE_DIR=str(cache))  # the in-process bare import's
    server = project / "server.py"
    original = server.read_text()
    for warm in range(2):  # dependency set, the check's root and bytecode made
        server.write_text(original + f"\n# warm {warm}\n")
        typed_build(project, env)
    time.sleep(2.1)  # files written within two seconds are racy (package/rebuild.py)
    out: dict[str, list[float]] = {"check": [], "stdlib": [], "bare": [], "ratio": []}
    out.update({"bare+discover": [], "ratio with discover": []})
    for i in range(runs):
        server.write_text(original + f"\n# edit {i}\n")
        start = time.perf_counter()
        floor_sha = floor(project, cache, tmp / "floor.zip", env)
        stdlib = time.perf_counter() - start
        ours, our_sha = typed_build(project, env)
        if floor_sha != our_sha:
            raise SystemExit(f"the floor's zip {floor_sha} is not the tool's {our_sha}")
        bare = bare_import(project)
        answered = bare_import(project, discover=True)
        out["bare+discover"].append(answered)
        out["ratio with discover"].append(ours / (stdlib + answered))
        out["check"].append(ours)
        out["stdlib"].append(stdlib)
        out["bare"].append(bare)
        out["ratio"].append(ours / (stdlib + bare))
    return out


def report(label: str, found: dict[str, list[float]]) -> None:
    ratios = found["ratio"]
    spread = f"{min(ratios):.2f}-{max(ratios):.2f}x"
    print(f"{label:<48} {median(found['check']):>9.3f} {median(ratios):>6.2f}x  {spread}")
    for side, values in found.items():
        if side == "ratio with discover":
            spread = f"{min(values):.2f}-{max(values):.2f}x"
            label = "  / (stdlib + bare import and discover)"
            print(f"{label:<48} {'':>9} {median(values):>6.2f}x  {spread}")
        elif side not in ("check", "ratio", "first"):
            print(f"  {side:<46} {median(values):>9.3f}")


if __name__ == "__main__":
    main()
