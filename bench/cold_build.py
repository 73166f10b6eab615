"""Cold build vs a bare `uv pip install` of the same requirements: goal 0 of issue 11.

    python bench/cold_build.py [--runs 5] [--registry]

Both sides start from nothing: an empty uv cache (UV_CACHE_DIR in a fresh folder) and,
for pmcp-build, an empty build cache and no earlier build of the project. The bare
install is the exact uv command pmcp-build runs (same target platform, python version,
--only-binary, --link-mode hardlink, and since metorial.lock the same `--require-hashes
--no-deps -r` of the example's committed lock: boot runtime and example, no resolution),
so the ratio is what pmcp-build adds on top of installing: interpreter start, manifest,
scrubbing, hashing, deflating 29 MB, writing the zip and the packs.

By default uv reads wheels from .wheelhouse/ (python tests/wheelhouse.py), offline, so
the network does not decide the ratio; --registry uses the package index instead.
pmcp-build runs twice per run: with the build-time load check as it ships (the server
loaded once in a fresh interpreter) and with PMCP_BUILD_LOAD_CHECK=0. The three commands'
order rotates from run to run, and the disk's dirty pages are flushed (`sync`, not
timed) before each; medians, the per-run ratios' medians and their ranges are printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _util import load, median, run

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "python-server"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--registry", action="store_true")
    args = parser.parse_args()
    from pmcp_build.layout.python_deps import _uv, platform_tag
    from pmcp_build.layout.python_lock import install_text, read_lock

    base = dict(os.environ, CI="1")
    if not args.registry:
        base |= {"UV_NO_INDEX": "1", "UV_FIND_LINKS": str(ROOT / ".wheelhouse")}
    sides = ("with load check", "PMCP_BUILD_LOAD_CHECK=0", "bare")
    times: dict[str, list[float]] = {side: [] for side in sides}
    ratios: dict[str, list[float]] = {side: [] for side in sides[:2]}
    # As a pip install leaves it: bytecode for pmcp_build present. (This environment sets
    # PYTHONDONTWRITEBYTECODE=1 and an editable install compiles nothing, so without this
    # every run would compile every pmcp_build module; see the start-up figure.)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "pmcp_build")], check=True)
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(f"commit {commit}; before: {load()}")
    with tempfile.TemporaryDirectory() as tmp:
        lock = read_lock(EXAMPLE / "metorial.lock")
        assert lock is not None, "examples/python-server/metorial.lock is committed"
        locked = Path(tmp) / "locked.txt"
        locked.write_text(install_text(lock))
        for i in range(args.runs):
            commands = {}
            for j, side in enumerate(sides[:2]):
                project = Path(tmp) / f"p{i}-{j}"
                shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns(".pmcp"))
                env = dict(
                    base, UV_CACHE_DIR=f"{tmp}/uv-{i}-{j}", PMCP_BUILD_CACHE_DIR=f"{tmp}/c{i}-{j}"
                )
                if j:
                    env["PMCP_BUILD_LOAD_CHECK"] = "0"
                build = [sys.executable, "-m", "pmcp_build", "-C", str(project), "build", "--json"]
                commands[side] = (build, env)
            cmd = [
                _uv(), "pip", "install", "--target", f"{tmp}/t{i}", "--python", sys.executable,
                "--python-platform", platform_tag("3.11", "x86_64"), "--python-version", "3.11",
                "--only-binary", ":all:", "--link-mode", "hardlink", "--no-config",
                "--require-hashes", "--no-deps", "-r", str(locked), "--quiet",
            ]  # fmt: skip
            commands["bare"] = (cmd, dict(base, UV_CACHE_DIR=f"{tmp}/uv-b{i}"))
            order = sides[i % 3 :] + sides[: i % 3]  # rotate which goes first
            for side in order:
                # Each side writes ~60 MB (uv's cache and the install; the tool also its
                # zip and the check's root): flush the last side's dirty pages first, or
                # this side pays for the previous one's writeback (bare uv ranged
                # 0.23-0.81 s without this).
                os.sync()
                times[side].append(run(*commands[side]))
            for side in sides[:2]:
                ratios[side].append(times[side][-1] / times["bare"][-1])
    print(f"{'cold build of examples/python-server':<52} {'median s':>9} {'ratio':>7}  range")
    for side in sides[:2]:
        label = f"pmcp-build build, {side}"
        spread = f"{min(ratios[side]):.2f}-{max(ratios[side]):.2f}x"
        print(f"{label:<52} {median(times[side]):>9.2f} {median(ratios[side]):>6.2f}x  {spread}")
    bare = times["bare"]
    print(
        f"{'bare uv pip install, same requirements':<52} {median(bare):>9.2f}"
        f"           {min(bare):.2f}-{max(bare):.2f} s"
    )
    print("ratios: per run, median (goal <= 1.5x)")
    print(f"after: {load()}")


if __name__ == "__main__":
    main()
