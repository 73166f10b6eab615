"""The artifact in S3 and the function itself: create, or update its code and its
configuration (settings compared in the manifest's form), and whose it is."""

from __future__ import annotations

from typing import Any

from pmcp_build.deploy.actions import Action, Call, Change, noop
from pmcp_build.deploy.targets.lambda_.model import (
    DEFAULT_EPHEMERAL,
    MANAGED_TAG,
    DesiredFunction,
    FunctionState,
    LambdaState,
)
from pmcp_build.errors import UserError
from pmcp_build.manifest.secrets import MASK, Environment

CHANGED_OPS = (
    "lambda.create_function",
    "lambda.update_function_code",
    "lambda.update_function_configuration",
)


def artifact(want: DesiredFunction, state: LambdaState) -> list[Action]:
    s3 = f"s3://{want.bucket}/{want.key}"
    if state.artifact:
        return [noop(s3, "artifact already uploaded (same sha256)")]
    upload = Call(
        "s3",
        "upload_artifact",
        {
            "Bucket": want.bucket,
            "Key": want.key,
            "Sha256": want.sha256,
            "Filename": {"$package": "path"},
        },
    )
    return [Action("s3.upload_artifact", "+", s3, "artifact not in S3", calls=(upload,))]


def check_owned(want: DesiredFunction, state: LambdaState) -> None:
    """A function pmcp-build did not make (no managed tag) is someone else's."""
    fn = state.function
    if fn is not None and not fn.managed and not want.adopt:
        raise UserError(
            f"target {want.target!r}: lambda function {want.function!r} exists and was not "
            f"created by pmcp-build (no {MANAGED_TAG} tag); set adopt = true in "
            f"[targets.{want.target}] to take it over, or name another function"
        )


def diff(want: DesiredFunction, state: LambdaState, role_arn: Any) -> list[Action]:
    fn = state.function
    if fn is None:
        return [_create(want, role_arn)]
    return _code(want, fn) + _configuration(want, fn, role_arn)


def up_to_date(want: DesiredFunction) -> Action:
    return noop(f"lambda {want.function}", "up to date")


def _wanted(want: DesiredFunction, role_arn: Any, fn: FunctionState | None) -> dict[str, Any]:
    """The configuration to send, in the manifest's form: the settings only when set,
    or to put back Lambda's default."""
    wanted: dict[str, Any] = {**want.config.api(), "Role": role_arn}
    mine, now = want.settings, (fn.settings if fn is not None else None)
    if mine.snapstart or (now is not None and now.snapstart):
        wanted["SnapStart"] = "PublishedVersions" if mine.snapstart else "None"
    if mine.layers or (now is not None and now.layers):
        wanted["Layers"] = list(mine.layers)
    if not mine.vpc.empty or (now is not None and not now.vpc.empty):
        wanted["VpcConfig"] = mine.vpc.api()
    if mine.ephemeral_storage != (DEFAULT_EPHEMERAL if now is None else now.ephemeral_storage):
        wanted["EphemeralStorage"] = mine.ephemeral_storage
    return wanted


def _as_read(fn: FunctionState) -> dict[str, Any]:
    settings = fn.settings
    return {
        **fn.config.api(),
        "SnapStart": "PublishedVersions" if settings.snapstart else "None",
        "Layers": list(settings.layers),
        "VpcConfig": settings.vpc.api(),
        "EphemeralStorage": settings.ephemeral_storage,
    }


def _api(wanted: dict[str, Any]) -> dict[str, Any]:
    """Settings in the form CreateFunction / UpdateFunctionConfiguration take."""
    params = dict(wanted)
    if "SnapStart" in params:
        params["SnapStart"] = {"ApplyOn": params["SnapStart"]}
    if "EphemeralStorage" in params:
        params["EphemeralStorage"] = {"Size": params["EphemeralStorage"]}
    return params


