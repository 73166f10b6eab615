"""A newcomer's first hour: the README's two commands in order, and the servers
nobody on the project wrote (issue 22)."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from .conftest import EXAMPLES
from .helpers import SERVER, cli_commands, python_project, served_url, start_serve

ROOT = Path(__file__).resolve().parent.parent


# -- the suite keeps to its own caches ---------------------------------------------------


def test_a_build_installs_from_the_wheelhouse(cli: Any, tmp_path: Path) -> None:
    """A real uv install of the boot runtime; the next test runs it with a poisoned home."""
    project = python_project(tmp_path / "p")
    built = cli("-C", str(project), "build")
    assert built.exit_code == 0, built.output


def test_the_suite_ignores_the_users_uv_and_build_caches(tmp_path: Path) -> None:
    """The README's main command fills the user's uv cache online; the test command then
    ran uv offline against that cache and failed. Here the user's caches are files where
    folders should be, so any use of them fails: the suite must not care."""
    home = tmp_path / "home"
    (home / ".cache").mkdir(parents=True)
    poisoned = {name: home / ".cache" / name for name in ("uv", "pmcp-build", "elsewhere")}
    for path in poisoned.values():
        path.write_text("not a cache\n")
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "UV_CACHE_DIR": str(poisoned["elsewhere"]),
        "PMCP_BUILD_CACHE_DIR": str(poisoned["elsewhere"]),
    }
    inner = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--basetemp",
            str(tmp_path / "inner"),
            f"{Path(__file__).relative_to(ROOT)}::test_a_build_installs_from_the_wheelhouse",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert inner.returncode == 0, inner.stdout[-3000:] + inner.stderr[-2000:]
    assert all(path.read_text() == "not a cache\n" for path in poisoned.values())


# -- real servers as they are: an mcp 1.x file from the package root, mcp-server-sqlite --

# example -> (its tools, a tool call, what the call's text holds)
REAL = {
    "stdio-mcp1": ({"km_to_miles", "sdk_version"}, ("sdk_version", {}), "1."),
    "sqlite-chinook": (
        {"read_query", "write_query", "create_table", "list_tables", "describe_table"},
        ("read_query", {"query": "SELECT Title FROM albums WHERE AlbumId = 6"}),
        "Jagged Little Pill",
    ),
}


# mcp-server-sqlite (mcp 1.x) announces resources but answers resources/templates/list
# with "Method not found"; discover treating that as none is the conformance issue's fix.
def _serve_env() -> dict[str, str]:
    return {
        **os.environ,
        "UV_OFFLINE": "1",
        "UV_NO_INDEX": "1",
        "UV_FIND_LINKS": str(ROOT / ".wheelhouse"),
        "PMCP_BUILD_LOAD_CHECK": "0",
    }


@pytest.fixture(scope="module")
def served_real() -> Iterator[dict[str, str]]:
    procs = {name: start_serve(EXAMPLES / name, _serve_env()) for name in REAL}
    try:
        yield {name: served_url(proc, f"serve {name}") for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(30)


@pytest.mark.parametrize("example", sorted(REAL))
def test_a_real_stdio_server_through_serve_and_the_official_client(
    served_real: dict[str, str], example: str
) -> None:
    tools, (name, args), expected = REAL[example]

    async def run(mode: str) -> None:
        async with Client(served_real[example], mode=mode) as client:
            listed = await client.list_tools()
            assert tools <= {t.name for t in listed.tools}
            result = await client.call_tool(name, args)
            assert not result.is_error, result.content
            assert expected in getattr(result.content[0], "text", "")

    for mode in ("legacy", "auto"):
        anyio.run(run, mode)


def _invoke(cli: Any, project: Path, event: dict[str, Any]) -> dict[str, Any]:
    result = cli("-C", str(project), "invoke", "--event", "-", input=json.dumps(event))
    assert result.exit_code == 0, result.output
    reply: dict[str, Any] = json.loads(result.stdout)
    return reply


@pytest.mark.parametrize(
    "example",
    sorted(REAL),
)
def test_a_real_stdio_server_discovers_through_invoke(cli: Any, example: str) -> None:
    discovered = _invoke(cli, EXAMPLES / example, {"action": "discover"})
    assert discovered["success"] is True, discovered
    assert REAL[example][0] <= {t["name"] for t in discovered["discovery"]["tools"]}


@pytest.mark.parametrize("example", sorted(REAL))
def test_a_real_stdio_server_answers_a_tools_call_through_invoke(cli: Any, example: str) -> None:
    _, (name, args), expected = REAL[example]
    message = {"jsonrpc": "2.0", "id": 3, "method": "tools/call"}
    message["params"] = {"name": name, "arguments": args}
    reply = _invoke(
        cli, EXAMPLES / example, {"action": "mcp.request", "messages": [json.dumps(message)]}
    )
    assert reply["success"] is True, reply
    response = json.loads(reply["responses"][0])
    assert expected in response["result"]["content"][0]["text"], response


def test_a_python_file_command_at_the_root_imports_its_own_mcp_1(cli: Any) -> None:
    """`command = ["python", "server.py"]` with `mcp>=1.9,<2`: the package root (where the
    runtime's mcp 2.x lives) came first on the command's path and hid its mcp 1.x."""
    message = {"jsonrpc": "2.0", "id": 1, "method": "tools/call"}
    message["params"] = {"name": "sdk_version", "arguments": {}}
    reply = _invoke(
        cli, EXAMPLES / "stdio-mcp1", {"action": "mcp.request", "messages": [json.dumps(message)]}
    )
    text = json.loads(reply["responses"][0])["result"]["content"][0]["text"]
    assert text.startswith("1."), text


# -- a command's package: what it shares with the runtime ships once ----------------------


def _layout(cli: Any, project: Path) -> dict[str, dict[str, Any]]:
    built = cli("-C", str(project), "build", "--json")
    assert built.exit_code == 0, built.output
    files: list[dict[str, Any]] = json.loads(built.stdout)["layout"]["files"]
    return {f["path"]: f for f in files}


def test_what_a_command_shares_with_the_runtime_ships_once(cli: Any) -> None:
    files = _layout(cli, EXAMPLES / "stdio-mcp1")
    # The two mcp differ: both ship, and the layout names them apart.
    assert "mcp/__init__.py" in files and "__command__/mcp/__init__.py" in files
    assert files["__command__/mcp/__init__.py"]["detail"].endswith("(command)")
    # pydantic is the same wheel in both: once, at the root.
    assert "pydantic/__init__.py" in files
    assert not any(p.startswith("__command__/pydantic/") for p in files)
    assert not any(p.startswith("__command__/pydantic_core/") for p in files)


def test_the_layout_shows_both_copies_of_what_differs(cli: Any) -> None:
    built = cli("-C", str(EXAMPLES / "stdio-mcp1"), "build")
    assert built.exit_code == 0, built.output
    mcp_lines = [ln for ln in built.stdout.splitlines() if ln.startswith("│   mcp ")]
    assert len(mcp_lines) == 2, mcp_lines
    assert any("(command)" in ln and "mcp 1." in ln for ln in mcp_lines)


# -- each file ships once ----------------------------------------------------------------


def test_an_asset_inside_the_source_ships_once(cli: Any, tmp_path: Path) -> None:
    asset = '[[assets]]\nfrom = "data/chinook.db"\nto = "chinook.db"\n'
    project = python_project(tmp_path / "p", extra=asset)
    (project / "data").mkdir()
    (project / "data" / "chinook.db").write_bytes(b"SQLite format 3\0" + bytes(4096))
    files = _layout(cli, project)
    assert files["chinook.db"]["origin"] == "asset"
    assert "data/chinook.db" not in files
    same = python_project(tmp_path / "q", extra=asset.replace('"data/chinook.db"', '"c.db"'))
    (same / "c.db").write_bytes(b"x")
    same_files = _layout(cli, same)  # `to` == a source path of its own file: no clash
    assert "c.db" not in same_files and same_files["chinook.db"]["origin"] == "asset"


def test_a_300_mb_asset_in_the_source_is_counted_once_in_lambdas_mb(tmp_path: Path) -> None:
    """Refused as 630.9 MB against "262 MB" before: counted twice (source and asset), and
    in decimal MB where Lambda's limit is 250 of its 2**20-byte MB."""
    from pmcp_build.errors import UserError
    from pmcp_build.layout.model import MB, Entry, make_layout

    db = tmp_path / "data" / "big.db"

    def entry(path: str, origin: Any) -> Entry:
        return Entry(path, origin, 0o644, 300 * MB, "0" * 64, src=db)

    entries = [entry("data/big.db", "source"), entry("big.db", "asset")]
    with pytest.raises(UserError) as refused:
        make_layout(entries, "python3.12", "index.handler", "x86_64")
    assert "package is 300.0 MB unzipped; Lambda allows 250.0 MB" in str(refused.value)


# -- a server that fails to load shows its own exception and frames first -----------------

HELPER = 'import json\n\n\ndef load(config):\n    return json.loads(config)["key"]\n'
FAILING = "import helper\n\nSETTINGS = helper.load('{\"other\": \"' + 'x' * 3000 + '\"}')\n"


@pytest.mark.parametrize("kind", ["in-process", "stdio command"])
def test_a_server_that_fails_to_load_shows_its_exception_and_its_frames_first(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """The exception, then the server's own frames (helper.py's included), then where in
    a library it was raised; each line cut on its own. Before: a stdio command's stderr
    was cut at 500 characters behind the bridge's frames, and an in-process server's
    traceback began with the runtime's frames."""
    monkeypatch.setenv("PMCP_BUILD_LOAD_CHECK", "1")
    extra = 'command = ["python", "server.py"]\n' if kind == "stdio command" else ""
    project = python_project(tmp_path / "p", extra=extra, server=FAILING)
    (project / "helper.py").write_text(HELPER)
    built = cli("-C", str(project), "build")
    assert built.exit_code == 1, built.output
    lines = [ln.removeprefix("error: ") for ln in built.stderr.splitlines()]
    start = next(i for i, ln in enumerate(lines) if ln.endswith("the server failed to load:"))
    shown = lines[start + 1 :]
    if kind == "stdio command":
        assert shown.pop(0).endswith("exited (code 1) while starting:"), shown
    assert shown[0] == "KeyError: 'key'", shown
    assert shown[1:5] == [
        '  File "server.py", line 3, in <module>',
        shown[2],
        '  File "helper.py", line 5, in load',
        '    return json.loads(config)["key"]',
    ], shown
    assert shown[2].startswith("    SETTINGS = helper.load(")
    assert not any("__metorial__" in ln for ln in shown), shown
    assert all(len(ln) <= 320 for ln in lines), max(lines, key=len)


def test_load_errors_cut_long_values_per_line_and_parse_a_commands_traceback() -> None:
    from boot import load_errors

    stderr = [
        "starting",
        "Traceback (most recent call last):",
        '  File "/task/server.py", line 9, in <module>',
        "    main()",
        "    ^^^^^^",
        '  File "/task/lib/dep.py", line 2, in main',
        "    raise ValueError(value)",
        "ValueError: " + "v" * 5000,
    ]
    text = load_errors.describe_stderr("the stdio server `x` exited (code 1):", stderr, "/task")
    lines = text.splitlines()
    assert lines[1].startswith("ValueError: vvv") and lines[1].endswith("(5012 chars)")
    assert lines[2:4] == ['  File "server.py", line 9, in <module>', "    main()"]
    assert all(len(ln) <= load_errors.LINE_LIMIT for ln in lines)
    plain = load_errors.describe_stderr("exited (code 2):", ["usage: x", "bad flag"], "/task")
    assert plain.splitlines() == ["exited (code 2):", "usage: x", "bad flag"]


# -- init reads instead of guessing --------------------------------------------------------


def test_init_writes_the_console_script_its_installed_distribution_declares(
    cli: Any, tmp_path: Path
) -> None:
    project = tmp_path / "docs"
    info = project / ".venv/lib/python3.12/site-packages/awslabs.docs_mcp_server-1.2.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: awslabs.docs-mcp-server\nVersion: 1.2\n"
    )
    (info / "entry_points.txt").write_text(
        "[console_scripts]\nawslabs.docs-mcp-server = awslabs.docs_mcp_server.server:main\n"
    )
    (project / "requirements.txt").write_text("awslabs-docs-mcp-server==1.2\n")
    assert cli("-C", str(project), "init").exit_code == 0
    assert 'command = ["awslabs.docs-mcp-server"]' in (project / "metorial.toml").read_text()


def test_init_for_a_cargo_project_names_what_cargo_writes(cli: Any, tmp_path: Path) -> None:
    from pmcp_build.manifest.scaffold import host_architecture

    project = tmp_path / "crate"
    project.mkdir()
    (project / "Cargo.toml").write_text('[package]\nname = "chinook"\nversion = "0.1.0"\n')
    assert cli("-C", str(project), "init").exit_code == 0
    text = (project / "metorial.toml").read_text()
    assert 'artifact = "target/release/chinook"' in text and "cargo build --release" in text
    assert f'architecture = "{host_architecture()}"' in text
    if host_architecture() == "x86_64":
        assert "--arm64" not in text
    built = cli("-C", str(project), "build")  # not built yet: say how, for this machine
    assert built.exit_code == 1
    assert ("--arm64" in built.stderr) == (host_architecture() == "arm64"), built.stderr
    (project / "target/lambda/chinook").mkdir(parents=True)
    (project / "target/lambda/chinook/bootstrap").write_bytes(b"#!/bin/sh\n")
    assert cli("-C", str(project), "init", "--force").exit_code == 0
    text = (project / "metorial.toml").read_text()
    assert 'artifact = "target/lambda/chinook/bootstrap"' in text


def test_init_points_the_schema_at_a_file_and_ignores_pmcp(cli: Any, tmp_path: Path) -> None:
    project = python_project(tmp_path / "p")
    (project / "metorial.toml").unlink()
    (project / ".gitignore").write_text("*.log")
    assert cli("-C", str(project), "init").exit_code == 0
    first = (project / "metorial.toml").read_text().splitlines()[0]
    assert first.startswith("#:schema ") and "://" not in first
    schema = (project / first.removeprefix("#:schema ")).resolve()
    assert json.loads(schema.read_text())["title"], schema
    assert (project / ".gitignore").read_text() == "*.log\n.pmcp/\n"
    assert cli("-C", str(project), "init", "--force").exit_code == 0
    assert (project / ".gitignore").read_text() == "*.log\n.pmcp/\n"


# -- serve: --watch, Ctrl-C ---------------------------------------------------------------

TWO_TOOLS = SERVER.replace(
    'return [{"name": "echo"',
    'return [{"name": "shout", "description": "x", "inputSchema": {"type": "object"}},'
    ' {"name": "echo"',
)


class _Lines:
    """A process's stderr read in a thread, so a test can wait for one line."""

    def __init__(self, stream: Any) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: Any) -> None:
        for line in stream:
            self.lines.put(line)
        self.lines.put("")

    def wait_for(self, fragment: str, timeout: float = 240) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(line)
            if fragment in line:
                return line
            if line == "":
                break
        pytest.fail(f"no {fragment!r} on stderr: {''.join(self.seen)}")

    def rest(self) -> str:
        while True:
            try:
                line = self.lines.get(timeout=30)
            except queue.Empty:
                break
            if line == "":
                break
            self.seen.append(line)
        return "".join(self.seen)


