from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pmcp_build.source.globs import matches

from .helpers import (
    HOST_ARCH,
    HOST_EM,
    HOST_PY,
    OTHER_EM,
    binary_project,
    elf,
    make_wheel,
    python_project,
    zip_with,
)


def _build_json(cli, project: Path) -> dict:
    result = cli("-C", str(project), "build", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _modes(zip_path: str) -> dict[str, int]:
    with zipfile.ZipFile(zip_path) as zf:
        return {i.filename: (i.external_attr >> 16) for i in zf.infolist()}


# -- determinism -----------------------------------------------------------------------


def _subprocess_build(project: Path, umask: int, tz: str, cache: Path) -> str:
    env = {**os.environ, "TZ": tz, "PMCP_BUILD_CACHE_DIR": str(cache)}
    proc = subprocess.run(
        [sys.executable, "-m", "pmcp_build", "-C", str(project), "build", "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        preexec_fn=lambda: os.umask(umask),
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["package"]["sha256"]


def test_byte_identical_across_folders_umask_mtime_tz(tmp_path: Path, shared_cache: Path) -> None:
    a = python_project(tmp_path / "one" / "a", extra='[[assets]]\nfrom = "data"\nto = "assets"\n')
    (a / "data").mkdir()
    (a / "data" / "b.txt").write_text("b")
    (a / "data" / "a.txt").write_text("a")
    b = tmp_path / "elsewhere" / "deeper" / "b"
    shutil.copytree(a, b)
    for path in b.rglob("*"):
        os.utime(path, (1_000_000_000, 1_000_000_000))
        path.chmod(0o700 if path.is_dir() else 0o600)  # perms differ, exec bits do not
    first = _subprocess_build(a, 0o022, "UTC", shared_cache)
    second = _subprocess_build(b, 0o077, "Asia/Tokyo", tmp_path / "other-cache")
    assert first == second


def test_same_wheels_downloaded_at_other_times_give_the_same_zip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uv records the installed wheel's mtime (dist-info/uv_cache.json); two machines
    that fetched the same wheels at different times must still build the same zip."""
    wheels = tmp_path / "wheels"
    wheel = make_wheel(wheels, "tinypkg", "1.0")
    monkeypatch.setenv("UV_FIND_LINKS", f"{os.environ['UV_FIND_LINKS']},{wheels}")
    project = python_project(tmp_path / "p", requirements="tinypkg==1.0\n")
    shas = []
    for when in (1_000_000_000, 1_600_000_000):
        os.utime(wheel, (when, when))
        monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / f"uv-{when}"))
        shas.append(_subprocess_build(project, 0o022, "UTC", tmp_path / f"cache-{when}"))
    assert shas[0] == shas[1]


def test_permission_only_change_changes_the_hash(cli, tmp_path: Path) -> None:
    project = python_project(tmp_path / "p")
    (project / "tool.sh").write_text("#!/bin/sh\necho hi\n")
    (project / "tool.sh").chmod(0o644)
    before = _build_json(cli, project)["package"]["sha256"]
    (project / "tool.sh").chmod(0o755)
    after = _build_json(cli, project)
    assert after["package"]["sha256"] != before
    mode = next(f["mode"] for f in after["layout"]["files"] if f["path"] == "tool.sh")
    assert mode == "0755"


# -- python runtime --------------------------------------------------------------------


def test_python_layout_has_entrypoint_boot_handler_and_deps(cli, tmp_path: Path) -> None:
    project = python_project(tmp_path / "p")
    (project / "main.py").write_text("# not the entrypoint: server.py comes first\n")
    (project / ".venv").mkdir()
    (project / ".venv" / "pyvenv.cfg").write_text("")
    (project / "__pycache__").mkdir()
    (project / "__pycache__" / "server.cpython-311.pyc").write_bytes(b"stale")
    data = _build_json(cli, project)
    files = {f["path"]: f for f in data["layout"]["files"]}
    assert data["layout"]["handler"] == "index.handler"
    assert files["index.py"]["origin"] == "generated"
    assert files["server.py"]["origin"] == "source"
    assert "__metorial__/bootstrap.py" in files
    assert any(p.startswith("mcp/") for p in files)
    assert not any("__pycache__" in p or p.startswith(".venv") for p in files)
    assert not any(
        p.endswith(("/RECORD", "/direct_url.json")) or p.startswith("bin/") for p in files
    )
    index = zipfile.ZipFile(data["package"]["path"]).read("index.py").decode()
    assert '"server.py"' in index  # the entrypoint is baked in, not read from the environment
    assert str(tmp_path) not in index


def test_missing_entrypoint_lists_what_was_looked_for(cli, tmp_path: Path) -> None:
    project = python_project(tmp_path / "p")
    (project / "server.py").unlink()
    result = cli("-C", str(project), "build")
    assert result.exit_code == 1
    assert "server.py, main.py, index.py, app.py, handler.py, lambda.py, mcp.py" in result.stderr


def test_requirements_change_invalidates_cache_and_nothing_else_does(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheels = tmp_path / "wheels"
    make_wheel(wheels, "tinypkg", "1.0")
    make_wheel(wheels, "tinypkg", "2.0")
    monkeypatch.setenv("UV_FIND_LINKS", f"{os.environ['UV_FIND_LINKS']},{wheels}")
    cache = tmp_path / "cache"
    monkeypatch.setenv("PMCP_BUILD_CACHE_DIR", str(cache))
    project = python_project(tmp_path / "p", requirements="tinypkg==1.0\n")

    def installs() -> int:
        return len([p for p in (cache / "deps").iterdir() if not p.name.startswith(".")])

    first = _build_json(cli, project)
    assert installs() == 1
    assert any(f["detail"] == "tinypkg 1.0" for f in first["layout"]["files"])
    (project / "server.py").write_text((project / "server.py").read_text() + "\n# edit\n")
    _build_json(cli, project)
    assert installs() == 1  # a code change reuses the installed dependencies
    (project / "requirements.txt").write_text("tinypkg==2.0\n")
    second = _build_json(cli, project)
    assert installs() == 2
    assert any(f["detail"] == "tinypkg 2.0" for f in second["layout"]["files"])


def test_no_wheel_for_target_platform_is_a_clear_error(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheels = tmp_path / "wheels"
    make_wheel(wheels, "nativepkg", "1.0", tag="cp311-cp311-manylinux2014_x86_64")
    monkeypatch.setenv("UV_FIND_LINKS", f"{os.environ['UV_FIND_LINKS']},{wheels}")
    project = python_project(tmp_path / "p", requirements="nativepkg==1.0\n", arch="arm64")
    result = cli("-C", str(project), "build")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert "has no wheel for python" in result.stderr
    assert "aarch64-manylinux" in result.stderr


def test_bytecode_is_hash_checked_and_has_no_build_paths(cli, tmp_path: Path) -> None:
    project = python_project(tmp_path / "p", python=HOST_PY)
    toml = (
        (project / "metorial.toml")
        .read_text()
        .replace('kind = "python"\n', 'kind = "python"\nbytecode = true\n')
    )
    (project / "metorial.toml").write_text(toml)
    data = _build_json(cli, project)
    tag = "cpython-" + HOST_PY.replace(".", "")
    pyc = f"__pycache__/server.{tag}.pyc"
    with zipfile.ZipFile(data["package"]["path"]) as zf:
        blob = zf.read(pyc)
    assert int.from_bytes(blob[4:8], "little") == 0b01  # hash-based, unchecked
    assert str(tmp_path).encode() not in blob
    assert b"/var/task/server.py" in blob


# -- binary runtime --------------------------------------------------------------------


def test_raw_elf_becomes_executable_bootstrap_at_root(cli, tmp_path: Path) -> None:
    project = binary_project(tmp_path / "b", elf(HOST_EM), artifact_name="my-server", mode=0o700)
    data = _build_json(cli, project)
    assert [f["path"] for f in data["layout"]["files"]] == ["bootstrap"]
    assert _modes(data["package"]["path"])["bootstrap"] == 0o100755
    assert data["layout"]["runtime"] == "provided.al2023"


def test_cold_build_deflates_big_files_as_it_hashes_them_and_makes_the_same_zip(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cold build (no earlier zip of the project) deflates the artifact and big assets
    from the bytes it hashed, while the layout is resolved; the writer takes them by
    content instead of reading the files again. A build that is not cold compresses them
    in the writer: same zip, byte for byte. Members of 1 MiB or more are written first,
    largest first; the central directory lists the layout's order."""
    from pmcp_build.package import zipwriter

    rng = random.Random(3)
    boot = elf(HOST_EM) + b"\x48\x89\xe5\xc3" * 450_000  # compressible, as code is
    project = binary_project(tmp_path / "b", boot, extra='[[assets]]\nfrom = "data"\nto = "data"\n')
    (project / "data" / "docs").mkdir(parents=True)
    (project / "data" / "noise.bin").write_bytes(rng.randbytes(1_200_000))
    (project / "data" / "words.txt").write_bytes(b"lorem ipsum dolor " * 100_000)
    for n in range(5):
        (project / "data" / "docs" / f"{n}.md").write_bytes(b"# page %d\n" % n * 50)
    ahead: list[int] = []
    produced: list[str] = []
    offer, produce = zipwriter.compress_ahead, zipwriter._produce
    monkeypatch.setattr(
        zipwriter,
        "compress_ahead",
        lambda sha, data: offer(sha, data) and not ahead.append(len(data)),
    )
    monkeypatch.setattr(
        zipwriter,
        "_produce",
        lambda batch: produced.extend(e.path for e in batch) or produce(batch),
    )
    cold = _build_json(cli, project)["package"]
    assert sorted(ahead) == [1_200_000, 1_800_000, len(boot)]
    assert not {"bootstrap", "data/noise.bin", "data/words.txt"} & set(produced)
    with zipfile.ZipFile(cold["path"]) as zf:
        by_offset = sorted(zf.infolist(), key=lambda i: i.header_offset)
        assert [i.filename for i in zf.infolist()] == sorted(i.filename for i in by_offset)
        assert [i.filename for i in by_offset] == [
            "bootstrap", "data/words.txt", "data/noise.bin",
            *(f"data/docs/{n}.md" for n in range(5)),
        ]  # fmt: skip
        assert zf.read("bootstrap") == boot and zf.testzip() is None
    # Not cold: the previous zip's index is there (its zip gone), the cache is empty.
    Path(cold["path"]).unlink()
    ahead.clear()
    produced.clear()
    warm = cli(
        "-C", str(project), "build", "--json", env={"PMCP_BUILD_CACHE_DIR": str(tmp_path / "c")}
    )
    assert warm.exit_code == 0, warm.output
    assert not ahead and "bootstrap" in produced
    assert json.loads(warm.stdout)["package"]["sha256"] == cold["sha256"]


def test_elf_for_the_wrong_architecture_is_rejected(cli, tmp_path: Path) -> None:
    project = binary_project(tmp_path / "b", elf(OTHER_EM))
    result = cli("-C", str(project), "build")
    assert result.exit_code == 1
    assert "cannot execute binary file" in result.stderr
    assert f"'{HOST_ARCH}'" in result.stderr


def test_32_bit_elf_and_unknown_bytes_are_rejected(cli, tmp_path: Path) -> None:
    result = cli("-C", str(binary_project(tmp_path / "a", elf(HOST_EM, bits=32))), "build")
    assert result.exit_code == 1 and "64-bit" in result.stderr
    result = cli("-C", str(binary_project(tmp_path / "b", b"MZ\x90\x00 not linux")), "build")
    assert result.exit_code == 1 and "neither an ELF" in result.stderr


def test_prebuilt_zip_used_as_is_and_folder_wrapped_zip_refused(cli, tmp_path: Path) -> None:
    good = zip_with(
        tmp_path / "good.zip", [("bootstrap", elf(HOST_EM), 0o755), ("lib/data.txt", b"x", 0o644)]
    )
    project = binary_project(tmp_path / "g", good.read_bytes(), artifact_name="lambda.zip")
    data = _build_json(cli, project)
    assert [f["path"] for f in data["layout"]["files"]] == ["bootstrap", "lib/data.txt"]

    wrapped = zip_with(tmp_path / "wrapped.zip", [("chinook/bootstrap", elf(HOST_EM), 0o755)])
    project = binary_project(tmp_path / "w", wrapped.read_bytes(), artifact_name="lambda.zip")
    result = cli("-C", str(project), "build")
    assert result.exit_code == 1
    assert "wrapped in a folder (chinook/bootstrap)" in result.stderr
    inspected = cli("inspect", str(wrapped))
    assert inspected.exit_code == 1
    assert "wrapped in a folder" in inspected.stderr


def test_inspect_lints_non_executable_bootstrap_and_missing_handler(cli, tmp_path: Path) -> None:
    plain = zip_with(tmp_path / "p.zip", [("bootstrap", b"#!/bin/sh\n", 0o644)])
    result = cli("inspect", str(plain))
    assert result.exit_code == 1 and "not executable" in result.stderr
    nohandler = zip_with(tmp_path / "n.zip", [("lib/x.py", b"", 0o644)])
    result = cli("inspect", str(nohandler))
    assert result.exit_code == 1 and "no handler module" in result.stderr
    wrongarch = zip_with(tmp_path / "a.zip", [("bootstrap", elf(OTHER_EM), 0o755)])
    result = cli("inspect", "--architecture", HOST_ARCH, str(wrongarch))
    assert result.exit_code == 1 and "cannot execute binary file" in result.stderr


def test_inspect_accepts_our_own_build(cli, tmp_path: Path) -> None:
    project = python_project(tmp_path / "p")
    data = _build_json(cli, project)
    result = cli("inspect", data["package"]["path"])
    assert result.exit_code == 0, result.output
    assert "ok: no problems found" in result.stdout


# -- assets ----------------------------------------------------------------------------


def test_assets_file_folder_and_glob(cli, tmp_path: Path) -> None:
    extra = (
        '[[assets]]\nfrom = "data/chinook.db"\nto = "chinook.db"\n'
        '[[assets]]\nfrom = "docs"\nto = "help"\n'
        '[[assets]]\nfrom = "conf/*.json"\nto = "config"\n'
    )
    project = python_project(tmp_path / "p", extra=extra)
    (project / "data").mkdir()
    (project / "data" / "chinook.db").write_bytes(b"SQLite format 3\x00" + bytes(100))
    (project / "docs" / "sub").mkdir(parents=True)
    (project / "docs" / "sub" / "a.md").write_text("# a")
    (project / "conf").mkdir()
    (project / "conf" / "x.json").write_text("{}")
    (project / "conf" / "y.yaml").write_text("")
    files = {f["path"]: f for f in _build_json(cli, project)["layout"]["files"]}
    assert files["chinook.db"]["origin"] == "asset"
    assert files["help/sub/a.md"]["origin"] == "asset"
    assert files["config/x.json"]["origin"] == "asset"
    assert "config/y.yaml" not in files


def test_asset_colliding_with_code_is_an_error(cli, tmp_path: Path) -> None:
    project = python_project(tmp_path / "p", extra='[[assets]]\nfrom = "x.py"\nto = "server.py"\n')
    (project / "x.py").write_text("")
    result = cli("-C", str(project), "build")
    assert result.exit_code == 1
    assert "two files want the package path 'server.py'" in result.stderr


def test_missing_asset_is_an_error(cli, tmp_path: Path) -> None:
    project = python_project(tmp_path / "p", extra='[[assets]]\nfrom = "nope.db"\nto = "a.db"\n')
    result = cli("-C", str(project), "build")
    assert result.exit_code == 1 and "assets[0].from: 'nope.db' matches nothing" in result.stderr


# -- URL sources -----------------------------------------------------------------------


def _url_project(tmp_path: Path, url: str, sha: str) -> Path:
    project = tmp_path / "url-project"
    project.mkdir()
    (project / "metorial.toml").write_text(
        f'[server]\nname = "remote"\n[source]\nurl = "{url}"\nsha256 = "{sha}"\n'
        f'[runtime]\nkind = "python"\npython = "{HOST_PY}"\narchitecture = "{HOST_ARCH}"\n'
    )
    return project


def test_url_source_github_style_archive_is_unwrapped(cli, tmp_path: Path, http_dir) -> None:
    root, base = http_dir
    archive = zip_with(
        root / "src.zip",
        [
            (
                "repo-main/main.py",
                b"from boot import metorial\nmetorial.create_server('r')\n",
                0o644,
            ),
            ("repo-main/lib/util.py", b"", 0o644),
        ],
    )
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    files = {
        f["path"]
        for f in _build_json(cli, _url_project(tmp_path, f"{base}/src.zip", sha))["layout"]["files"]
    }
    assert {"main.py", "lib/util.py", "index.py"} <= files


def test_url_source_with_wrong_sha_is_refused(cli, tmp_path: Path, http_dir) -> None:
    root, base = http_dir
    zip_with(root / "src.zip", [("main.py", b"", 0o644)])
    result = cli("-C", str(_url_project(tmp_path, f"{base}/src.zip", "0" * 64)), "build")
    assert result.exit_code == 1 and "pins" in result.stderr


HOSTILE = {
    "traversal": ([("../evil.py", b"x", 0o644)], "path traversal"),
    "absolute": ([("/etc/cron.d/evil", b"x", 0o644)], "absolute path"),
    "symlink": ([("link", b"/etc/passwd", 0o120777)], "symlink"),
    "duplicate": ([("a.py", b"1", 0o644), ("a.py", b"2", 0o644)], "appears twice"),
    "bomb": ([("bomb.txt", b"\0" * (20 * 1024 * 1024), 0o644)], "zip bomb"),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_source_archives_are_refused(cli, tmp_path: Path, http_dir, kind: str) -> None:
    root, base = http_dir
    members, message = HOSTILE[kind]
    archive = zip_with(root / "src.zip", members)
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    project = _url_project(tmp_path, f"{base}/src.zip", sha)
    result = cli("-C", str(project), "build")
    assert result.exit_code == 1, result.output
    assert message in result.stderr
    assert not (tmp_path / "evil.py").exists()
    assert not (project / ".pmcp" / "dist").exists()


def test_unreachable_url_is_one_line(cli, tmp_path: Path) -> None:
    result = cli("-C", str(_url_project(tmp_path, "http://127.0.0.1:9/x.zip", "0" * 64)), "build")
    assert result.exit_code == 1
    assert "cannot download" in result.stderr and len(result.stderr.splitlines()) == 1


# -- globs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "pattern", "hit"),
    [
        ("tests/test_a.py", "tests/**", True),
        ("src/tests/test_a.py", "tests/**", False),
        ("a/b/__pycache__/x.pyc", "**/__pycache__/**", True),
        ("deep/x.pyc", "*.pyc", True),
        ("data/a.db", "data/*.db", True),
        ("data/sub/a.db", "data/*.db", False),
        ("data/sub/a.db", "data/**/*.db", True),
    ],
)
def test_glob_semantics(path: str, pattern: str, hit: bool) -> None:
    assert matches(path, (pattern,)) is hit


def test_requirement_conflicting_with_the_boot_runtime_names_both(cli, tmp_path: Path) -> None:
    project = python_project(tmp_path / "p", requirements="mcp<2\n")
    result = cli("-C", str(project), "build")
    assert result.exit_code == 1, result.output
    assert "conflicting requirements: mcp>=2.3,<3 and mcp<2" in result.stderr


def test_the_dependency_set_is_the_runtimes_not_a_commands(tmp_path: Path) -> None:
    """A stdio command's own set is packaged under __command__/ and its entries sort
    first: taken for the runtime's set, the member pack and the load check's root went
    to deps/ itself (deps/members.pack, listed by `cache` as a dependency set)."""
    from pmcp_build.layout.model import Entry, make_layout
    from pmcp_build.package.write import dependency_set

    command_site = tmp_path / "deps" / "c" / "site"
    runtime_site = tmp_path / "deps" / "r" / "site"
    entries = [
        Entry("__command__/pkg/a.py", "dependency", 0o644, 1, "a" * 64, command_site / "pkg/a.py"),
        Entry("anyio/b.py", "dependency", 0o644, 1, "b" * 64, runtime_site / "anyio/b.py"),
    ]
    layout = make_layout(entries, "python3.11", "index.handler", "x86_64")
    assert dependency_set(layout) == tmp_path / "deps" / "r"
    only_command = make_layout(entries[:1], "python3.11", "index.handler", "x86_64")
    assert dependency_set(only_command) is None
