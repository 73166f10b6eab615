"""A lambda target: an S3 artifact, the function, its URL and URL permissions, and the
auto role with its logs policy.

`read` makes the boto3 reads (no-op with a URL and role = "auto": HeadObject,
GetFunction, GetFunctionUrlConfig, GetPolicy, GetRolePolicy; fewer without them).
`diff` is pure: plain dicts in, actions out. Every write apply can make is observed
here, so an apply killed after any call is finished by the next one, which only then
says "No changes".
"""

from __future__ import annotations

import functools
import json
from typing import Any

from pmcp_build.deploy import aws
from pmcp_build.deploy.actions import Action, Call, Change, Symbol, TargetPlan, noop, unread
from pmcp_build.deploy.targets import TargetInput
from pmcp_build.errors import UserError
from pmcp_build.manifest.model import TAG_PREFIX
from pmcp_build.manifest.secrets import MASK, Environment

# Statement ids of the two grants a public (auth NONE) URL needs. Since October 2025
# Lambda requires lambda:InvokeFunction beside lambda:InvokeFunctionUrl, or every
# request is answered 403.
PUBLIC_URL_SID = "pmcp-url-public"
PUBLIC_INVOKE_SID = "pmcp-url-invoke"
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
_CONFIG_FIELDS = ("Runtime", "Handler", "Role", "MemorySize", "Timeout")
# What a published version is compared on against $LATEST: equal means "already
# published" (and PublishVersion would publish nothing new).
_PUBLISHED_FIELDS = (
    "CodeSha256",
    "Architectures",
    *_CONFIG_FIELDS,
    "Environment",
    "Layers",
    "VpcConfig",
    "EphemeralStorage",
)
# Settings compared in a normal form (see _current); absent means Lambda's default.
_SETTINGS = ("SnapStart", "Layers", "VpcConfig", "EphemeralStorage")
_NO_VPC: dict[str, list[str]] = {"SubnetIds": [], "SecurityGroupIds": []}


def auto_role_name(function: str) -> str:
    return f"{function}-pmcp-exec"[:64]


ALIAS_TAG = f"{TAG_PREFIX}alias"


def managed_tags(
    server: str, sha256: str, user: dict[str, str], alias: str | None = None
) -> dict[str, str]:
    """The function's tags: the manifest's, then pmcp-build's own (which win). The
    alias we manage is named in one, so that removing `alias` from the manifest finds
    the alias (and its URL) to remove."""
    return {
        **user,
        f"{TAG_PREFIX}managed": "true",
        f"{TAG_PREFIX}server": server,
        f"{TAG_PREFIX}package": sha256,
        **({ALIAS_TAG: alias} if alias else {}),
    }


def role_tags(server: str, user: dict[str, str]) -> dict[str, str]:
    # No package tag: the role outlives every package; tagged once, when created.
    return {**user, f"{TAG_PREFIX}managed": "true", f"{TAG_PREFIX}server": server}


def artifact_key(prefix: str, server: str, sha256: str) -> str:
    name = f"{server}-{sha256}.zip"
    return f"{prefix.strip('/')}/{name}" if prefix.strip("/") else name


def public_grants(function: str, alias: str | None = None) -> dict[str, dict[str, Any]]:
    """AddPermission parameters of the grants an auth NONE URL needs, by statement id."""
    qualifier = {"Qualifier": alias} if alias else {}
    return {
        PUBLIC_URL_SID: {
            **qualifier,
            "FunctionName": function,
            "StatementId": PUBLIC_URL_SID,
            "Action": "lambda:InvokeFunctionUrl",
            "Principal": "*",
            "FunctionUrlAuthType": "NONE",
        },
        PUBLIC_INVOKE_SID: {
            **qualifier,
            "FunctionName": function,
            "StatementId": PUBLIC_INVOKE_SID,
            "Action": "lambda:InvokeFunction",
            "Principal": "*",
            "InvokedViaFunctionUrl": True,
        },
    }


# -- reading -------------------------------------------------------------------------------


