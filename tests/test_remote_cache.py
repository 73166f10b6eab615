"""The remote build cache (issue 24): two "machines" (each its own cache folders and uv
cache) share one S3 prefix on a moto server on loopback. The second builds the example
with empty caches, no index and no wheelhouse, from the remote cache alone, and gets
the first one's package byte for byte. Damaged, truncated and deleted remote objects
are warned about (or missed) and the build ships the right bytes; a build killed
mid-upload leaves no partial object; a remote that is down is one warning."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from pmcp_build.package import cache as cache_store
from pmcp_build.package import remote, remote_steps

from .conftest import EXAMPLES

CACHE_BUCKET = "pmcp-build-cache"
PREFIX = "fleet"
URL = f"s3://{CACHE_BUCKET}/{PREFIX}"


@pytest.fixture
def s3(aws_env: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    client = boto3.client("s3")
    client.create_bucket(
        Bucket=CACHE_BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    monkeypatch.setenv(remote.ENV, URL)
    remote._active.clear()  # each test is a new process as far as the store goes
    yield client
    remote._active.clear()


Machine = Callable[[str], Path]


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Machine:
    """Become machine `name`: its own build cache and uv cache (empty when new), and a
    fresh copy of the example in a folder of its own (another path than the other's)."""

    def become(name: str) -> Path:
        home = tmp_path / name
        monkeypatch.setenv("PMCP_BUILD_CACHE_DIR", str(home / "cache"))
        monkeypatch.setenv("UV_CACHE_DIR", str(home / "uv-cache"))
        for memo in ("_warned", "_digests"):
            getattr(cache_store, memo).clear()
        for seen in ("_missing", "_fetched", "_absent"):
            getattr(remote_steps, seen).clear()
        remote._active.clear()
        project = home / "work" / "python-server"
        if not project.exists():
            shutil.copytree(EXAMPLES / "python-server", project, ignore=_no_pmcp)
        return project

    return become


def _no_pmcp(_: str, names: list[str]) -> list[str]:
    return [n for n in names if n in (".pmcp", "__pycache__", ".venv")]


def _no_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing to install from: offline, no index and no wheelhouse."""
    monkeypatch.setenv("UV_OFFLINE", "1")
    monkeypatch.setenv("UV_NO_INDEX", "1")
    monkeypatch.delenv("UV_FIND_LINKS", raising=False)


def _build(cli: Any, project: Path, *extra: str) -> tuple[str, list[str]]:
    result = cli("-C", str(project), "build", "--json", *extra)
    assert result.exit_code == 0, result.output
    assert "internal error" not in result.output and "Traceback" not in result.output
    package = json.loads(result.stdout)["package"]
    assert hashlib.sha256(Path(package["path"]).read_bytes()).hexdigest() == package["sha256"]
    return str(package["sha256"]), [
        ln for ln in result.stderr.splitlines() if ln.startswith("warning:")
    ]


def _keys(s3: Any, under: str = "") -> dict[str, bytes]:
    listing = s3.list_objects_v2(Bucket=CACHE_BUCKET, Prefix=f"{PREFIX}/{under}")
    return {
        o["Key"][len(PREFIX) + 1 :]: s3.get_object(Bucket=CACHE_BUCKET, Key=o["Key"])["Body"].read()
        for o in listing.get("Contents", [])
    }


def _cas_sound(s3: Any) -> None:
    """Every content object is whole: its bytes hash to its name."""
    for key, data in _keys(s3, "cas/").items():
        assert hashlib.sha256(data).hexdigest() == key.removeprefix("cas/"), key


def _deps_files(s3: Any) -> dict[str, str]:
    (doc,) = [json.loads(v) for k, v in _keys(s3, "ac/deps/").items()]
    return dict(doc["files"])


def _package_zip(s3: Any) -> str:
    (doc,) = [json.loads(v) for k, v in _keys(s3, "ac/package/").items()]
    return str(doc["zip"])


def test_a_second_machine_builds_from_the_remote_cache_alone(
    cli: Any, s3: Any, machine: Machine, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, warnings = _build(cli, machine("m1"))
    assert warnings == []
    # The stores: the dependency set's five files, the package zip, two action entries.
    files = _deps_files(s3)
    assert sorted(files) == sorted(
        ["members.pack", "members.json", "origins.json", "entries.json", "seal.json"]
    )
    assert _package_zip(s3) == first
    assert set(_keys(s3, "cas/")) == {f"cas/{d}" for d in [*files.values(), first]}
    _cas_sound(s3)

    project = machine("m2")
    _no_index(monkeypatch)
    monkeypatch.delenv(remote.ENV)
    second, warnings = _build(cli, project, "--remote-cache", URL)
    assert (second, warnings) == (first, [])
    assert not (Path(os.environ["UV_CACHE_DIR"])).exists()  # uv never ran

    # Without the package zip, the dependency set alone: the zip is written locally.
    for key in _keys(s3, "ac/package/"):
        s3.delete_object(Bucket=CACHE_BUCKET, Key=f"{PREFIX}/{key}")
    third, warnings = _build(cli, machine("m3"))
    assert (third, warnings) == (first, [])


def _flip(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1 :]


DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "flipped": _flip,
    "truncated": lambda data: data[: len(data) // 2],
    "emptied": lambda data: b"",
}


# Each damage once and each object once (a diagonal of the 3x3): every pair costs a
# build on two machines, and the check is the same sha256 whatever the damage.
@pytest.mark.parametrize(
    ("what", "how"),
    [("members.pack", "flipped"), ("entries.json", "truncated"), ("package zip", "emptied")],
)
def test_a_damaged_remote_object_is_warned_about_and_never_shipped(
    cli: Any, s3: Any, machine: Machine, what: str, how: str
) -> None:
    first, _ = _build(cli, machine("m1"))
    digest = _package_zip(s3) if what == "package zip" else _deps_files(s3)[what]
    key = f"{PREFIX}/cas/{digest}"
    bad = DAMAGE[how](s3.get_object(Bucket=CACHE_BUCKET, Key=key)["Body"].read())
    s3.put_object(Bucket=CACHE_BUCKET, Key=key, Body=bad)

    second, warnings = _build(cli, machine("m2"))  # the wheelhouse: it installs anew
    assert second == first
    assert len(warnings) == 1, warnings
    assert f"cas/{digest} does not match its sha256" in warnings[0]
    # The bad copy stays as it was (write-once): m2 neither used nor replaced it.
    assert s3.get_object(Bucket=CACHE_BUCKET, Key=key)["Body"].read() == bad


def test_a_forged_package_entry_is_refused_against_the_layout(
    cli: Any, s3: Any, machine: Machine, tmp_path: Path
) -> None:
    """A writer's consistent forgery: a real cas object (its name is its sha256) that is
    not the layout's zip, named by the action entry. The zip is checked file by file."""
    first, _ = _build(cli, machine("m1"))
    other = tmp_path / "other.zip"
    shutil.make_archive(str(other.with_suffix("")), "zip", EXAMPLES / "python-server")
    data = other.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    s3.put_object(Bucket=CACHE_BUCKET, Key=f"{PREFIX}/cas/{digest}", Body=data)
    (key,) = _keys(s3, "ac/package/")
    s3.put_object(Bucket=CACHE_BUCKET, Key=f"{PREFIX}/{key}", Body=json.dumps({"zip": digest}))

    second, warnings = _build(cli, machine("m2"))
    assert second == first
    assert len(warnings) == 1 and "its files are not the layout's" in warnings[0], warnings


def test_a_broken_action_entry_is_warned_about(cli: Any, s3: Any, machine: Machine) -> None:
    first, _ = _build(cli, machine("m1"))
    (key,) = _keys(s3, "ac/deps/")
    s3.put_object(Bucket=CACHE_BUCKET, Key=f"{PREFIX}/{key}", Body=b"{not json")
    second, warnings = _build(cli, machine("m2"))
    assert second == first
    assert len(warnings) == 1 and "is not an action entry" in warnings[0], warnings


@pytest.mark.parametrize("what", ["members.pack", "seal.json", "package zip", "ac/deps"])
def test_a_deleted_remote_object_is_a_miss_and_is_stored_again(
    cli: Any, s3: Any, machine: Machine, what: str
) -> None:
    first, _ = _build(cli, machine("m1"))
    if what == "ac/deps":
        (name,) = _keys(s3, "ac/deps/")
    else:
        name = f"cas/{_package_zip(s3) if what == 'package zip' else _deps_files(s3)[what]}"
    before = _keys(s3)
    s3.delete_object(Bucket=CACHE_BUCKET, Key=f"{PREFIX}/{name}")

    second, warnings = _build(cli, machine("m2"))
    assert (second, warnings) == (first, [])
    assert _keys(s3) == before  # m2 made it and stored it again
    _cas_sound(s3)


def test_a_remote_that_is_down_is_one_warning_and_a_local_build(
    cli: Any, aws_env: str, machine: Machine, monkeypatch: pytest.MonkeyPatch
) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv(remote.ENV, URL)
    project = machine("m1")
    started = time.monotonic()
    _, warnings = _build(cli, project)
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"warning: remote cache {URL}: ")
    assert warnings[0].endswith("; building locally without it")
    assert time.monotonic() - started < 60


