"""The author's API: `from boot import metorial`.

Authors register plain functions (sync or async, returning dicts, lists, strings or
`mcp` types); the runtime in `bootstrap.py` adapts them to the `mcp` SDK. Nothing
here imports the SDK, so importing a server module stays cheap and works in tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import config

Handler = Callable[..., Any]


@dataclass
class MetorialServer:
    """What an author's module declares: a name and the handlers it registered."""

    name: str
    version: str = "1.0.0"
    instructions: str | None = None
    handlers: dict[str, Handler] = field(default_factory=dict)

    def _register(self, kind: str) -> Callable[[Handler], Handler]:
        def decorator(func: Handler) -> Handler:
            self.handlers[kind] = func
            return func

        return decorator

    def list_tools(self) -> Callable[[Handler], Handler]:
        return self._register("list_tools")

    def call_tool(self) -> Callable[[Handler], Handler]:
        return self._register("call_tool")

    def list_resources(self) -> Callable[[Handler], Handler]:
        return self._register("list_resources")

    def read_resource(self) -> Callable[[Handler], Handler]:
        return self._register("read_resource")

    def list_resource_templates(self) -> Callable[[Handler], Handler]:
        return self._register("list_resource_templates")

    def list_prompts(self) -> Callable[[Handler], Handler]:
        return self._register("list_prompts")

    def get_prompt(self) -> Callable[[Handler], Handler]:
        return self._register("get_prompt")


@dataclass
class OAuthHandlers:
    get_authorization_url: Handler
    handle_callback: Handler
    get_auth_form: Handler | None = None
    refresh_access_token: Handler | None = None


@dataclass
class CallbackHandlers:
    handle: Handler
    install: Handler | None = None
    poll: Handler | None = None


@dataclass
class _Registry:
    server: MetorialServer | None = None
    oauth: OAuthHandlers | None = None
    callbacks: CallbackHandlers | None = None


registry = _Registry()


def create_server(info: str | dict[str, Any]) -> MetorialServer:
    """Create the module's server; `info` is a name or {"name", "version", "instructions"}."""
    if isinstance(info, dict):
        server = MetorialServer(
            name=str(info.get("name") or "mcp-server"),
            version=str(info.get("version") or "1.0.0"),
            instructions=info.get("instructions"),
        )
    else:
        server = MetorialServer(name=str(info))
    registry.server = server
    return server


def set_oauth_handler(
    get_authorization_url: Handler,
    handle_callback: Handler,
    get_auth_form: Handler | None = None,
    refresh_access_token: Handler | None = None,
) -> None:
    registry.oauth = OAuthHandlers(
        get_authorization_url, handle_callback, get_auth_form, refresh_access_token
    )


def set_callback_handler(
    handle: Handler, install: Handler | None = None, poll: Handler | None = None
) -> None:
    registry.callbacks = CallbackHandlers(handle, install, poll)


def get_args() -> dict[str, Any]:
    """This request's server configuration (the platform's `args`); {} outside a request."""
    return config.get_args()