def read(given: TargetInput) -> dict[str, Any]:
    """The remote state as plain data. Secret: `function.Environment` holds clear values;
    `observed()` gives the form that may be printed and saved."""
    t = given.target
    c = aws.clients(aws.connection(t))
    try:
        artifact = None
        if given.package is not None:
            key = artifact_key(t.prefix, given.server, given.package.sha256)
            artifact = aws.head_object(c.s3, t.bucket, key) is not None
        found = aws.absent_as_none(
            lambda: c.lam.get_function(FunctionName=t.function), "ResourceNotFoundException"
        )
        function = dict(found["Configuration"]) if found else None
        url = permissions = alias = published = None
        # With an alias, the URL and its grants live on the alias (Qualifier).
        where = {"FunctionName": t.function, **({"Qualifier": t.alias} if t.alias else {})}
        if function is not None and t.publishes:
            alias, published = _read_published(c.lam, t.function, t.alias)
        if function is not None and (alias is not None or not t.alias):
            url = aws.absent_as_none(
                lambda: c.lam.get_function_url_config(**where),
                "ResourceNotFoundException",
            )
            if url is not None:
                policy = aws.absent_as_none(
                    lambda: c.lam.get_policy(**where),
                    "ResourceNotFoundException",
                )
                permissions = _our_statements(policy)
        elsewhere, stale_alias = (
            _read_elsewhere(
                c.lam,
                t.function,
                t.alias,
                dict(found.get("Tags") or {}),
                url.get("FunctionUrl") if url else None,
            )
            if found is not None
            else ([], None)
        )
        role = None
        if t.role == "auto":
            role = _read_auto_role(c.iam, t.function, function)
    except aws.READ_ERRORS as exc:
        raise aws.user_error(exc, f"reading state of lambda {t.function}") from exc
    return {
        "artifact": artifact,
        "function": function,
        "url": None
        if url is None
        else {"AuthType": url.get("AuthType"), "FunctionUrl": url.get("FunctionUrl")},
        "permissions": permissions or {},
        "role": role,
        # GetFunction answers with the function's tags: drift costs no extra call.
        "tags": None if found is None else dict(found.get("Tags") or {}),
        "concurrency": None
        if found is None
        else (found.get("Concurrency") or {}).get("ReservedConcurrentExecutions"),
        "alias": alias,
        "published": published,
        # URLs (with our grants) where the manifest no longer puts one, and a managed
        # alias it no longer declares: both removed by the plan.
        "elsewhere": elsewhere,
        "stale_alias": stale_alias,
    }


