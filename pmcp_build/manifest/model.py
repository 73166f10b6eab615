"""The metorial.toml models: what a user may write, and nothing else.

Every model is frozen and forbids unknown keys, so a typo is an error rather than a
silently ignored setting. Field descriptions double as the JSON Schema's help text
and as the "what is allowed" half of error messages.
"""

from __future__ import annotations

import json
import re
from pathlib import PurePosixPath
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from pmcp_build.text import UNSAFE, one_line

MANIFEST_NAME = "metorial.toml"

# Lambda's runtimes: python3.11 and older run on Amazon Linux 2, newer on AL2023.
PythonVersion = Literal["3.10", "3.11", "3.12", "3.13", "3.14"]
Architecture = Literal["arm64", "x86_64"]

ENTRYPOINT_ORDER = (
    "server.py",
    "main.py",
    "index.py",
    "app.py",
    "handler.py",
    "lambda.py",
    "mcp.py",
)

ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
_ANY_REF = re.compile(r"\$\{([^}]*)\}")
LAMBDA_ENV_LIMIT = 4096
LAMBDA_RESERVED_ENV = frozenset(
    {
        "_HANDLER",
        "_X_AMZN_TRACE_ID",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_INITIALIZATION_TYPE",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_LAMBDA_RUNTIME_API",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
    }
)


class _Model(BaseModel):
    # defer_build: one schema build at the first validation instead of one per model at
    # import (~20 ms off every command's start-up; bench/README.md).
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, defer_build=True)


def _relative_path(value: str, what: str) -> str:
    """A path inside the source or package: relative, no `..`, POSIX separators."""
    if not value or not value.strip():
        raise ValueError(f"{what} must not be empty")
    if UNSAFE.search(value):
        raise ValueError(
            f"{what} '{one_line(value)[:160]}' holds a control or bidirectional character; "
            "a path in the package must be plain text"
        )
    if "\\" in value:
        raise ValueError(f"{what} must use '/' separators, got {value!r}")
    path = PurePosixPath(value)
    if path.is_absolute() or re.match(r"^[A-Za-z]:", value):
        raise ValueError(f"{what} must be relative to the source folder, got {value!r}")
    if ".." in path.parts:
        raise ValueError(f"{what} must stay inside the source folder (no '..'), got {value!r}")
    # Normalised ("./index.py" -> "index.py", "a//b" -> "a/b") before any collision
    # check: two spellings of one path must not slip past as two entries.
    normal = path.as_posix()
    if normal in (".", ""):
        raise ValueError(f"{what} must name a file or folder, got {value!r}")
    return normal


class Server(_Model):
    """Who the server is; the name is used in function names and S3 keys."""

    name: str = Field(
        pattern=r"^[a-z0-9]([a-z0-9-]{0,46}[a-z0-9])?$",
        description="lowercase letters, digits and '-', 1-48 characters, "
        "not starting or ending with '-'",
    )
    description: str = Field(default="", max_length=256, description="one line for humans")


class Source(_Model):
    """Where the server's code comes from: a local folder or a pinned zip at a URL."""

    path: str | None = Field(
        default=None, description="folder relative to metorial.toml (default '.')"
    )
    url: str | None = Field(
        default=None,
        pattern=r"^(https?|file)://",
        description="an http(s):// or file:// URL of a zip; requires sha256",
    )
    sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="hex sha256 of the zip at url (64 lowercase hex characters)",
    )
    exclude: tuple[str, ...] = Field(
        default=(), description="glob patterns (relative to the source) left out of the package"
    )

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is None or value == ".":
            return value
        if not value.strip():
            raise ValueError("path must not be empty; use '.' for the manifest's folder")
        return value

    @model_validator(mode="after")
    def _one_origin(self) -> Source:
        if self.path is not None and self.url is not None:
            raise ValueError("set either 'path' or 'url', not both")
        if self.path is not None and (
            self.path.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", self.path)
        ):
            raise ValueError(
                f"path must be relative to the folder of metorial.toml, got {self.path!r}"
            )
        if self.url is not None and self.sha256 is None:
            raise ValueError(
                "'url' needs 'sha256' to pin the download; "
                'add sha256 = "<output of sha256sum on the zip>"'
            )
        if self.sha256 is not None and self.url is None:
            raise ValueError("'sha256' pins a 'url' download; it has no meaning with a path")
        return self


