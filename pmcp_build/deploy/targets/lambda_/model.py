"""The lambda target's two sides as frozen typed values: `DesiredFunction` (what the
manifest and the package ask for, built once) and `LambdaState` (what `read` found).
Every sub-diff is a pure function of the two; tests build both by hand."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pmcp_build.deploy import auth_env, aws
from pmcp_build.deploy.targets.common import TargetInput
from pmcp_build.manifest.model import TAG_PREFIX, LambdaTarget
from pmcp_build.manifest.secrets import Environment

MANAGED_TAG = aws.MANAGED_TAG  # what marks a function or role as pmcp-build's own
ALIAS_TAG = f"{TAG_PREFIX}alias"
DEFAULT_ARCHITECTURES = ("x86_64",)
DEFAULT_EPHEMERAL = 512


def artifact_key(prefix: str, server: str, sha256: str) -> str:
    name = f"{server}-{sha256}.zip"
    return f"{prefix.strip('/')}/{name}" if prefix.strip("/") else name


@dataclass(frozen=True)
class Vpc:
    """Subnets and security groups, sorted: Lambda reports them in any order."""

    subnets: tuple[str, ...] = ()
    security_groups: tuple[str, ...] = ()

    @classmethod
    def of(cls, subnets: Iterable[str] | None, security_groups: Iterable[str] | None) -> Vpc:
        return cls(tuple(sorted(subnets or ())), tuple(sorted(security_groups or ())))

    @property
    def empty(self) -> bool:
        return not self.subnets and not self.security_groups

    def api(self) -> dict[str, list[str]]:
        return {"SubnetIds": list(self.subnets), "SecurityGroupIds": list(self.security_groups)}


@dataclass(frozen=True)
class Config:
    """The configuration sent on every create and update (role: an ARN, or a reference
    to the role created in the same apply)."""

    runtime: str | None
    handler: str | None
    role: Any
    memory: int | None
    timeout: int | None

    def api(self) -> dict[str, Any]:
        return {
            "Runtime": self.runtime,
            "Handler": self.handler,
            "Role": self.role,
            "MemorySize": self.memory,
            "Timeout": self.timeout,
        }


@dataclass(frozen=True)
class Settings:
    """Settings sent only when set, or to put back Lambda's default."""

    snapstart: bool = False
    layers: tuple[str, ...] = ()
    vpc: Vpc = Vpc()
    ephemeral_storage: int = DEFAULT_EPHEMERAL


@dataclass(frozen=True)
class FunctionState:
    """$LATEST (or, as `LambdaState.published`, one published version) as read."""

    config: Config
    code_sha256: str | None = None
    architectures: tuple[str, ...] = DEFAULT_ARCHITECTURES
    settings: Settings = Settings()
    # Clear values: never printed or saved (`observed` keeps the keys only).
    environment: Mapping[str, str] = field(default_factory=dict, repr=False)
    arn: str | None = None
    revision: str | None = None
    version: str = "$LATEST"
    tags: Mapping[str, str] = field(default_factory=dict)
    concurrency: int | None = None

    @property
    def managed(self) -> bool:
        return self.tags.get(MANAGED_TAG) == "true"

    def runs_as_published(self, other: FunctionState) -> bool:
        """Whether `other` (a published version) is what $LATEST is: code, configuration,
        environment and settings; SnapStart not at all (a version reports
        OptimizationStatus On where $LATEST is Off)."""
        mine, theirs = self.settings, other.settings
        return (
            self.code_sha256 == other.code_sha256
            and self.architectures == other.architectures
            and self.config == other.config
            and dict(self.environment) == dict(other.environment)
            and (mine.layers, mine.vpc, mine.ephemeral_storage)
            == (theirs.layers, theirs.vpc, theirs.ephemeral_storage)
        )


@dataclass(frozen=True)
class Statement:
    """One resource-policy statement, as read."""

    sid: str
    effect: str = "Allow"
    action: Any = None
    principal: Any = None
    condition: Any = None

    def to_json(self) -> dict[str, Any]:
        return {
            "Effect": self.effect,
            "Action": self.action,
            "Principal": self.principal,
            "Condition": self.condition,
        }


@dataclass(frozen=True)
class Url:
    auth: str | None
    address: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"AuthType": self.auth, "FunctionUrl": self.address}


@dataclass(frozen=True)
class UrlPlace:
    """A URL where the manifest no longer puts one (on the unqualified function when an
    alias now serves it, or on an alias no longer declared), with our grants there."""

    qualifier: str | None
    url: Url
    grants: Mapping[str, Statement] = field(default_factory=dict)


@dataclass(frozen=True)
class PublicGrant:
    """A statement pmcp-build did not make that lets anyone invoke the function."""

    sid: str
    action: str
    qualifier: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"Sid": self.sid, "Action": self.action, "Qualifier": self.qualifier}


@dataclass(frozen=True)
class RoleState:
    """The auto role. `tags` is None when not read: a managed function that already
    runs as the role vouches for it (pmcp-build only ever points a function at an auto
    role it created or was told to adopt), which saves the GetRole call."""

    arn: str
    policy: Any = None  # the inline logs policy document, None when absent
    tags: Mapping[str, str] | None = None

    @property
    def managed(self) -> bool:
        return self.tags is None or self.tags.get(MANAGED_TAG) == "true"


