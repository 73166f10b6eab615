"""Text utilities as an MCP server, written against the Metorial boot API."""

from __future__ import annotations

import re
from collections import Counter

import humanize

from boot import metorial

server = metorial.create_server({"name": "text-tools", "version": "1.0.0"})

TOOLS = [
    {
        "name": "word_stats",
        "description": "Count words, sentences and the most common words of a text.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "text": {"type": "string", "description": "the text to analyse"},
                "top": {"type": "integer", "minimum": 1, "maximum": 50, "default": 3},
            },
            "required": ["text"],
        },
    },
    {
        "name": "human_size",
        "description": "Render a byte count the way people read it (e.g. 3.2 MB).",
        "inputSchema": {
            "type": "object",
            "properties": {
                "bytes": {"type": "integer", "minimum": 0},
                "binary": {"type": "boolean", "default": False},
            },
            "required": ["bytes"],
        },
    },
]


@server.list_tools()
async def list_tools():
    return TOOLS


@server.call_tool()
async def call_tool(name, arguments):
    if name == "word_stats":
        text = arguments["text"]
        words = re.findall(r"[\w']+", text.lower())
        sentences = [s for s in re.split(r"[.!?]+", text) if s.strip()]
        top = int(arguments.get("top", 3))
        return {
            "words": len(words),
            "sentences": len(sentences),
            "top": [{"word": w, "count": c} for w, c in Counter(words).most_common(top)],
        }
    if name == "human_size":
        size = arguments["bytes"]
        if size < 0:
            raise ValueError("bytes must be zero or more")
        return humanize.naturalsize(size, binary=bool(arguments.get("binary", False)))
    raise ValueError(f"unknown tool: {name}")


@server.list_resources()
async def list_resources():
    return [
        {
            "uri": "text-tools://about",
            "name": "about",
            "description": "What this server does",
            "mimeType": "text/markdown",
        }
    ]


@server.list_resource_templates()
async def list_resource_templates():
    return [
        {
            "uriTemplate": "text-tools://size/{bytes}",
            "name": "size",
            "description": "A byte count in human units",
        }
    ]


@server.read_resource()
async def read_resource(uri):
    if uri == "text-tools://about":
        return "# text-tools\nWord statistics and human-readable sizes."
    match = re.fullmatch(r"text-tools://size/(\d+)", uri)
    if match:
        return humanize.naturalsize(int(match.group(1)))
    raise ValueError(f"unknown resource: {uri}")


@server.list_prompts()
async def list_prompts():
    return [
        {
            "name": "summarise",
            "description": "Ask for a summary of a text in a given number of sentences",
            "arguments": [
                {"name": "text", "required": True},
                {"name": "sentences", "required": False},
            ],
        }
    ]


@server.get_prompt()
async def get_prompt(name, arguments):
    if name != "summarise":
        raise ValueError(f"unknown prompt: {name}")
    count = (arguments or {}).get("sentences", "2")
    return f"Summarise the following text in {count} sentences:\n\n{arguments['text']}"
