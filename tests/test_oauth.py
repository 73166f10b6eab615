"""Who may call: `url = { auth = "oauth", ... }` makes the runtime an OAuth 2.1 resource
server, end to end through `serve` with the official python client's OAuthClientProvider
(discovery, dynamic registration, authorization code with PKCE, RFC 8707 resource), each
refusal case, and the pieces of boot/auth.py on their own.

The authorization server is the mcp SDK's own (mcp.server.auth: the authorize, token,
registration and RFC 8414 metadata handlers, PKCE included) with a small in-memory
provider that signs RS256 JWTs with PyJWT, plus a JWKS route; on loopback, over http.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import socket
import subprocess
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from boot import auth
from pmcp_build.deploy import auth_env
from pmcp_build.manifest.load import parse_manifest

from .conftest import ROOT
from .helpers import python_project, served_url, start_serve

SCOPE = "mcp:tools"
CALLBACK = "http://127.0.0.1:9/callback"  # never reached: the test's browser stops at it

# -- a test authorization server ---------------------------------------------------------


class SigningKeys:
    """The issuer's keys: the one it signs with now, and those its JWKS publishes."""

    def __init__(self) -> None:
        self.current = self.new_key()
        self.published = [self.current]

    @staticmethod
    def new_key() -> tuple[str, rsa.RSAPrivateKey]:
        return secrets.token_hex(4), rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def rotate(self) -> None:
        """A rotation: a new signing key, the old one retired from the JWKS."""
        self.current = self.new_key()
        self.published = [self.current]

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, key in self.published:
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": keys}

    def mint(self, claims: dict[str, Any], key: tuple[str, Any] | None = None) -> str:
        kid, private = key or self.current
        return jwt.encode(claims, private, algorithm="RS256", headers={"kid": kid})


class Issuer:
    """The SDK's authorization server routes on loopback; it signs what it issues."""

    def __init__(self, default_audience: str = "") -> None:
        self.keys = SigningKeys()
        self.jwks_down = False
        self.jwks_fetches = 0
        self.resources: list[str | None] = []  # the RFC 8707 resource of each token issued
        self.default_audience = default_audience
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        # The issuer exactly as the SDK's metadata names it (a path-less URL gets its "/"):
        # the client compares the two as strings.
        self.id = self.url + "/"
        self.server: Any = None
        self.provider = _Provider(self)

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        base = {"iss": self.id, "sub": "alice", "aud": self.default_audience, "iat": now}
        return {**base, "exp": now + 300, "scope": SCOPE, "client_id": "test", **overrides}

    def app(self) -> Any:
        from mcp.server.auth.routes import build_metadata, create_auth_routes
        from mcp.server.auth.settings import ClientRegistrationOptions, RevocationOptions
        from pydantic import AnyHttpUrl
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        issuer = AnyHttpUrl(self.url)
        registration = ClientRegistrationOptions(enabled=True, valid_scopes=[SCOPE])
        routes = create_auth_routes(self.provider, issuer, client_registration_options=registration)
        # RFC 8414 metadata as the SDK builds it, plus the jwks_uri its model leaves out.
        built = build_metadata(issuer, None, registration, RevocationOptions())
        metadata = {
            **built.model_dump(mode="json", exclude_none=True),
            "jwks_uri": f"{self.url}/jwks",
        }

        async def metadata_route(request: Request) -> JSONResponse:
            return JSONResponse(metadata)

        routes[0] = Route(routes[0].path, metadata_route, methods=["GET"])

        async def jwks(request: Request) -> JSONResponse:
            self.jwks_fetches += 1
            if self.jwks_down:
                return JSONResponse({"error": "down"}, status_code=503)
            return JSONResponse(self.keys.jwks(), headers={"cache-control": "max-age=300"})

        return Starlette(routes=[*routes, Route("/jwks", jwks)])

    def start(self) -> None:
        import uvicorn

        config = uvicorn.Config(self.app(), log_level="error", lifespan="off")
        self.server = uvicorn.Server(config)
        threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        ).start()
        deadline = time.time() + 20
        while not self.server.started and time.time() < deadline:
            time.sleep(0.05)
        assert self.server.started, "the test issuer did not start"

    def stop(self) -> None:
        self.server.should_exit = True


