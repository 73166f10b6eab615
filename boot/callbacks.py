"""The platform's `callbacks` action: delegating to set_callback_handler()."""

from __future__ import annotations

from typing import Any

from .metorial import registry
from .oauth import ActionError


def status() -> dict[str, Any]:
    handlers = registry.callbacks
    if handlers is None:
        return {"enabled": False}
    kind = "polling" if handlers.poll else "webhook" if handlers.install else "manual"
    return {"enabled": True, "type": kind}


async def handle(action: str, data: Any, call: Any) -> dict[str, Any]:
    handlers = registry.callbacks
    if action == "get":
        return status()
    if handlers is None:
        raise ActionError(
            "callbacks_not_configured",
            "this server has no callback handler (metorial.set_callback_handler)",
        )
    data = data or {}
    if action == "handle":
        results = []
        callback_id = data.get("callbackId")
        for event in data.get("events", []):
            event_id = event.get("eventId")
            try:
                result = await call(
                    handlers.handle,
                    {
                        "callbackId": callback_id,
                        "eventId": event_id,
                        "payload": event.get("payload"),
                    },
                )
                results.append({"success": True, "eventId": event_id, "result": result})
            except Exception as exc:  # one bad event must not sink the batch
                results.append(
                    {"success": False, "eventId": event_id, "error": f"{type(exc).__name__}: {exc}"}
                )
        return {"results": results}
    if action == "install":
        if handlers.install is None:
            raise ActionError("callbacks_no_install", "this server's callbacks need no install")
        return {"result": await call(handlers.install, data)}
    if action == "poll":
        if handlers.poll is None:
            raise ActionError("callbacks_no_poll", "this server's callbacks are not polled")
        result = await call(handlers.poll, data)
        if isinstance(result, dict) and "events" in result:
            return {"events": result["events"], "newState": result.get("newState")}
        return {"events": list(result or []), "newState": data.get("state")}
    raise ActionError(
        "unknown_callback_action",
        f"unknown callbackAction {action!r}; one of get, handle, install, poll",
    )