def test_a_bad_remote_cache_value_is_one_line(
    cli: Any, machine: Machine, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = machine("m1")
    result = cli("-C", str(project), "build", "--remote-cache", "bucket/prefix")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "error: --remote-cache: 'bucket/prefix' is not an S3 location; give "
        "s3://BUCKET/PREFIX (e.g. s3://acme-build-cache/pmcp)"
    ]
    monkeypatch.setenv(remote.ENV, "https://cache.example")
    result = cli("-C", str(project), "plan", "--refresh=false")
    assert result.exit_code == 1
    assert f"{remote.ENV}: 'https://cache.example' is not an S3 location" in result.stderr
    assert not (project / ".pmcp").exists()  # refused before anything was built


# -- write-once ---------------------------------------------------------------------------


def test_writes_are_write_once(s3: Any, tmp_path: Path) -> None:
    store = remote.S3Cache(CACHE_BUCKET, PREFIX)
    assert store.put_action("deps/k", {"files": {"a": "1"}})
    assert store.put_action("deps/k", {"files": {"a": "2"}})  # there already: fine
    assert store.get_action("deps/k") == {"files": {"a": "1"}}
    blob = tmp_path / "blob"
    blob.write_bytes(b"payload")
    digest = hashlib.sha256(b"payload").hexdigest()
    assert store.put(digest, blob) and store.get(digest) == b"payload"
    assert not store.put("0" * 64, blob)  # never stored under a name it does not hash to
    assert "cas/" + "0" * 64 not in _keys(s3, "cas/")


