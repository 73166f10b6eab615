"""The build cache trusts nothing on stat alone (issue 20): every cached object a package
is built from is checked against the sha256 recorded when it was written. Each case
changes one object the way a hostile or broken writer would, and then the build warns
once, ships the bytes a clean build ships, repairs the object, and the next build is
clean. uv's own cache is a private one in every test here: on the code before this
issue a site/ file was a hard link into it, and a tampered one would have changed the
wheel for every install on the machine."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pmcp_build import entry
from pmcp_build.package import cache as cache_store
from pmcp_build.package import rebuild

from .helpers import HOST_ARCH, HOST_PY, make_wheel, python_project, zip_with


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("PMCP_BUILD_CACHE_DIR", str(root))
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    monkeypatch.setattr(rebuild, "_RACY_NS", 0)  # files written by the test are settled
    return root


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _new_process() -> None:
    """What a fresh `pmcp-build` starts with: nothing warned, nothing hashed yet (the
    getattr: so the tests also run, and fail, on the code before these checks)."""
    for memo in ("_warned", "_digests"):
        getattr(cache_store, memo, set()).clear()


def _check(package: dict[str, Any]) -> str:
    """The zip on disk is the one reported, and every member passes its CRC."""
    path = Path(package["path"])
    assert _sha(path) == package["sha256"]
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
    return str(package["sha256"])


def _build(cli: Any, project: Path) -> tuple[str, list[str]]:
    """A full build (the CLI): the package's sha256 and the warning lines."""
    _new_process()
    result = cli("-C", str(project), "build", "--json")
    assert result.exit_code == 0, result.output
    assert "internal error" not in result.output
    warnings = [ln for ln in result.stderr.splitlines() if ln.startswith("warning:")]
    return _check(json.loads(result.stdout)["package"]), warnings


def _fast(
    project: Path, capsys: pytest.CaptureFixture[str], fell_back: bool = False
) -> tuple[str, list[str]]:
    """The fast path of `build` (entry.py), falling back to the full CLI as `main` does
    (`fell_back`: whether it is expected to)."""
    _new_process()
    cwd = os.getcwd()
    try:
        done = entry.fast_build(["-C", str(project), "build", "--json"])
        if not done:
            from typer.testing import CliRunner

            from pmcp_build.cli import app

            result = CliRunner().invoke(app, ["-C", str(project), "build", "--json"])
            assert result.exit_code == 0, result.output
            out, err = result.stdout, result.stderr
    finally:
        os.chdir(cwd)
    assert done is not fell_back
    captured = capsys.readouterr()  # what the fast path printed, before any fallback
    out, err = (captured.out, captured.err) if done else (out, captured.err + err)
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    return _check(json.loads(out)["package"]), warnings


def _dependency_set(cache: Path) -> Path:
    (found,) = [d for d in (cache / "deps").iterdir() if not d.name.startswith(".")]
    return found


