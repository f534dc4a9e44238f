"""Agents declared in YAML: a model, instructions, tools, knowledge collections and limits.

An agent is served as the model name ``agent:NAME`` and run by
:class:`~genfoundry.apps.agent_run.AgentRun`. Agents live as YAML files in
``GENFOUNDRY_HOME/agents/`` (one per file); the sample support desk ships one
(``support``).

Example (``~/.genfoundry/agents/support.yaml``)::

    name: support
    model: default
    instructions: You answer customer tickets for an outdoor-gear shop.
    tools:
      - python: genfoundry.apps.support_desk:lookup_order
      - python: genfoundry.apps.support_desk:issue_refund
        approval: {above: {amount: 100}}     # a person approves refunds over 100
    collections: [sample]
    limits: {max_steps: 8, max_seconds: 120}
"""

from __future__ import annotations

import re
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from genfoundry.apps.mcp import McpServerConfig, McpTools
from genfoundry.apps.tools import Tool, ToolBox, http_tool, import_tool
from genfoundry.core.errors import ConfigError, NotFound
from genfoundry.core.settings import Settings

__all__ = ["AGENT_PREFIX", "AgentLimits", "AgentSpec", "Approval", "McpSpec", "ToolSpec", "agent_dirs", "build_tools",
           "find_agent", "list_agents", "load_agent_file"]

