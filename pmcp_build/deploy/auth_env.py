"""Who may call a target's URL, as the deploy and `serve` carry it out (pure functions).

`url = { auth = "oauth", ... }` is not an AWS auth type: the Function URL is created
public (AuthType NONE) and the bundled runtime checks every request's bearer token
(boot/auth.py), configured through the function's environment. Nothing here is secret:
an issuer, an audience and scope names are what the server publishes anyway.
"""

from __future__ import annotations

import json

from pmcp_build.errors import UserError
from pmcp_build.manifest.model import LAMBDA_ENV_LIMIT, FunctionUrl, Manifest
from pmcp_build.manifest.secrets import Environment

# The names boot/auth.py reads (kept in step with ISSUER_ENV, AUDIENCE_ENV, SCOPES_ENV).
ISSUER_ENV = "PMCP_AUTH_ISSUER"
AUDIENCE_ENV = "PMCP_AUTH_AUDIENCE"
SCOPES_ENV = "PMCP_AUTH_SCOPES"


def auth_environment(url: FunctionUrl | None) -> dict[str, str]:
    """The variables the runtime needs to enforce the url's auth: empty unless oauth."""
    if url is None or url.auth != "oauth":
        return {}
    assert url.issuer is not None and url.audience is not None  # the model requires them
    env = {ISSUER_ENV: url.issuer, AUDIENCE_ENV: url.audience}
    if url.scopes:
        env[SCOPES_ENV] = " ".join(url.scopes)
    return env


def with_auth(env: Environment, url: FunctionUrl | None, where: str) -> Environment:
    """A target's resolved environment plus the url's auth variables (shown in clear:
    nothing secret). `where` is the target's key path, e.g. "targets.prod"."""
    extra = auth_environment(url)
    for key in extra:
        if key in env.values:
            raise UserError(
                f"{where}.environment.{key}: pmcp-build sets {key} from {where}.url "
                '(auth = "oauth"); remove it from environment'
            )
    values = {**env.values, **extra}
    size = len(json.dumps(values, separators=(",", ":")).encode())
    if size > LAMBDA_ENV_LIMIT:
        raise UserError(
            f"{where}.environment is {size} bytes with the url's OAuth settings; Lambda "
            f"allows {LAMBDA_ENV_LIMIT}. Shorten the values or move them to SSM"
        )
    return Environment(values, env.secret_keys)


def function_url_auth_type(url: FunctionUrl | None) -> str | None:
    """The Function URL's AWS AuthType: oauth is public at AWS and checked by the runtime."""
    if url is None:
        return None
    return "NONE" if url.auth == "oauth" else url.auth


def auth_mode(url: FunctionUrl | None) -> str:
    """One phrase for the plan: who may call the URL."""
    if url is None:
        return "no url (invoke only)"
    if url.auth == "oauth":
        scopes = f", scopes {' '.join(url.scopes)}" if url.scopes else ""
        return f"oauth (issuer {url.issuer}, audience {url.audience}{scopes})"
    return {"NONE": "NONE (public)", "AWS_IAM": "AWS_IAM (SigV4-signed requests)"}[url.auth]


def url_warnings(function: str, auth: str | None) -> list[str]:
    """The plan's warning for a URL that anyone may call; `auth` is the manifest's
    url.auth (not the AWS AuthType, which is NONE for oauth too)."""
    if auth == "NONE":
        return [
            f"lambda {function}: url auth is NONE: the MCP endpoint is public, anyone who has "
            'the URL can call its tools; set url = { auth = "oauth", issuer = ..., '
            "audience = ... } to require tokens (README: Who may call)"
        ]
    return []


def served_url(manifest: Manifest, target: str | None) -> FunctionUrl | None:
    """The url `serve` and `invoke` enforce: the chosen target's, else the only local
    target's (a local target is what runs on this machine)."""
    if target is not None:
        chosen = manifest.targets.get(target)
        return getattr(chosen, "url", None)
    local = [t for t in manifest.targets.values() if t.kind == "local"]
    return local[0].url if len(local) == 1 else None
