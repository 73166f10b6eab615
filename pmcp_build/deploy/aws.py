"""boto3 at the edge: reading remote state and carrying out AWS actions.

Clients honour the standard chain (profile, AWS_REGION, AWS_ENDPOINT_URL) with the
target's own region / profile / endpoint_url on top. Errors that a user can fix
(no credentials, access denied, missing bucket) become one-line UserErrors.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from pmcp_build.deploy.plan import LambdaState, S3State
from pmcp_build.errors import UserError
from pmcp_build.manifest.model import LambdaTarget, S3Target

MULTIPART_THRESHOLD = 8 * 1024 * 1024
TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


def auto_role_name(function: str) -> str:
    return f"{function}-pmcp-exec"[:64]


class Clients:
    """A target's boto3 clients, made on first use: a no-op plan never builds IAM's."""

    def __init__(self, session: Any, kwargs: dict[str, Any]) -> None:
        self._session = session
        self._kwargs = kwargs
        self._made: dict[str, Any] = {}

    def _client(self, service: str) -> Any:
        if service not in self._made:
            # boto3 sessions are not thread-safe; targets are planned in parallel.
            with _LOCK:
                self._made[service] = self._session.client(service, **self._kwargs)
        return self._made[service]

    @property
    def s3(self) -> Any:
        return self._client("s3")

    @property
    def lam(self) -> Any:
        return self._client("lambda")

    @property
    def iam(self) -> Any:
        return self._client("iam")


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


def clients(target: LambdaTarget | S3Target) -> Clients:
    # botocore reads AWS_DEFAULT_REGION; AWS_REGION is what Lambda and the other SDKs
    # set, so honour it too.
    region = target.region or os.environ.get("AWS_REGION") or None
    try:
        session = _session(target.profile, region)
    except botocore.exceptions.ProfileNotFound as exc:
        raise UserError(f"AWS profile {target.profile!r} not found; check ~/.aws/config") from exc
    if session.region_name is None:
        raise UserError("no AWS region: set region in the target, or AWS_REGION")
    config = Config(retries={"mode": "standard", "max_attempts": 5})
    kwargs: dict[str, Any] = {"config": config}
    if target.endpoint_url:
        kwargs["endpoint_url"] = target.endpoint_url
    return Clients(session, kwargs)


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
        if code == "NoSuchBucket":
            return UserError(
                f"{doing}: the bucket does not exist; create it first "
                "(pmcp-build never creates or deletes buckets)"
            )
        return UserError(f"{doing}: {code}: {message}")
    return UserError(f"{doing}: {exc}")


# -- reads ------------------------------------------------------------------------------


def read_lambda_state(c: Clients, target: LambdaTarget, key: str) -> LambdaState:
    try:
        artifact = head_object(c.s3, target.bucket, key) is not None
        function = get_function(c.lam, target.function)
        url = get_function_url(c.lam, target.function) if function is not None else None
        role_arn = None
        if target.role == "auto":
            if function is not None and function.get("Role", "").endswith(
                "/" + auto_role_name(target.function)
            ):
                role_arn = function["Role"]  # no extra IAM read when the function says it
            else:
                role_arn = get_role_arn(c.iam, auto_role_name(target.function))
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise user_error(exc, f"reading state of lambda {target.function}") from exc
    return LambdaState(artifact_exists=artifact, function=function, url=url, role_arn=role_arn)


def read_s3_state(c: Clients, target: S3Target) -> S3State:
    try:
        head = head_object(c.s3, target.bucket, target.key)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise user_error(exc, f"reading s3://{target.bucket}/{target.key}") from exc
    if head is None:
        return S3State(object_sha256=None, exists=False)
    return S3State(object_sha256=(head.get("Metadata") or {}).get("sha256"), exists=True)


def _absent_as_none(call: Callable[[], Any], *missing: str) -> Any:
    """Run a read; a "does not exist" answer (one of `missing`) is None, not an error."""
    try:
        return call()
    except botocore.exceptions.ClientError as exc:
        if _code(exc) in missing:
            return None
        raise


def head_object(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    head = _absent_as_none(
        lambda: s3.head_object(Bucket=bucket, Key=key), "404", "NoSuchKey", "NotFound"
    )
    return None if head is None else dict(head)


def get_function(lam: Any, name: str) -> dict[str, Any] | None:
    found = _absent_as_none(
        lambda: lam.get_function(FunctionName=name), "ResourceNotFoundException"
    )
    return None if found is None else dict(found["Configuration"])


def get_function_url(lam: Any, name: str) -> dict[str, Any] | None:
    found = _absent_as_none(
        lambda: lam.get_function_url_config(FunctionName=name), "ResourceNotFoundException"
    )
    return None if found is None else dict(found)


def get_role_arn(iam: Any, name: str) -> str | None:
    found = _absent_as_none(lambda: iam.get_role(RoleName=name), "NoSuchEntity")
    return None if found is None else str(found["Role"]["Arn"])


# -- writes -----------------------------------------------------------------------------


def upload(
    s3: Any,
    path: Path,
    bucket: str,
    key: str,
    sha256: str,
    progress: Callable[[int], None] | None = None,
) -> None:
    config = TransferConfig(
        multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD
    )
    s3.upload_file(
        str(path),
        bucket,
        key,
        Config=config,
        Callback=progress,
        ExtraArgs={"Metadata": {"sha256": sha256}, "ContentType": "application/zip"},
    )


def ensure_role(iam: Any, function: str) -> str:
    name = auto_role_name(function)
    try:
        arn = str(
            iam.create_role(
                RoleName=name,
                AssumeRolePolicyDocument=json.dumps(TRUST_POLICY),
                Description=f"Execution role for {function}, created by pmcp-build",
                Tags=[{"Key": "managed-by", "Value": "pmcp-build"}],
            )["Role"]["Arn"]
        )
    except botocore.exceptions.ClientError as exc:
        if _code(exc) != "EntityAlreadyExists":
            raise
        arn = str(iam.get_role(RoleName=name)["Role"]["Arn"])
    # Inline and scoped to this function's log group: narrower than the managed
    # AWSLambdaBasicExecutionRole, which may write to every log group in the account.
    iam.put_role_policy(
        RoleName=name, PolicyName=LOGS_POLICY_NAME, PolicyDocument=json.dumps(logs_policy(function))
    )
    return arn


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


def wait(lam: Any, waiter: str, function: str) -> None:
    lam.get_waiter(waiter).wait(
        FunctionName=function, WaiterConfig={"Delay": 1, "MaxAttempts": 300}
    )


def create_function(lam: Any, params: dict[str, Any]) -> dict[str, Any]:
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


def update_code(
    lam: Any, function: str, bucket: str, key: str, architecture: str, revision_id: str | None
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "FunctionName": function,
        "S3Bucket": bucket,
        "S3Key": key,
        "Architectures": [architecture],
    }
    if revision_id:
        params["RevisionId"] = revision_id
    try:
        return dict(lam.update_function_code(**params))
    except botocore.exceptions.ClientError as exc:
        raise _conflict(exc, function) from exc


def update_configuration(
    lam: Any, params: dict[str, Any], revision_id: str | None
) -> dict[str, Any]:
    if revision_id:
        params = {**params, "RevisionId": revision_id}
    try:
        return dict(lam.update_function_configuration(**params))
    except botocore.exceptions.ClientError as exc:
        raise _conflict(exc, params["FunctionName"]) from exc


def _conflict(exc: botocore.exceptions.ClientError, function: str) -> Exception:
    code = _code(exc)
    if code == "PreconditionFailedException":
        return UserError(
            f"lambda {function} was changed by someone else since it was read "
            "(RevisionId mismatch); run plan again"
        )
    if code == "ResourceConflictException":
        return UserError(
            f"lambda {function} is busy with another update; wait and run "
            "apply again (it converges)"
        )
    return exc  # type: ignore[no-any-return]


def create_url(lam: Any, function: str, auth: str) -> str:
    url = str(lam.create_function_url_config(FunctionName=function, AuthType=auth)["FunctionUrl"])
    if auth == "NONE":
        try:
            lam.add_permission(
                FunctionName=function,
                StatementId="pmcp-public-url",
                Action="lambda:InvokeFunctionUrl",
                Principal="*",
                FunctionUrlAuthType="NONE",
            )
        except botocore.exceptions.ClientError as exc:
            if _code(exc) != "ResourceConflictException":  # already granted
                raise
    return url
