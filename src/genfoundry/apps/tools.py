"""Tools an agent can call: Python functions, HTTP endpoints and MCP servers' tools.

Every tool has a JSON schema for its arguments (checked when the tool is
declared, and arguments are validated against it before any call), a timeout,
and a risk class: ``read`` tools look things up and run freely; ``write`` tools
change something outside (a refund, an e-mail) and run only when the caller
holds the tool's permission and, where the agent's policy says so, after a
person approved the call. A write tool receives an idempotency key (the run and
step) so that a resumed run never does the same thing twice.

Example::

    @tool(risk="write", permission="refunds")
    def issue_refund(order_id: str, amount: float, idempotency_key: str = "") -> dict:
        "Refund part or all of an order."
        ...

    box = ToolBox([as_tool(issue_refund)])
    result = await box.call("issue_refund", {"order_id": "A1", "amount": 5}, ToolContext(run_id="r", step=1))
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
from pydantic import create_model

from genfoundry.core.errors import ConfigError
from genfoundry.models.secrets import is_secret_reference, resolve_secret

__all__ = ["RISKS", "Tool", "ToolBox", "ToolContext", "ToolError", "as_tool", "config_value", "http_tool",
           "import_tool",
           "result_text", "tool", "validate_arguments"]

RISKS = ("read", "write")
DEFAULT_TIMEOUT = 30.0
MAX_RESULT_CHARS = 4000  # what goes back to the model of one tool's answer


class ToolError(Exception):
    """A tool call that did not work; the agent shows the message to the model as the observation."""


@dataclass(frozen=True)
class ToolContext:
    """What a tool call knows of its run: the idempotency key is the same however often the step is retried."""

    run_id: str
    step: int
    home: Path | None = None  # genfoundry's home folder, for tools that keep files there

    @property
    def idempotency_key(self) -> str:
        return f"{self.run_id}:{self.step}"


Call = Callable[[dict[str, Any], ToolContext], Awaitable[Any]]


@dataclass
class Tool:
    """A callable the model may choose, with its argument schema and its risk."""

    name: str
    description: str
    parameters: dict[str, Any]
    call: Call
    risk: str = "read"
    permission: str | None = None  # a write tool runs only for callers holding this permission
    timeout: float = DEFAULT_TIMEOUT
    source: str = "python"  # python, http or mcp:SERVER

    def __post_init__(self):
        if self.risk not in RISKS:
            raise ConfigError(f"tool '{self.name}': risk must be one of {', '.join(RISKS)}, not {self.risk!r}")
        if not self.name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"tool name {self.name!r} may hold only letters, digits, '_' and '-'")
        try:
            jsonschema.Draft202012Validator.check_schema(self.parameters)
        except jsonschema.SchemaError as exc:
            raise ConfigError(f"tool '{self.name}': its argument schema is not valid JSON schema: "
                              f"{exc.message}") from exc
        if self.parameters.get("type") != "object":
            raise ConfigError(f"tool '{self.name}': its argument schema must describe an object")

    def openai(self) -> dict[str, Any]:
        """The tool in OpenAI's function-calling shape."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}


def validate_arguments(tool: Tool, arguments: Any) -> None:
    """Raise :class:`ToolError` naming what is wrong when ``arguments`` do not fit the tool's schema."""
    if not isinstance(arguments, dict):
        raise ToolError(f"arguments of {tool.name} must be a JSON object")
    errors = sorted(jsonschema.Draft202012Validator(tool.parameters).iter_errors(arguments), key=lambda e: e.path)
    if errors:
        where = "/".join(str(p) for p in errors[0].path) or "arguments"
        raise ToolError(f"invalid arguments for {tool.name}: {where}: {errors[0].message}")


class ToolBox:
    """The tools of one agent run, by name; calls are validated, bounded in time, and their errors caught."""

    def __init__(self, tools: list[Tool] | None = None):
        self.tools: dict[str, Tool] = {}
        for item in tools or []:
            self.add(item)

    def add(self, item: Tool) -> None:
        if item.name in self.tools:
            raise ConfigError(f"two tools are named '{item.name}'; rename one")
        self.tools[item.name] = item

    def get(self, name: str) -> Tool:
        try:
            return self.tools[name]
        except KeyError:
            raise ToolError(f"there is no tool named {name!r}; the tools are: {', '.join(self.tools)}") from None

    async def call(self, name: str, arguments: dict[str, Any], context: ToolContext) -> Any:
        """Validate and call; a timeout or an exception in the tool becomes a :class:`ToolError`."""
        item = self.get(name)
        validate_arguments(item, arguments)
        try:
            return await asyncio.wait_for(item.call(arguments, context), item.timeout)
        except ToolError:
            raise
        except asyncio.TimeoutError:
            raise ToolError(f"{name} did not answer within {item.timeout:g} s") from None
        except Exception as exc:  # the tool's own failure is an observation for the model, not a crash
            raise ToolError(f"{name} failed: {type(exc).__name__}: {exc}") from exc