class _Provider:
    """An in-memory OAuthAuthorizationServerProvider that approves every request."""

    def __init__(self, issuer: Issuer) -> None:
        self.issuer = issuer
        self.clients: dict[str, Any] = {}
        self.codes: dict[str, Any] = {}
        self.registered = 0

    async def get_client(self, client_id: str) -> Any:
        return self.clients.get(client_id)

    async def register_client(self, client_info: Any) -> None:
        self.registered += 1
        self.clients[client_info.client_id] = client_info

    async def authorize(self, client: Any, params: Any) -> str:
        from mcp.server.auth.provider import AuthorizationCode, construct_redirect_uri

        code = secrets.token_urlsafe(16)
        self.codes[code] = AuthorizationCode(
            code=code,
            scopes=params.scopes or [],
            expires_at=time.time() + 300,
            client_id=client.client_id,
            code_challenge=params.code_challenge,
            redirect_uri=params.redirect_uri,
            redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly,
            resource=params.resource,
        )
        return construct_redirect_uri(str(params.redirect_uri), code=code, state=params.state)

    async def load_authorization_code(self, client: Any, authorization_code: str) -> Any:
        return self.codes.get(authorization_code)

    async def exchange_authorization_code(self, client: Any, authorization_code: Any) -> Any:
        from mcp.shared.auth import OAuthToken

        del self.codes[authorization_code.code]
        self.issuer.resources.append(authorization_code.resource)
        claims = self.issuer.claims(
            aud=authorization_code.resource or self.issuer.default_audience,
            scope=" ".join(authorization_code.scopes),
            client_id=client.client_id,
        )
        return OAuthToken(
            access_token=self.issuer.keys.mint(claims),
            expires_in=300,
            scope=" ".join(authorization_code.scopes),
        )

    async def load_refresh_token(self, client: Any, refresh_token: str) -> Any:
        return None

    async def exchange_refresh_token(self, client: Any, refresh_token: Any, scopes: Any) -> Any:
        raise NotImplementedError

    async def load_access_token(self, token: str) -> Any:
        return None

    async def revoke_token(self, token: Any) -> None:
        return None


# -- serve with a local target's url = { auth = "oauth" } --------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(tmp: Path) -> dict[str, str]:
    (tmp / "tmp").mkdir(exist_ok=True)
    return {
        **os.environ,
        "UV_OFFLINE": "1",
        "UV_NO_INDEX": "1",
        "UV_FIND_LINKS": str(ROOT / ".wheelhouse"),
        "PMCP_BUILD_CACHE_DIR": str(tmp.parent / "cache"),
        "TMPDIR": str(tmp / "tmp"),
        "PMCP_BUILD_LOAD_CHECK": "0",
    }


def _oauth_project(root: Path, issuer: str, audience: str) -> Path:
    project = python_project(root)
    with (project / "metorial.toml").open("a") as fh:  # [targets.dev] is the last table
        fh.write(
            f'url = {{ auth = "oauth", issuer = "{issuer}", audience = "{audience}", '
            f'scopes = ["{SCOPE}"] }}\n'
        )
    return project


class Served:
    def __init__(self, issuer: Issuer, url: str, proc: subprocess.Popen[str]) -> None:
        self.issuer, self.url, self.proc = issuer, url, proc


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("oauth")
    port = _free_port()
    mcp_url = f"http://127.0.0.1:{port}/mcp"
    issuer = Issuer(default_audience=mcp_url)
    issuer.start()
    project = _oauth_project(tmp / "p", issuer.id, mcp_url)
    proc = start_serve(project, _env(tmp / "p"), "--port", str(port), "--concurrency", "1")
    try:
        url = served_url(proc)
        assert url == mcp_url
        yield Served(issuer, url, proc)
    finally:
        _stop(proc)
        issuer.stop()


def _post(url: str, token: str | None = None, method: str = "tools/list") -> httpx.Response:
    headers = {
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": "2025-11-25",
    }
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": {}}
    return httpx.post(url, json=body, headers=headers, timeout=60)


