"""Who may call over HTTP: the runtime as an OAuth 2.1 resource server (MCP authorization).

pmcp-build sets PMCP_AUTH_ISSUER, PMCP_AUTH_AUDIENCE and PMCP_AUTH_SCOPES (space separated)
in the function's environment from `url = { auth = "oauth", ... }`. With them, every HTTP
request (Function URL, API Gateway) needs a bearer JWT that the issuer signed (its JWKS,
found through its RFC 8414 or OpenID metadata), for this audience (RFC 8707: `aud`), in
date (`exp`, `nbf`, `iat`, with a small skew) and carrying the scopes; otherwise it is
answered 401 (403 for missing scopes) with the `WWW-Authenticate` header the MCP
authorization spec asks for, naming the RFC 9728 Protected Resource Metadata this module
serves at /.well-known/oauth-protected-resource. Without them nothing is checked here (the
Function URL's own auth type, NONE or AWS_IAM, decides). The platform path (an `action`
through Invoke) never comes here: IAM already decides who may invoke.

From the mcp SDK: the TokenVerifier protocol and its AccessToken, the Protected Resource
Metadata model, and the client's own list of metadata URLs to try for an issuer. Its
Starlette middleware and routes do not fit: they need a fixed resource URL, while a
Function URL is only known from the request that reaches it.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jwt
    from mcp.server.auth.provider import AccessToken

ISSUER_ENV = "PMCP_AUTH_ISSUER"
AUDIENCE_ENV = "PMCP_AUTH_AUDIENCE"
SCOPES_ENV = "PMCP_AUTH_SCOPES"

WELL_KNOWN = "/.well-known/oauth-protected-resource"
# Asymmetric algorithms only: a JWKS holds public keys, and "none" or an HMAC "signed"
# with a public key must never pass.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
LEEWAY = 60  # seconds of clock skew allowed on exp / nbf / iat
FETCH_TIMEOUT = 5.0
FETCH_LIMIT = 1 << 20  # bytes of a metadata or JWKS document
# The JWKS is kept for its Cache-Control max-age, within these bounds (no header: an hour).
MIN_CACHE, DEFAULT_CACHE, MAX_CACHE = 60.0, 3600.0, 86400.0
# A token with an unknown `kid` refetches the JWKS (a key rotation), at most this often:
# otherwise anyone could make every request fetch it by inventing key ids.
REFRESH_COOLDOWN = 30.0
# After a failed fetch, requests are refused at once for this long (not each made to wait
# out the timeout again), and the failure is logged once for the lot.
RETRY_AFTER = 10.0
_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


@dataclass(frozen=True)
class Settings:
    issuer: str
    audience: str
    scopes: tuple[str, ...] = ()


def settings_from(env: Mapping[str, str]) -> Settings | None:
    """The resource server's settings from the function's environment; None: no OAuth."""
    issuer = env.get(ISSUER_ENV, "").strip()
    if not issuer:
        return None
    # An empty audience matches no token: misconfigured is closed, never open.
    audience = env.get(AUDIENCE_ENV, "").strip()
    return Settings(issuer, audience, tuple(env.get(SCOPES_ENV, "").split()))


class Refused(Exception):
    """A token that is not good enough: 401 invalid_token, or 403 insufficient_scope."""

    def __init__(self, description: str, status: int = 401) -> None:
        super().__init__(description)
        self.description = description
        self.status = status
        self.error = "insufficient_scope" if status == 403 else "invalid_token"


class KeysUnavailable(Exception):
    """The issuer's metadata or JWKS cannot be had: every token is refused (fail closed)."""


# -- fetching the issuer's documents ------------------------------------------------------

Fetch = Callable[[str], tuple[int, Any, Mapping[str, str]]]


