"""Reading a lambda target's remote state into a `LambdaState`: the only module of the
target that talks to AWS.

A no-op target with a URL and role = "auto" costs HeadObject, GetFunction,
GetFunctionUrlConfig, GetPolicy and GetRolePolicy (GetRole only when the function does
not already vouch for the role); publishing adds GetAlias (or ListVersionsByFunction)
and GetFunctionConfiguration of the version in service.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

from pmcp_build.deploy import aws
from pmcp_build.deploy.targets.lambda_.model import (
    ALIAS_TAG,
    DEFAULT_ARCHITECTURES,
    DEFAULT_EPHEMERAL,
    Config,
    DesiredFunction,
    FunctionState,
    LambdaState,
    PublicGrant,
    RoleState,
    Settings,
    Url,
    UrlPlace,
    Vpc,
)
from pmcp_build.deploy.targets.lambda_.role import auto_role_name
from pmcp_build.deploy.targets.lambda_.url import our_statements, public_statements

_MISSING = "ResourceNotFoundException"
_MAX_VERSION_PAGES = 100  # 50 per page: 5000 versions, more than a sane function keeps


def read(want: DesiredFunction, c: aws.Clients, verify_role: bool = False) -> LambdaState:
    """The remote state. `verify_role` reads the auto role's tags even when the
    function vouches for it (destroy deletes only a role that carries our tag)."""
    with aws.translating(f"reading state of lambda {want.function}"):
        return _read(want, c, verify_role)


def _read(want: DesiredFunction, c: aws.Clients, verify_role: bool) -> LambdaState:
    artifact = want.key is not None and aws.head_object(c.s3, want.bucket, want.key) is not None
    no_bucket = want.key is not None and not artifact and aws.bucket_missing(c.s3, want.bucket)
    found = aws.absent_as_none(lambda: c.lam.get_function(FunctionName=want.function), _MISSING)
    if found is None:
        role = _read_auto_role(c.iam, want.function, None, verify_role) if want.auto_role else None
        return LambdaState(artifact=artifact, bucket_missing=no_bucket, role=role)
    concurrency = (found.get("Concurrency") or {}).get("ReservedConcurrentExecutions")
    fn = function_state(found["Configuration"], found.get("Tags") or {}, concurrency)
    alias_version = published = newest = None
    if want.publishes:
        alias_version, published, newest = _read_versions(c.lam, want, fn)
    policies = Policies(c.lam, want.function)
    url, grants = None, {}
    # With an alias, the URL and its grants live on the alias (Qualifier).
    if alias_version is not None or not want.alias:
        where = {"FunctionName": want.function, **({"Qualifier": want.alias} if want.alias else {})}
        got = aws.absent_as_none(lambda: c.lam.get_function_url_config(**where), _MISSING)
        url = None if got is None else Url(got.get("AuthType"), got.get("FunctionUrl"))
        grants = our_statements(policies.at(want.alias))
    if want.alias:
        policies.at(None)  # a public grant on the unqualified function counts too
    elsewhere, stale = _read_elsewhere(
        c.lam, want.function, want.alias, fn.tags, url.address if url else None, policies
    )
    role = _read_auto_role(c.iam, want.function, fn, verify_role) if want.auto_role else None
    return LambdaState(
        artifact=artifact,
        bucket_missing=no_bucket,
        function=fn,
        url=url,
        grants=grants,
        role=role,
        alias_version=alias_version,
        published=published,
        newest=newest,
        elsewhere=elsewhere,
        stale_alias=stale,
        public=policies.public(),
    )


def function_state(
    config: Mapping[str, Any], tags: Mapping[str, str] | None = None, concurrency: Any = None
) -> FunctionState:
    """GetFunction's Configuration (or a version's) in the manifest's normal form."""
    vpc = config.get("VpcConfig") or {}
    return FunctionState(
        config=Config(
            runtime=config.get("Runtime"),
            handler=config.get("Handler"),
            role=config.get("Role"),
            memory=config.get("MemorySize"),
            timeout=config.get("Timeout"),
        ),
        code_sha256=config.get("CodeSha256"),
        architectures=tuple(config.get("Architectures") or DEFAULT_ARCHITECTURES),
        settings=Settings(
            snapstart=(config.get("SnapStart") or {}).get("ApplyOn") == "PublishedVersions",
            layers=tuple(layer.get("Arn") for layer in config.get("Layers") or []),
            vpc=Vpc.of(vpc.get("SubnetIds"), vpc.get("SecurityGroupIds")),
            ephemeral_storage=(config.get("EphemeralStorage") or {}).get("Size")
            or DEFAULT_EPHEMERAL,
        ),
        environment=dict((config.get("Environment") or {}).get("Variables") or {}),
        arn=config.get("FunctionArn"),
        revision=config.get("RevisionId"),
        version=str(config.get("Version") or "$LATEST"),
        tags=dict(tags or {}),
        concurrency=concurrency,
    )