async def _client_session(
    url: str, client_info: Any = None, mode: str = "legacy"
) -> dict[str, Any]:
    """What the official client does: OAuthClientProvider on the streamable HTTP client
    (with `client_info`, a pre-registered client, as for an issuer without registration)."""
    import httpx2
    from mcp import Client
    from mcp.client.auth import OAuthClientProvider
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata

    class Memory:
        def __init__(self) -> None:
            self.tokens: Any = None
            self.client: Any = None

        async def get_tokens(self) -> Any:
            return self.tokens

        async def set_tokens(self, tokens: Any) -> None:
            self.tokens = tokens

        async def get_client_info(self) -> Any:
            return self.client

        async def set_client_info(self, client_info: Any) -> None:
            self.client = client_info

    redirected: dict[str, str] = {}
    seen: dict[str, Any] = {}

    async def redirect_handler(authorization_url: str) -> None:
        # The user's browser: the test issuer approves at once and redirects back.
        seen["authorize"] = parse_qs(urlsplit(authorization_url).query)
        async with httpx2.AsyncClient() as browser:
            answer = await browser.get(authorization_url)
        assert answer.status_code in (302, 303, 307), answer.text
        query = parse_qs(urlsplit(answer.headers["location"]).query)
        redirected.update({k: v[0] for k, v in query.items()})

    async def callback_handler() -> AuthorizationCodeResult:
        return AuthorizationCodeResult(code=redirected["code"], state=redirected.get("state"))

    storage = Memory()
    storage.client = client_info
    provider = OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(
            client_name="pmcp-build test",
            redirect_uris=[CALLBACK],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
        ),
        storage=storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )
    async with (
        httpx2.AsyncClient(auth=provider, timeout=60) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        tools = await client.list_tools()
        result = await client.call_tool("echo", {"said": "hi"})
        seen["protocol"] = client.protocol_version
    seen["tools"] = [t.name for t in tools.tools]
    seen["result"] = result.structured_content
    seen["token"] = storage.tokens.access_token
    return seen


def test_official_client_discovers_authorizes_with_pkce_and_calls_tools(served: Served) -> None:
    seen = asyncio.run(_client_session(served.url))
    assert seen["tools"] == ["echo"]
    assert seen["result"] == {"echo": {"said": "hi"}}
    assert served.issuer.provider.registered >= 1  # dynamic client registration (RFC 7591)
    authorize = seen["authorize"]
    assert authorize["code_challenge_method"] == ["S256"]  # PKCE
    assert authorize["resource"] == [served.url]  # RFC 8707: the PRM's resource
    assert authorize["scope"] == [SCOPE]  # from WWW-Authenticate's scope / scopes_supported
    assert served.issuer.resources[-1] == served.url
    assert jwt.decode(seen["token"], options={"verify_signature": False})["aud"] == served.url


def test_a_pre_registered_client_needs_no_dynamic_registration(served: Served) -> None:
    from mcp.shared.auth import OAuthClientInformationFull

    # What a Cognito or Entra ID user gives the client: the ID of an app client made there.
    static = OAuthClientInformationFull(
        client_id="static-app-client",
        redirect_uris=[CALLBACK],
        token_endpoint_auth_method="none",
        grant_types=["authorization_code"],
        response_types=["code"],
        scope=SCOPE,
    )
    served.issuer.provider.clients[static.client_id] = static
    before = served.issuer.provider.registered
    # On the newest protocol (mode "auto": server/discover first), as the first test is not.
    seen = asyncio.run(_client_session(served.url, client_info=static, mode="auto"))
    assert seen["result"] == {"echo": {"said": "hi"}}
    assert seen["authorize"]["client_id"] == ["static-app-client"]
    assert seen["protocol"] in MODERN_PROTOCOL_VERSIONS
    assert served.issuer.provider.registered == before


def test_no_token_is_401_naming_the_protected_resource_metadata(served: Served) -> None:
    reply = _post(served.url)
    assert reply.status_code == 401
    origin = served.url.removesuffix("/mcp")
    assert reply.headers["www-authenticate"] == (
        f'Bearer resource_metadata="{origin}/.well-known/oauth-protected-resource/mcp", '
        f'scope="{SCOPE}"'
    )
    metadata = httpx.get(f"{origin}/.well-known/oauth-protected-resource/mcp", timeout=30)
    assert metadata.status_code == 200
    assert metadata.json() == {
        "resource": served.url,
        "authorization_servers": [served.issuer.id],
        "scopes_supported": [SCOPE],
        "bearer_methods_supported": ["header"],
    }
    # The root form (RFC 9728 §3.1 without a path) names the origin.
    root = httpx.get(f"{origin}/.well-known/oauth-protected-resource", timeout=30).json()
    assert root["resource"] == origin


def test_a_valid_token_calls_tools(served: Served) -> None:
    reply = _post(served.url, served.issuer.keys.mint(served.issuer.claims()))
    assert reply.status_code == 200, reply.text
    assert [t["name"] for t in reply.json()["result"]["tools"]] == ["echo"]


def _refused(reply: httpx.Response, status: int, error: str, text: str) -> None:
    assert reply.status_code == status, reply.text
    challenge = reply.headers["www-authenticate"]
    assert challenge.startswith(f'Bearer error="{error}"'), challenge
    assert "resource_metadata=" in challenge
    assert text in reply.json()["error_description"]


def test_a_bad_signature_is_refused(served: Served) -> None:
    kid = served.issuer.keys.current[0]
    forged = served.issuer.keys.mint(served.issuer.claims(), key=(kid, SigningKeys.new_key()[1]))
    _refused(_post(served.url, forged), 401, "invalid_token", "Signature verification failed")


def test_a_token_for_another_audience_is_refused(served: Served) -> None:
    token = served.issuer.keys.mint(served.issuer.claims(aud="http://127.0.0.1:1/other"))
    _refused(_post(served.url, token), 401, "invalid_token", "not for this server")


def test_an_expired_token_is_refused(served: Served) -> None:
    past = int(time.time()) - 3600
    token = served.issuer.keys.mint(served.issuer.claims(iat=past - 300, exp=past))
    _refused(_post(served.url, token), 401, "invalid_token", "expired")


def test_a_token_without_the_scope_is_403_naming_it(served: Served) -> None:
    token = served.issuer.keys.mint(served.issuer.claims(scope="profile"))
    reply = _post(served.url, token)
    _refused(reply, 403, "insufficient_scope", SCOPE)
    assert f'scope="{SCOPE}"' in reply.headers["www-authenticate"]


def test_a_key_rotation_refetches_the_jwks_once_and_an_unknown_kid_is_refused(
    served: Served,
) -> None:
    issuer = served.issuer
    assert _post(served.url, issuer.keys.mint(issuer.claims())).status_code == 200
    before = issuer.jwks_fetches
    assert _post(served.url, issuer.keys.mint(issuer.claims())).status_code == 200
    assert issuer.jwks_fetches == before  # cached: max-age=300
    old = issuer.keys.current
    issuer.keys.rotate()
    reply = _post(served.url, issuer.keys.mint(issuer.claims()))
    assert reply.status_code == 200, reply.text  # the new kid made it refetch
    assert issuer.jwks_fetches == before + 1
    # The retired key, and a kid the issuer never had, are refused without another fetch
    # (one refetch per 30 s for unknown kids, whoever sends them).
    for key in (old, ("nosuchkid", old[1])):
        reply = _post(served.url, issuer.keys.mint(issuer.claims(), key=key))
        _refused(reply, 401, "invalid_token", "is not in the issuer's JWKS")
    assert issuer.jwks_fetches == before + 1


def test_jwks_endpoint_down_fails_closed_with_one_log_line(served: Served, tmp_path: Path) -> None:
    # A second container (its own serve) that starts while the issuer's JWKS is down.
    issuer = served.issuer
    port = _free_port()
    project = _oauth_project(tmp_path / "p", issuer.id, f"http://127.0.0.1:{port}/mcp")
    issuer.jwks_down = True
    proc = start_serve(project, _env(tmp_path / "p"), "--port", str(port), "--concurrency", "1")
    try:
        url = served_url(proc)
        token = issuer.keys.mint(issuer.claims(aud=url))
        first, second = _post(url, token), _post(url, token)
    finally:
        issuer.jwks_down = False
        err = _stop(proc)
    for reply in (first, second):
        assert reply.status_code == 503, reply.text
        assert reply.json()["error"] == "temporarily_unavailable"
        assert "www-authenticate" not in reply.headers
    logged = [line for line in err.splitlines() if "metorial auth" in line]
    assert len(logged) == 1, err
    assert "JWKS" in logged[0] and "503" in logged[0], logged


def test_the_platform_path_is_unaffected_and_invoke_enforces_http(cli: Any, tmp_path: Path) -> None:
    project = _oauth_project(tmp_path / "p", "http://127.0.0.1:9", "https://tiny.example/mcp")
    platform = tmp_path / "platform.json"
    platform.write_text(
        json.dumps(
            {
                "action": "mcp.request",
                "messages": [{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}],
            }
        )
    )
    result = cli("-C", str(project), "invoke", "--event", str(platform))
    assert result.exit_code == 0, result.output
    assert "echo" in json.loads(result.stdout)["responses"][0]
    http = tmp_path / "http.json"
    http.write_text(
        json.dumps(
            {
                "version": "2.0",
                "rawPath": "/mcp",
                "headers": {"host": "abc.lambda-url.us-east-1.on.aws"},
                "requestContext": {"http": {"method": "POST"}},
                "body": "{}",
            }
        )
    )
    result = cli("-C", str(project), "invoke", "--event", str(http))
    reply = json.loads(result.stdout)
    assert reply["statusCode"] == 401
    assert reply["headers"]["www-authenticate"] == (
        'Bearer resource_metadata="https://abc.lambda-url.us-east-1.on.aws'
        f'/.well-known/oauth-protected-resource/mcp", scope="{SCOPE}"'
    )


# -- boot/auth.py on its own -----------------------------------------------------------------


class FakeIssuer:
    """Answers fetches from memory; counts them; a clock the test moves."""

    def __init__(self, issuer: str = "https://idp.example.com") -> None:
        self.issuer = issuer
        self.keys = SigningKeys()
        self.now = 1000.0
        self.fetched: list[str] = []
        self.down = False
        self.cache_control: str | None = "max-age=600"

    def fetch(self, url: str) -> tuple[int, Any, dict[str, str]]:
        self.fetched.append(url)
        if self.down:
            raise OSError("connection refused")
        if url == f"{self.issuer}/.well-known/oauth-authorization-server":
            return 200, {"issuer": self.issuer, "jwks_uri": f"{self.issuer}/jwks"}, {}
        if url == f"{self.issuer}/jwks":
            headers = {} if self.cache_control is None else {"Cache-Control": self.cache_control}
            return 200, self.keys.jwks(), headers
        return 404, None, {}

    def key_set(self) -> auth.KeySet:
        return auth.KeySet(self.issuer, fetch=self.fetch, clock=lambda: self.now)

    def verifier(self, audience: str = "api://mcp", scopes: tuple[str, ...] = ()) -> Any:
        settings = auth.Settings(self.issuer, audience, scopes)
        return auth.JwtTokenVerifier(settings, self.key_set())

    def token(self, **claims: Any) -> str:
        now = int(time.time())
        base = {"iss": self.issuer, "aud": "api://mcp", "exp": now + 60, "sub": "bob"}
        return self.keys.mint({**base, **claims})


def test_settings_come_from_the_environment_and_absent_means_off() -> None:
    assert auth.settings_from({}) is None
    env = {auth.ISSUER_ENV: "https://i", auth.AUDIENCE_ENV: "a", auth.SCOPES_ENV: "x y"}
    assert auth.settings_from(env) == auth.Settings("https://i", "a", ("x", "y"))
    # An issuer without an audience is closed: it matches no token.
    assert auth.settings_from({auth.ISSUER_ENV: "https://i"}) == auth.Settings("https://i", "")
    assert (auth.ISSUER_ENV, auth.AUDIENCE_ENV, auth.SCOPES_ENV) == (
        auth_env.ISSUER_ENV,
        auth_env.AUDIENCE_ENV,
        auth_env.SCOPES_ENV,
    )


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, auth.DEFAULT_CACHE),
        ("public, max-age=600", 600.0),
        ("s-maxage=120", 120.0),
        ("no-store", auth.MIN_CACHE),
        ("max-age=5", auth.MIN_CACHE),
        ("max-age=999999999", auth.MAX_CACHE),
    ],
)
def test_jwks_is_kept_for_its_cache_control(header: str | None, seconds: float) -> None:
    assert auth.max_age({} if header is None else {"Cache-Control": header}) == seconds