class PythonRuntime(_Model):
    """A Lambda managed python3.X runtime with the Metorial boot runtime bundled."""

    kind: Literal["python"]
    python: PythonVersion = Field(default="3.12", description="Lambda runtime python3.X")
    architecture: Architecture = Field(default="arm64", description="Lambda architecture")
    entrypoint: str | None = Field(
        default=None,
        description="the server module, e.g. 'server.py', or 'server.py:app' to name the "
        "module-level server instance to serve; detected when omitted, in the order "
        + ", ".join(ENTRYPOINT_ORDER),
    )
    command: tuple[str, ...] | None = Field(
        default=None,
        description="a stdio MCP server to run instead of an entrypoint: a console script of "
        "a listed requirement (['mcp-server-time', '--local-timezone', 'UTC']), "
        "['python', '-m', 'package'] or ['python', 'file.py'] from the source",
    )
    requirements: str | None = Field(
        default=None,
        description="the dependency source relative to the source: a requirements file, "
        "pyproject.toml, uv.lock or pylock.toml; detected when omitted, in the order "
        "uv.lock, pylock.toml, requirements.txt, pyproject.toml",
    )
    extras: tuple[str, ...] = Field(
        default=(),
        description="optional dependency groups ([project.optional-dependencies]) to ship, "
        "from pyproject.toml or uv.lock",
    )
    bytecode: bool = Field(
        default=False,
        strict=True,
        description="ship .pyc compiled with --invalidation-mode unchecked-hash "
        "(needs python3.X on the build machine); speeds up cold starts",
    )

    @field_validator("entrypoint")
    @classmethod
    def _entrypoint(cls, value: str | None) -> str | None:
        if value is None:
            return value
        path, sep, attr = value.partition(":")
        _relative_path(path, "entrypoint")
        if not path.endswith(".py"):
            raise ValueError(f"entrypoint must be a .py file, got {value!r}")
        if sep and not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", attr):
            raise ValueError(
                f"entrypoint {value!r}: after ':' comes the name of the module-level server, "
                "e.g. 'server.py:app'"
            )
        return value

    @field_validator("command")
    @classmethod
    def _command(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and (not value or not value[0].strip()):
            raise ValueError(
                "command must name what to run, e.g. ['mcp-server-time'] or "
                "['python', '-m', 'package']"
            )
        return value

    @model_validator(mode="after")
    def _entrypoint_or_command(self) -> PythonRuntime:
        if self.command is not None and self.entrypoint is not None:
            raise ValueError(
                "set either 'entrypoint' (a server module) or 'command' (a stdio server), not both"
            )
        return self

    @field_validator("requirements")
    @classmethod
    def _requirements(cls, value: str | None) -> str | None:
        return None if value is None else _relative_path(value, "requirements")


class BinaryRuntime(_Model):
    """A custom runtime (provided.al2023): an executable bootstrap or a prebuilt zip."""

    kind: Literal["binary"]
    architecture: Architecture = Field(default="arm64", description="Lambda architecture")
    artifact: str = Field(
        description="path (relative to the source) of the executable, e.g. "
        "'target/lambda/NAME/bootstrap', or of a prebuilt .zip"
    )

    @field_validator("artifact")
    @classmethod
    def _artifact(cls, value: str) -> str:
        return _relative_path(value, "artifact")


Runtime = Annotated[PythonRuntime | BinaryRuntime, Field(discriminator="kind")]


class Asset(_Model):
    """Extra files copied into the package."""

    from_: str = Field(alias="from", description="a file, folder or glob, relative to the source")
    to: str = Field(description="where it lands in the package (a path relative to its root)")

    @field_validator("from_")
    @classmethod
    def _from(cls, value: str) -> str:
        return _relative_path(value, "from")

    @field_validator("to")
    @classmethod
    def _to(cls, value: str) -> str:
        value = _relative_path(value.rstrip("/") or value, "to")
        if value.split("/")[0] == "__metorial__":
            raise ValueError("'to' may not write into __metorial__/, the bundled boot runtime")
        return value


_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")  # RFC 6749 §3.3 scope-token
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class FunctionUrl(_Model):
    """A Lambda Function URL: the server's public MCP endpoint."""

    auth: Literal["NONE", "AWS_IAM", "oauth"] = Field(
        default="AWS_IAM",
        description="'NONE' (public), 'AWS_IAM' (signed requests) or 'oauth' (bearer tokens "
        "from `issuer`, checked by the runtime)",
    )
    issuer: str | None = Field(
        default=None,
        max_length=512,
        description="with auth = 'oauth': the authorization server's issuer URL, https "
        "(http only on a loopback host), exactly as its metadata names it",
    )
    audience: str | None = Field(
        default=None,
        max_length=512,
        description="with auth = 'oauth': the `aud` tokens must carry (RFC 8707 resource), "
        "e.g. the Function URL or the API identifier the issuer uses",
    )
    scopes: tuple[str, ...] = Field(
        default=(),
        max_length=32,
        description="with auth = 'oauth': scopes every token must carry, e.g. ['mcp:tools']",
    )

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from urllib.parse import urlsplit

        url = urlsplit(value.strip())
        loopback = url.scheme == "http" and (url.hostname or "") in _LOOPBACK_HOSTS
        if url.scheme != "https" and not loopback:
            raise ValueError(
                f"issuer {value[:80]!r} must be an https:// URL (http only on a loopback "
                "host, for tests), e.g. 'https://cognito-idp.REGION.amazonaws.com/POOL_ID'"
            )
        if not url.hostname or url.query or url.fragment or url.username:
            raise ValueError(
                f"issuer {value[:80]!r} must be a plain URL: a host, an optional path, "
                "no query, fragment or user"
            )
        return value.strip()

    @field_validator("audience")
    @classmethod
    def _audience(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or any(c.isspace() for c in value.strip())):
            raise ValueError("audience must be a non-empty string without spaces")
        return None if value is None else value.strip()

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for scope in value:
            if not _SCOPE_TOKEN.fullmatch(scope):
                raise ValueError(
                    f"scope {scope[:80]!r} is not an OAuth scope (printable ASCII, no spaces, "
                    "quotes or backslashes)"
                )
        return value

    @model_validator(mode="after")
    def _oauth_keys(self) -> FunctionUrl:
        if self.auth == "oauth":
            for key in ("issuer", "audience"):
                if getattr(self, key) is None:
                    raise ValueError(
                        f"auth = 'oauth' needs '{key}': url = {{ auth = \"oauth\", issuer = "
                        '"https://...", audience = "..." }'
                    )
            return self
        for key in ("issuer", "audience", "scopes"):
            if getattr(self, key):
                raise ValueError(
                    f"'{key}' applies to auth = 'oauth' only; auth is '{self.auth}': "
                    'remove it or set auth = "oauth"'
                )
        return self


def _check_environment(env: dict[str, str]) -> dict[str, str]:
    for key, value in env.items():
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]+", key):
            raise ValueError(
                f"environment key {key[:80]!r} is not one Lambda accepts (pattern "
                "[a-zA-Z][a-zA-Z0-9_]+: a letter, then at least one letter, digit or '_')"
            )
        if key in LAMBDA_RESERVED_ENV:
            raise ValueError(f"environment key {key!r} is reserved by Lambda; rename it")
        for ref in _ANY_REF.findall(value):
            if not re.fullmatch(r"env:[A-Za-z_][A-Za-z0-9_]*", ref):
                raise ValueError(
                    f"environment.{key}: '${{{ref}}}' is not a reference pmcp-build knows; "
                    "write '${env:NAME}' to read the variable NAME at plan time"
                )
        rest = _ANY_REF.sub("", value)
        if "${" in rest:
            # It would ship to Lambda as written, the secret's name in place of its value.
            opened = rest[rest.index("${") :][:40]
            raise ValueError(
                f"environment.{key}: '{one_line(opened)}' is not closed; write "
                "'${env:NAME}' (with the closing '}') to read the variable NAME at plan time"
            )
    # Lambda counts the JSON of the whole map; references are counted as written
    # here and checked again once resolved.
    size = len(json.dumps(env, separators=(",", ":")).encode())
    if size > LAMBDA_ENV_LIMIT:
        raise ValueError(
            f"environment is {size} bytes; Lambda allows {LAMBDA_ENV_LIMIT} bytes in all. "
            "Move large values to an asset or to SSM / Secrets Manager"
        )
    return env


