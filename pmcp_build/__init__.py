"""pmcp-build: turn MCP servers into AWS Lambda deployments, declaratively."""

__version__ = "0.1.0"
