"""The whole `pmcp-build build` of a large binary-plus-assets project vs `zip -X -r -6`.

    python bench/big_tree.py [--mb 84] [--runs 5] [--keep DIR]

Goal 3 of issue 26: a cold build, the whole process as a user types it (interpreter
start, manifest, walk, hashing, deflating, the zip, the cache's records), at least 3x
faster than `zip -X -r -6 -q` of the same files (the bootstrap and the assets folder),
on this machine in the same run.

The project is a `[runtime] kind = "binary"` server (binary runtimes run no load
check): a raw ELF `bootstrap` (a real header, then machine-code-like bytes), a sqlite
database of customers, text files, incompressible blobs (random bytes, as images or
archives would be) and a few hundred small files: 24/24/22/28/2 percent of the bytes.
Each part is made so that `zip -6` deflates it at about the speed it does a real one
(this machine's python3 binary: 26 MB/s; a real sqlite db: 34-44 MB/s), since the floor
is zip's speed: a tree zlib finds slow would flatter the ratio. Cold: a fresh
PMCP_BUILD_CACHE_DIR and no earlier build (.pmcp/ removed) each run.

The two commands alternate, the first one rotating from run to run, with the disk's
dirty pages flushed (`sync`, not timed) before each; the ratio is per run (zip's wall
time / ours), the median and the range are printed, with the load. CPU time (user +
system of the child) over wall time says how many of the cores each one used.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _util import load, median

ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024
EM_X86_64, EM_AARCH64 = 62, 183


def _elf_header(machine: int) -> bytes:
    """A 64-bit little-endian ELF header with no sections: classified, not runnable."""
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    return ident + struct.pack("<HHI", 2, machine, 1) + bytes(64 - 24)


def _code_like(rng: random.Random, size: int) -> bytes:
    """Bytes zip -6 deflates at a release binary's speed (~26 MB/s here; to 0.6 of their
    size, a real one to 0.4): short "instructions" drawn from a skewed vocabulary, with
    random operands."""
    vocab = [rng.randbytes(rng.randint(2, 7)) for _ in range(4000)]
    weights = [1.0 / (i + 1) for i in range(len(vocab))]
    out = bytearray()
    while len(out) < size:
        ops = rng.choices(vocab, weights, k=4096)
        for op in ops:
            out += op
            if rng.random() < 0.3:
                out += rng.randbytes(4)
    return bytes(out[:size])


_FIRST = ("anna", "bert", "carla", "dmitri", "emil", "fatima", "george", "hana", "ivan")
_LAST = ("smith", "garcia", "müller", "rossi", "kowalski", "tanaka", "silva", "nguyen")
_CITIES = ("Lisbon", "Berlin", "Osaka", "Lima", "Nairobi", "Oslo", "Austin", "Delhi")


def _database(rng: random.Random, path: Path, size: int) -> None:
    """A table of customers with an index: names, e-mails, amounts, dates and random
    tokens (zip -6 deflates it at about the speed it does a real one; rows of words from
    a small vocabulary are 2.5x slower for zlib and would flatter the ratio)."""

    def row(n: int) -> tuple[object, ...]:
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        return (
            n, f"{first.title()} {last.title()}", f"{first}.{last}{n}@example.com",
            rng.choice(_CITIES), round(rng.uniform(-500, 50_000), 2),
            f"20{rng.randint(10, 25)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            rng.randbytes(12).hex(),
        )  # fmt: skip

    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE customer (id INTEGER PRIMARY KEY, name TEXT, email TEXT, "
            "city TEXT, balance REAL, created TEXT, token TEXT)"
        )
        conn.execute("CREATE INDEX by_city ON customer (city, name)")
        conn.executemany(
            "INSERT INTO customer VALUES (?, ?, ?, ?, ?, ?, ?)",
            (row(n) for n in range(size // 133)),  # ~133 bytes of file a row
        )


def make_project(root: Path, mb: int) -> int:
    """The project (manifest, build/bootstrap, assets/); returns the packaged bytes."""
    rng = random.Random(26)
    arch = "arm64" if os.uname().machine in ("aarch64", "arm64") else "x86_64"
    machine = EM_AARCH64 if arch == "arm64" else EM_X86_64
    budget = mb * MB
    boot = root / "build" / "bootstrap"
    boot.parent.mkdir(parents=True)
    boot.write_bytes(_elf_header(machine) + _code_like(rng, budget * 24 // 100))
    boot.chmod(0o755)
    assets = root / "assets"
    (assets / "db").mkdir(parents=True)
    _database(rng, assets / "db" / "customers.db", budget * 24 // 100)
    vocab = [
        bytes(rng.choice(b"abcdefghijklmnop") for _ in range(rng.randint(2, 9))) for _ in range(800)
    ]
    text, i = 0, 0
    while text < budget * 22 // 100:
        path = assets / "docs" / f"s{i % 12}" / f"page{i}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = b" ".join(rng.choices(vocab, k=rng.randint(500, 60_000)))
        path.write_bytes(data)
        text += len(data)
        i += 1
    for n in range(12):
        path = assets / "media" / f"blob{n}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(budget * 28 // 100 // 12))
    for n in range(400):
        path = assets / "small" / f"m{n // 50}" / f"note{n}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b'{"n": %d, "text": "%s"}\n' % (n, b" ".join(rng.choices(vocab, k=200))))
    (root / "metorial.toml").write_text(
        '[server]\nname = "big"\n\n[runtime]\nkind = "binary"\n'
        f'architecture = "{arch}"\nartifact = "build/bootstrap"\n\n'
        '[[assets]]\nfrom = "assets"\nto = "assets"\n\n[targets.dev]\nkind = "local"\n'
    )
    return packaged_bytes(root)


def packaged_bytes(root: Path) -> int:
    """What both commands pack: the bootstrap and the assets folder."""
    files = [root / "build" / "bootstrap", *(root / "assets").rglob("*")]
    return sum(p.stat().st_size for p in files if p.is_file())


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Wall time and CPU time (user + system, the child and its children) of a command
    that must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=cwd)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=84)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="build the project here and keep it")
    args = parser.parse_args()
    # As a pip install leaves it: bytecode for pmcp_build present.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "pmcp_build")], check=True)
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        project = args.keep or Path(tmp) / "project"
        if args.keep is None or not (project / "metorial.toml").exists():
            size = make_project(project, args.mb)
        else:
            size = packaged_bytes(project)
        files = sum(1 for p in (project / "assets").rglob("*") if p.is_file()) + 1
        print(f"commit {commit}; tree: {size / 1e6:.0f} MB in {files} files; before: {load()}")
        sides = ("pmcp-build build", "zip -X -r -6")
        walls: dict[str, list[float]] = {s: [] for s in sides}
        cpus: dict[str, list[float]] = {s: [] for s in sides}
        ratios: list[float] = []
        for i in range(args.runs):
            cache = Path(tmp) / f"cache{i}"
            shutil.rmtree(project / ".pmcp", ignore_errors=True)
            out = Path(tmp) / f"zip{i}.zip"
            env = dict(os.environ, PMCP_BUILD_CACHE_DIR=str(cache))
            commands = {
                sides[0]: [sys.executable, "-m", "pmcp_build", "-C", str(project), "build"],
                sides[1]: ["zip", "-X", "-r", "-6", "-q", str(out), "build/bootstrap", "assets"],
            }
            for side in sides[i % 2 :] + sides[: i % 2]:
                os.sync()
                wall, cpu = timed(commands[side], env, project)
                walls[side].append(wall)
                cpus[side].append(cpu)
            ratios.append(walls[sides[1]][-1] / walls[sides[0]][-1])
            zipped = out.stat().st_size
            ours = next((project / ".pmcp" / "dist").glob("big-*.zip")).stat().st_size
            out.unlink()
            shutil.rmtree(cache)
        print(f"{'whole command':<20} {'median s':>9} {'cpu s':>7} {'cores':>6}")
        for side in sides:
            cores = median([c / w for c, w in zip(cpus[side], walls[side], strict=True)])
            print(
                f"{side:<20} {median(walls[side]):>9.2f} {median(cpus[side]):>7.2f} {cores:>6.2f}"
            )
        print(
            f"zip -6 time / build time (per run, median): {median(ratios):.2f}x "
            f"(range {min(ratios):.2f}-{max(ratios):.2f}x; goal >= 3x)"
        )
        mb = size / 1e6
        print(
            f"zip -6: {mb / median(walls[sides[1]]):.0f} MB/s; our cpu / zip's: "
            f"{median(cpus[sides[0]]) / median(cpus[sides[1]]):.2f}; our zip / zip -6's: "
            f"{ours / zipped:.3f} of its size (last run)"
        )
        print(f"after: {load()}")


if __name__ == "__main__":
    main()