# AWS tag rules (Lambda and IAM alike): at most 50 tags per resource, keys 1-128 and
# values 0-256 characters of letters, digits, spaces and _ . : / = + - @, and no key
# starting with "aws:". pmcp-build's own three tags count against the 50.
TAG_PREFIX = "pmcp-build:"
MAX_USER_TAGS = 47
_TAG_CHARS = re.compile(r"[\w .:/=+\-@]*", re.UNICODE)


def _check_tags(tags: dict[str, str]) -> dict[str, str]:
    if len(tags) > MAX_USER_TAGS:
        raise ValueError(
            f"{len(tags)} tags; AWS allows 50 per resource and pmcp-build sets 3 of them, "
            f"so at most {MAX_USER_TAGS}"
        )
    for key, value in tags.items():
        if not 1 <= len(key) <= 128 or not _TAG_CHARS.fullmatch(key):
            raise ValueError(
                f"tag key {key!r} must be 1-128 characters of letters, digits, spaces "
                "and _ . : / = + - @"
            )
        if key.lower().startswith("aws:"):
            raise ValueError(f"tag key {key!r}: the 'aws:' prefix is reserved by AWS")
        if key.startswith(TAG_PREFIX):
            raise ValueError(f"tag key {key!r}: the {TAG_PREFIX!r} prefix is pmcp-build's own")
        if len(value) > 256 or not _TAG_CHARS.fullmatch(value):
            raise ValueError(
                f"tags.{key}: the value must be at most 256 characters of letters, digits, "
                "spaces and _ . : / = + - @"
            )
    return tags