def fetch_json(url: str) -> tuple[int, Any, Mapping[str, str]]:
    """GET `url`: (status, the decoded JSON or None, headers); OSError when unreachable."""
    request = urllib.request.Request(url, headers={"accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT) as reply:
            raw = reply.read(FETCH_LIMIT + 1)
            status, headers = int(reply.status), dict(reply.headers.items())
    except urllib.error.HTTPError as exc:
        return exc.code, None, dict(exc.headers.items()) if exc.headers else {}
    if len(raw) > FETCH_LIMIT:
        return status, None, headers
    try:
        return status, json.loads(raw), headers
    except ValueError:
        return status, None, headers


def max_age(headers: Mapping[str, str]) -> float:
    """How long a response may be kept, from its Cache-Control, within MIN..MAX_CACHE."""
    control = next((v for k, v in headers.items() if k.lower() == "cache-control"), None)
    if control is None:
        return DEFAULT_CACHE
    seconds = 0.0  # no-store, no-cache, or no max-age: kept the least time allowed
    for part in control.lower().split(","):
        name, _, value = part.strip().partition("=")
        if name in ("max-age", "s-maxage") and value.strip('"').isdigit():
            seconds = float(value.strip('"'))
            break
    return min(max(seconds, MIN_CACHE), MAX_CACHE)


def _same_issuer(a: str, b: str) -> bool:
    # Exact, as RFC 8414 and RFC 7519 compare, but for one trailing slash (Auth0 writes
    # its issuer with one; people copy it without).
    return a.rstrip("/") == b.rstrip("/")


def discover_jwks_uri(issuer: str, fetch: Fetch = fetch_json) -> str:
    """The issuer's jwks_uri from its RFC 8414 or OpenID Connect metadata, tried in the
    order the mcp SDK's own client tries them; the metadata must name the same issuer."""
    from mcp.client.auth.utils import build_oauth_authorization_server_metadata_discovery_urls

    problems = []
    for url in build_oauth_authorization_server_metadata_discovery_urls(issuer, issuer):
        try:
            status, doc, _ = fetch(url)
        except OSError as exc:
            problems.append(f"{url}: {exc}")
            continue
        if status != 200 or not isinstance(doc, dict):
            problems.append(f"{url}: HTTP {status}")
            continue
        if not _same_issuer(str(doc.get("issuer", "")), issuer):
            problems.append(f"{url} names issuer {doc.get('issuer')!r}")
            continue
        jwks_uri = doc.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not _secure(jwks_uri):
            problems.append(f"{url} has no https jwks_uri")
            continue
        return jwks_uri
    raise KeysUnavailable("no authorization server metadata: " + "; ".join(problems))


def _secure(url: str) -> bool:
    if url.startswith("https://"):
        return True
    host = url.removeprefix("http://").split("/", 1)[0].rsplit(":", 1)[0]
    return url.startswith("http://") and host in _LOOPBACK


# -- the key set -----------------------------------------------------------------------------


class KeySet:
    """The issuer's signing keys: fetched at the first token of the container, kept for
    the JWKS response's Cache-Control max-age, refetched early for an unknown `kid`."""

    def __init__(
        self, issuer: str, fetch: Fetch = fetch_json, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.issuer, self.fetch, self.clock = issuer, fetch, clock
        self.jwks_uri: str | None = None
        self.keys: dict[str, jwt.PyJWK] = {}
        self.algorithms: dict[str, str] = {}  # kid -> the alg its JWK declares, if any
        self.fetches = 0  # JWKS downloads so far (what the cache saves is visible in tests)
        self._expires = float("-inf")
        self._refreshed = float("-inf")  # the last refetch an unknown kid caused
        self._failed: tuple[float, str] | None = None
        self._lock = threading.Lock()

    def key(self, kid: str | None) -> jwt.PyJWK:
        with self._lock:
            now = self.clock()
            stale = now >= self._expires
            if stale:
                self._load(now)
            found = self._find(kid)
            if found is None and not stale and now - self._refreshed >= REFRESH_COOLDOWN:
                self._refreshed = now
                self._load(now)
                found = self._find(kid)
        if found is None:
            raise Refused(f"the token's signing key {kid!r} is not in the issuer's JWKS")
        return found

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is not None:
            return self.keys.get(kid)
        # No kid: acceptable only when the set leaves no doubt about the key.
        return next(iter(self.keys.values())) if len(self.keys) == 1 else None

    def _load(self, now: float) -> None:
        if self._failed is not None and now - self._failed[0] < RETRY_AFTER:
            raise KeysUnavailable(self._failed[1])
        try:
            self.keys, self.algorithms, ttl = self._download()
        except KeysUnavailable as exc:
            self._failed = (now, str(exc))
            print(f"metorial auth: refusing tokens: {exc}", file=sys.stderr, flush=True)
            raise
        self._failed = None
        self._expires = now + ttl

    def _download(self) -> tuple[dict[str, jwt.PyJWK], dict[str, str], float]:
        import jwt

        if self.jwks_uri is None:  # once per container: metadata rarely moves
            self.jwks_uri = discover_jwks_uri(self.issuer, self.fetch)
        try:
            status, doc, headers = self.fetch(self.jwks_uri)
        except OSError as exc:
            raise KeysUnavailable(f"cannot fetch the JWKS {self.jwks_uri}: {exc}") from exc
        self.fetches += 1
        if status != 200 or not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise KeysUnavailable(f"the JWKS {self.jwks_uri} answered HTTP {status}, not a key set")
        keys: dict[str, jwt.PyJWK] = {}
        algorithms: dict[str, str] = {}
        for entry in doc["keys"]:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue  # an encryption key signs nothing
            try:
                key = jwt.PyJWK(entry)
            except (jwt.PyJWKError, jwt.InvalidKeyError):
                continue  # a key type this runtime cannot use; the others still work
            kid = str(entry.get("kid", ""))
            keys[kid] = key
            if isinstance(entry.get("alg"), str):
                algorithms[kid] = entry["alg"]
        return keys, algorithms, max_age(headers)


# -- checking a token ------------------------------------------------------------------------


def scopes_of(claims: Mapping[str, Any]) -> list[str]:
    """Granted scopes: `scope` (RFC 9068, space separated) or `scp` (Entra ID, Okta)."""
    granted = claims.get("scope", claims.get("scp", ""))
    if isinstance(granted, str):
        return granted.split()
    return [str(s) for s in granted] if isinstance(granted, list) else []


def audiences_of(claims: Mapping[str, Any]) -> list[str]:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list):
        return [str(a) for a in aud]
    # Cognito's access tokens carry no `aud`: the app client they were issued to is their
    # audience (AWS: "verify that client_id matches"); its ID tokens are refused below.
    client = claims.get("client_id")
    return [client] if isinstance(client, str) else []


class JwtTokenVerifier:
    """The SDK's TokenVerifier (mcp.server.auth.provider) for JWT access tokens."""

    def __init__(self, settings: Settings, keys: KeySet | None = None) -> None:
        self.settings = settings
        self.keys = keys or KeySet(settings.issuer)

    async def verify_token(self, token: str) -> AccessToken | None:
        """The protocol's answer: None for any refusal. A JWKS fetch, when one is due,
        blocks the loop (up to FETCH_TIMEOUT): the runtime itself calls check()."""
        try:
            return self.check(token)
        except (Refused, KeysUnavailable):
            return None

    def check(self, token: str) -> AccessToken:
        """The token's AccessToken; Refused (or KeysUnavailable) when it may not call."""
        import jwt
        from mcp.server.auth.provider import AccessToken

        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:  # not a JWT, or a malformed header (a kid not a string)
            raise Refused("the bearer token is not a JWT") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise Refused(f"the token's algorithm {alg!r} is not accepted")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise Refused("the token's kid is not a string")
        key = self.keys.key(kid)
        declared = self.keys.algorithms.get(kid or "")
        if declared is not None and declared != alg:  # RFC 7517 §4.4: the key's own alg
            raise Refused(f"the token's algorithm {alg} is not its key's ({declared})")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                leeway=LEEWAY,
                options={"require": ["exp"], "verify_aud": False, "verify_iss": False},
            )
        except jwt.ExpiredSignatureError:
            raise Refused("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise Refused("the token is not valid yet") from None
        except (jwt.PyJWTError, ValueError, TypeError) as exc:  # a key of another type too
            raise Refused(f"the token is not valid: {exc}") from None
        self._check_claims(claims)
        return AccessToken(
            token=token,
            client_id=str(claims.get("client_id") or claims.get("azp") or claims.get("sub") or ""),
            scopes=scopes_of(claims),
            expires_at=int(claims["exp"]),
            resource=self.settings.audience,
            subject=str(claims["sub"]) if "sub" in claims else None,
            claims=claims,
        )

    def _check_claims(self, claims: Mapping[str, Any]) -> None:
        wanted = self.settings
        if not _same_issuer(str(claims.get("iss", "")), wanted.issuer):
            raise Refused(f"the token was issued by {claims.get('iss')!r}, not {wanted.issuer}")
        if claims.get("token_use", "access") != "access":
            raise Refused("the token is not an access token")
        audience = wanted.audience.rstrip("/")
        if not audience or audience not in [a.rstrip("/") for a in audiences_of(claims)]:
            raise Refused(f"the token is not for this server (audience {wanted.audience})")
        missing = [s for s in wanted.scopes if s not in scopes_of(claims)]
        if missing:
            raise Refused("the token lacks the scope " + " ".join(missing), status=403)


# -- the HTTP side ---------------------------------------------------------------------------

Reply = tuple[int, dict[str, str], bytes]


class Gate:
    """What an HTTP request meets before the MCP server: the metadata, or a refusal."""

    def __init__(self, settings: Settings, verifier: JwtTokenVerifier | None = None) -> None:
        self.settings = settings
        self.verifier = verifier or JwtTokenVerifier(settings)

    def answer(self, method: str, path: str, headers: Mapping[str, str]) -> Reply | None:
        origin = _origin(headers)
        if path == WELL_KNOWN or path.startswith(WELL_KNOWN + "/"):
            return self._metadata(method, origin + _resource_path(path[len(WELL_KNOWN) :]))
        if method.upper() == "OPTIONS":
            return None  # a CORS preflight never carries credentials
        resource_path = _resource_path(path)
        token = _bearer(headers)
        if token is None:
            return self._challenge(origin, resource_path, None)
        try:
            self.verifier.check(token)
        except Refused as refusal:
            return self._challenge(origin, resource_path, refusal)
        except KeysUnavailable:
            return _json_reply(
                503,
                {"error": "temporarily_unavailable", "error_description": "cannot check tokens"},
                {"retry-after": str(int(RETRY_AFTER))},
            )
        except Exception as exc:  # a fault here refuses (closed), logged, never lets through
            print(f"metorial auth: token check failed: {exc!r}", file=sys.stderr, flush=True)
            return _json_reply(500, {"error": "server_error"}, {})
        return None

    def _metadata(self, method: str, resource: str) -> Reply:
        cors = {"access-control-allow-origin": "*", "access-control-allow-methods": "GET, OPTIONS"}
        if method.upper() == "OPTIONS":
            return 204, {**cors, "access-control-allow-headers": "mcp-protocol-version"}, b""
        if method.upper() != "GET":
            return _json_reply(405, {"error": "method_not_allowed"}, {"allow": "GET, OPTIONS"})
        from mcp.shared.auth import ProtectedResourceMetadata

        metadata = ProtectedResourceMetadata.model_validate(
            {
                "resource": resource,
                "authorization_servers": [self.settings.issuer],
                "scopes_supported": list(self.settings.scopes) or None,
            }
        )
        body = metadata.model_dump_json(exclude_none=True).encode()
        headers = {"content-type": "application/json", "cache-control": "public, max-age=3600"}
        return 200, {**headers, **cors}, body

    def _challenge(self, origin: str, resource_path: str, refusal: Refused | None) -> Reply:
        """401 / 403 with RFC 6750's header, naming the metadata (RFC 9728 §5.1) and the
        scopes to ask for; no error code when the request carried no token (RFC 6750 §3.1)."""
        params = []
        if refusal is not None:
            params.append(f'error="{refusal.error}"')
            params.append(f'error_description="{_quoted(refusal.description)}"')
        params.append(f'resource_metadata="{origin}{WELL_KNOWN}{resource_path}"')
        if self.settings.scopes:
            params.append(f'scope="{" ".join(self.settings.scopes)}"')
        body = {"error": refusal.error if refusal else "invalid_token"}
        body["error_description"] = refusal.description if refusal else "a bearer token is required"
        status = refusal.status if refusal else 401
        return _json_reply(status, body, {"www-authenticate": "Bearer " + ", ".join(params)})


def _json_reply(status: int, body: dict[str, str], headers: dict[str, str]) -> Reply:
    return status, {"content-type": "application/json", **headers}, json.dumps(body).encode()


def _quoted(text: str) -> str:
    """RFC 6750 §3's error_description characters only (printable ASCII but " and \\):
    the text may quote a token's own header, and a header value must never carry a
    line break or what latin-1 cannot encode."""
    return "".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in text)[:200]


def _bearer(headers: Mapping[str, str]) -> str | None:
    value = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None  # no token, or another scheme (SigV4): no bearer credentials
    return token.strip()


def _origin(headers: Mapping[str, str]) -> str:
    """This server's origin as the client reached it (a Function URL's host), https but on
    a loopback host (`pmcp-build serve`), unless a proxy says otherwise."""
    lowered = {k.lower(): v for k, v in headers.items()}
    host = lowered.get("host", "localhost").strip()
    loopback = host.rsplit(":", 1)[0] in _LOOPBACK or host.startswith("[::1]")
    scheme = lowered.get("x-forwarded-proto", "http" if loopback else "https").split(",")[0]
    return f"{scheme.strip()}://{host}"


def _resource_path(path: str) -> str:
    return "" if path in ("", "/") else "/" + path.lstrip("/")


_UNSET: Any = object()
_gate: Gate | None = _UNSET


def refusal(method: str, path: str, headers: Mapping[str, str]) -> Reply | None:
    """The hook of the HTTP path: None when the request goes on to the MCP server, else
    the (status, headers, body) that answers it. Settings are read once per container."""
    global _gate
    if _gate is _UNSET:
        import os

        settings = settings_from(os.environ)
        _gate = Gate(settings) if settings is not None else None
    return None if _gate is None else _gate.answer(method, path, headers)
