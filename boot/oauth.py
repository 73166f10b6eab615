"""The platform's `oauth` action: delegating to the author's set_oauth_handler()."""

from __future__ import annotations

from typing import Any

from .metorial import registry


class ActionError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def status() -> dict[str, Any]:
    handlers = registry.oauth
    return {"enabled": handlers is not None, "hasForm": bool(handlers and handlers.get_auth_form)}


async def handle(action: str, data: Any, call: Any) -> dict[str, Any]:
    handlers = registry.oauth
    if action == "get":
        return status()
    if handlers is None:
        raise ActionError(
            "oauth_not_configured", "this server has no OAuth handler (metorial.set_oauth_handler)"
        )
    if action == "authorization-url":
        result = await call(handlers.get_authorization_url, data)
        if isinstance(result, str):
            return {"authorizationUrl": result, "codeVerifier": ""}
        return dict(result)
    if action == "authorization-form":
        if handlers.get_auth_form is None:
            raise ActionError("oauth_no_form", "this server's OAuth has no authorization form")
        return {"authForm": await call(handlers.get_auth_form, data)}
    if action == "callback":
        return {"authData": await call(handlers.handle_callback, data)}
    if action == "refresh":
        if handlers.refresh_access_token is None:
            raise ActionError("oauth_no_refresh", "this server cannot refresh access tokens")
        return {"authData": await call(handlers.refresh_access_token, data)}
    raise ActionError(
        "unknown_oauth_action",
        f"unknown oauthAction {action!r}; one of get, authorization-url, "
        "authorization-form, callback, refresh",
    )