_FUNCTION_NAME = r"^[A-Za-z0-9_-]{1,64}$"
# Lambda's documented forms: a layer version ARN (LayerVersionArn, at most 140
# characters), subnet and security group ids of 8 or 17 hex digits, at most 16 subnets
# and 5 security groups per function, at most 5 layers.
_LAYER_ARN = r"arn:[a-zA-Z0-9-]+:lambda:[a-zA-Z0-9-]+:\d{12}:layer:[a-zA-Z0-9_-]+:[0-9]+"
MAX_LAYERS = 5
_SUBNET = r"subnet-([0-9a-f]{8}|[0-9a-f]{17})"
_SECURITY_GROUP = r"sg-([0-9a-f]{8}|[0-9a-f]{17})"


def _check_ids(
    value: tuple[str, ...], pattern: str, what: str, example: str, most: int
) -> tuple[str, ...]:
    if not 1 <= len(value) <= most:
        raise ValueError(
            f"{len(value)} {what} ids; a VPC function needs 1 to {most} (Lambda's limit)"
        )
    for item in value:
        if not re.fullmatch(pattern, item):
            raise ValueError(f"{item[:80]!r} is not a {what} id ({example}: 8 or 17 hex digits)")
    if len(set(value)) != len(value):
        raise ValueError(f"a {what} id is listed twice")
    return value