def _serve_in_own_group(project: Path, tmp: Path, *extra: str) -> subprocess.Popen[str]:
    """`serve` as a terminal runs it: its own process group, which Ctrl-C signals whole."""
    (tmp / "tmp").mkdir()
    return subprocess.Popen(
        [sys.executable, "-m", "pmcp_build", "-C", str(project), "serve", "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**_serve_env(), "TMPDIR": str(tmp / "tmp")},
        start_new_session=True,
    )


def _ctrl_c(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)


def _tool_names(url: str) -> set[str]:
    async def run() -> set[str]:
        async with Client(url, mode="legacy") as client:
            return {t.name for t in (await client.list_tools()).tools}

    return anyio.run(run)


def test_serve_watch_rebuilds_reloads_and_stops_cleanly(tmp_path: Path) -> None:
    project = python_project(tmp_path / "p")
    proc = _serve_in_own_group(project, tmp_path, "--watch", "--concurrency", "2")
    try:
        err = _Lines(proc.stderr)
        url = served_url(proc, "serve --watch")
        assert _tool_names(url) == {"echo"}
        (project / "server.py").write_text(TWO_TOOLS)
        assert "server.py modified" in err.wait_for("changed:")
        err.wait_for("reloaded in")
        assert _tool_names(url) == {"echo", "shout"}  # the same URL, the new package
        (project / "server.py").write_text("raise RuntimeError('half-written edit')\n")
        err.wait_for("RuntimeError: half-written edit")
        err.wait_for("still serving")
        assert _tool_names(url) == {"echo", "shout"}  # a bad edit keeps the old one
    finally:
        _ctrl_c(proc)
        proc.wait(90)
    _stopped_cleanly(proc, err, tmp_path)


def _stopped_cleanly(proc: subprocess.Popen[str], err: _Lines, tmp_path: Path) -> None:
    """A Ctrl-C'd serve: 130, no traceback said, nothing left in its temporary folder."""
    assert proc.returncode == 130
    stderr = err.rest()
    assert "Traceback" not in stderr, stderr
    assert list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.parametrize("when", ["serving", "starting"])
def test_ctrl_c_stops_serve_with_130_no_tracebacks_and_nothing_in_tmp(
    tmp_path: Path, when: str
) -> None:
    project = python_project(tmp_path / "p")
    proc = _serve_in_own_group(project, tmp_path, "--concurrency", "3")
    try:
        err = _Lines(proc.stderr)
        if when == "starting":
            err.wait_for("starting 3 instances")  # the progress line, then at once: Ctrl-C
        else:
            served_url(proc)
    finally:
        _ctrl_c(proc)
        proc.wait(90)
    _stopped_cleanly(proc, err, tmp_path)


# -- shell completion and help ------------------------------------------------------------


def test_shell_completion_is_typers_own(tmp_path: Path) -> None:
    script = str(Path(sys.executable).with_name("pmcp-build"))  # as installed, by its name
    shown = subprocess.run(
        [script, "--show-completion", "bash"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0 and "_pmcp_build_completion" in shown.stdout, shown.stderr
    completed = subprocess.run(
        [script],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "_PMCP_BUILD_COMPLETE": "complete_bash",
            "COMP_WORDS": "pmcp-build se",
            "COMP_CWORD": "1",
        },
    )
    assert completed.stdout.split() == ["serve"], completed


def test_every_option_says_what_it_takes_and_what_it_is_for(cli: Any) -> None:
    """`--help` showed `<bool>` for flags, `<list[str]>` and `<str>` for values, and
    several options had no text at all."""
    import re

    from typer.main import get_command

    from pmcp_build.cli import app
    from pmcp_build.cli.help_text import tidy

    root: Any = get_command(app)
    tidy(root)
    for path in cli_commands():
        shown = cli(*path, "--help")
        assert shown.exit_code == 0, shown.output
        assert not re.search(r"<(bool|str|int|float|list|path|int range)\b", shown.stdout), (
            path,
            shown.stdout,
        )
        command: Any = root
        for name in path:
            command = command.commands[name]
        for param in command.params:
            assert param.help, (path, param.name)


# -- a missing wheel names the package, not its version -----------------------------------

UV_NO_WHEEL = (
    "  cause: Because {what} no wheels with a matching platform tag (e.g., "
    "`manylinux_2_17_aarch64`) and you require nativepkg>=0.5.2, we can conclude that your "
    "requirements are unsatisfiable."
)


@pytest.mark.parametrize(
    "what",
    [
        "nativepkg==0.5.2 has",
        "nativepkg>=0.5.2 has",
        "nativepkg>=0.5.2,<1 has",
        "all versions of nativepkg have",
    ],
)
def test_a_missing_wheel_names_the_package(what: str) -> None:
    """uv's own wording (uv 0.13, offline against a find-links folder with only an
    x86_64 wheel); `nativepkg>=0.5.2` was reported as "0.5.2 has no wheel"."""
    from pmcp_build.layout.python_deps import _explain_uv_failure

    said = _explain_uv_failure(UV_NO_WHEEL.format(what=what), None, "aarch64-manylinux2014", "3.12")
    assert said.startswith("the boot runtime's requirements: nativepkg has no wheel for "), said


def test_a_manifest_in_a_subfolder_is_told_about_source_path(cli: Any, tmp_path: Path) -> None:
    project = python_project(tmp_path / "p")
    (project / "deploy").mkdir()
    (project / "metorial.toml").rename(project / "deploy" / "metorial.toml")
    built = cli("-C", str(project / "deploy"), "build")
    assert built.exit_code == 1
    assert "server.py is in the folder above" in built.stderr
    assert '[source] path = ".."' in built.stderr, built.stderr
    toml = project / "deploy" / "metorial.toml"
    toml.write_text(
        toml.read_text().replace(
            'kind = "python"', 'kind = "python"\ncommand = ["python", "server.py"]'
        )
    )
    built = cli("-C", str(project / "deploy"), "build")
    assert built.exit_code == 1 and '[source] path = ".."' in built.stderr, built.stderr
