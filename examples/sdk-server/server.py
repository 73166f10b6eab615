"""A server on the mcp SDK's high-level MCPServer, unmodified: pmcp-build finds the
module-level `app` and serves it on Lambda."""

from mcp.server.mcpserver import MCPServer

app = MCPServer("unit-converter", instructions="Convert lengths and temperatures.")

FACTORS = {"m": 1.0, "km": 1000.0, "mi": 1609.344, "ft": 0.3048}


@app.tool()
def convert_length(value: float, source: str, target: str) -> float:
    """Convert a length between m, km, mi and ft."""
    return round(value * FACTORS[source] / FACTORS[target], 6)


@app.tool()
def celsius_to_fahrenheit(celsius: float) -> float:
    """Convert a temperature from Celsius to Fahrenheit."""
    return round(celsius * 9 / 5 + 32, 2)


@app.resource("units://lengths")
def lengths() -> str:
    """The length units this server knows."""
    return ", ".join(sorted(FACTORS))


@app.prompt()
def explain(unit: str) -> str:
    """Ask for an explanation of a unit."""
    return f"Explain where the unit {unit} comes from, in two sentences."


if __name__ == "__main__":
    app.run()  # stdio when run by hand; never runs on Lambda
