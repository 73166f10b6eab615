"""Cold build vs a bare `uv pip install` of the same requirements: goal 0 of issue 11.

    python bench/cold_build.py [--runs 5] [--registry]

Both sides start from nothing: an empty uv cache (UV_CACHE_DIR in a fresh folder) and,
for pmcp-build, an empty build cache and no earlier build of the project. The bare
install is the exact uv command pmcp-build runs (same target platform, python version,
--only-binary, --link-mode hardlink (uv's default here), the boot runtime's requirements
plus the example's),
so the ratio is what pmcp-build adds on top of installing: interpreter start, manifest,
scrubbing, hashing, deflating 29 MB, writing the zip and the packs, and (since issue 15)
the build-time load check, which imports the server in a fresh isolated interpreter;
the same build with PMCP_BUILD_LOAD_CHECK=0 is measured beside it.

By default uv reads wheels from .wheelhouse/ (python tests/wheelhouse.py), offline, so
the network does not decide the ratio; --registry uses the package index instead.
Runs alternate; medians and the per-run ratio's median are printed.
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
    from pmcp_build.layout.python_deps import BOOT_REQUIREMENTS, _uv, platform_tag

    base = dict(os.environ, CI="1")
    if not args.registry:
        base |= {"UV_NO_INDEX": "1", "UV_FIND_LINKS": str(ROOT / ".wheelhouse")}
    ours, bare, ratios = [], [], []
    nocheck, nocheck_ratios = [], []
    # As a pip install leaves it: bytecode for pmcp_build present. (This environment sets
    # PYTHONDONTWRITEBYTECODE=1 and an editable install compiles nothing, so without this
    # every run would compile every pmcp_build module; see the start-up figure.)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "pmcp_build")], check=True)
    print(f"before: {load()}")
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            project = Path(tmp) / f"p{i}"
            shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns(".pmcp"))
            env = dict(base, UV_CACHE_DIR=f"{tmp}/uv-a{i}", PMCP_BUILD_CACHE_DIR=f"{tmp}/c{i}")
            build = [sys.executable, "-m", "pmcp_build", "-C", str(project), "build", "--json"]
            cmd = [
                _uv(), "pip", "install", "--target", f"{tmp}/t{i}", "--python", sys.executable,
                "--python-platform", platform_tag("3.11", "x86_64"), "--python-version", "3.11",
                "--only-binary", ":all:", "--link-mode", "hardlink", "--no-config",
                "-r", str(BOOT_REQUIREMENTS), "-r", str(project / "requirements.txt"), "--quiet",
            ]  # fmt: skip
            bare_env = dict(base, UV_CACHE_DIR=f"{tmp}/uv-b{i}")
            if i % 2:  # alternate which goes first
                b, a = run(cmd, bare_env), run(build, env)
            else:
                a, b = run(build, env), run(cmd, bare_env)
            ours.append(a)
            bare.append(b)
            ratios.append(a / b)
            second = Path(tmp) / f"q{i}"
            shutil.copytree(EXAMPLE, second, ignore=shutil.ignore_patterns(".pmcp"))
            env2 = dict(
                base,
                UV_CACHE_DIR=f"{tmp}/uv-c{i}",
                PMCP_BUILD_CACHE_DIR=f"{tmp}/d{i}",
                PMCP_BUILD_LOAD_CHECK="0",
            )
            c = run([*build[:4], str(second), *build[5:]], env2)
            nocheck.append(c)
            nocheck_ratios.append(c / b)
    print(f"{'cold build of examples/python-server':<44} {'median s':>9}")
    print(f"{'pmcp-build build (empty caches)':<44} {median(ours):>9.2f}")
    print(f"{'bare uv pip install, same requirements':<44} {median(bare):>9.2f}")
    print(f"{'pmcp-build build, PMCP_BUILD_LOAD_CHECK=0':<44} {median(nocheck):>9.2f}")
    print(f"ratio (per run, median): {median(ratios):.2f}x (goal <= 1.5x)")
    print(f"ratio without the load check: {median(nocheck_ratios):.2f}x")
    print(f"after: {load()}")


if __name__ == "__main__":
    main()