def _read_elsewhere(
    lam: Any, function: str, alias: str | None, tags: dict[str, str], declared: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """A URL left where the manifest no longer puts it: on the unqualified function
    when an alias now serves it (it would go on serving $LATEST, public if it was), or
    on the alias we made (named by our tag) that the manifest no longer declares. One
    read for a target with an alias, none for one that never had one."""
    places: list[str | None] = []
    stale = tags.get(ALIAS_TAG)
    if alias:
        places.append(None)
    stale_alias = None
    if stale and stale != alias:
        exists = aws.absent_as_none(
            lambda: lam.get_alias(FunctionName=function, Name=stale), "ResourceNotFoundException"
        )
        if exists is not None:
            stale_alias = stale
            places.append(stale)
    found = []
    for qualifier in places:
        where = {"FunctionName": function, **({"Qualifier": qualifier} if qualifier else {})}
        url = aws.absent_as_none(
            functools.partial(lam.get_function_url_config, **where), "ResourceNotFoundException"
        )
        if url is None or url.get("FunctionUrl") == declared:
            # The declared URL itself: each config has its own address, so one read
            # back at another qualifier is the same config (moto ignores Qualifier).
            continue
        policy = aws.absent_as_none(
            functools.partial(lam.get_policy, **where), "ResourceNotFoundException"
        )
        found.append(
            {
                "qualifier": qualifier,
                "url": {"AuthType": url.get("AuthType"), "FunctionUrl": url.get("FunctionUrl")},
                "permissions": _our_statements(policy),
            }
        )
    return found, stale_alias


def _read_published(
    lam: Any, function: str, alias_name: str | None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The alias (name, version) and the configuration of the version in service: the
    alias's, or without an alias the newest published one."""
    alias = version = None
    if alias_name:
        found = aws.absent_as_none(
            lambda: lam.get_alias(FunctionName=function, Name=alias_name),
            "ResourceNotFoundException",
        )
        if found is not None:
            alias = {"Name": alias_name, "FunctionVersion": found["FunctionVersion"]}
            version = found["FunctionVersion"]
    else:
        version = _newest_version(list_versions(lam, function))
    if version is None or version == "$LATEST":
        return alias, None
    config = lam.get_function_configuration(FunctionName=function, Qualifier=version)
    return alias, {k: config.get(k) for k in ("Version", *_PUBLISHED_FIELDS)}


_MAX_VERSION_PAGES = 100  # 50 per page: 5000 versions, more than a sane function keeps


def list_versions(lam: Any, function: str) -> list[str]:
    versions: list[str] = []
    marker = None
    for _ in range(_MAX_VERSION_PAGES):
        page = lam.list_versions_by_function(
            FunctionName=function, **({"Marker": marker} if marker else {})
        )
        versions += [v["Version"] for v in page.get("Versions") or []]
        marker = page.get("NextMarker")
        if not marker:
            break
    return versions


def _newest_version(versions: list[str]) -> str | None:
    numbers = [int(v) for v in versions if v.isdigit()]
    return str(max(numbers)) if numbers else None


def _our_statements(policy: dict[str, Any] | None) -> dict[str, Any]:
    if not policy:
        return {}
    try:
        statements = json.loads(policy.get("Policy") or "{}").get("Statement") or []
    except json.JSONDecodeError:
        return {}
    ours = (PUBLIC_URL_SID, PUBLIC_INVOKE_SID)
    return {
        s["Sid"]: {k: s.get(k) for k in ("Effect", "Action", "Principal", "Condition")}
        for s in statements
        if isinstance(s, dict) and s.get("Sid") in ours
    }


def _read_auto_role(iam: Any, function: str, fn: dict[str, Any] | None) -> dict[str, Any] | None:
    name = auto_role_name(function)
    if fn is not None and str(fn.get("Role", "")).endswith("/" + name):
        arn = fn["Role"]  # the function names it: no GetRole call
    else:
        found = aws.absent_as_none(lambda: iam.get_role(RoleName=name), "NoSuchEntity")
        if found is None:
            return None
        arn = found["Role"]["Arn"]
    policy = aws.absent_as_none(
        lambda: iam.get_role_policy(RoleName=name, PolicyName=aws.LOGS_POLICY_NAME),
        "NoSuchEntity",
    )
    document = None if policy is None else aws.policy_document(policy.get("PolicyDocument"))
    return {"arn": arn, "policy": document}


def observed(state: dict[str, Any]) -> dict[str, Any]:
    """The remote state with environment values replaced by their keys: printable and
    saveable. (Saved plans add a salted, slow digest of the values: see saved.py.)"""
    fn = state.get("function")
    shown = dict(state)
    if fn is not None:
        env = (fn.get("Environment") or {}).get("Variables") or {}
        shown["function"] = {
            "CodeSha256": fn.get("CodeSha256"),
            "RevisionId": fn.get("RevisionId"),
            "FunctionArn": fn.get("FunctionArn"),
            "Architectures": fn.get("Architectures") or ["x86_64"],
            **{k: fn.get(k) for k in _CONFIG_FIELDS},
            "EnvironmentKeys": sorted(env),
            **_current(fn),
        }
    published = state.get("published")
    if published is not None:
        penv = (published.get("Environment") or {}).get("Variables") or {}
        shown["published"] = {
            **{k: v for k, v in published.items() if k != "Environment"},
            "EnvironmentKeys": sorted(penv),
        }
    return shown


def remote_environment(state: dict[str, Any]) -> dict[str, str]:
    fn = state.get("function") or {}
    return dict((fn.get("Environment") or {}).get("Variables") or {})


# -- the pure diff ---------------------------------------------------------------------------


def diff(
    *,
    function: str,
    bucket: str,
    key: str,
    sha256: str,
    code_sha256: str,
    architecture: str,
    runtime: str,
    handler: str,
    role: str,  # an ARN or "auto"
    memory: int,
    timeout: int,
    env: Environment,
    url_auth: str | None,
    server: str,
    state: dict[str, Any],
    tags: dict[str, str] | None = None,  # every tag the function must carry
    user_tags: dict[str, str] | None = None,
    publish: bool = False,
    alias: str | None = None,
    snapstart: bool = False,
    layers: tuple[str, ...] = (),
    vpc: dict[str, list[str]] | None = None,  # {"SubnetIds": […], "SecurityGroupIds": […]}
    ephemeral_storage: int = 512,
    concurrency: int | None = None,
) -> list[Action]:
    tags = tags if tags is not None else managed_tags(server, sha256, {})
    actions: list[Action] = []
    fn = state.get("function")
    s3 = f"s3://{bucket}/{key}"
    if not state.get("artifact"):
        upload = Call(
            "s3",
            "upload_artifact",
            {"Bucket": bucket, "Key": key, "Sha256": sha256, "Filename": {"$package": "path"}},
        )
        actions.append(Action("s3.upload_artifact", "+", s3, "artifact not in S3", calls=(upload,)))
    else:
        actions.append(noop(s3, "artifact already uploaded (same sha256)"))

    role_arn: Any = role
    narrowed: list[Action] = []  # role policy changes that must wait for the function
    if role == "auto":
        role_arn, role_actions = _auto_role(
            function, state.get("role"), role_tags(server, user_tags or {}), vpc is not None
        )
        in_vpc = fn is not None and _current(fn)["VpcConfig"] != _NO_VPC
        if vpc is None and in_vpc:
            # Leaving the VPC: the network-interface grants go only once the function
            # is out of it (Lambda detaches its interfaces as the role it runs as).
            narrowed = [a for a in role_actions if a.op == "iam.put_role_policy"]
        actions += [a for a in role_actions if a not in narrowed]

    wanted: dict[str, Any] = {
        "Runtime": runtime,
        "Handler": handler,
        "Role": role_arn,
        "MemorySize": memory,
        "Timeout": timeout,
    }
    # The settings below are only sent when set, or to put back Lambda's default.
    current = _current(fn) if fn is not None else {}
    if snapstart or current.get("SnapStart", "None") != "None":
        wanted["SnapStart"] = "PublishedVersions" if snapstart else "None"
    if layers or current.get("Layers"):
        wanted["Layers"] = list(layers)
    if vpc or (current.get("VpcConfig") or _NO_VPC) != _NO_VPC:
        wanted["VpcConfig"] = _normal_vpc(vpc)
    if ephemeral_storage != current.get("EphemeralStorage", 512):
        wanted["EphemeralStorage"] = ephemeral_storage
    env_param = {"Variables": _env_param(env)}
    changed = True  # a new function is published too
    if fn is None:
        params = {
            "FunctionName": function,
            **_api(wanted),
            "Code": {"S3Bucket": bucket, "S3Key": key},
            "Architectures": [architecture],
            "Environment": env_param,
            "Description": f"{server} (pmcp-build {sha256[:12]})",
            "Tags": tags,
        }
        changes = [Change(k, None, _shown_role(v) if k == "Role" else v) for k, v in wanted.items()]
        changes += [Change(f"Environment.{k}", None, v) for k, v in sorted(env.shown().items())]
        changes += [
            Change("Architectures", None, [architecture]),
            Change("CodeSha256", None, code_sha256),
        ]
        create = Call(
            "lambda",
            "create_function",
            params,
            wait="function_active_v2",
            wait_params={"FunctionName": function},
            outputs={"function_arn": "FunctionArn"},
        )
        actions.append(
            Action(
                "lambda.create_function",
                "+",
                f"lambda {function}",
                "function does not exist",
                tuple(changes),
                (create,),
            )
        )
    else:
        revision = {"$revision": function, "planned": fn.get("RevisionId")}
        expects = {"RevisionId": fn.get("RevisionId")}
        settle = (
            Call("lambda", "get_function_configuration", {"FunctionName": function}),
        )  # the RevisionId moves once an update settles: read the new one
        code_changes = []
        if fn.get("CodeSha256") != code_sha256:
            code_changes.append(Change("CodeSha256", fn.get("CodeSha256"), code_sha256))
        before_arch = fn.get("Architectures") or ["x86_64"]
        if before_arch != [architecture]:
            code_changes.append(Change("Architectures", before_arch, [architecture]))
        if code_changes:
            call = Call(
                "lambda",
                "update_function_code",
                {
                    "FunctionName": function,
                    "S3Bucket": bucket,
                    "S3Key": key,
                    "Architectures": [architecture],
                    "RevisionId": revision,
                },
                wait="function_updated_v2",
                wait_params={"FunctionName": function},
            )
            actions.append(
                Action(
                    "lambda.update_function_code",
                    "~",
                    f"lambda {function}",
                    "package changed",
                    tuple(code_changes),
                    (call, *settle),
                    expects,
                )
            )
        before = {**fn, **current}
        config_changes = [
            Change(
                k,
                _shown_role(before.get(k)) if k == "Role" else before.get(k),
                _shown_role(v) if k == "Role" else v,
            )
            for k, v in wanted.items()
            if before.get(k) != v
        ]
        config_changes += _env_changes(remote_environment(state), env)
        if config_changes:
            call = Call(
                "lambda",
                "update_function_configuration",
                {
                    "FunctionName": function,
                    **_api(wanted),
                    "Environment": env_param,
                    "RevisionId": revision,
                },
                wait="function_updated_v2",
                wait_params={"FunctionName": function},
            )
            actions.append(
                Action(
                    "lambda.update_function_configuration",
                    "~",
                    f"lambda {function}",
                    "configuration changed",
                    tuple(config_changes),
                    (call, *settle),
                    expects,
                )
            )
        tag_action = _tag_action(function, fn.get("FunctionArn"), state.get("tags") or {}, tags)
        if tag_action is not None:
            actions.append(tag_action)
        if not code_changes and not config_changes and tag_action is None:
            actions.append(noop(f"lambda {function}", "up to date"))
        changed = bool(code_changes) or bool(config_changes)
    actions += narrowed
    actions += _concurrency_actions(function, concurrency, state.get("concurrency"))
    if publish or alias:
        actions += _publish_actions(function, code_sha256, sha256, server, alias, changed, state)
    actions += _url_actions(
        function, url_auth, state.get("url"), state.get("permissions") or {}, alias
    )
    actions += _leftover_actions(function, alias, state)
    return actions


def _leftover_actions(function: str, alias: str | None, state: dict[str, Any]) -> list[Action]:
    """Remove a URL (and our grants on it) the manifest no longer puts there, then a
    managed alias it no longer declares: what `read` found as `elsewhere`."""
    actions: list[Action] = []
    for place in state.get("elsewhere") or []:
        qualifier = place.get("qualifier")
        why = (
            f"the url is served by alias {alias} now"
            if qualifier is None
            else f"alias {qualifier} is no longer declared"
        )
        actions += _url_actions(
            function, None, place.get("url"), place.get("permissions") or {}, qualifier, why
        )
    stale = state.get("stale_alias")
    if stale:
        actions.append(
            Action(
                "lambda.delete_alias",
                "-",
                f"alias {function}:{stale}",
                "alias no longer declared (its versions stay)",
                calls=(
                    Call(
                        "lambda",
                        "delete_alias",
                        {"FunctionName": function, "Name": stale},
                        tolerate=("ResourceNotFoundException",),
                    ),
                ),
            )
        )
    return actions


def _current(fn: dict[str, Any]) -> dict[str, Any]:
    """The settings of `_SETTINGS` as read, in the form the manifest gives them."""
    vpc = fn.get("VpcConfig") or {}
    return {
        "SnapStart": (fn.get("SnapStart") or {}).get("ApplyOn") or "None",
        "Layers": [layer.get("Arn") for layer in fn.get("Layers") or []],
        "VpcConfig": _normal_vpc(
            {
                "SubnetIds": vpc.get("SubnetIds") or [],
                "SecurityGroupIds": vpc.get("SecurityGroupIds") or [],
            }
        ),
        "EphemeralStorage": (fn.get("EphemeralStorage") or {}).get("Size") or 512,
    }


def _normal_vpc(vpc: dict[str, list[str]] | None) -> dict[str, list[str]]:
    vpc = vpc or _NO_VPC
    return {
        "SubnetIds": sorted(vpc["SubnetIds"]),
        "SecurityGroupIds": sorted(vpc["SecurityGroupIds"]),
    }


def _api(wanted: dict[str, Any]) -> dict[str, Any]:
    """Settings in the form CreateFunction / UpdateFunctionConfiguration take."""
    params = dict(wanted)
    if "SnapStart" in params:
        params["SnapStart"] = {"ApplyOn": params["SnapStart"]}
    if "EphemeralStorage" in params:
        params["EphemeralStorage"] = {"Size": params["EphemeralStorage"]}
    return params


def _concurrency_actions(function: str, wanted: int | None, current: int | None) -> list[Action]:
    if wanted == current:
        return []
    if wanted is None:
        call = Call(
            "lambda",
            "delete_function_concurrency",
            {"FunctionName": function},
            tolerate=("ResourceNotFoundException",),
        )
        op, symbol, reason = (
            "lambda.delete_function_concurrency",
            "-",
            "reserved concurrency removed",
        )
    else:
        call = Call(
            "lambda",
            "put_function_concurrency",
            {"FunctionName": function, "ReservedConcurrentExecutions": wanted},
        )
        op, symbol, reason = (
            "lambda.put_function_concurrency",
            "~" if current is not None else "+",
            "reserved concurrency",
        )
    return [
        Action(
            op,
            symbol,  # type: ignore[arg-type]
            f"lambda {function} concurrency",
            reason,
            (Change("ReservedConcurrentExecutions", current, wanted),),
            (call,),
            {"ReservedConcurrentExecutions": current},
        )
    ]


def _publish_actions(
    function: str,
    code_sha256: str,
    sha256: str,
    server: str,
    alias: str | None,
    changed: bool,
    state: dict[str, Any],
) -> list[Action]:
    """PublishVersion when code or configuration changed (or the version in service is
    not what $LATEST is, e.g. an apply killed before publishing), then the alias move."""
    fn = state.get("function") or {}
    published = state.get("published")
    current = state.get("alias")
    in_service = published.get("Version") if published else None
    # Settings in their normal form (a version may report defaults $LATEST leaves out);
    # SnapStart not at all: a version reports OptimizationStatus On where $LATEST is Off.
    same = published is not None and all(
        published.get(k) == (fn.get(k) or (["x86_64"] if k == "Architectures" else None))
        for k in _PUBLISHED_FIELDS
        if k not in _SETTINGS
    )
    if published is not None and same:
        mine, theirs = _current(fn), _current(published)
        same = all(mine[k] == theirs[k] for k in _SETTINGS if k != "SnapStart")
    actions: list[Action] = []
    version: Any = in_service
    if changed or not same:
        version = {"$output": "version"}
        publish = Call(
            "lambda",
            "publish_version",
            {
                "FunctionName": function,
                # Lambda refuses to publish when $LATEST's code is not this package.
                "CodeSha256": code_sha256,
                "Description": f"{server} (pmcp-build {sha256[:12]})",
            },
            wait="published_version_active",
            wait_params={"FunctionName": function, "Qualifier": {"$output": "version"}},
            outputs={"version": "Version"},
        )
        reason = "code or configuration changed" if changed else "$LATEST is not published"
        actions.append(
            Action(
                "lambda.publish_version",
                "+",
                f"lambda {function} version",
                reason,
                (Change("Version", in_service, "(next)"),),
                (publish,),
            )
        )
    if alias is None:
        return actions
    shown = "(the version published above)" if isinstance(version, dict) else version
    if current is None:
        call = Call(
            "lambda",
            "create_alias",
            {"FunctionName": function, "Name": alias, "FunctionVersion": version},
            tolerate=("ResourceConflictException",),
            outputs={"alias_arn": "AliasArn"},
        )
        actions.append(
            Action(
                "lambda.create_alias",
                "+",
                f"alias {function}:{alias}",
                "alias declared",
                (Change("FunctionVersion", None, shown),),
                (call,),
            )
        )
    elif isinstance(version, dict) or current.get("FunctionVersion") != version:
        call = Call(
            "lambda",
            "update_alias",
            {"FunctionName": function, "Name": alias, "FunctionVersion": version},
            outputs={"alias_arn": "AliasArn"},
        )
        actions.append(
            Action(
                "lambda.update_alias",
                "~",
                f"alias {function}:{alias}",
                "alias moves to the new version",
                (Change("FunctionVersion", current.get("FunctionVersion"), shown),),
                (call,),
                {"FunctionVersion": current.get("FunctionVersion")},
            )
        )
    return actions


def _tag_action(
    function: str, arn: str | None, before: dict[str, str], wanted: dict[str, str]
) -> Action | None:
    """Tag drift: TagResource for what is missing or different, UntagResource for keys
    the manifest does not name (the manifest owns the function's tags; AWS's own
    'aws:' tags cannot be removed and are left alone)."""
    put = {k: v for k, v in wanted.items() if before.get(k) != v}
    drop = sorted(k for k in before if k not in wanted and not k.startswith("aws:"))
    if not put and not drop:
        return None
    changes = [Change(f"Tags.{k}", before.get(k), v) for k, v in sorted(put.items())]
    changes += [Change(f"Tags.{k}", before[k], None) for k in drop]
    calls = []
    if put:
        calls.append(Call("lambda", "tag_resource", {"Resource": arn, "Tags": put}))
    if drop:
        calls.append(Call("lambda", "untag_resource", {"Resource": arn, "TagKeys": drop}))
    return Action(
        "lambda.tag_resource" if put else "lambda.untag_resource",
        "~",
        f"lambda {function} tags",
        "tags drifted" if before else "tags missing",
        tuple(changes),
        tuple(calls),
        {"Tags": before},
    )


def _env_param(env: Environment) -> dict[str, Any]:
    return {k: ({"$secret": k} if k in env.secret_keys else v) for k, v in env.values.items()}


def _env_changes(before: dict[str, str], env: Environment) -> list[Change]:
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


def _auto_role(
    function: str, role: dict[str, Any] | None, tags: dict[str, str], vpc: bool = False
) -> tuple[Any, list[Action]]:
    name = auto_role_name(function)
    policy = aws.logs_policy(function)
    if vpc:  # what AWSLambdaVPCAccessExecutionRole grants: the function's network interfaces
        policy["Statement"].append(
            {
                "Effect": "Allow",
                "Action": [
                    "ec2:CreateNetworkInterface",
                    "ec2:DescribeNetworkInterfaces",
                    "ec2:DescribeSubnets",
                    "ec2:DeleteNetworkInterface",
                    "ec2:AssignPrivateIpAddresses",
                    "ec2:UnassignPrivateIpAddresses",
                ],
                "Resource": "*",
            }
        )
    put_policy = Call(
        "iam",
        "put_role_policy",
        {
            "RoleName": name,
            "PolicyName": aws.LOGS_POLICY_NAME,
            "PolicyDocument": json.dumps(policy, sort_keys=True),
        },
    )
    if role is None:
        create = Call(
            "iam",
            "ensure_role",
            {
                "RoleName": name,
                "AssumeRolePolicyDocument": json.dumps(TRUST_POLICY, sort_keys=True),
                "Description": f"Execution role for {function}, created by pmcp-build",
                "Tags": [{"Key": k, "Value": v} for k, v in sorted(tags.items())],
            },
            outputs={"role_arn": "Role.Arn"},
        )
        action = Action(
            "iam.create_role",
            "+",
            f"iam role {name}",
            'role = "auto" and the role does not exist',
            (Change(f"policy {aws.LOGS_POLICY_NAME}", None, "logs of this function only"),),
            (create, put_policy),
        )
        return {"$output": "role_arn"}, [action]
    if _canonical(role.get("policy")) != _canonical(policy):
        symbol: Symbol = "+" if role.get("policy") is None else "~"
        action = Action(
            "iam.put_role_policy",
            symbol,
            f"iam role {name} policy {aws.LOGS_POLICY_NAME}",
            "logs policy missing" if symbol == "+" else "logs policy changed",
            (),
            (put_policy,),
            {"policy": role.get("policy")},
        )
        return role["arn"], [action]
    return role["arn"], []


def _canonical(document: Any) -> str:
    return json.dumps(document, sort_keys=True)


def _url_actions(
    function: str,
    auth: str | None,
    url: dict[str, Any] | None,
    permissions: dict[str, Any],
    alias: str | None = None,
    gone: str | None = None,  # why a URL left elsewhere and its grants are removed
) -> list[Action]:
    actions: list[Action] = []
    where: dict[str, Any] = {"FunctionName": function}
    if alias:
        where["Qualifier"] = alias
    resource = f"function url {function}" + (f":{alias}" if alias else "")
    if auth is not None and url is None:
        actions.append(
            Action(
                "lambda.create_function_url_config",
                "+",
                resource,
                "url declared",
                (Change("AuthType", None, auth),),
                (
                    Call(
                        "lambda",
                        "create_function_url_config",
                        {**where, "AuthType": auth},
                        tolerate=("ResourceConflictException",),
                        outputs={"url": "FunctionUrl"},
                    ),
                ),
            )
        )
    elif auth is not None and url is not None and url.get("AuthType") != auth:
        actions.append(
            Action(
                "lambda.update_function_url_config",
                "~",
                resource,
                "auth changed",
                (Change("AuthType", url.get("AuthType"), auth),),
                (
                    Call(
                        "lambda",
                        "update_function_url_config",
                        {**where, "AuthType": auth},
                    ),
                ),
                {"AuthType": url.get("AuthType")},
            )
        )
    elif auth is None and url is not None:
        actions.append(
            Action(
                "lambda.delete_function_url_config",
                "-",
                resource,
                gone or "url no longer declared",
                calls=(
                    Call(
                        "lambda",
                        "delete_function_url_config",
                        where,
                        tolerate=("ResourceNotFoundException",),
                    ),
                ),
            )
        )
    elif auth is not None:
        actions.append(noop(resource, "up to date"))

    grants = public_grants(function, alias)
    for sid, params in grants.items():
        present = permissions.get(sid)
        if auth == "NONE" and (present is None or not _grant_matches(present, params)):
            calls = []
            if present is not None:  # changed by hand: replace it
                calls.append(_remove(function, sid, alias))
            calls.append(
                Call("lambda", "add_permission", params, tolerate=("ResourceConflictException",))
            )
            actions.append(
                Action(
                    "lambda.add_permission",
                    "+" if present is None else "~",
                    f"url permission {function}/{sid}",
                    f"public url needs {params['Action']} for everyone",
                    (Change("Principal", None, "*"),),
                    tuple(calls),
                )
            )
        elif auth != "NONE" and present is not None:
            actions.append(
                Action(
                    "lambda.remove_permission",
                    "-",
                    f"url permission {function}" + (f":{alias}" if alias else "") + f"/{sid}",
                    gone or "url is no longer public",
                    calls=(_remove(function, sid, alias),),
                )
            )
    return actions


def _remove(function: str, sid: str, alias: str | None = None) -> Call:
    qualifier = {"Qualifier": alias} if alias else {}
    return Call(
        "lambda",
        "remove_permission",
        {"FunctionName": function, "StatementId": sid, **qualifier},
        tolerate=("ResourceNotFoundException",),
    )


def _grant_matches(statement: dict[str, Any], params: dict[str, Any]) -> bool:
    action = statement.get("Action")
    principal = statement.get("Principal")
    everyone = principal == "*" or (isinstance(principal, dict) and principal.get("AWS") == "*")
    return statement.get("Effect", "Allow") == "Allow" and action == params["Action"] and everyone


# -- the target kind's interface -------------------------------------------------------------


def plan(given: TargetInput, refresh: bool) -> TargetPlan:
    t = given.target
    pkg = given.package
    assert pkg is not None
    key = artifact_key(t.prefix, given.server, pkg.sha256)
    state = read(given) if refresh else {}
    actions = diff(
        function=t.function,
        bucket=t.bucket,
        key=key,
        sha256=pkg.sha256,
        code_sha256=pkg.code_sha256,
        architecture=pkg.architecture,
        runtime=pkg.runtime,
        handler=pkg.handler,
        role=t.role,
        memory=t.memory,
        timeout=t.timeout,
        env=given.env,
        url_auth=t.url.auth if t.url else None,
        server=given.server,
        state=state,
        tags=managed_tags(given.server, pkg.sha256, t.tags, t.alias),
        user_tags=t.tags,
        publish=t.publishes,
        alias=t.alias,
        snapstart=t.snapstart,
        layers=t.layers,
        vpc=None
        if t.vpc is None
        else {"SubnetIds": list(t.vpc.subnets), "SecurityGroupIds": list(t.vpc.security_groups)},
        ephemeral_storage=t.ephemeral_storage,
        concurrency=t.reserved_concurrency,
    )
    if not refresh:
        actions = unread(actions)
    warnings = []
    if t.url is not None and t.url.auth == "NONE":
        warnings.append(
            f"lambda {t.function}: url auth is NONE: the MCP endpoint is public, anyone "
            "who has the URL can call its tools"
        )
    if t.snapstart and t.alias is None:
        warnings.append(
            f"lambda {t.function}: snapstart applies to published versions only; invoking "
            "the function unqualified runs $LATEST without it: invoke the version in the "
            'outputs, or set alias = "live" and invoke the alias'
        )
    fn = state.get("function") or {}
    published = state.get("published") or {}
    arn = fn.get("FunctionArn")
    outputs = {
        "function_arn": arn,
        "version": published.get("Version") if t.publishes else "$LATEST",
        "alias": t.alias,
        # what platforms invoke when there is an alias (the URL is served through it too)
        "alias_arn": f"{arn}:{t.alias}" if arn and t.alias else None,
        # a URL the manifest no longer declares is deleted by this plan: not an output
        "url": (state.get("url") or {}).get("FunctionUrl") if t.url else None,
    }
    return TargetPlan(
        name=given.name,
        kind="lambda",
        actions=tuple(actions),
        connection=aws.connection(t),
        observed=observed(state) if refresh else {},
        outputs=outputs,
        warnings=tuple(warnings),
        refreshed=refresh,
        private={"remote_environment": remote_environment(state)} if refresh else {},
    )


def destroy(given: TargetInput) -> TargetPlan:
    t = given.target
    state = read(given)
    function = t.function
    actions = []
    if state.get("url") is not None:
        actions.append(
            Action(
                "lambda.delete_function_url_config",
                "-",
                f"function url {function}",
                "destroy",
                calls=(
                    Call(
                        "lambda",
                        "delete_function_url_config",
                        {"FunctionName": function},
                        tolerate=("ResourceNotFoundException",),
                    ),
                ),
            )
        )
    if state.get("function") is not None:
        actions.append(
            Action(
                "lambda.delete_function",
                "-",
                f"lambda {function}",
                "destroy",
                calls=(
                    Call(
                        "lambda",
                        "delete_function",
                        {"FunctionName": function},
                        tolerate=("ResourceNotFoundException",),
                    ),
                ),
            )
        )
    if state.get("role") is not None:
        name = auto_role_name(function)
        actions.append(
            Action(
                "iam.delete_role",
                "-",
                f"iam role {name}",
                'created by pmcp-build (role = "auto")',
                calls=(
                    Call(
                        "iam",
                        "delete_role_policy",
                        {"RoleName": name, "PolicyName": aws.LOGS_POLICY_NAME},
                        tolerate=("NoSuchEntity",),
                    ),
                    Call("iam", "delete_role", {"RoleName": name}, tolerate=("NoSuchEntity",)),
                ),
            )
        )
    return TargetPlan(
        name=given.name,
        kind="lambda",
        actions=tuple(actions),
        connection=aws.connection(t),
        observed=observed(state),
    )


# -- rollback ----------------------------------------------------------------------------------


def rollback_action(function: str, alias: str, current: str, versions: list[str]) -> Action:
    """Pure: move the alias to the newest published version older than its current one."""
    older = [
        int(v) for v in versions if v.isdigit() and current.isdigit() and int(v) < int(current)
    ]
    if not older:
        raise UserError(
            f"alias {function}:{alias} is at version {current} and there is no earlier "
            "published version to roll back to"
        )
    previous = str(max(older))
    return Action(
        "lambda.update_alias",
        "~",
        f"alias {function}:{alias}",
        f"rollback from version {current}",
        (Change("FunctionVersion", current, previous),),
        (
            Call(
                "lambda",
                "update_alias",
                {"FunctionName": function, "Name": alias, "FunctionVersion": previous},
                outputs={"alias_arn": "AliasArn"},
            ),
        ),
        {"FunctionVersion": current},
    )


def rollback(given: TargetInput) -> TargetPlan:
    t = given.target
    if not t.alias:
        raise UserError(
            f'target {given.name!r}: rollback moves an alias; set alias = "live" in '
            f"[targets.{given.name}] and apply first"
        )
    c = aws.clients(aws.connection(t))
    try:
        found = aws.absent_as_none(
            lambda: c.lam.get_alias(FunctionName=t.function, Name=t.alias),
            "ResourceNotFoundException",
        )
        if found is None:
            raise UserError(
                f"target {given.name!r}: alias {t.function}:{t.alias} does not exist yet; "
                "apply first"
            )
        versions = list_versions(c.lam, t.function)
    except aws.READ_ERRORS as exc:
        raise aws.user_error(exc, f"reading versions of lambda {t.function}") from exc
    action = rollback_action(t.function, t.alias, found["FunctionVersion"], versions)
    return TargetPlan(
        name=given.name,
        kind="lambda",
        actions=(action,),
        connection=aws.connection(t),
        outputs={"alias": t.alias, "version": action.changes[0].after},
    )
