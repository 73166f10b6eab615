"""boto3 at the edge: sessions and clients, "absent" reads, error translation, and the
few named helpers the executor runs where one API call is not enough.

Clients honour the standard chain (profile, AWS_REGION, AWS_ENDPOINT_URL) with the
target's own region / profile / endpoint_url on top. Errors that a user can fix
(no credentials, access denied, missing bucket) become one-line UserErrors.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import botocore.exceptions
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from pmcp_build.errors import UserError
from pmcp_build.manifest.model import TAG_PREFIX

MULTIPART_THRESHOLD = 8 * 1024 * 1024
MANAGED_TAG = f"{TAG_PREFIX}managed"  # what marks a resource as pmcp-build's own


class Clients:
    """A target's boto3 clients, made on first use: a no-op plan never builds IAM's."""

    def __init__(self, session: Any, kwargs: dict[str, Any]) -> None:
        self._session = session
        self._kwargs = kwargs
        self._made: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self._made:
            # boto3 sessions are not thread-safe; targets are planned in parallel.
            with _LOCK:
                self._made[service] = self._session.client(service, **self._kwargs)
        return self._made[service]

    @property
    def s3(self) -> Any:
        return self.client("s3")

    @property
    def lam(self) -> Any:
        return self.client("lambda")

    @property
    def iam(self) -> Any:
        return self.client("iam")

    @property
    def logs(self) -> Any:
        return self.client("logs")


_LOCK = threading.Lock()
_SESSIONS: dict[tuple[str | None, str | None], Any] = {}


def _session(profile: str | None, region: str | None) -> Any:
    # One session per (profile, region): its loaded service models are shared by every
    # client made from it, which makes ten targets cost little more than one.
    with _LOCK:
        key = (profile, region)
        if key not in _SESSIONS:
            _SESSIONS[key] = boto3.Session(profile_name=profile, region_name=region)
        return _SESSIONS[key]


def connection(target: Any) -> dict[str, Any]:
    """The part of a target that says where its calls go; saved with the plan."""
    return {
        "profile": target.profile,
        "region": target.region,
        "endpoint_url": target.endpoint_url,
    }


_CLIENTS: dict[tuple[Any, ...], Clients] = {}


def clients(conn: dict[str, Any]) -> Clients:
    """One set of clients per place calls go to, shared by every target and thread
    (boto3 clients are thread-safe; making them is most of a no-op target's cost)."""
    # botocore reads AWS_DEFAULT_REGION; AWS_REGION is what Lambda and the other SDKs
    # set, so honour it too.
    region = conn.get("region") or os.environ.get("AWS_REGION") or None
    # The profile asked for, resolved here (not left to botocore) so errors can name it
    # and a changed AWS_PROFILE never reuses another profile's cached clients.
    profile = (
        conn.get("profile")
        or os.environ.get("AWS_PROFILE")
        or os.environ.get("AWS_DEFAULT_PROFILE")
        or None
    )
    key = (profile, region, conn.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL"))
    with _LOCK:
        if key in _CLIENTS:
            return _CLIENTS[key]
    try:
        session = _session(profile, region)
    except botocore.exceptions.ProfileNotFound as exc:
        # Name the profile asked for (the target's, else AWS_PROFILE), not botocore's None.
        raise UserError(f"AWS profile {profile!r} not found; check ~/.aws/config") from exc
    if session.region_name is None:
        raise UserError("no AWS region: set region in the target, or AWS_REGION")
    config = Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=32)
    kwargs: dict[str, Any] = {"config": config}
    if conn.get("endpoint_url"):
        kwargs["endpoint_url"] = conn["endpoint_url"]
    made = Clients(session, kwargs)
    with _LOCK:
        return _CLIENTS.setdefault(key, made)


def _code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def user_error(exc: Exception, doing: str) -> UserError:
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return UserError(
            f"{doing}: no AWS credentials found; set AWS_PROFILE or "
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
        )
    if isinstance(exc, botocore.exceptions.EndpointConnectionError):
        return UserError(f"{doing}: cannot reach {exc.kwargs.get('endpoint_url')}")
    if isinstance(exc, botocore.exceptions.ClientError):
        code = _code(exc)
        message = exc.response.get("Error", {}).get("Message", "")
        if code in ("AccessDenied", "AccessDeniedException", "403", "UnauthorizedOperation"):
            return UserError(
                f"{doing}: access denied ({message or code}); the credentials "
                "need permission for this call"
            )
        if code == "PreconditionFailedException":
            return UserError(
                f"{doing}: the function was changed by someone else since it was read "
                "(RevisionId mismatch); run plan again"
            )
        if code == "ResourceConflictException":
            return UserError(
                f"{doing}: the function is busy with another update; wait and run "
                "apply again (it converges)"
            )
        if code == "NoSuchBucket":
            return UserError(
                f"{doing}: the bucket does not exist; create it first "
                "(pmcp-build never creates or deletes buckets)"
            )
        return UserError(f"{doing}: {code}: {message}")
    return UserError(f"{doing}: {exc}")


# -- reads ------------------------------------------------------------------------------


def code_of(exc: BaseException) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        return _code(exc)
    return ""


def absent_as_none(call: Callable[[], Any], *missing: str) -> Any:
    """Run a read; a "does not exist" answer (one of `missing`) is None, not an error."""
    try:
        return call()
    except botocore.exceptions.ClientError as exc:
        if _code(exc) in missing:
            return None
        raise


READ_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)