def _keep_stat(path: Path, change: Callable[[bytearray], bytes]) -> None:
    """Rewrite `path` in place, then put its mtime back (its size is the caller's)."""
    st = path.stat()
    path.write_bytes(change(bytearray(path.read_bytes())))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _flip(data: bytearray) -> bytes:
    data[len(data) // 2] ^= 0x01
    return bytes(data)


def _forget_dist(project: Path) -> None:
    """No previous zip to copy members from: everything comes from the cache."""
    shutil.rmtree(project / ".pmcp", ignore_errors=True)


def _clean_again(cli: Any, project: Path, expected: str) -> None:
    _forget_dist(project)
    assert _build(cli, project) == (expected, [])
    assert _build(cli, project) == (expected, [])


@pytest.mark.parametrize("damage", ["flipped byte", "truncated"])
def test_a_damaged_dependency_pack_is_rebuilt_not_shipped(
    cli: Any, cache: Path, tmp_path: Path, damage: str
) -> None:
    """Before: one flipped byte (same size) was shipped as a member with a bad CRC; a
    truncated pack was passed over without a word and stayed broken."""
    project = python_project(tmp_path / "p")
    clean, warnings = _build(cli, project)
    assert warnings == []
    pack = _dependency_set(cache) / "members.pack"
    if damage == "flipped byte":
        _keep_stat(pack, _flip)
    else:
        _keep_stat(pack, lambda data: bytes(data[: len(data) // 2]))
    # Another project with the same dependencies (no zip of its own yet) too.
    other = python_project(tmp_path / "other")
    _forget_dist(project)
    sha, warnings = _build(cli, project)
    assert sha == clean
    assert len(warnings) == 1 and "members.pack" in warnings[0], warnings
    _clean_again(cli, project, clean)
    assert _build(cli, other)[1] == []


def test_a_flipped_byte_in_a_dependency_pack_on_the_fast_path(
    cli: Any, cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A one-file rebuild copies members out of the previous zip, then the pack."""
    project = python_project(tmp_path / "p")
    _build(cli, project)
    server = project / "server.py"
    server.write_text(server.read_text() + "\n# edited\n")
    clean, _ = _build(cli, project)
    server.write_text(server.read_text() + "\n# edited again\n")
    _keep_stat(_dependency_set(cache) / "members.pack", _flip)
    # The previous zip is damaged too, so members must come from the pack.
    (old,) = (project / ".pmcp" / "dist").glob("tiny-*.zip")
    _keep_stat(old, _flip)
    _, warnings = _fast(project, capsys)
    assert len(warnings) == 2, warnings  # the zip, the pack: one line each
    assert any(old.name in w for w in warnings) and any("members.pack" in w for w in warnings)
    server.write_text(server.read_text().replace("\n# edited again\n", ""))
    # The set's pack was written again, an input the fast path checks: one full build.
    assert _fast(project, capsys, fell_back=True) == (clean, [])
    assert _fast(project, capsys) == (clean, [])


@pytest.mark.parametrize("swap", ["members.pack", "members.json", "both"])
def test_swapped_packs_and_indexes_between_dependency_sets(
    cli: Any, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, swap: str
) -> None:
    """Before: a pack or index moved from another set was used or ignored in silence;
    moved together, one set's members served another's build."""
    wheels = tmp_path / "wheels"
    make_wheel(wheels, "tinypkg", "1.0")
    make_wheel(wheels, "tinypkg", "2.0")
    monkeypatch.setenv("UV_FIND_LINKS", f"{os.environ['UV_FIND_LINKS']},{wheels}")
    one = python_project(tmp_path / "one", requirements="tinypkg==1.0\n")
    two = python_project(tmp_path / "two", requirements="tinypkg==2.0\n")
    clean_one, clean_two = _build(cli, one)[0], _build(cli, two)[0]
    sets = sorted(d for d in (cache / "deps").iterdir() if not d.name.startswith("."))
    assert len(sets) == 2
    for name in ("members.pack", "members.json") if swap == "both" else (swap,):
        a, b = sets[0] / name, sets[1] / name
        tmp = a.with_name("swap")
        a.rename(tmp)
        b.rename(a)
        tmp.rename(b)
    for project, clean in ((one, clean_one), (two, clean_two)):
        _forget_dist(project)
        sha, warnings = _build(cli, project)
        assert sha == clean
        assert len(warnings) == 1 and "member pack" in warnings[0], warnings
    for project, clean in ((one, clean_one), (two, clean_two)):
        _clean_again(cli, project, clean)


def test_a_tampered_site_file_with_the_pack_removed_reinstalls_the_set(
    cli: Any, cache: Path, tmp_path: Path
) -> None:
    """Before: every build failed with `internal error: RuntimeError: ... changed while
    the package was being built`, until the cache was deleted by hand."""
    project = python_project(tmp_path / "p")
    clean, _ = _build(cli, project)
    deps = _dependency_set(cache)
    origins = json.loads((deps / "origins.json").read_text())
    victim = deps / "site" / next(p for p in sorted(origins) if p.endswith("/__init__.py"))
    with open(victim, "a") as fh:
        fh.write("\nimport os; os.system('echo pwned')\n")
    (deps / "members.pack").unlink()
    other = python_project(tmp_path / "other")  # same dependencies, never built
    _forget_dist(project)
    sha, warnings = _build(cli, project)
    assert sha == clean
    assert len(warnings) == 1 and victim.relative_to(deps / "site").as_posix() in warnings[0]
    assert "pwned" not in victim.read_text()
    _clean_again(cli, project, clean)
    assert _build(cli, other)[1] == []


def test_a_tampered_site_file_found_by_the_fast_path_takes_the_full_build(
    cli: Any, cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The fast path cannot reinstall: it steps aside, and the full build does."""
    project = python_project(tmp_path / "p")
    _build(cli, project)
    server = project / "server.py"
    server.write_text(server.read_text() + "\n# edited\n")
    clean, _ = _build(cli, project)
    server.write_text(server.read_text() + "\n# edited again\n")
    deps = _dependency_set(cache)
    origins = json.loads((deps / "origins.json").read_text())
    victim = deps / "site" / next(p for p in sorted(origins) if p.endswith("/__init__.py"))
    with open(victim, "a") as fh:
        fh.write("\n# planted\n")
    (deps / "members.pack").unlink()
    (old,) = (project / ".pmcp" / "dist").glob("tiny-*.zip")
    _keep_stat(old, _flip)  # nothing to copy members from: site/ is read
    _, warnings = _fast(project, capsys, fell_back=True)
    assert len(warnings) == 2, warnings  # the zip, the set: one line each
    assert "planted" not in victim.read_text()
    server.write_text(server.read_text().replace("\n# edited again\n", ""))
    assert _fast(project, capsys) == (clean, [])
    assert _build(cli, project) == (clean, [])


@pytest.mark.parametrize("path", ["full", "fast"])
def test_a_dist_zip_altered_in_place_keeping_size_and_mtime_is_written_again(
    cli: Any, cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], path: str
) -> None:
    """Before: reused on size and mtime, so the next deploy shipped other bytes than
    the plan showed."""
    project = python_project(tmp_path / "p")

    def build() -> tuple[str, list[str]]:
        return _build(cli, project) if path == "full" else _fast(project, capsys)

    _build(cli, project)
    clean, warnings = build()
    assert warnings == []
    (zip_path,) = (project / ".pmcp" / "dist").glob("tiny-*.zip")
    _keep_stat(zip_path, _flip)
    sha, warnings = build()
    assert sha == clean and _sha(zip_path) == clean
    assert len(warnings) == 1 and zip_path.name in warnings[0], warnings
    assert build() == (clean, [])


def test_an_edited_file_in_a_downloaded_source_is_downloaded_again(
    cli: Any, cache: Path, tmp_path: Path, http_dir: Any
) -> None:
    """Before: only `.complete` was checked, so an edit in cache/sources/ was shipped by
    every later build of that pinned URL."""
    www, base = http_dir
    server = b"from boot import metorial\nserver = metorial.create_server('r')\n"
    archive = zip_with(
        www / "src.zip", [("main.py", server, 0o644), ("lib/util.py", b"X = 1\n", 0o644)]
    )
    sha = _sha(archive)
    project = tmp_path / "url-project"
    project.mkdir()
    (project / "metorial.toml").write_text(
        f'[server]\nname = "remote"\n[source]\nurl = "{base}/src.zip"\nsha256 = "{sha}"\n'
        f'[runtime]\nkind = "python"\npython = "{HOST_PY}"\narchitecture = "{HOST_ARCH}"\n'
    )
    clean, _ = _build(cli, project)
    tree = cache / "sources" / sha / "tree"
    (tree / "lib" / "util.py").write_text("X = 2  # planted\n")
    sha_now, warnings = _build(cli, project)
    assert sha_now == clean
    assert len(warnings) == 1 and "lib/util.py" in warnings[0], warnings
    assert (tree / "lib" / "util.py").read_text() == "X = 1\n"
    (tree / "planted.py").write_text("")  # a file added is a change too
    assert _build(cli, project)[0] == clean
    assert not (tree / "planted.py").exists()
    _clean_again(cli, project, clean)


def test_tampered_bytecode_and_handler_renderings_are_made_again(
    cli: Any, cache: Path, tmp_path: Path
) -> None:
    """Before: a cached .pyc or rendered index.py was read back and shipped as it was."""
    project = python_project(tmp_path / "p")
    toml = project / "metorial.toml"
    toml.write_text(
        toml.read_text().replace('kind = "python"\n', 'kind = "python"\nbytecode = true\n')
    )
    clean, _ = _build(cli, project)
    pycs = sorted((cache / "pyc").rglob("*.pyc"))
    handlers = sorted((cache / "index").glob("*.py"))
    assert pycs and handlers
    for victim in (pycs[0], handlers[0]):
        _keep_stat(victim, _flip)
    _forget_dist(project)
    sha, warnings = _build(cli, project)
    assert sha == clean
    assert len(warnings) == 2, warnings
    assert {pycs[0].name, handlers[0].name} == {
        name for w in warnings for name in (pycs[0].name, handlers[0].name) if name in w
    }
    _clean_again(cli, project, clean)


def test_site_files_are_copies_not_links_into_uvs_cache(
    cli: Any, cache: Path, tmp_path: Path
) -> None:
    """Before: `--link-mode hardlink`, so appending to a site/ file changed the wheel uv
    installs for every project on the machine."""
    _build(cli, python_project(tmp_path / "p"))
    site = _dependency_set(cache) / "site"
    uv_inodes = {
        (st.st_dev, st.st_ino)
        for path in (tmp_path / "uv-cache").rglob("*")
        if path.is_file() and not path.is_symlink()
        for st in [path.stat()]
    }
    files = [path for path in site.rglob("*") if path.is_file()]
    assert files
    assert all(path.stat().st_nlink == 1 for path in files)
    assert not uv_inodes & {(p.stat().st_dev, p.stat().st_ino) for p in files}
