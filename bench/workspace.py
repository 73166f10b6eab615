"""A workspace of 20 servers on 3 dependency sets, side by side (issue 24, item 4).

    python bench/workspace.py [--runs 2] [--servers 20]

The servers are small `from boot import metorial` modules, each its own folder with its
own name, spread over three requirement files (none, `humanize`, `pyyaml`), so the 20
packages need 3 dependency sets. Every build is `build --json` with the load check off
(PMCP_BUILD_LOAD_CHECK=0: this measures the build, not the servers' start-up), offline
from `.wheelhouse/`, with uv's cache and the build cache fresh for each cold side:

  workspace cold      `build --all-manifests DIR`: one command, one shared cache
  loop, shared        20 `pmcp-build -C folder build` one after another, one shared cache
                      (what a hand-written loop does today)
  20 machines         20 builds, each with empty caches of its own (a fresh container
                      per server: what a fleet without a shared cache does)
  workspace warm      `build --all-manifests DIR` again, nothing changed
  loop warm           the 20 separate builds again, nothing changed

The sides alternate within each run; medians and per-run ratios against `20 machines`
are printed with the machine's load before and after.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from _util import load, median, run

ROOT = Path(__file__).resolve().parent.parent
SETS = ("", "humanize==4.17.0\n", "pyyaml==6.0.4\n")
SERVER = """from boot import metorial

server = metorial.create_server("{name}")


@server.list_tools()
def list_tools():
    return [{{"name": "echo", "description": "echo {name}", "inputSchema": {{"type": "object"}}}}]


@server.call_tool()
def call_tool(name, arguments):
    return {{"echo": arguments}}
"""


def _workspace(root: Path, count: int) -> list[Path]:
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    arch = "arm64" if os.uname().machine in ("arm64", "aarch64") else "x86_64"
    folders = []
    for index in range(count):
        name = f"server-{index:02d}"
        folder = root / name
        folder.mkdir(parents=True)
        (folder / "server.py").write_text(SERVER.format(name=name))
        requirements = SETS[index % len(SETS)]
        if requirements:
            (folder / "requirements.txt").write_text(requirements)
        (folder / "metorial.toml").write_text(
            f'[server]\nname = "{name}"\n\n[runtime]\nkind = "python"\npython = "{python}"\n'
            f'architecture = "{arch}"\n\n[targets.dev]\nkind = "local"\n'
        )
        folders.append(folder)
    return folders


def _env(cache: Path) -> dict[str, str]:
    env = {**os.environ, "PMCP_BUILD_LOAD_CHECK": "0", "PMCP_BUILD_CACHE_DIR": str(cache)}
    env.update(UV_OFFLINE="1", UV_NO_INDEX="1", UV_FIND_LINKS=str(ROOT / ".wheelhouse"))
    env["UV_CACHE_DIR"] = str(cache / "uv")
    return env


def _tool() -> list[str]:
    return [sys.executable, "-m", "pmcp_build"]


def _one_run(tmp: Path, count: int, index: int) -> dict[str, float]:
    work = tmp / f"run{index}"
    ws = work / "ws"
    folders = _workspace(ws, count)
    shared, loop_cache = work / "cache-ws", work / "cache-loop"
    times: dict[str, float] = {}
    # Rotate which cold side goes first, so a warm disk favours none of them.
    cold_sides = ["workspace cold", "loop, shared", "20 machines"]
    for side in cold_sides[index % 3 :] + cold_sides[: index % 3]:
        if side == "workspace cold":
            times[side] = run([*_tool(), "build", "--all-manifests", str(ws), "--json"],
                              env=_env(shared))  # fmt: skip
        elif side == "loop, shared":
            times[side] = sum(
                run([*_tool(), "-C", str(f), "build", "--json"], env=_env(loop_cache))
                for f in folders
            )
        else:
            times[side] = sum(
                run([*_tool(), "-C", str(f), "build", "--json"], env=_env(work / f"m-{f.name}"))
                for f in folders
            )
    times["workspace warm"] = run(
        [*_tool(), "build", "--all-manifests", str(ws), "--json"], env=_env(shared)
    )
    times["loop warm"] = sum(
        run([*_tool(), "-C", str(f), "build", "--json"], env=_env(loop_cache)) for f in folders
    )
    shutil.rmtree(work, ignore_errors=True)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--servers", type=int, default=20)
    args = parser.parse_args()
    print(load())
    runs: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="pmcp-bench-ws-") as tmp:
        for index in range(args.runs):
            runs.append(_one_run(Path(tmp), args.servers, index))
    print(f"{args.servers} servers on {len(SETS)} dependency sets, {args.runs} runs, check off")
    floor = "20 machines"
    for side in runs[0]:
        values = [r[side] for r in runs]
        ratios = [r[side] / r[floor] for r in runs]
        print(
            f"  {side:16} median {median(values):6.2f} s ({min(values):.2f}-{max(values):.2f})"
            f"   vs {floor}: {median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
        )
    print(load())


if __name__ == "__main__":
    main()