class Policies:
    """Each qualifier's resource policy, read once, and the public grants seen in them."""

    def __init__(self, lam: Any, function: str) -> None:
        self._lam = lam
        self._function = function
        self._read: dict[str | None, list[dict[str, Any]]] = {}

    def at(self, qualifier: str | None) -> list[dict[str, Any]]:
        if qualifier not in self._read:
            where = {
                "FunctionName": self._function,
                **({"Qualifier": qualifier} if qualifier else {}),
            }
            policy = aws.absent_as_none(functools.partial(self._lam.get_policy, **where), _MISSING)
            self._read[qualifier] = _statements(policy)
        return self._read[qualifier]

    def public(self) -> tuple[PublicGrant, ...]:
        seen: dict[str, PublicGrant] = {}  # moto ignores Qualifier: one statement, once
        for qualifier, statements in self._read.items():
            for grant in public_statements(statements, qualifier):
                seen.setdefault(grant.sid, grant)
        return tuple(seen.values())


def _statements(policy: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    if not policy:
        return []
    try:
        statements = json.loads(policy.get("Policy") or "{}").get("Statement") or []
    except (json.JSONDecodeError, AttributeError):
        return []
    return [s for s in statements if isinstance(s, dict)]


def _read_elsewhere(
    lam: Any,
    function: str,
    alias: str | None,
    tags: Mapping[str, str],
    declared: str | None,
    policies: Policies | None = None,
) -> tuple[tuple[UrlPlace, ...], str | None]:
    """A URL left where the manifest no longer puts it: on the unqualified function
    when an alias now serves it (it would go on serving $LATEST, public if it was), or
    on the alias we made (named by our tag) that the manifest no longer declares. One
    read for a target with an alias, none for one that never had one."""
    policies = policies or Policies(lam, function)
    places: list[str | None] = [None] if alias else []
    stale, stale_alias = tags.get(ALIAS_TAG), None
    if stale and stale != alias:
        exists = aws.absent_as_none(
            lambda: lam.get_alias(FunctionName=function, Name=stale), _MISSING
        )
        if exists is not None:
            stale_alias = stale
            places.append(stale)
    found = []
    for qualifier in places:
        where = {"FunctionName": function, **({"Qualifier": qualifier} if qualifier else {})}
        url = aws.absent_as_none(functools.partial(lam.get_function_url_config, **where), _MISSING)
        if url is None or url.get("FunctionUrl") == declared:
            # The declared URL itself: each config has its own address, so one read
            # back at another qualifier is the same config (moto ignores Qualifier).
            continue
        shown = Url(url.get("AuthType"), url.get("FunctionUrl"))
        found.append(UrlPlace(qualifier, shown, our_statements(policies.at(qualifier))))
    return tuple(found), stale_alias


def _read_versions(
    lam: Any, want: DesiredFunction, latest: FunctionState
) -> tuple[str | None, FunctionState | None, FunctionState | None]:
    """The declared alias's version, the version in service (the alias's, or without
    an alias the newest), and the newest version when the alias is not on what $LATEST
    is (after a rollback: the version a plan moves the alias forward to)."""
    function = want.function
    alias_version = in_service = None
    if want.alias:
        name = want.alias
        found = aws.absent_as_none(
            lambda: lam.get_alias(FunctionName=function, Name=name), _MISSING
        )
        if found is not None:
            alias_version = in_service = str(found["FunctionVersion"])
    else:
        in_service = newest_version(list_versions(lam, function))
    published = _version(lam, function, in_service)
    newest = None
    if want.alias and published is not None and not latest.runs_as_published(published):
        top = newest_version(list_versions(lam, function))
        if top is not None and top != in_service:
            newest = _version(lam, function, top)
    return alias_version, published, newest


def _version(lam: Any, function: str, version: str | None) -> FunctionState | None:
    if version is None or not version.isdigit():
        return None
    return function_state(lam.get_function_configuration(FunctionName=function, Qualifier=version))


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


def newest_version(versions: list[str]) -> str | None:
    numbers = [int(v) for v in versions if v.isdigit()]
    return str(max(numbers)) if numbers else None


def _read_auto_role(
    iam: Any, function: str, fn: FunctionState | None, verify: bool
) -> RoleState | None:
    name = auto_role_name(function)
    role_arn = str((fn.config.role if fn else None) or "")
    if fn is not None and fn.managed and role_arn.endswith("/" + name) and not verify:
        arn, tags = role_arn, None  # the function vouches for it: no GetRole call
    else:
        found = aws.absent_as_none(lambda: iam.get_role(RoleName=name), "NoSuchEntity")
        if found is None:
            return None
        arn = found["Role"]["Arn"]
        tags = {t["Key"]: t["Value"] for t in found["Role"].get("Tags") or []}
    policy = aws.absent_as_none(
        lambda: iam.get_role_policy(RoleName=name, PolicyName=aws.LOGS_POLICY_NAME),
        "NoSuchEntity",
    )
    document = None if policy is None else aws.policy_document(policy.get("PolicyDocument"))
    return RoleState(arn, document, tags)