def test_key_set_fetches_once_refreshes_at_max_age_and_on_an_unknown_kid() -> None:
    idp = FakeIssuer()
    keys = idp.key_set()
    kid = idp.keys.current[0]
    keys.key(kid)
    keys.key(kid)
    assert keys.fetches == 1
    assert idp.fetched[0] == "https://idp.example.com/.well-known/oauth-authorization-server"
    idp.now += 601  # past max-age=600
    keys.key(kid)
    assert keys.fetches == 2
    idp.keys.rotate()
    keys.key(idp.keys.current[0])  # unknown kid: refetched at once
    assert keys.fetches == 3
    with pytest.raises(auth.Refused, match="not in the issuer's JWKS"):
        keys.key("invented")  # within the cooldown: no fetch
    assert keys.fetches == 3
    idp.now += auth.REFRESH_COOLDOWN
    with pytest.raises(auth.Refused):
        keys.key("invented")
    assert keys.fetches == 4
    # The metadata was read once for the container's life.
    assert sum("well-known" in url for url in idp.fetched) == 1
    # A cold container meeting an unknown kid fetches the JWKS once, not twice.
    cold = idp.key_set()
    with pytest.raises(auth.Refused):
        cold.key("invented")
    assert cold.fetches == 1


def test_key_set_fails_closed_logs_once_and_does_not_hammer_the_issuer(
    capsys: pytest.CaptureFixture[str],
) -> None:
    idp = FakeIssuer()
    idp.down = True
    keys = idp.key_set()
    for _ in range(3):
        with pytest.raises(auth.KeysUnavailable, match="connection refused"):
            keys.key(idp.keys.current[0])
    assert len(idp.fetched) == 2  # the two discovery URLs, tried once
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("metorial auth: refusing tokens:")
    idp.down = False
    idp.now += auth.RETRY_AFTER
    keys.key(idp.keys.current[0])  # back: works again