def result_text(result: Any) -> str:
    """A tool's answer as the model will read it (JSON when it is data), cut to a bounded length."""
    text = result if isinstance(result, str) else json.dumps(result, default=str, ensure_ascii=False)
    return text if len(text) <= MAX_RESULT_CHARS else text[:MAX_RESULT_CHARS] + " …(cut)"


# -- Python functions ------------------------------------------------------------------------------

_RESERVED = ("idempotency_key", "context")  # filled in by the agent, never by the model


def tool(*, name: str | None = None, risk: str = "read", permission: str | None = None,
         timeout: float = DEFAULT_TIMEOUT, description: str | None = None):
    """Mark a function as a tool (its schema comes from its signature, its description from its docstring)."""

    def mark(fn):
        fn.__genfoundry_tool__ = {"name": name or fn.__name__, "risk": risk, "permission": permission,
                                  "timeout": timeout, "description": description}
        return fn
    return mark


def _schema_of(fn) -> dict[str, Any]:
    fields = {}
    try:
        hints = typing.get_type_hints(fn, include_extras=True)  # string annotations (PEP 563) resolved
    except (NameError, TypeError) as exc:
        raise ConfigError(f"tool {fn.__name__}: cannot read its type annotations: {exc}") from exc
    for param in inspect.signature(fn).parameters.values():
        if param.name in _RESERVED or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = hints.get(param.name, Any)
        fields[param.name] = (annotation, ... if param.default is inspect.Parameter.empty else param.default)
    schema = create_model(f"{fn.__name__}_arguments", **fields).model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    schema["additionalProperties"] = False
    return schema


def as_tool(fn, **overrides) -> Tool:
    """A :class:`Tool` from a Python function (sync or async), marked with :func:`tool` or not."""
    meta = {**getattr(fn, "__genfoundry_tool__", {}), **{k: v for k, v in overrides.items() if v is not None}}
    wants = set(inspect.signature(fn).parameters)

    async def call(arguments: dict[str, Any], context: ToolContext) -> Any:
        kwargs = dict(arguments)
        if "idempotency_key" in wants:
            kwargs["idempotency_key"] = context.idempotency_key
        if "context" in wants:
            kwargs["context"] = context
        if inspect.iscoroutinefunction(fn):
            return await fn(**kwargs)
        return await asyncio.to_thread(fn, **kwargs)

    doc = inspect.getdoc(fn) or ""
    return Tool(name=meta.get("name") or fn.__name__,
                description=meta.get("description") or doc.split("\n\n")[0].replace("\n", " ") or fn.__name__,
                parameters=meta.get("parameters") or _schema_of(fn), call=call, risk=meta.get("risk") or "read",
                permission=meta.get("permission"), timeout=meta.get("timeout") or DEFAULT_TIMEOUT)


def import_tool(reference: str, **overrides) -> Tool:
    """A tool from ``package.module:function``."""
    module_name, _, attr = reference.partition(":")
    if not attr:
        raise ConfigError(f"python tool {reference!r} must be written as package.module:function")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import tool {reference!r}: {exc}") from exc
    return as_tool(fn, **overrides)


def config_value(value: str) -> str:
    """A header or environment value from configuration: a secret reference (env:NAME, file:PATH) is
    resolved, anything else is taken as written."""
    return (resolve_secret(value) or "") if is_secret_reference(value) else value


# -- HTTP endpoints --------------------------------------------------------------------------------

@dataclass
class _HttpCall:
    url: str
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)  # values may be secret references (env:NAME)

    async def __call__(self, arguments: dict[str, Any], context: ToolContext) -> Any:
        import httpx

        headers = {k: config_value(v) for k, v in self.headers.items()}
        headers["Idempotency-Key"] = context.idempotency_key
        get = self.method.upper() == "GET"
        async with httpx.AsyncClient(timeout=None) as client:
            response = await client.request(self.method.upper(), self.url, headers=headers,
                                            params=arguments if get else None, json=None if get else arguments)
        if response.status_code >= 400:
            raise ToolError(f"HTTP {response.status_code}: {response.text[:500]}")
        try:
            return response.json()
        except ValueError:
            return response.text


def http_tool(*, name: str, description: str, parameters: dict[str, Any], url: str, method: str = "POST",
              headers: dict[str, str] | None = None, risk: str = "read", permission: str | None = None,
              timeout: float = DEFAULT_TIMEOUT) -> Tool:
    """A tool that sends its arguments to an HTTP endpoint (JSON body; query string for GET)."""
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"tool '{name}': url must start with http:// or https://")
    return Tool(name=name, description=description, parameters=parameters,
                call=_HttpCall(url=url, method=method, headers=dict(headers or {})), risk=risk,
                permission=permission, timeout=timeout, source="http")