AGENT_PREFIX = "agent:"
SAMPLE_DIR = Path(__file__).parent / "support_desk"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class Approval(BaseModel):
    """When a write tool's call waits for a person: ``always``, ``never``, or when an argument is ``above`` a number."""

    model_config = ConfigDict(extra="forbid")

    always: bool = Field(False, description="Every call waits for approval.")
    above: dict[str, float] = Field(default_factory=dict,
                                    description="Calls whose numeric argument exceeds this value wait for approval.")

    def reason(self, arguments: dict[str, Any]) -> str | None:
        """Why a call with these arguments needs approval, or None."""
        if self.always:
            return "every call of this tool needs approval"
        for name, limit in self.above.items():
            value = arguments.get(name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                return f"{name} is not a number, so it cannot be checked against {limit:g}"
            if value > limit:
                return f"{name} {value:g} is above {limit:g}"
        return None


class ToolSpec(BaseModel):
    """One tool of an agent: a Python function (``python``) or an HTTP endpoint (``http``)."""

    model_config = ConfigDict(extra="forbid")

    python: str | None = Field(None, description="package.module:function")
    http: dict[str, Any] | None = Field(None, description="{url, method, headers} of an HTTP endpoint")
    name: str | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = Field(None, description="JSON schema of the arguments (HTTP tools)")
    risk: Literal["read", "write"] | None = None
    permission: str | None = Field(None, description="The key permission a write tool needs.")
    timeout: float | None = Field(None, gt=0, le=600)
    approval: Literal["always", "never"] | Approval | None = Field(
        None, description="For write tools: always (the default), never, or {above: {argument: number}}.")

    @model_validator(mode="after")
    def _one_kind(self):
        if bool(self.python) == bool(self.http):
            raise ValueError("a tool is either python: module:function or http: {url: ...}")
        if self.http and not (self.name and self.parameters is not None and self.description):
            raise ValueError("an http tool needs name, description and parameters (a JSON schema)")
        return self

    def build(self) -> Tool:
        if self.python:
            return import_tool(self.python, name=self.name, description=self.description, risk=self.risk,
                               permission=self.permission, timeout=self.timeout, parameters=self.parameters)
        http = dict(self.http or {})
        if "url" not in http:
            raise ConfigError(f"http tool '{self.name}' needs a url")
        return http_tool(name=self.name, description=self.description, parameters=self.parameters,
                         url=http["url"], method=http.get("method", "POST"), headers=http.get("headers"),
                         risk=self.risk or "read", permission=self.permission, timeout=self.timeout or 30.0)


class McpSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    command: list[str] | None = None
    url: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    tools: list[str] | None = None
    read_only: list[str] = Field(default_factory=list)
    permission: str | None = None
    timeout: float = Field(30.0, gt=0, le=600)
    approval: Literal["always", "never"] | Approval | None = None


class AgentLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_steps: int = Field(8, ge=1, le=100, description="Model steps before the run stops.")
    max_seconds: float = Field(180.0, gt=0, le=3600, description="Wall time of a run (approval waits excluded).")
    max_cost_usd: float | None = Field(None, gt=0, description="Dollars a run may spend on its model.")
    max_repeats: int = Field(1, ge=0, le=10, description="Identical tool calls answered from memory before the "
                                                          "run stops as a loop.")


class AgentSpec(BaseModel):
    """An agent as its YAML file declares it."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    model: str = "default"
    mode: Literal["auto", "json", "tools"] = Field(
        "auto", description="How the model picks a step: tools (native function calling), json (one JSON step "
                            "held to a schema by the engine's grammar), auto (tools for remote APIs, json for "
                            "local engines).")
    instructions: str = ""
    tools: list[ToolSpec] = Field(default_factory=list)
    mcp: list[McpSpec] = Field(default_factory=list)
    collections: list[str] = Field(default_factory=list)
    limits: AgentLimits = Field(default_factory=AgentLimits)
    approvers: list[str] = Field(default_factory=lambda: ["admin"],
                                 description="Key roles that may approve, edit or reject a pending action.")
    examples: list[dict[str, Any]] = Field(default_factory=list, description="Worked examples shown to json-mode models: {ticket, steps: [{tool, arguments, observation}]}.")
    source: str | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _name(self):
        if not _NAME.match(self.name):
            raise ValueError(f"agent name {self.name!r}: lower-case letters, digits, '_' and '-', up to 64")
        return self

    def approval_for(self, tool: Tool) -> Approval:
        """A write tool's approval rule (``always`` unless its entry says otherwise)."""
        entries = {(t.name or (t.python or "").rpartition(":")[2]): t.approval for t in self.tools}
        entries.update({f"mcp:{m.name}": m.approval for m in self.mcp})
        rule = entries.get(tool.name, entries.get(tool.source))
        if rule == "never":
            return Approval()
        if rule is None or rule == "always":
            return Approval(always=True)
        return rule


def load_agent_file(path: Path) -> AgentSpec:
    """Read and check one agent file; errors say which file and what is wrong."""
    try:
        data = yaml.safe_load(path.read_text())
        spec = AgentSpec.model_validate(data)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read agent file {path}: {exc}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "file"
        raise ConfigError(f"agent file {path}: {where}: {first['msg']}") from exc
    spec.source = str(path)
    return spec


def agent_dirs(settings: Settings) -> list[Path]:
    """Where agents are found: the home's ``agents/`` folder, then the sample support desk."""
    return [settings.home / "agents", SAMPLE_DIR]


def list_agents(settings: Settings) -> dict[str, AgentSpec | ConfigError]:
    """Every agent by name (a broken file is listed as its error; the home's file wins over the sample)."""
    found: dict[str, AgentSpec | ConfigError] = {}
    for folder in agent_dirs(settings):
        for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
            try:
                spec = load_agent_file(path)
            except ConfigError as exc:
                found.setdefault(path.stem, exc)
                continue
            found.setdefault(spec.name, spec)
    return found


def find_agent(settings: Settings, name: str) -> AgentSpec:
    name = name.removeprefix(AGENT_PREFIX)
    found = list_agents(settings).get(name)
    if found is None:
        raise NotFound(f"there is no agent named '{name}'; `genfoundry agent list` shows them, and an agent "
                       f"is a YAML file in {settings.home / 'agents'}", param="model")
    if isinstance(found, ConfigError):
        raise found
    return found


async def build_tools(spec: AgentSpec, stack: AsyncExitStack, *, knowledge=None) -> ToolBox:
    """The agent's tools: its Python and HTTP tools, its MCP servers' tools (sessions held open on ``stack``),
    and ``search_knowledge`` when it names collections (``knowledge(collection, query)`` does the search)."""
    box = ToolBox([entry.build() for entry in spec.tools])
    for server in spec.mcp:
        config = McpServerConfig(name=server.name, command=server.command, url=server.url, env=server.env,
                                 tools=server.tools, read_only=server.read_only, permission=server.permission,
                                 timeout=server.timeout)
        for item in (await stack.enter_async_context(McpTools(config))).tools:
            box.add(item)
    if spec.collections and knowledge is not None:
        box.add(_knowledge_tool(spec.collections, knowledge))
    return box


def _knowledge_tool(collections: list[str], knowledge) -> Tool:
    async def call(arguments: dict[str, Any], context) -> Any:
        found = []
        for name in collections:
            found.extend(await knowledge(name, arguments["query"]))
        return found[:4]
    return Tool(name="search_knowledge", description=f"Search the documents ({', '.join(collections)}) "
                "for policies and facts; returns passages with their source.",
                parameters={"type": "object", "properties": {"query": {"type": "string", "maxLength": 300}},
                            "required": ["query"], "additionalProperties": False}, call=call)
