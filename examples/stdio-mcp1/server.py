"""An mcp 1.x server, unchanged: FastMCP as the 1.x SDK spells it, run as a stdio
command. The runtime serves it with mcp 2.x; this file imports its own mcp 1.x from
__command__/."""

from importlib.metadata import version

from mcp.server.fastmcp import FastMCP

mcp = FastMCP("legacy-units")


@mcp.tool()
def km_to_miles(km: float) -> float:
    """Convert kilometres to miles."""
    return round(km * 0.621371, 4)


@mcp.tool()
def sdk_version() -> str:
    """The mcp SDK this server runs on."""
    return version("mcp")


if __name__ == "__main__":
    mcp.run()