def test_discovery_tries_rfc8414_then_openid_and_checks_the_issuer() -> None:
    answers = {
        "https://login.example.com/.well-known/oauth-authorization-server/tenant/v2.0": (404, None),
        "https://login.example.com/.well-known/openid-configuration/tenant/v2.0": (404, None),
        "https://login.example.com/tenant/v2.0/.well-known/openid-configuration": (
            200,
            {"issuer": "https://login.example.com/tenant/v2.0", "jwks_uri": "https://k/keys"},
        ),
    }
    tried: list[str] = []

    def fetch(url: str) -> tuple[int, Any, dict[str, str]]:
        tried.append(url)
        status, doc = answers.get(url, (404, None))
        return status, doc, {}

    assert auth.discover_jwks_uri("https://login.example.com/tenant/v2.0", fetch) == (
        "https://k/keys"
    )
    assert tried == list(answers)
    with pytest.raises(auth.KeysUnavailable, match="names issuer"):
        auth.discover_jwks_uri(
            "https://idp.example.com",
            lambda url: (200, {"issuer": "https://evil.example", "jwks_uri": "https://k"}, {}),
        )
    with pytest.raises(auth.KeysUnavailable, match="https jwks_uri"):
        auth.discover_jwks_uri(
            "https://idp.example.com",
            lambda url: (200, {"issuer": "https://idp.example.com", "jwks_uri": "http://k"}, {}),
        )