class Vpc(_Model):
    """Subnets and security groups the function's network interfaces are placed in."""

    subnets: tuple[str, ...] = Field(
        json_schema_extra={"minItems": 1, "maxItems": 16},
        description="subnet ids (subnet-0123abcd), 1-16",
    )
    security_groups: tuple[str, ...] = Field(
        json_schema_extra={"minItems": 1, "maxItems": 5},
        description="security group ids (sg-0123abcd), 1-5",
    )

    @field_validator("subnets")
    @classmethod
    def _subnets(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _check_ids(value, _SUBNET, "subnet", "subnet-0123abcd", 16)

    @field_validator("security_groups")
    @classmethod
    def _groups(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _check_ids(value, _SECURITY_GROUP, "security group", "sg-0123abcd", 5)


# IAM's rules for a role (CreateRole): a name of 1-64 letters, digits and _+=,.@-; a
# path "/" or "/.../" of printable ASCII ('!' to '~'), at most 512 characters.
_ROLE_NAME = re.compile(r"[A-Za-z0-9_+=,.@-]{1,64}")
_ROLE_PATH = re.compile(r"/([!-~]*/)?")


def check_role_arn(arn: str) -> str:
    if arn == "auto":
        return arn
    path, _, name = ("/" + arn.split(":role/", 1)[1]).rpartition("/")
    path += "/"
    if len(name) > 64:
        raise ValueError(
            f"the role name in {one_line(arn)[:160]!r} is {len(name)} characters; IAM role "
            "names are at most 64"
        )
    bad = next((c for c in name if not _ROLE_NAME.fullmatch(c)), None)
    if not name or bad is not None:
        shown = "nothing" if bad is None else f"'{one_line(bad)}'"
        raise ValueError(
            f"the role name in '{one_line(arn)[:160]}' holds {shown}; IAM role names are "
            "1-64 letters, digits and _+=,.@- (no spaces)"
        )
    if len(path) > 512 or not _ROLE_PATH.fullmatch(path):
        raise ValueError(
            f"the role path in '{one_line(arn)[:160]}' is not one IAM accepts (printable "
            "ASCII, no spaces, at most 512 characters)"
        )
    return arn


def layer_region(arn: str) -> str:
    return arn.split(":")[3]


def check_layer_regions(layers: tuple[str, ...], region: str, source: str) -> None:
    """Lambda attaches only layers of the function's own region."""
    for index, arn in enumerate(layers):
        if layer_region(arn) != region:
            raise ValueError(
                f"layers[{index}] {arn!r} is in {layer_region(arn)}, but the function is "
                f"deployed to {region} ({source}); Lambda only uses layers of the "
                "function's region: publish the layer there"
            )


_BUCKET = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
# Region names as AWS forms them: a partition-area prefix, a direction, a number
# (eu-west-1, us-gov-east-1, ap-southeast-5, cn-north-1, us-isob-east-1).
_REGION = (
    r"^(us|eu|ap|sa|ca|me|af|il|mx|cn|us-gov|us-iso|us-isob|eu-isoe|us-isof)"
    r"-(north|south|east|west|central|northeast|northwest|southeast|southwest)-\d{1,2}$"
)
S3_KEY_LIMIT = 1024  # bytes, S3's limit on an object key


def check_bucket_name(name: str) -> str:
    """S3's general purpose bucket naming rules, each with its own message.
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html"""
    rules = [
        (3 <= len(name) <= 63, "must be 3 to 63 characters long"),
        (
            re.fullmatch(r"[a-z0-9.-]+", name) is not None,
            "may only hold lowercase letters, digits, '.' and '-'",
        ),
        (name[:1].isalnum() and name[-1:].isalnum(), "must begin and end with a letter or digit"),
        (".." not in name, "must not contain two adjacent periods"),
        (".-" not in name and "-." not in name, "must not have '-' next to '.'"),
        (
            re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}", name) is None,
            "must not be formatted as an IP address",
        ),
        (
            not name.startswith(("xn--", "sthree-", "amzn-s3-demo-")),
            "must not start with 'xn--', 'sthree-' or 'amzn-s3-demo-' (reserved by S3)",
        ),
        (
            not name.endswith(("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")),
            "must not end with '-s3alias', '--ol-s3', '.mrap', '--x-s3' or '--table-s3' "
            "(reserved by S3)",
        ),
    ]
    for ok, rule in rules:
        if not ok:
            raise ValueError(f"bucket name {name[:80]!r} {rule} (S3 bucket naming rules)")
    return name


class _AwsTarget(_Model):
    region: str | None = Field(
        default=None,
        pattern=_REGION,
        description="AWS region, e.g. 'eu-west-1'; default: AWS_REGION or the profile's",
    )
    profile: str | None = Field(default=None, description="AWS profile name (default chain)")
    endpoint_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="custom AWS endpoint (LocalStack, moto); default: AWS_ENDPOINT_URL",
    )
    bucket: str = Field(pattern=_BUCKET, description="S3 bucket name (3-63 chars, lowercase)")

    @field_validator("bucket", mode="before")
    @classmethod
    def _bucket(cls, value: object) -> object:
        return check_bucket_name(value) if isinstance(value, str) else value