def test_a_conflicting_concurrent_write_is_taken_as_stored(tmp_path: Path) -> None:
    """S3 answers 409 ConditionalRequestConflict when another conditional write of the
    same key is in flight; moto never does, so botocore's Stubber stands in for S3."""
    client = boto3.client("s3", region_name="eu-west-1")
    stubber = Stubber(client)
    stubber.add_client_error(
        "put_object", service_error_code="ConditionalRequestConflict", http_status_code=409
    )
    blob = tmp_path / "blob"
    blob.write_bytes(b"x")
    store = remote.S3Cache(CACHE_BUCKET, PREFIX, client=client)
    with stubber:
        assert store.put(hashlib.sha256(b"x").hexdigest(), blob)
    assert not store._down


# -- a build killed mid-upload --------------------------------------------------------------


class StallingProxy:
    """TCP to moto, passing everything but the body of the first large PUT, of which it
    passes half and then holds the connection: the upload is in flight for good."""

    def __init__(self, upstream_port: int, large: int = 1 << 20) -> None:
        self.upstream = upstream_port
        self.large = large
        self.stalled = threading.Event()
        self.released = threading.Event()
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.port = self.server.getsockname()[1]
        self.stalled_key = ""
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._pipe, args=(up, client), daemon=True).start()
            threading.Thread(target=self._requests, args=(client, up), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        with self._closing(src, dst):
            while data := src.recv(65536):
                dst.sendall(data)

    def _requests(self, src: socket.socket, dst: socket.socket) -> None:
        buffer = b""
        with self._closing(src, dst):
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = src.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = _content_length(head)
                if head.startswith(b"PUT ") and length >= self.large and not self.stalled.is_set():
                    while len(buffer) < length // 2:
                        buffer += src.recv(65536)
                    dst.sendall(head + b"\r\n\r\n" + buffer[: length // 2])
                    self.stalled_key = head.split(b" ")[1].decode()
                    self.stalled.set()
                    self.released.wait(600)
                    return  # the connection closes with half the body sent
                while len(buffer) < length:
                    buffer += src.recv(65536)
                dst.sendall(head + b"\r\n\r\n" + buffer[:length])
                buffer = buffer[length:]

    @staticmethod
    def _closing(a: socket.socket, b: socket.socket) -> Any:
        import contextlib

        @contextlib.contextmanager
        def both() -> Iterator[None]:
            try:
                yield
            except OSError:
                pass
            finally:
                for s in (a, b):
                    with contextlib.suppress(OSError):
                        s.close()

        return both()

    def close(self) -> None:
        self.released.set()
        self.server.close()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


def test_a_build_killed_mid_upload_leaves_no_partial_object(
    cli: Any, s3: Any, aws_env: str, machine: Machine
) -> None:
    project = machine("m1")
    proxy = StallingProxy(int(aws_env.rsplit(":", 1)[1]))
    env = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pmcp_build", "-C", str(project), "build", "--json"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert proxy.stalled.wait(300), "the build never uploaded a large object"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        proxy.close()
    stalled = proxy.stalled_key.split("?")[0].split(f"/{PREFIX}/", 1)[1]
    assert stalled.startswith("cas/")
    time.sleep(0.5)  # moto gives up on the cut-off body
    stored = _keys(s3)
    assert stalled not in stored
    assert not [k for k in stored if k.startswith("ac/deps/")]  # entry only after its objects
    _cas_sound(s3)
    # The next build (same machine, the store reachable) completes the store.
    first, warnings = _build(cli, project)
    assert warnings == []
    assert stalled in _keys(s3)
    _cas_sound(s3)
    assert _package_zip(s3) == first