def test_verifier_checks_claims_and_is_the_sdks_token_verifier() -> None:
    from mcp.server.auth.provider import TokenVerifier

    idp = FakeIssuer()
    verifier = idp.verifier(scopes=("mcp:tools",))
    sdk_view: TokenVerifier = verifier  # the SDK protocol, checked by mypy and here
    good = idp.token(scope="mcp:tools other", client_id="app")
    access = asyncio.run(sdk_view.verify_token(good))
    assert access is not None
    assert (access.client_id, access.subject, access.scopes) == (
        "app",
        "bob",
        ["mcp:tools", "other"],
    )
    assert asyncio.run(sdk_view.verify_token(idp.token())) is None  # no scope
    cases = {
        "issued by": idp.token(iss="https://other.example", scope="mcp:tools"),
        "not for this server": idp.token(aud=["a", "b"], scope="mcp:tools"),
        "not valid yet": idp.token(nbf=int(time.time()) + 3600, scope="mcp:tools"),
        "not an access token": idp.token(token_use="id", scope="mcp:tools"),
        "not a JWT": "opaque-token",
        "lacks the scope mcp:tools": idp.token(scp="other"),
    }
    for text, token in cases.items():
        with pytest.raises(auth.Refused, match=text):
            verifier.check(token)


def test_verifier_accepts_issuer_quirks() -> None:
    idp = FakeIssuer()
    # Entra ID / Okta put scopes in `scp`; a clock a little ahead is within the skew.
    assert idp.verifier(scopes=("read",)).check(idp.token(scp="read write"))
    assert idp.verifier(scopes=("read",)).check(idp.token(scp=["read"]))
    assert idp.verifier().check(idp.token(iat=int(time.time()) + 30))
    # Cognito's access tokens have no `aud`: their client_id is the audience.
    cognito = idp.token(aud=None, client_id="5abc", token_use="access")
    assert idp.verifier(audience="5abc").check(cognito).client_id == "5abc"
    # A trailing slash on the issuer (Auth0 writes one) is the same issuer.
    assert idp.verifier().check(idp.token(iss="https://idp.example.com/"))


def test_verifier_refuses_algorithms_a_jwks_cannot_vouch_for() -> None:
    idp = FakeIssuer()
    verifier = idp.verifier()
    claims = {"iss": idp.issuer, "aud": "api://mcp", "exp": int(time.time()) + 60}
    unsigned = jwt.encode(claims, None, algorithm="none")
    hmac = jwt.encode(claims, "secret-of-32-bytes-at-least-0123", algorithm="HS256")
    # The JWKS says its key is RS256: a PS256 token made with the same RSA key is refused.
    kid, private = idp.keys.current
    pss = jwt.encode(claims, private, algorithm="PS256", headers={"kid": kid})
    # A header PyJWT would not write (a kid that is a list) is a refusal, not a crash.
    listed = ".".join(
        base64.urlsafe_b64encode(json.dumps(part).encode()).decode().rstrip("=")
        for part in ({"alg": "RS256", "kid": ["a"]}, claims, "sig")
    )
    with pytest.raises(auth.Refused):
        verifier.check(listed)
    for token in (unsigned, hmac, pss):
        with pytest.raises(auth.Refused, match="algorithm"):
            verifier.check(token)


