"""Tools from MCP servers (the official ``mcp`` client), listed and called like any other tool.

A server is started as a subprocess speaking over stdio (``command``) or reached
over streamable HTTP (``url``). Its tools become :class:`~genfoundry.apps.tools.Tool`
objects whose calls go through the open session. A tool the server marks
read-only (``readOnlyHint``), or that the configuration lists as ``read_only``,
is a read tool; every other MCP tool is treated as a write tool, because an
unknown server's tool may change things.

Example::

    config = McpServerConfig(name="files", command=["python", "server.py"])
    async with McpTools(config) as tools:
        box = ToolBox(tools.tools)
"""

from __future__ import annotations

import json
import sys
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from genfoundry.apps.tools import DEFAULT_TIMEOUT, Tool, ToolContext, ToolError, config_value
from genfoundry.core.errors import ConfigError

__all__ = ["McpServerConfig", "McpTools"]


@dataclass
class McpServerConfig:
    """An MCP server an agent uses: ``command`` (stdio) or ``url`` (streamable HTTP)."""

    name: str
    command: list[str] | None = None
    url: str | None = None
    env: dict[str, str] = field(default_factory=dict)  # values may be secret references (env:NAME)
    tools: list[str] | None = None  # only these of its tools (default: all)
    read_only: list[str] = field(default_factory=list)  # tools to treat as read tools
    permission: str | None = None  # the permission its write tools need
    timeout: float = DEFAULT_TIMEOUT

    def __post_init__(self):
        if bool(self.command) == bool(self.url):
            raise ConfigError(f"MCP server '{self.name}': give either command (stdio) or url (streamable HTTP)")


class McpTools:
    """An open session with one MCP server and the tools it offers (an async context manager)."""

    def __init__(self, config: McpServerConfig):
        self.config = config
        self.tools: list[Tool] = []
        self._stack = AsyncExitStack()
        self._client = None
        self._dead: str | None = None

    async def __aenter__(self) -> McpTools:
        from mcp import Client
        from mcp.client.stdio import StdioServerParameters

        config = self.config
        if config.command:
            command = [sys.executable if part == "python" else part for part in config.command]
            env = {k: config_value(v) for k, v in config.env.items()}
            target: Any = StdioServerParameters(command=command[0], args=command[1:], env=env or None)
        else:
            target = config.url
        try:
            self._client = await self._stack.enter_async_context(
                Client(target, read_timeout_seconds=config.timeout, cache=None))
            listed = await self._client.list_tools()
        except BaseException as exc:
            await self._stack.aclose()
            raise ConfigError(f"MCP server '{config.name}' did not start or answer: {_why(exc)}") from exc
        wanted = set(config.tools) if config.tools is not None else None
        self.tools = [self._tool(t) for t in listed.tools if wanted is None or t.name in wanted]
        return self

    async def __aexit__(self, *exc) -> None:
        try:
            await self._stack.aclose()
        except Exception:  # a server that already died: nothing left to close
            pass

    def _tool(self, listed) -> Tool:
        hints = listed.annotations
        read = listed.name in self.config.read_only or bool(hints and getattr(hints, "read_only_hint", False))
        schema = dict(listed.input_schema or {"type": "object", "properties": {}})
        schema.pop("title", None)

        async def call(arguments: dict[str, Any], context: ToolContext) -> Any:
            return await self._call(listed.name, arguments, context)
        return Tool(name=listed.name, description=listed.description or listed.name, parameters=schema, call=call,
                    risk="read" if read else "write", permission=None if read else self.config.permission,
                    timeout=self.config.timeout, source=f"mcp:{self.config.name}")

    async def _call(self, name: str, arguments: dict[str, Any], context: ToolContext) -> Any:
        if self._dead is not None:
            raise ToolError(f"MCP server '{self.config.name}' is not answering ({self._dead})")
        try:
            result = await self._client.call_tool(name, arguments,
                                                  meta={"genfoundry/idempotency_key": context.idempotency_key})
        except Exception as exc:
            self._dead = _why(exc)
            raise ToolError(f"MCP server '{self.config.name}' failed during {name}: {self._dead}") from exc
        text = "\n".join(getattr(c, "text", "") for c in result.content if getattr(c, "text", None))
        if result.is_error:
            raise ToolError(text or f"{name} reported an error")
        if result.structured_content is not None:
            return result.structured_content
        try:
            return json.loads(text)  # servers often answer data as JSON text
        except ValueError:
            return text


def _why(exc: BaseException) -> str:
    inner = getattr(exc, "exceptions", None)  # anyio task groups wrap the real error
    if inner:
        return _why(inner[0])
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