@dataclass(frozen=True)
class LambdaState:
    """Everything `read` found. `LambdaState()` is "nothing exists" (and what an
    offline plan diffs against)."""

    artifact: bool = False
    bucket_missing: bool = False  # HeadBucket: 404, asked only when the artifact is absent
    function: FunctionState | None = None
    url: Url | None = None
    grants: Mapping[str, Statement] = field(default_factory=dict)  # ours, on the url
    role: RoleState | None = None
    alias_version: str | None = None  # the declared alias's version, when it exists
    published: FunctionState | None = None  # the version in service
    newest: FunctionState | None = None  # the newest version, when not the one in service
    elsewhere: tuple[UrlPlace, ...] = ()
    stale_alias: str | None = None  # an alias we made that the manifest no longer names
    public: tuple[PublicGrant, ...] = ()

    def observed(self) -> dict[str, Any]:
        """The state with environment values replaced by their keys: printable and
        saveable. (Saved plans add a salted, slow digest of the values: see saved.py.)"""
        fn = self.function
        return {
            "artifact": self.artifact,
            "function": None if fn is None else _observed_function(fn),
            "url": None if self.url is None else self.url.to_json(),
            "permissions": {sid: s.to_json() for sid, s in sorted(self.grants.items())},
            "role": None
            if self.role is None
            else {"arn": self.role.arn, "policy": self.role.policy, "tags": self.role.tags},
            "tags": None if fn is None else dict(fn.tags),
            "concurrency": None if fn is None else fn.concurrency,
            "alias": self.alias_version,
            "published": None if self.published is None else _observed_function(self.published),
            "newest": None if self.newest is None else _observed_function(self.newest),
            "elsewhere": [
                {
                    "qualifier": place.qualifier,
                    "url": place.url.to_json(),
                    "permissions": {sid: s.to_json() for sid, s in sorted(place.grants.items())},
                }
                for place in self.elsewhere
            ],
            "stale_alias": self.stale_alias,
            # Foreign grants that make the function public: a saved plan that did not see
            # one is refused (saved.py compares every observed value).
            "public": [grant.to_json() for grant in self.public],
        }

    def remote_environment(self) -> dict[str, str]:
        return {} if self.function is None else dict(self.function.environment)


def _observed_function(fn: FunctionState) -> dict[str, Any]:
    settings = fn.settings
    return {
        "Version": fn.version,
        "CodeSha256": fn.code_sha256,
        "RevisionId": fn.revision,
        "FunctionArn": fn.arn,
        "Architectures": list(fn.architectures),
        **fn.config.api(),
        "EnvironmentKeys": sorted(fn.environment),
        "SnapStart": "PublishedVersions" if settings.snapstart else "None",
        "Layers": list(settings.layers),
        "VpcConfig": settings.vpc.api(),
        "EphemeralStorage": settings.ephemeral_storage,
    }


@dataclass(frozen=True)
class DesiredFunction:
    """What one lambda target asks for, from its manifest table and the package."""

    target: str  # the manifest's target name, for messages
    function: str
    server: str
    bucket: str
    key: str | None  # the artifact's key; None when no package (destroy, rollback)
    config: Config  # role: an ARN, or "auto"
    env: Environment
    sha256: str = ""
    code_sha256: str = ""
    architecture: str = "x86_64"
    settings: Settings = Settings()
    url_auth: str | None = None  # the Function URL's AWS AuthType (oauth is NONE there)
    url_access: str | None = None  # the manifest's url.auth: NONE, AWS_IAM or oauth
    url_mode: str = ""  # who may call the URL, in one phrase for the plan's outputs
    publish: bool = False
    alias: str | None = None
    concurrency: int | None = None
    user_tags: Mapping[str, str] = field(default_factory=dict)
    adopt: bool = False

    @property
    def auto_role(self) -> bool:
        return bool(self.config.role == "auto")

    @property
    def publishes(self) -> bool:
        return self.publish or self.alias is not None

    @property
    def tags(self) -> dict[str, str]:
        """The function's tags: the manifest's, then pmcp-build's own (which win). The
        alias we manage is named in one, so that removing `alias` from the manifest
        finds the alias (and its URL) to remove."""
        return {
            **self.user_tags,
            MANAGED_TAG: "true",
            f"{TAG_PREFIX}server": self.server,
            f"{TAG_PREFIX}package": self.sha256,
            **({ALIAS_TAG: self.alias} if self.alias else {}),
        }

    @property
    def role_tags(self) -> dict[str, str]:
        # No package tag: the role outlives every package; tagged once, when created.
        return {**self.user_tags, MANAGED_TAG: "true", f"{TAG_PREFIX}server": self.server}

    @property
    def description(self) -> str:
        return f"{self.server} (pmcp-build {self.sha256[:12]})"


def desired(given: TargetInput[LambdaTarget]) -> DesiredFunction:
    """The one place manifest fields become the planner's input."""
    t, pkg = given.target, given.package
    vpc = Vpc() if t.vpc is None else Vpc.of(t.vpc.subnets, t.vpc.security_groups)
    return DesiredFunction(
        target=given.name,
        function=t.function,
        server=given.server,
        bucket=t.bucket,
        key=None if pkg is None else artifact_key(t.prefix, given.server, pkg.sha256),
        config=Config(
            runtime=None if pkg is None else pkg.runtime,
            handler=None if pkg is None else pkg.handler,
            role=t.role,
            memory=t.memory,
            timeout=t.timeout,
        ),
        env=auth_env.with_auth(given.env, t.url, f"targets.{given.name}"),
        sha256="" if pkg is None else pkg.sha256,
        code_sha256="" if pkg is None else pkg.code_sha256,
        architecture="x86_64" if pkg is None else pkg.architecture,
        settings=Settings(t.snapstart, tuple(t.layers), vpc, t.ephemeral_storage),
        url_auth=auth_env.function_url_auth_type(t.url),
        url_access=None if t.url is None else t.url.auth,
        url_mode=auth_env.auth_mode(t.url),
        publish=t.publishes,
        alias=t.alias,
        concurrency=t.reserved_concurrency,
        user_tags=dict(t.tags),
        adopt=t.adopt,
    )