def test_gate_serves_metadata_passes_preflights_and_challenges_other_schemes() -> None:
    idp = FakeIssuer()
    gate = auth.Gate(auth.Settings(idp.issuer, "api://mcp"), idp.verifier())
    host = {"host": "abc.lambda-url.eu-west-1.on.aws"}
    status, headers, body = gate.answer("GET", "/.well-known/oauth-protected-resource/mcp", host)
    assert status == 200 and headers["access-control-allow-origin"] == "*"
    assert json.loads(body)["resource"] == "https://abc.lambda-url.eu-west-1.on.aws/mcp"
    assert "scopes_supported" not in json.loads(body)
    assert gate.answer("OPTIONS", "/.well-known/oauth-protected-resource", host)[0] == 204
    assert gate.answer("POST", "/.well-known/oauth-protected-resource", host)[0] == 405
    assert gate.answer("OPTIONS", "/mcp", host) is None  # CORS preflight: no credentials
    sigv4 = {**host, "authorization": "AWS4-HMAC-SHA256 Credential=x"}
    status, headers, _ = gate.answer("POST", "/", sigv4)
    assert status == 401
    assert headers["www-authenticate"] == (
        'Bearer resource_metadata="https://abc.lambda-url.eu-west-1.on.aws'
        '/.well-known/oauth-protected-resource"'
    )
    token = idp.token()
    assert gate.answer("POST", "/mcp", {**host, "authorization": f"Bearer {token}"}) is None
    proxied = {"host": "mcp.example.com", "x-forwarded-proto": "http"}
    assert (
        "http://mcp.example.com/.well-known"
        in gate.answer("POST", "/", proxied)[1]["www-authenticate"]
    )


def test_without_settings_the_hook_lets_every_request_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(auth.ISSUER_ENV, raising=False)
    monkeypatch.setattr(auth, "_gate", auth._UNSET)
    assert auth.refusal("POST", "/mcp", {}) is None
    assert auth.refusal("GET", "/.well-known/oauth-protected-resource", {}) is None


# -- what the deploy and serve take from the manifest --------------------------------------

_MANIFEST = (
    '[server]\nname = "demo"\n[runtime]\nkind = "python"\n'
    '[targets.prod]\nkind = "lambda"\nfunction = "f"\nbucket = "my-bucket"\n{prod}\n'
    '[targets.dev]\nkind = "local"\n{dev}\n'
)
_OAUTH = 'url = { auth = "oauth", issuer = "https://idp.example.com", audience = "api://m"%s }'


def test_auth_environment_type_mode_and_warning_follow_the_url() -> None:
    manifest = parse_manifest(
        _MANIFEST.format(prod=_OAUTH % ', scopes = ["a", "b"]', dev=_OAUTH % "")
    )
    url = manifest.targets["prod"].url  # type: ignore[union-attr]
    assert auth_env.auth_environment(url) == {
        "PMCP_AUTH_ISSUER": "https://idp.example.com",
        "PMCP_AUTH_AUDIENCE": "api://m",
        "PMCP_AUTH_SCOPES": "a b",
    }
    assert auth_env.function_url_auth_type(url) == "NONE"  # public at AWS, checked inside
    assert auth_env.auth_mode(url) == (
        "oauth (issuer https://idp.example.com, audience api://m, scopes a b)"
    )
    assert auth_env.url_warnings("f", url.auth) == []
    public = parse_manifest(_MANIFEST.format(prod='url = { auth = "NONE" }', dev=""))
    none_url = public.targets["prod"].url  # type: ignore[union-attr]
    assert auth_env.auth_environment(none_url) == {}
    assert auth_env.function_url_auth_type(none_url) == "NONE"
    assert "public" in auth_env.url_warnings("f", none_url.auth)[0]
    assert auth_env.url_warnings("f", None) == []
    assert auth_env.auth_mode(None) == "no url (invoke only)"
    # serve: the chosen target's url, else the only local target's.
    assert auth_env.served_url(manifest, None) == manifest.targets["dev"].url  # type: ignore[union-attr]
    assert auth_env.served_url(manifest, "prod") == url
    assert auth_env.served_url(public, None) is None


def test_the_readme_recipes_are_valid_urls() -> None:
    from pmcp_build.manifest.model import FunctionUrl

    section = (ROOT / "README.md").read_text().split("## Who may call", 1)[1].split("\n## ")[0]
    lines = [line for line in section.splitlines() if line.startswith("url = {")]
    assert len(lines) >= 5  # the example and the four recipes
    for line in lines:
        table = tomllib.loads(line)["url"]
        url = FunctionUrl.model_validate(table)
        assert url.auth == "oauth" and auth_env.auth_environment(url), line