@contextmanager
def translating(doing: str) -> Iterator[None]:
    """The one place a foreign error becomes the one-line user error: boto3's (no
    credentials, access denied, an endpoint out of reach…) and the file system's (the
    package zip, a local deployment folder), each prefixed with what was being done.
    A UserError raised inside passes through as it is."""
    try:
        yield
    except (UserError, BrokenPipeError):
        raise  # a closed reader (`logs | head`) is the caller's to end quietly
    except (*READ_ERRORS, OSError) as exc:
        raise user_error(exc, doing) from exc


def head_object(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    head = absent_as_none(
        lambda: s3.head_object(Bucket=bucket, Key=key), "404", "NoSuchKey", "NotFound"
    )
    return None if head is None else dict(head)


def bucket_missing(s3: Any, bucket: str) -> bool:
    """Whether HeadBucket says `bucket` does not exist: asked only when HeadObject found
    nothing, which S3 answers alike for a missing key and a missing bucket. A 403 (the
    bucket exists but is someone else's, or not readable here) is not "missing"."""
    try:
        s3.head_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError as exc:
        return code_of(exc) in ("404", "NoSuchBucket", "NotFound")
    return False


def missing_bucket_warning(bucket: str) -> str:
    return (
        f"bucket {bucket} does not exist: apply will fail at the upload; create it first "
        f"(`aws s3 mb s3://{bucket}`), pmcp-build never creates or deletes buckets"
    )


# -- helpers the executor runs by name (service, operation) -------------------------------
# Each takes (client, params, progress) and returns a response-shaped dict.


def upload_artifact(s3: Any, params: dict[str, Any], progress: Any) -> dict[str, Any]:
    """Upload through the transfer manager (multipart over 8 MB), after aborting our own
    multipart uploads of this key that a killed apply left behind; the transfer manager
    aborts its upload itself when it fails."""
    bucket, key = params["Bucket"], params["Key"]
    listed = absent_as_none(
        lambda: s3.list_multipart_uploads(Bucket=bucket, Prefix=key), "NotImplemented"
    )
    for upload in (listed or {}).get("Uploads") or []:
        if upload.get("Key") == key:
            s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])
    config = TransferConfig(
        multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD
    )
    s3.upload_file(
        params["Filename"],
        bucket,
        key,
        Config=config,
        Callback=progress,
        ExtraArgs={"Metadata": {"sha256": params["Sha256"]}, "ContentType": "application/zip"},
    )
    return {}


def ensure_role(iam: Any, params: dict[str, Any], progress: Any) -> dict[str, Any]:
    """CreateRole, or the existing role's ARN when a killed apply already created it;
    a role of that name someone else made since the plan is refused, never taken."""
    try:
        return dict(iam.create_role(**params))
    except botocore.exceptions.ClientError as exc:
        if _code(exc) != "EntityAlreadyExists":
            raise
    found = dict(iam.get_role(RoleName=params["RoleName"]))
    tags = {t.get("Key"): t.get("Value") for t in found.get("Role", {}).get("Tags") or []}
    if tags.get(MANAGED_TAG) == "true":
        return found
    raise UserError(
        f"IAM role {params['RoleName']!r} was created by someone else since the plan "
        "(no pmcp-build:managed tag); run plan again"
    )


def create_function(lam: Any, params: dict[str, Any], progress: Any) -> dict[str, Any]:
    # A role created seconds ago may not be assumable yet (IAM is eventually
    # consistent); Lambda says so with InvalidParameterValueException.
    for attempt in range(12):
        try:
            return dict(lam.create_function(**params))
        except botocore.exceptions.ClientError as exc:
            assumable = "cannot be assumed" in str(exc)
            if _code(exc) != "InvalidParameterValueException" or not assumable or attempt == 11:
                raise
            time.sleep(min(2**attempt, 10) / 4)
    raise AssertionError("unreachable")


HELPERS: dict[tuple[str, str], Callable[[Any, dict[str, Any], Any], dict[str, Any]]] = {
    ("s3", "upload_artifact"): upload_artifact,
    ("iam", "ensure_role"): ensure_role,
    ("lambda", "create_function"): create_function,
}


# -- what the auto role is ---------------------------------------------------------------

LOGS_POLICY_NAME = "pmcp-logs"


def logs_policy(function: str) -> dict[str, Any]:
    group = f"arn:aws:logs:*:*:log-group:/aws/lambda/{function}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "logs:CreateLogGroup", "Resource": group},
            {
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": f"{group}:*",
            },
        ],
    }


def policy_document(raw: Any) -> Any:
    """IAM returns policy documents URL-encoded JSON, or parsed by botocore: normalise."""
    if isinstance(raw, str):
        from urllib.parse import unquote

        try:
            return json.loads(unquote(raw))
        except json.JSONDecodeError:
            return raw
    return raw
