"""Turning what authors return (dicts, lists, strings, mcp types) into mcp results."""

from __future__ import annotations

import base64
import inspect
import json
from collections.abc import Callable
from typing import Any, NamedTuple

import mcp_types as types

from .loop import call as call  # handlers are called as loop.py calls them


def takes_argument(func: Any) -> bool:
    """Whether a list handler accepts the page cursor (older handlers take none)."""
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in params
    )


def next_cursor(value: Any) -> str | None:
    """A paginating handler returns {key: [...], "nextCursor": "..."} (or an mcp result)."""
    if isinstance(value, dict):
        cursor = value.get("nextCursor")
    else:
        cursor = getattr(value, "next_cursor", None)
    return cursor if isinstance(cursor, str) else None


def _dump(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(by_alias=True, exclude_none=True, mode="json")
    return value


def _items(value: Any, key: str) -> list[Any]:
    """A handler may return the list itself or {key: [...]}."""
    if value is None:
        return []
    if isinstance(value, dict) and key in value:
        value = value[key]
    if hasattr(value, key):
        value = getattr(value, key)
    return [_dump(v) for v in value]


def tools(value: Any) -> types.ListToolsResult:
    items = []
    for tool in _items(value, "tools"):
        tool = dict(tool)
        tool.setdefault("inputSchema", {"type": "object"})
        items.append(types.Tool.model_validate(tool))
    return types.ListToolsResult(tools=items, next_cursor=next_cursor(value))


def resources(value: Any) -> types.ListResourcesResult:
    return types.ListResourcesResult(
        resources=[types.Resource.model_validate(r) for r in _items(value, "resources")],
        next_cursor=next_cursor(value),
    )


def resource_templates(value: Any) -> types.ListResourceTemplatesResult:
    items = (
        _items(value, "resourceTemplates")
        if not hasattr(value, "resource_templates")
        else [_dump(v) for v in value.resource_templates]
    )
    return types.ListResourceTemplatesResult(
        resource_templates=[types.ResourceTemplate.model_validate(r) for r in items],
        next_cursor=next_cursor(value),
    )


def prompts(value: Any) -> types.ListPromptsResult:
    return types.ListPromptsResult(
        prompts=[types.Prompt.model_validate(p) for p in _items(value, "prompts")],
        next_cursor=next_cursor(value),
    )


class Listing(NamedTuple):
    convert: Callable[[Any], Any]  # what the author returned -> the SDK's list result
    sdk_handler: str  # the SDK Server's constructor keyword
    field: str  # the result attribute holding the items


# The author's list_* handlers, shared by the MCP engine and the platform's discover.
LISTINGS: dict[str, Listing] = {
    "list_tools": Listing(tools, "on_list_tools", "tools"),
    "list_resources": Listing(resources, "on_list_resources", "resources"),
    "list_resource_templates": Listing(
        resource_templates, "on_list_resource_templates", "resource_templates"
    ),
    "list_prompts": Listing(prompts, "on_list_prompts", "prompts"),
}

# A capability family is what the SDK's Server.get_capabilities() advertises for the
# handlers engine.build_sdk_server registers: announced by its list handler (tools/list,
# resources/list, prompts/list). `discover` says it without building that server (and
# importing the SDK); tests/test_cold_imports.py holds the two equal.
CAPABILITY_LISTS = {"tools": "list_tools", "resources": "list_resources", "prompts": "list_prompts"}


def capabilities(handlers: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """discover's `capabilities`: the families the author's handlers serve."""
    return {family: {} for family, kind in CAPABILITY_LISTS.items() if kind in handlers}


def _text(value: Any) -> types.TextContent:
    return types.TextContent(
        type="text",
        text=value
        if isinstance(value, str)
        else json.dumps(value, default=str, ensure_ascii=False),
    )


def _is_content(value: Any) -> bool:
    return isinstance(value, dict) and value.get("type") in (
        "text",
        "image",
        "audio",
        "resource",
        "resource_link",
    )


def tool_result(value: Any) -> types.CallToolResult:
    if isinstance(value, types.CallToolResult):
        return value
    if isinstance(value, dict) and ("content" in value and isinstance(value["content"], list)):
        return types.CallToolResult.model_validate(value)
    if isinstance(value, dict) and _is_content(value):
        return types.CallToolResult.model_validate({"content": [value]})
    if isinstance(value, dict):
        # Structured content for clients that read it, the same JSON as text for the rest.
        return types.CallToolResult(content=[_text(value)], structured_content=value)
    if isinstance(value, list) and value and all(_is_content(_dump(v)) for v in value):
        return types.CallToolResult.model_validate({"content": [_dump(v) for v in value]})
    if value is None:
        return types.CallToolResult(content=[])
    if hasattr(value, "model_dump"):
        return types.CallToolResult(
            content=[types.TextContent.model_validate(_dump(value))]
            if _is_content(_dump(value))
            else [_text(_dump(value))]
        )
    return types.CallToolResult(content=[_text(value)])


def tool_error(exc: BaseException) -> types.CallToolResult:
    return types.CallToolResult(content=[_text(f"{type(exc).__name__}: {exc}")], is_error=True)


def read_result(uri: str, value: Any, mime_type: str | None = None) -> types.ReadResourceResult:
    """`mime_type` is what list_resources declared for this uri: plain text or bytes
    returned by the reader are labelled with it rather than a generic type."""
    if isinstance(value, types.ReadResourceResult):
        return value
    if isinstance(value, dict) and "contents" in value:
        return types.ReadResourceResult.model_validate(value)
    items = value if isinstance(value, list) else [value]
    contents: list[Any] = []
    for item in items:
        item = _dump(item)
        if isinstance(item, bytes):
            contents.append(
                types.BlobResourceContents(
                    uri=uri,
                    blob=base64.b64encode(item).decode(),
                    mime_type=mime_type or "application/octet-stream",
                )
            )
        elif isinstance(item, str):
            contents.append(
                types.TextResourceContents(uri=uri, text=item, mime_type=mime_type or "text/plain")
            )
        elif isinstance(item, dict) and ("text" in item or "blob" in item):
            contents.append({"uri": uri, **item})
        else:
            contents.append(
                types.TextResourceContents(
                    uri=uri, text=json.dumps(item, default=str), mime_type="application/json"
                )
            )
    return types.ReadResourceResult.model_validate({"contents": [_dump(c) for c in contents]})


def prompt_result(value: Any) -> types.GetPromptResult:
    if isinstance(value, types.GetPromptResult):
        return value
    if isinstance(value, dict) and "messages" in value:
        return types.GetPromptResult.model_validate(value)
    if isinstance(value, list):
        return types.GetPromptResult.model_validate({"messages": [_dump(v) for v in value]})
    return types.GetPromptResult(messages=[types.PromptMessage(role="user", content=_text(value))])
