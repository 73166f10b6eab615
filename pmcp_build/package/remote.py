"""The remote build cache: a content store and an action store shared by many machines.

`PMCP_BUILD_REMOTE_CACHE=s3://bucket/prefix` (or `--remote-cache`) makes every build
read through and write through two stores under the prefix:

  cas/<sha256>      an object whose sha256 is its name: a dependency set's member pack
                    and its index files, a downloaded source zip, a package zip
  ac/<kind>/<key>   JSON from a build step's input digest (the dependency set's key, or
                    the layout's fingerprint, with the tool's version) to the sha256s
                    of what the step produced

Nothing fetched is trusted on its name: an object is hashed before use and one that does
not match is one warning and ignored (the step runs locally; the bad copy is neither
used nor uploaded again). Writes are write-once (`If-None-Match: *`): machines building
the same thing race harmlessly, and a single PutObject is all or nothing, so a build
killed mid-upload leaves no partial object. A store that is slow or down (short
timeouts, few retries) is one warning line and the build goes on locally.

What it cannot check: an action entry maps inputs to outputs, so whoever may write the
prefix decides what every reader installs (README, "What a cache writer is trusted
with").
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from pmcp_build.errors import UserError
from pmcp_build.text import one_line

ENV = "PMCP_BUILD_REMOTE_CACHE"
TIMEOUT_ENV = "PMCP_BUILD_REMOTE_TIMEOUT"  # seconds to connect; reads get 5x that
READERS = 4  # parallel GETs: a handful is enough to fill a build machine's link


class RemoteCache(Protocol):
    """A content store and an action store. Never raises: a failure is a miss."""

    url: str

    def get(self, sha256: str) -> bytes | None:
        """The object named `sha256`, checked against it; None when absent or bad."""

    def put(self, sha256: str, path: Path) -> bool:
        """Store the file at `path` (whose sha256 is `sha256`) unless it is there: True
        when the store holds it now."""

    def get_action(self, key: str) -> dict[str, Any] | None: ...

    def put_action(self, key: str, doc: dict[str, Any]) -> bool: ...


def parse_url(value: str, where: str = ENV) -> tuple[str, str]:
    """`s3://bucket/prefix` -> (bucket, prefix without slashes at either end)."""
    rest = value.strip()
    if not rest.startswith("s3://") or not rest[5:].split("/", 1)[0]:
        raise UserError(
            f"{where}: {value!r} is not an S3 location; give s3://BUCKET/PREFIX "
            "(e.g. s3://acme-build-cache/pmcp)"
        )
    bucket, _, prefix = rest[5:].partition("/")
    return bucket, prefix.strip("/")


def configure(option: str | None) -> None:
    """`--remote-cache` (which wins over the variable), checked before anything is built:
    a bad value is a user error, never a build without the cache it asked for."""
    if option is not None:
        parse_url(option, "--remote-cache")
        os.environ[ENV] = option.strip()
    elif os.environ.get(ENV, "").strip():
        parse_url(os.environ[ENV])


def action_key(kind: str, *inputs: str) -> str:
    """ac/<kind>/<digest>: the inputs with the tool's version (another version may make
    other bytes from the same inputs)."""
    from pmcp_build import __version__

    blob = json.dumps([kind, __version__, *inputs])
    return f"{kind}/{hashlib.sha256(blob.encode()).hexdigest()}"


_lock = threading.Lock()
_active: dict[str, RemoteCache] = {}


def active() -> RemoteCache | None:
    """The remote cache this process builds through, if one is configured."""
    value = os.environ.get(ENV, "").strip()
    if not value:
        return None
    with _lock:
        found = _active.get(value)
        if found is None:
            bucket, prefix = parse_url(value)
            found = _active[value] = S3Cache(bucket, prefix)
        return found


def get_many(cache: RemoteCache, digests: Iterable[str]) -> dict[str, bytes | None]:
    """Several objects at once, on a small pool (reads are latency, not bandwidth)."""
    wanted = sorted(set(digests))
    with ThreadPoolExecutor(max_workers=max(1, min(READERS, len(wanted)))) as pool:
        return dict(zip(wanted, pool.map(cache.get, wanted), strict=True))


def warn(problem: str) -> None:
    sys.stderr.write(f"warning: {one_line(problem)}\n")
    sys.stderr.flush()


# Error codes that mean "not there" (a GET) or "there already" (a conditional PUT; 409:
# another writer's conditional PUT of the same key is in flight). Anything else is the
# store being unreachable or refusing us: the cache is then switched off for the build.
_MISSING = {"NoSuchKey", "404", "NotFound"}
_PRESENT = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}


class S3Cache:
    """The two stores in one S3 prefix, through boto3's standard credential chain."""

    def __init__(self, bucket: str, prefix: str, client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.url = f"s3://{bucket}/{prefix}".rstrip("/")
        self._client = client
        self._down = False
        self._warned: set[str] = set()
        self.requests = 0  # how many this process sent (bench/remote_cache.py)

    def _s3(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            connect = _timeout()
            config = Config(
                connect_timeout=connect,
                read_timeout=connect * 5,
                retries={"max_attempts": 2, "mode": "standard"},
                max_pool_connections=READERS * 2,
            )
            self._client = boto3.session.Session().client("s3", config=config)
        return self._client

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _call(self, op: str, **kwargs: Any) -> tuple[str, Any]:
        """("ok", response), ("missing"|"present", None), or ("down", None) after one
        warning line for the whole process."""
        if self._down:
            return "down", None
        from botocore.exceptions import BotoCoreError, ClientError

        self.requests += 1
        try:
            return "ok", getattr(self._s3(), op)(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in _MISSING:
                return "missing", None
            if code in _PRESENT:
                return "present", None
            self._switch_off(f"{code or 'error'}: {error.get('Message', '')}".strip())
        except (BotoCoreError, OSError, ValueError) as exc:
            self._switch_off(str(exc) or type(exc).__name__)
        return "down", None

    def _switch_off(self, why: str) -> None:
        with _lock:
            if self._down:
                return
            self._down = True
        warn(f"remote cache {self.url}: {why}; building locally without it")

    def _warn_once(self, key: str, problem: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warn(problem)

    def get(self, sha256: str) -> bytes | None:
        data = self._read(f"cas/{sha256}")
        if data is None:
            return None
        if hashlib.sha256(data).hexdigest() != sha256:
            where = f"{self.url}/cas/{sha256}"
            self._warn_once(where, f"{where} does not match its sha256; ignoring it")
            return None
        return data

    def _read(self, name: str) -> bytes | None:
        status, response = self._call("get_object", Key=self._key(name))
        if status != "ok":
            return None
        try:
            data: bytes = response["Body"].read()
        except Exception as exc:  # a connection dropped mid-body: botocore's or urllib3's
            self._switch_off(f"reading {name}: {exc}")
            return None
        return data

    def put(self, sha256: str, path: Path) -> bool:
        if self._down:
            return False
        try:
            data = path.read_bytes()
        except OSError:
            return False
        if hashlib.sha256(data).hexdigest() != sha256:
            return False  # changed since it was hashed: never upload what was not checked
        return self._write(f"cas/{sha256}", data)

    def _write(self, name: str, data: bytes) -> bool:
        # One PutObject (all or nothing), only if absent, and checked by S3 against the
        # sha256 we send (a body damaged in transit is refused, not stored).
        checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
        status, _ = self._call(
            "put_object",
            Key=self._key(name),
            Body=data,
            IfNoneMatch="*",
            ChecksumSHA256=checksum,
        )
        return status in ("ok", "present")

    def get_action(self, key: str) -> dict[str, Any] | None:
        data = self._read(f"ac/{key}")
        if data is None:
            return None
        try:
            doc = json.loads(data)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            where = f"{self.url}/ac/{key}"
            self._warn_once(where, f"{where} is not an action entry; ignoring it")
            return None
        return doc

    def put_action(self, key: str, doc: dict[str, Any]) -> bool:
        return self._write(f"ac/{key}", json.dumps(doc, sort_keys=True).encode())


def _timeout() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    try:
        value = float(raw) if raw else 2.0
    except ValueError:
        raise UserError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    return value if value > 0 else 2.0
