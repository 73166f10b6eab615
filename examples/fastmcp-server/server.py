"""A standalone fastmcp server, unmodified: pmcp-build finds the module-level `mcp`."""

from fastmcp import FastMCP

mcp = FastMCP("notes", instructions="A tiny in-memory notebook.")

NOTES = {"welcome": "Notes live in memory, per container."}


@mcp.tool
def add_note(title: str, text: str) -> str:
    """Store a note under a title."""
    NOTES[title] = text
    return f"saved {title}"


@mcp.tool
def count_words(text: str) -> int:
    """Count the words in a text."""
    return len(text.split())


@mcp.resource("notes://welcome")
def welcome() -> str:
    """The welcome note."""
    return NOTES["welcome"]


@mcp.prompt
def summarise(title: str) -> str:
    """Ask for a summary of a note."""
    return f"Summarise the note titled {title}."


if __name__ == "__main__":
    mcp.run()