def test_with_auth_adds_the_variables_in_clear_and_refuses_a_clash() -> None:
    from pmcp_build.errors import UserError
    from pmcp_build.manifest.secrets import Environment

    manifest = parse_manifest(_MANIFEST.format(prod=_OAUTH % "", dev=""))
    url = manifest.targets["prod"].url  # type: ignore[union-attr]
    env = Environment({"TOKEN": "s3cret"}, frozenset({"TOKEN"}))
    merged = auth_env.with_auth(env, url, "targets.prod")
    assert merged.values["PMCP_AUTH_AUDIENCE"] == "api://m" and merged.values["TOKEN"] == "s3cret"
    assert merged.shown()["PMCP_AUTH_ISSUER"] == "https://idp.example.com"  # not a secret
    assert merged.shown()["TOKEN"] != "s3cret"
    assert auth_env.with_auth(env, None, "targets.prod") == env
    clash = Environment({"PMCP_AUTH_ISSUER": "https://other"})
    with pytest.raises(UserError, match=r"targets\.prod\.environment\.PMCP_AUTH_ISSUER"):
        auth_env.with_auth(clash, url, "targets.prod")
    with pytest.raises(UserError, match="4096"):
        auth_env.with_auth(Environment({"BIG": "x" * 4050}), url, "targets.prod")


def test_a_hostile_kid_cannot_break_the_challenge_header() -> None:
    idp = FakeIssuer()
    gate = auth.Gate(auth.Settings(idp.issuer, "api://mcp"), idp.verifier())
    kid = 'k"\r\nX-Injected: 1\u00e9\u202e' + "x" * 500
    token = idp.keys.mint(
        {"iss": idp.issuer, "aud": "api://mcp", "exp": int(time.time()) + 60},
        key=(kid, idp.keys.current[1]),
    )
    reply = gate.answer("POST", "/mcp", {"host": "h.example", "authorization": f"Bearer {token}"})
    assert reply is not None and reply[0] == 401
    challenge = reply[1]["www-authenticate"]
    assert challenge.isascii() and "\r" not in challenge and "\n" not in challenge
    assert challenge.count('"') == 6  # error, error_description, resource_metadata
    assert len(challenge) < 400


def test_a_token_for_a_key_of_another_type_is_refused_not_a_crash() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    idp = FakeIssuer()
    kid, private = idp.keys.current
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    idp.keys.jwks = lambda: {"keys": [{**jwk, "kid": kid}]}  # type: ignore[method-assign]
    claims = {"iss": idp.issuer, "aud": "api://mcp", "exp": int(time.time()) + 60}
    token = jwt.encode(claims, ec.generate_private_key(ec.SECP256R1()), "ES256", {"kid": kid})
    with pytest.raises(auth.Refused, match="not valid"):
        idp.verifier().check(token)  # an RSA key without a declared alg, an EC signature


def test_a_fault_in_the_check_refuses_and_logs(capsys: pytest.CaptureFixture[str]) -> None:
    class Broken(auth.JwtTokenVerifier):
        def check(self, token: str) -> Any:
            raise RuntimeError("bug")

    settings = auth.Settings("https://i", "a")
    gate = auth.Gate(settings, Broken(settings))
    reply = gate.answer("POST", "/", {"host": "h", "authorization": "Bearer x"})
    assert reply is not None and reply[0] == 500
    assert capsys.readouterr().err == "metorial auth: token check failed: RuntimeError('bug')\n"


# -- the lambda target carries it (moto) ------------------------------------------------------


def test_a_lambda_target_with_oauth_is_public_at_aws_and_configured_inside(
    cli: Any, project: Path
) -> None:
    """`auth = "oauth"` is no AWS AuthType: the Function URL is created NONE and the
    runtime is told the issuer and audience through the function's environment; the
    plan names the mode in its outputs and does not warn that the endpoint is public."""
    toml = project / "metorial.toml"
    toml.write_text(
        toml.read_text().replace(
            'url = { auth = "NONE" }',
            'url = { auth = "oauth", issuer = "https://issuer.example.com", '
            'audience = "https://mcp.example.com", scopes = ["mcp:tools"] }',
        )
    )
    plan = cli("-C", str(project), "plan", "-t", "prod", "--json")
    assert plan.exit_code == 0, plan.output
    assert "url auth is NONE" not in plan.output
    applied = cli("-C", str(project), "apply", "--auto-approve", "-t", "prod")
    assert applied.exit_code == 0, applied.output
    lam = boto3.client("lambda")
    assert lam.get_function_url_config(FunctionName="tiny-prod")["AuthType"] == "NONE"
    env = lam.get_function(FunctionName="tiny-prod")["Configuration"]["Environment"]
    assert env["Variables"]["PMCP_AUTH_ISSUER"] == "https://issuer.example.com"
    assert env["Variables"]["PMCP_AUTH_AUDIENCE"] == "https://mcp.example.com"
    assert env["Variables"]["PMCP_AUTH_SCOPES"] == "mcp:tools"
    again = cli("-C", str(project), "plan", "-t", "prod", "--json")
    outputs = json.loads(again.stdout)["targets"][0]["outputs"]
    assert outputs["url_auth"].startswith("oauth (issuer https://issuer.example.com")