def _create(want: DesiredFunction, role_arn: Any) -> Action:
    wanted = _wanted(want, role_arn, None)
    params = {
        "FunctionName": want.function,
        **_api(wanted),
        "Code": {"S3Bucket": want.bucket, "S3Key": want.key},
        "Architectures": [want.architecture],
        "Environment": {"Variables": _env_param(want.env)},
        "Description": want.description,
        "Tags": want.tags,
    }
    changes = [Change(k, None, _shown_role(v) if k == "Role" else v) for k, v in wanted.items()]
    changes += [Change(f"Environment.{k}", None, v) for k, v in sorted(want.env.shown().items())]
    changes += [
        Change("Architectures", None, [want.architecture]),
        Change("CodeSha256", None, want.code_sha256),
    ]
    create = Call(
        "lambda",
        "create_function",
        params,
        wait="function_active_v2",
        wait_params={"FunctionName": want.function},
        outputs={"function_arn": "FunctionArn"},
    )
    return Action(
        "lambda.create_function",
        "+",
        f"lambda {want.function}",
        "function does not exist",
        tuple(changes),
        (create,),
    )


def _settle(want: DesiredFunction) -> Call:
    # The RevisionId moves once an update settles: read the new one.
    return Call("lambda", "get_function_configuration", {"FunctionName": want.function})


def _code(want: DesiredFunction, fn: FunctionState) -> list[Action]:
    changes = []
    if fn.code_sha256 != want.code_sha256:
        changes.append(Change("CodeSha256", fn.code_sha256, want.code_sha256))
    if list(fn.architectures) != [want.architecture]:
        changes.append(Change("Architectures", list(fn.architectures), [want.architecture]))
    if not changes:
        return []
    call = Call(
        "lambda",
        "update_function_code",
        {
            "FunctionName": want.function,
            "S3Bucket": want.bucket,
            "S3Key": want.key,
            "Architectures": [want.architecture],
            "RevisionId": {"$revision": want.function, "planned": fn.revision},
        },
        wait="function_updated_v2",
        wait_params={"FunctionName": want.function},
    )
    return [
        Action(
            "lambda.update_function_code",
            "~",
            f"lambda {want.function}",
            "package changed",
            tuple(changes),
            (call, _settle(want)),
            {"RevisionId": fn.revision},
        )
    ]


def _configuration(want: DesiredFunction, fn: FunctionState, role_arn: Any) -> list[Action]:
    wanted = _wanted(want, role_arn, fn)
    before = _as_read(fn)
    changes = [
        Change(k, _shown_role(before.get(k)), _shown_role(v))
        for k, v in wanted.items()
        if before.get(k) != v
    ]
    changes += _env_changes(fn.environment, want.env)
    if not changes:
        return []
    call = Call(
        "lambda",
        "update_function_configuration",
        {
            "FunctionName": want.function,
            **_api(wanted),
            "Environment": {"Variables": _env_param(want.env)},
            "RevisionId": {"$revision": want.function, "planned": fn.revision},
        },
        wait="function_updated_v2",
        wait_params={"FunctionName": want.function},
    )
    return [
        Action(
            "lambda.update_function_configuration",
            "~",
            f"lambda {want.function}",
            "configuration changed",
            tuple(changes),
            (call, _settle(want)),
            {"RevisionId": fn.revision},
        )
    ]


def _env_param(env: Environment) -> dict[str, Any]:
    return {k: ({"$secret": k} if k in env.secret_keys else v) for k, v in env.values.items()}


def _env_changes(before: Any, env: Environment) -> list[Change]:
    """Per key; values read from AWS are always shown masked (they may be secrets the
    manifest no longer names), values from `${env:}` too."""
    shown = env.shown()
    changes = []
    for key in sorted(set(before) | set(env.values)):
        if before.get(key) == env.values.get(key):
            continue
        old = None if key not in before else MASK
        changes.append(Change(f"Environment.{key}", old, shown.get(key)))
    return changes


def _shown_role(value: Any) -> Any:
    if isinstance(value, dict) and "$output" in value:
        return "(the role created above)"
    return value
