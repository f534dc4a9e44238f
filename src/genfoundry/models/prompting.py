"""Turning chat messages into a prompt for local models, and tool calls back out.

Base models such as the built-in Gemma 3 270M carry no chat template, so the
local providers render one of a few well-known turn formats themselves, and
describe tools in the prompt. A forced tool call (``tool_choice`` "required" or
a named function) is constrained by a JSON schema, so it always parses.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from genfoundry.core.errors import InvalidRequest
from genfoundry.core.types import Message, ToolCall

__all__ = [
    "RenderedPrompt",
    "TEMPLATES",
    "TurnTemplate",
    "forced_tool_schema",
    "parse_tool_calls",
    "render_chat",
    "template_for",
]


@dataclass(frozen=True)
class TurnTemplate:
    """A turn format: how a turn opens and closes, and what stops generation."""

    name: str
    user: str
    assistant: str
    system: str | None  # None: fold the system text into the first user turn
    end: str
    generation_prefix: str
    stop: tuple[str, ...]


TEMPLATES: dict[str, TurnTemplate] = {
    "gemma": TurnTemplate(
        name="gemma", user="<start_of_turn>user\n", assistant="<start_of_turn>model\n",
        system=None, end="<end_of_turn>\n", generation_prefix="<start_of_turn>model\n",
        stop=("<end_of_turn>", "<start_of_turn>")),
    "chatml": TurnTemplate(
        name="chatml", user="<|im_start|>user\n", assistant="<|im_start|>assistant\n",
        system="<|im_start|>system\n", end="<|im_end|>\n",
        generation_prefix="<|im_start|>assistant\n", stop=("<|im_end|>", "<|im_start|>")),
    "plain": TurnTemplate(
        name="plain", user="User: ", assistant="Assistant: ", system="System: ", end="\n\n",
        generation_prefix="Assistant:", stop=("\nUser:", "\nSystem:")),
}


def template_for(architecture: str | None, requested: str | None = None) -> TurnTemplate:
    """The template asked for, else the one the model family is trained on."""
    if requested:
        if requested not in TEMPLATES:
            raise InvalidRequest(f"unknown chat template '{requested}'; choose one of {', '.join(TEMPLATES)}")
        return TEMPLATES[requested]
    arch = (architecture or "").lower()
    if arch.startswith("gemma"):
        return TEMPLATES["gemma"]
    if arch.startswith(("qwen", "yi", "internlm")):
        return TEMPLATES["chatml"]
    return TEMPLATES["plain"]


@dataclass(frozen=True)
class RenderedPrompt:
    text: str
    stop: list[str]


TOOL_INSTRUCTIONS = (
    "You can call these tools:\n{tools}\n"
    "To call a tool, answer with only <tool_call>{{\"name\": \"TOOL\", \"arguments\": {{...}}}}</tool_call>. "
    "Otherwise answer normally."
)


def _tool_lines(tools: list[dict[str, Any]]) -> str:
    lines = []
    for tool in tools:
        fn = tool.get("function", tool)
        params = json.dumps(fn.get("parameters") or {"type": "object", "properties": {}})
        lines.append(f"- {fn['name']}: {fn.get('description', '')} Parameters: {params}")
    return "\n".join(lines)


def _content_of(message: Message) -> str:
    if message.role == "tool":
        return f"Tool result ({message.name or message.tool_call_id or 'tool'}):\n{message.content or ''}"
    if message.tool_calls:
        calls = "".join(
            f"<tool_call>{json.dumps({'name': c.name, 'arguments': _loads_or_text(c.arguments)})}</tool_call>"
            for c in message.tool_calls)
        return (message.content or "") + calls
    return message.content or ""


def _loads_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def render_chat(
    messages: list[Message], template: TurnTemplate, *, tools: list[dict[str, Any]] | None = None,
) -> RenderedPrompt:
    """Render messages in ``template``'s turn format, ending where the model speaks."""
    system_parts = [m.content or "" for m in messages if m.role in ("system", "developer")]
    if tools:
        system_parts.append(TOOL_INSTRUCTIONS.format(tools=_tool_lines(tools)))
    system_text = "\n\n".join(p for p in system_parts if p)
    out: list[str] = []
    pending_system = system_text
    if template.system is not None and system_text:
        out.append(f"{template.system}{system_text}{template.end}")
        pending_system = ""
    for message in messages:
        if message.role in ("system", "developer"):
            continue
        content = _content_of(message)
        if message.role == "assistant":
            out.append(f"{template.assistant}{content}{template.end}")
            continue
        if pending_system:
            content = f"{pending_system}\n\n{content}"
            pending_system = ""
        out.append(f"{template.user}{content}{template.end}")
    if pending_system:  # only a system message: it still has to reach the model
        out.append(f"{template.user}{pending_system}{template.end}")
    out.append(template.generation_prefix)
    return RenderedPrompt(text="".join(out), stop=list(template.stop))


def forced_tool_schema(tools: list[dict[str, Any]], tool_choice: str | dict[str, Any]) -> dict[str, Any]:
    """JSON schema of a call to one of ``tools`` (or the one ``tool_choice`` names)."""
    functions = [t.get("function", t) for t in tools]
    if isinstance(tool_choice, dict):
        wanted = tool_choice.get("function", {}).get("name")
        functions = [f for f in functions if f["name"] == wanted]
        if not functions:
            raise InvalidRequest(f"tool_choice names '{wanted}', which is not among the tools", param="tool_choice")
    options = [
        {"type": "object",
         "properties": {"name": {"const": f["name"]},
                        "arguments": f.get("parameters") or {"type": "object"}},
         "required": ["name", "arguments"]}
        for f in functions
    ]
    return options[0] if len(options) == 1 else {"anyOf": options}


_TOOL_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.DOTALL)


def _tool_call(payload: dict[str, Any]) -> ToolCall:
    args = payload.get("arguments", {})
    return ToolCall(id=f"call_{uuid.uuid4().hex[:24]}", name=str(payload.get("name", "")),
                    arguments=args if isinstance(args, str) else json.dumps(args))


def parse_tool_calls(text: str, *, forced: bool = False) -> tuple[str, list[ToolCall]]:
    """Split generated text into plain content and tool calls.

    ``forced`` output is one bare JSON object (it was schema-constrained).
    """
    if forced:
        try:
            return "", [_tool_call(json.loads(text))]
        except (ValueError, AttributeError):  # not JSON, or JSON that is not an object
            return text, []
    calls = []
    for match in _TOOL_CALL.finditer(text):
        try:
            calls.append(_tool_call(json.loads(match.group(1))))
        except (ValueError, AttributeError):
            continue
    if not calls:
        return text, []
    return _TOOL_CALL.sub("", text).strip(), calls