class LambdaTarget(_AwsTarget):
    """A Lambda function deployed from a content-addressed S3 artifact."""

    kind: Literal["lambda"]
    function: str = Field(
        pattern=_FUNCTION_NAME, description="function name: letters, digits, '-', '_', max 64"
    )
    prefix: str = Field(
        default="",
        pattern=r"^([A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*)?$",
        description="S3 key prefix for artifacts, e.g. 'builds/chinook' (no leading '/')",
    )
    role: str = Field(
        default="auto",
        pattern=r"^(auto|arn:aws[a-z-]*:iam::\d{12}:role/.+)$",
        description="'auto' (a basic execution role is created) or an IAM role ARN (the "
        "role name 1-64 letters, digits and _+=,.@-; an optional /path/)",
    )
    memory: int = Field(default=512, strict=True, ge=128, le=10240, description="MB, 128-10240")
    timeout: int = Field(default=30, strict=True, ge=1, le=900, description="seconds, 1-900")
    url: FunctionUrl | None = Field(default=None, description="optional Function URL")
    environment: dict[str, str] = Field(
        default_factory=dict,
        description="variables for the function; '${env:NAME}' is read at plan time and "
        "kept secret",
    )
    publish: bool = Field(
        default=False,
        strict=True,
        description="publish a version when code or configuration changed",
    )
    alias: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]{1,128}$",
        description="an alias (e.g. 'live') moved to each published version; implies "
        "publish; the URL is served through it",
    )
    snapstart: bool = Field(
        default=False,
        strict=True,
        description="Lambda SnapStart on published versions (python 3.12+, /tmp 512 MB); "
        "implies publish; with a url, needs an alias",
    )
    layers: tuple[str, ...] = Field(
        default=(),
        json_schema_extra={"maxItems": MAX_LAYERS},
        description=f"layer version ARNs (arn:aws:lambda:REGION:ACCOUNT:layer:NAME:VERSION), "
        f"at most {MAX_LAYERS}, applied in this order",
    )
    vpc: Vpc | None = Field(
        default=None,
        description="run inside a VPC: { subnets = [...], security_groups = [...] }",
    )
    reserved_concurrency: int | None = Field(
        default=None,
        strict=True,
        ge=0,
        description="reserved concurrent executions (0 stops all invocations); unset: "
        "the account's unreserved pool",
    )
    ephemeral_storage: int = Field(
        default=512, strict=True, ge=512, le=10240, description="/tmp size in MB, 512-10240"
    )
    tags: dict[str, str] = Field(
        default_factory=dict,
        description="tags for the function and its auto role, merged with pmcp-build's own "
        f"('{TAG_PREFIX}managed', '{TAG_PREFIX}server', '{TAG_PREFIX}package'); "
        f"at most {MAX_USER_TAGS}",
    )
    adopt: bool = Field(
        default=False,
        strict=True,
        description=f"take over an existing function (and auto role) that pmcp-build did not "
        f"create: the plan tags it '{TAG_PREFIX}managed'; without it such a target is refused",
    )

    @field_validator("environment")
    @classmethod
    def _environment(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_environment(value)

    @field_validator("role")
    @classmethod
    def _role(cls, value: str) -> str:
        return check_role_arn(value)

    @model_validator(mode="after")
    def _layers_here(self) -> LambdaTarget:
        if self.region is not None:
            check_layer_regions(self.layers, self.region, "the target's region")
        return self

    @field_validator("alias")
    @classmethod
    def _alias(cls, value: str | None) -> str | None:
        if value is not None and value.isdigit():
            raise ValueError(f"alias {value!r} is a number, which names a version; use a word")
        return value

    @property
    def publishes(self) -> bool:
        return self.publish or self.alias is not None or self.snapstart

    @field_validator("layers")
    @classmethod
    def _layers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(value) > MAX_LAYERS:
            raise ValueError(
                f"{len(value)} layers; Lambda allows at most {MAX_LAYERS} per function"
            )
        seen: set[str] = set()
        for arn in value:
            if len(arn) > 140 or not re.fullmatch(_LAYER_ARN, arn):
                raise ValueError(
                    f"{arn[:160]!r} is not a layer version ARN "
                    "(arn:aws:lambda:REGION:ACCOUNT:layer:NAME:VERSION, at most 140 characters)"
                )
            layer = arn.rsplit(":", 1)[0]
            if layer in seen:  # Lambda refuses two versions of one layer too
                raise ValueError(f"layer {layer!r} is listed twice; keep one version of it")
            seen.add(layer)
        return value

    @model_validator(mode="after")
    def _snapstart(self) -> LambdaTarget:
        if self.snapstart and self.ephemeral_storage > 512:
            raise ValueError(
                f"snapstart = true with ephemeral_storage = {self.ephemeral_storage}: Lambda "
                "SnapStart does not support more than 512 MB of /tmp; remove one of them"
            )
        if self.snapstart and self.url is not None and self.alias is None:
            # A Function URL serves an alias or $LATEST (never a version number), and
            # $LATEST is never restored from a snapshot.
            raise ValueError(
                'snapstart = true with a url needs an alias (e.g. alias = "live"): a '
                "Function URL serves an alias or $LATEST, and $LATEST never uses SnapStart"
            )
        return self

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_tags(value)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        # The artifact key is PREFIX/NAME-SHA256.zip: keep room for the name and sha.
        room = S3_KEY_LIMIT - 48 - 1 - 64 - 5
        if len(value.encode()) > room:
            raise ValueError(
                f"prefix is {len(value.encode())} bytes; S3 keys stop at {S3_KEY_LIMIT} bytes "
                f"and the artifact name needs the rest: keep it under {room}"
            )
        return value


class S3Target(_AwsTarget):
    """Upload the package only, at a fixed key."""

    kind: Literal["s3"]
    key: str = Field(
        pattern=r"^[^/].*\.zip$", description="object key ending in .zip, e.g. 'builds/lambda.zip'"
    )

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        if len(value.encode()) > S3_KEY_LIMIT:
            raise ValueError(
                f"key is {len(value.encode())} bytes; S3 object keys stop at {S3_KEY_LIMIT}"
            )
        return value


class LocalTarget(_Model):
    """No cloud: deploys into .pmcp/deployments/<target>/ for `pmcp-build serve`."""

    kind: Literal["local"]
    url: FunctionUrl | None = Field(
        default=None,
        description="what `serve` enforces, as the Function URL would: "
        "{ auth = 'oauth', issuer, audience, scopes } makes it check bearer tokens",
    )

    @field_validator("url")
    @classmethod
    def _local_url(cls, value: FunctionUrl | None) -> FunctionUrl | None:
        if value is not None and value.auth == "AWS_IAM":
            raise ValueError(
                "auth 'AWS_IAM' cannot be checked by `serve` (no SigV4 locally): "
                'use auth = "oauth" or "NONE", or drop url'
            )
        return value


Target = Annotated[LambdaTarget | S3Target | LocalTarget, Field(discriminator="kind")]


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


class Manifest(_Model):
    """The whole of metorial.toml."""

    server: Server
    source: Source = Field(default_factory=Source)
    runtime: Runtime
    assets: tuple[Asset, ...] = ()
    targets: dict[str, Target] = Field(default_factory=dict)

    @field_validator("targets")
    @classmethod
    def _target_names(cls, value: dict[str, Target]) -> dict[str, Target]:
        for name in value:
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,31}", name):
                raise ValueError(
                    f"target name {name!r} must be lowercase letters, digits, '-' or '_' (max 32)"
                )
        return value

    @field_validator("targets")
    @classmethod
    def _one_target_a_function(cls, value: dict[str, Target]) -> dict[str, Target]:
        # Two targets on one function would overwrite each other's code and settings on
        # every apply, and destroying one would delete the other.
        seen: dict[tuple[str | None, ...], str] = {}
        for name, target in value.items():
            if not isinstance(target, LambdaTarget):
                continue
            where = (target.function, target.region, target.profile, target.endpoint_url)
            if where in seen:
                raise ValueError(
                    f"targets {seen[where]!r} and {name!r} both deploy function "
                    f"{target.function!r} (same region and account settings); give each "
                    "lambda target its own function"
                )
            seen[where] = name
        return value

    @field_validator("targets")
    @classmethod
    def _snapstart_runtime(
        cls, value: dict[str, Target], info: ValidationInfo
    ) -> dict[str, Target]:
        # Lambda SnapStart runs on the managed python3.12+ runtimes (either architecture),
        # never on an OS-only runtime such as provided.al2023.
        runtime = info.data.get("runtime")
        for name, target in value.items():
            if not isinstance(target, LambdaTarget) or not target.snapstart:
                continue
            if isinstance(runtime, BinaryRuntime):
                raise ValueError(
                    f"target {name!r}: snapstart = true, but Lambda SnapStart does not support "
                    "custom runtimes (provided.al2023, what a binary runs on); remove snapstart"
                )
            if isinstance(runtime, PythonRuntime) and _version(runtime.python) < (3, 12):
                raise ValueError(
                    f"target {name!r}: snapstart = true needs python 3.12 or later (Lambda "
                    f'SnapStart\'s runtimes); runtime.python is "{runtime.python}": set '
                    'python = "3.12" or remove snapstart'
                )
        return value

    @field_validator("targets")
    @classmethod
    def _oauth_runtime(cls, value: dict[str, Target], info: ValidationInfo) -> dict[str, Target]:
        # The bundled python runtime checks the tokens; a binary's Function URL would be
        # public (AuthType NONE) with nothing checking them.
        if not isinstance(info.data.get("runtime"), BinaryRuntime):
            return value
        for name, target in value.items():
            url = getattr(target, "url", None)
            if url is not None and url.auth == "oauth":
                raise ValueError(
                    f"target {name!r}: url auth = 'oauth' is enforced by the python runtime; "
                    'a binary server must check tokens itself: use auth = "AWS_IAM" or '
                    '"NONE"'
                )
        return value

    @field_validator("assets")
    @classmethod
    def _assets_unique(cls, value: tuple[Asset, ...], info: ValidationInfo) -> tuple[Asset, ...]:
        seen: dict[str, int] = {}
        for index, asset in enumerate(value):
            if asset.to in seen:
                raise ValueError(
                    f"assets[{index}] and assets[{seen[asset.to]}] both write to {asset.to!r}; "
                    "give each asset its own 'to'"
                )
            seen[asset.to] = index
            if asset.to == "bootstrap" and isinstance(info.data.get("runtime"), BinaryRuntime):
                raise ValueError(
                    f"assets[{index}] writes 'bootstrap', which the binary runtime owns"
                )
        return value
