"""Running an agent: the model picks one step at a time; every step is stored; side effects are gated.

A step is a tool call or the final answer. Models with native tool calling get
the tools in OpenAI's shape; the others (the built-in model) answer with one
JSON object held to a schema by the engine's grammar, so every step parses.
Before a tool runs, its arguments are validated against its schema. Read tools
run at once. Write tools need the caller's permission and, when the agent's
approval rule says so, a person's decision: the run is then stored as
``waiting`` and :func:`decide` plus :meth:`AgentRun.resume` continue it, even in
another process after a restart. Each side effect is recorded in
``agent_actions`` under the key ``RUN:STEP`` (also the idempotency key the tool
receives) and is never executed twice. Tool errors, refusals and repeated
calls go back to the model as observations; steps, time, cost and loops are
bounded.

Example::

    run = AgentRun(spec, box, generate=direct_generate(hub), store=store, hub=hub)
    outcome = await run.start([Message(role="user", content="Refund order A1002 please")])
    outcome.status   # 'succeeded', or 'waiting' for an approval
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from genfoundry.apps.agents import AgentSpec
from genfoundry.apps.answer import Generate
from genfoundry.apps.tools import Tool, ToolBox, ToolContext, ToolError, result_text, validate_arguments
from genfoundry.core import audit
from genfoundry.core.errors import Conflict, GenfoundryError, InvalidRequest, NotFound, PermissionDenied
from genfoundry.core.store import Store, utcnow
from genfoundry.core.types import GenerationRequest, Message, ToolCall, Usage
from genfoundry.models.pricing import call_cost

__all__ = ["AgentOutcome", "AgentRun", "FINAL_ANSWER", "FORGOTTEN", "decide", "forget_runs", "get_action",
           "get_run", "list_actions", "list_runs", "step_schema"]

FINAL_ANSWER = "final_answer"
STEP_TOKENS = 320  # one step: a tool call or a short final answer
MAX_INVALID = 2  # steps in a row that fail to parse or to validate before the run stops
NEXT = "\nGive the next step as one JSON object."
WITHHELD = "[this tool result was withheld by the guard]"

ScreenObservation = Callable[[str], Awaitable[bool]]  # True: the model may read this tool result


@dataclass
class AgentOutcome:
    """Where a run stands: its answer, or the action waiting for approval, or why it stopped."""

    id: str
    agent: str
    status: str  # running waiting succeeded failed stopped
    answer: str | None = None
    error: str | None = None
    steps: list[dict] = field(default_factory=list)
    pending: dict | None = None
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["usage"] = {"prompt_tokens": self.usage.prompt_tokens, "completion_tokens": self.usage.completion_tokens,
                         "total_tokens": self.usage.total_tokens}
        return data

    def reply(self) -> str:
        """What the person talking to the agent reads."""
        if self.status == "succeeded":
            return self.answer or ""
        if self.status == "waiting" and self.pending:
            return (f"This needs a person's approval before I go on: {self.pending['tool']} "
                    f"{json.dumps(self.pending['arguments'])} ({self.pending['reason']}). "
                    f"Run {self.id} continues once it is decided.")
        return f"The agent could not finish: {self.error}"


@dataclass
class _Choice:
    tool: str
    arguments: Any
    raw: str
    call_id: str | None = None


def step_schema(tools: ToolBox, *, without: set[str] = frozenset()) -> dict[str, Any]:
    """The JSON schema of one step: a call of one of the tools (but those in ``without``) with its arguments,
    or the final answer."""
    options = [{"type": "object", "properties": {"tool": {"const": t.name}, "arguments": t.parameters},
                "required": ["tool", "arguments"], "additionalProperties": False}
               for t in tools.tools.values() if t.name not in without]
    options.append({"type": "object", "properties": {
        "tool": {"const": FINAL_ANSWER},
        "arguments": {"type": "object", "properties": {"answer": {"type": "string", "maxLength": 800}},
                      "required": ["answer"], "additionalProperties": False}},
        "required": ["tool", "arguments"], "additionalProperties": False})
    return {"anyOf": options}


class AgentRun:
    """One run of an agent (see the module docstring)."""

    def __init__(self, spec: AgentSpec, tools: ToolBox, *, generate: Generate, store: Store, hub=None,
                 caller: dict | None = None, mode: str = "json", constrained: bool = True,
                 screen_observation: ScreenObservation | None = None, actor: str = "local",
                 trace_id: str | None = None, home=None):
        self.spec = spec
        self.home = home  # handed to tools that keep files (ToolContext.home)
        self.tools = tools
        self.generate = generate
        self.store = store
        self.hub = hub
        self.caller = caller  # {id, name, role, permissions}; None: the machine's own user
        self.mode = mode
        self.constrained = constrained  # json mode without the grammar: only the benchmark's peer
        self.screen_observation = screen_observation
        self.actor = actor
        self.trace_id = trace_id
        self.id = f"run_{uuid.uuid4().hex[:20]}"
        self.input: list[Message] = []
        self.steps: list[dict] = []
        self.usage = Usage()
        self.cost = 0.0
        self.seconds = 0.0

    # -- start and resume -----------------------------------------------------------------------
    async def start(self, messages: list[Message]) -> AgentOutcome:
        if not messages or messages[-1].role != "user" or not (messages[-1].content or "").strip():
            raise InvalidRequest("an agent answers the last user message; send one with text", param="messages")
        self.input = [m for m in messages if m.role in ("user", "assistant") and m.content][-8:]
        with self.store.begin() as conn:
            conn.execute(self.store.tables.agent_runs.insert().values(
                id=self.id, agent=self.spec.name, status="running", caller=self.caller,
                input=[dataclasses.asdict(m) for m in self.input], steps=[], trace_id=self.trace_id,
                created_at=utcnow(), updated_at=utcnow()))
        return await self._loop()

    async def resume(self, run_id: str) -> AgentOutcome:
        """Continue a stored run: after its pending action was decided, or after its process died."""
        row = get_run(self.store, run_id)
        if row["agent"] != self.spec.name:
            raise InvalidRequest(f"run {run_id} belongs to agent '{row['agent']}'")
        stale = row["status"] == "running" and \
            utcnow() - row["updated_at"] > dt.timedelta(seconds=self.spec.limits.max_seconds + 60)
        if row["status"] not in ("waiting",) and not stale:
            raise Conflict(f"run {run_id} is {row['status']}; only a run waiting for a decision, or one whose "
                           "process died, can be resumed")
        table = self.store.tables.agent_runs
        with self.store.begin() as conn:  # one resumer wins
            won = conn.execute(table.update().where(table.c.id == run_id, table.c.status == row["status"],
                                                    table.c.updated_at == row["updated_at"])
                               .values(status="running", updated_at=utcnow())).rowcount
        if not won:
            raise Conflict(f"run {run_id} is already being resumed")
        self.id, self.caller = run_id, row["caller"]
        self.input = [Message(**m) for m in row["input"]]
        self.steps = list(row["steps"])
        self.usage = Usage(row["prompt_tokens"], row["completion_tokens"])
        self.cost, self.seconds = row["cost_usd"], row["seconds"]
        if self.steps and self.steps[-1]["kind"] == "approval":
            await self._after_decision(self.steps[-1])
        return await self._loop()

    async def _after_decision(self, step: dict) -> None:
        action = get_action(self.store, step["action"])
        if action["status"] == "pending":
            self._save("waiting")
            raise Conflict(f"action {action['id']} is still waiting for a decision")
        if action["status"] == "rejected":
            note = f": {action['note']}" if action["note"] else ""
            step.update(kind="rejected", observation=f"A person ({action['decided_by']}) rejected this action"
                        f"{note}. Do not try it again; tell the customer what happens instead.")
            return
        tool = self.tools.get(action["tool"])
        step["arguments"] = action["arguments"]
        step.update(kind="tool", observation=await self._execute(action["id"], tool, action["arguments"],
                                                                step["n"]))

    # -- the loop -------------------------------------------------------------------------------
    async def _loop(self) -> AgentOutcome:
        began, before = time.monotonic(), self.seconds
        try:
            while True:
                self.seconds = before + time.monotonic() - began
                limit = self._limit_reached()
                if limit:
                    return self._end("stopped", error=limit)
                choice = await self._choose()
                self.seconds = before + time.monotonic() - began
                n = len(self.steps) + 1
                if choice is not None and choice.tool == FINAL_ANSWER:
                    answer = str((choice.arguments or {}).get("answer", "")) if isinstance(choice.arguments, dict) \
                        else str(choice.arguments)
                    self.steps.append({"n": n, "kind": "final", "tool": FINAL_ANSWER, "arguments": choice.arguments,
                                       "observation": None, "raw": choice.raw})
                    return self._end("succeeded", answer=answer)
                waiting = await self._act(n, choice)
                if waiting:
                    return self._end("waiting")
                if self._invalid_run() >= MAX_INVALID:
                    return self._end("stopped", error=f"the model's last {MAX_INVALID} steps were not valid steps")
                if self._repeats() > self.spec.limits.max_repeats:
                    return self._end("stopped", error="the model kept calling a tool with the same arguments")
                self._save("running")
        except asyncio.CancelledError:
            self._end("stopped", error="the request was cancelled")
            raise
        except GenfoundryError as exc:
            self._end("failed", error=str(exc))
            raise

    def _limit_reached(self) -> str | None:
        limits = self.spec.limits
        if sum(1 for s in self.steps if s["kind"] != "approval") >= limits.max_steps:
            return f"the run reached its limit of {limits.max_steps} steps"
        if self.seconds >= limits.max_seconds:
            return f"the run reached its limit of {limits.max_seconds:g} s"
        if limits.max_cost_usd is not None and self.cost >= limits.max_cost_usd:
            return f"the run reached its cost limit of ${limits.max_cost_usd:g}"
        return None

    def _invalid_run(self) -> int:
        count = 0
        for step in reversed(self.steps):
            if step["kind"] != "invalid":
                break
            count += 1
        return count

    def _repeats(self) -> int:
        return sum(1 for s in self.steps if s["kind"] == "repeat")

    # -- choosing a step --------------------------------------------------------------------------
    async def _choose(self) -> _Choice | None:
        started = time.perf_counter()
        if self.mode == "tools":
            request = GenerationRequest(messages=self._tool_messages(), max_tokens=STEP_TOKENS, temperature=0,
                                        tools=[t.openai() for t in self.tools.tools.values()], tool_choice="auto")
        else:
            messages = self._json_messages()
            request = GenerationRequest(messages=messages, max_tokens=STEP_TOKENS, temperature=0,
                                        json_schema=step_schema(self.tools, without=self._looping())
                                        if self.constrained else None, stop=["\nObservation"])
            if self._base_model():  # a base model continues the transcript itself, as a completion
                request.messages = None
                request.prompt = f"{messages[0].content}{messages[1].content.removesuffix(NEXT)}"
        generation = await self.generate(self.spec.model, request)
        self._spent(generation.usage, time.perf_counter() - started)
        if self.mode == "tools":
            if generation.tool_calls:
                call = generation.tool_calls[0]
                return _Choice(call.name, _loads(call.arguments), call.arguments, call.id)
            return _Choice(FINAL_ANSWER, {"answer": generation.text.strip()}, generation.text)
        data = _loads(generation.text)
        if not isinstance(data, dict) or not isinstance(data.get("tool"), str):
            self.steps.append({"n": len(self.steps) + 1, "kind": "invalid", "tool": None, "arguments": None,
                               "raw": generation.text[:2000], "observation": "That was not a valid step. Answer "
                               'with one JSON object: {"tool": NAME, "arguments": {...}}.'})
            return None
        return _Choice(data["tool"], data.get("arguments", {}), generation.text)

    def _base_model(self) -> bool:
        """A model trained only to continue text (the hub's ``base_model`` option, e.g. the built-in one)."""
        if self.hub is None:
            return False
        try:
            return bool(self.hub.resolve(self.spec.model).options.get("base_model"))
        except GenfoundryError:
            return False

    def _looping(self) -> set[str]:
        """A tool whose identical call was just repeated is left out of the next step's choices: a small model
        that copies its last step is steered on instead of stopped."""
        last = self.steps[-1] if self.steps else None
        return {last["tool"]} if last is not None and last["kind"] == "repeat" else set()

    def _spent(self, usage: Usage, seconds: float) -> None:
        self.usage = Usage(self.usage.prompt_tokens + usage.prompt_tokens,
                           self.usage.completion_tokens + usage.completion_tokens)
        if self.hub is not None:
            try:
                self.cost += call_cost(self.hub.resolve(self.spec.model), usage, attributed_seconds=seconds) or 0.0
            except GenfoundryError:
                pass

    def _json_messages(self) -> list[Message]:
        lines = []
        for t in self.tools.tools.values():
            props = t.parameters.get("properties", {})
            args = ", ".join(f"{k}: {v.get('type', 'any')}" for k, v in props.items())
            gate = " (changes things; may need approval)" if t.risk == "write" else ""
            lines.append(f"- {t.name}({args}): {t.description}{gate}")
        lines.append(f"- {FINAL_ANSWER}(answer: string): your reply to the customer; ends the task.")
        system = (f"{self.spec.instructions.strip()}\n\nTools:\n" + "\n".join(lines) +
                  '\n\nTake one step at a time. Each step is one JSON object: {"tool": NAME, "arguments": {...}}. '
                  "After each tool call you get an Observation. Use only facts from the customer's message and "
                  "from observations." + "".join(_worked(e) for e in self.spec.examples))
        # The run so far as one transcript in the worked examples' own format: small base models continue
        # a pattern far more reliably than they follow chat turns.
        lines = ["\n\nNow the real ticket."]
        lines += [f"{'Customer' if m.role == 'user' else 'Agent'}: {m.content}" for m in self.input]
        for step in self.steps:
            lines.append(step["raw"].strip() if step["kind"] == "invalid" else
                         json.dumps({"tool": step["tool"], "arguments": step["arguments"]}, ensure_ascii=False))
            lines.append(f"Observation: {step['observation']}")
        lines.append(NEXT.strip())
        return [Message(role="system", content=system), Message(role="user", content="\n".join(lines))]

    def _tool_messages(self) -> list[Message]:
        messages = [Message(role="system", content=self.spec.instructions.strip() or "You are a helpful agent."),
                    *self.input]
        for step in self.steps:
            call_id = step.get("call_id") or f"call_{step['n']}"
            if step["kind"] == "invalid":
                messages.append(Message(role="assistant", content=step["raw"]))
                messages.append(Message(role="user", content=step["observation"]))
                continue
            messages.append(Message(role="assistant", tool_calls=[ToolCall(
                id=call_id, name=step["tool"], arguments=json.dumps(step["arguments"]))]))
            messages.append(Message(role="tool", tool_call_id=call_id, content=str(step["observation"])))
        return messages

    # -- acting --------------------------------------------------------------------------------
    async def _act(self, n: int, choice: _Choice | None) -> bool:
        """Carry out a tool step; True when it waits for approval."""
        if choice is None:
            return False  # the invalid step is already recorded
        step = {"n": n, "kind": "tool", "tool": choice.tool, "arguments": choice.arguments, "raw": choice.raw,
                "call_id": choice.call_id, "observation": None}
        self.steps.append(step)
        try:
            tool = self.tools.get(choice.tool)
            validate_arguments(tool, choice.arguments)
        except ToolError as exc:
            step.update(kind="invalid", observation=str(exc))
            return False
        earlier = self._earlier(step)
        if earlier is not None:
            step.update(kind="repeat", observation=f"You already called {tool.name} with these arguments; the "
                        f"answer was: {earlier['observation']}. Do not call it again: take another step or give "
                        "the final answer.")
            return False
        if tool.risk == "read":
            step["observation"] = await self._read(tool, choice.arguments, n)
            return False
        return await self._write(step, tool)

    def _earlier(self, step: dict) -> dict | None:
        signature = (step["tool"], json.dumps(step["arguments"], sort_keys=True))
        for other in self.steps[:-1]:
            if other["kind"] == "tool" and (other["tool"], json.dumps(other["arguments"], sort_keys=True)) == signature:
                return other
        return None

    async def _read(self, tool: Tool, arguments: dict, n: int) -> str:
        try:
            result = await self.tools.call(tool.name, arguments, ToolContext(self.id, n, self.home))
        except ToolError as exc:
            return f"error: {exc}"
        return await self._screened(result_text(result))

    async def _screened(self, text: str) -> str:
        if self.screen_observation is not None and not await self.screen_observation(text):
            return WITHHELD
        return text

    def _permitted(self, tool: Tool) -> bool:
        caller = self.caller
        if caller is None or caller.get("role") == "admin":
            return True
        if tool.permission is None:
            return caller.get("role") == "developer"
        return tool.permission in (caller.get("permissions") or [])

    async def _write(self, step: dict, tool: Tool) -> bool:
        n, arguments = step["n"], step["arguments"]
        if not self._permitted(tool):
            need = f"the permission '{tool.permission}'" if tool.permission else "a developer or admin key"
            step.update(kind="denied", observation=f"Not permitted: {tool.name} needs {need}, which this caller "
                        "does not have. Do not try again; tell the customer a colleague will follow up.")
            audit.record(self.store, action="agent.tool_denied", actor=self.actor, target=f"{self.id}:{n}",
                         details={"agent": self.spec.name, "tool": tool.name,
                                  "arguments": _fingerprint(self.home, arguments)})
            return False
        reason = self.spec.approval_for(tool).reason(arguments)
        action_id = f"{self.id}:{n}"
        status = "pending" if reason else "approved"
        with self.store.begin() as conn:
            table = self.store.tables.agent_actions
            if conn.execute(sa.select(table.c.id).where(table.c.id == action_id)).first() is None:
                conn.execute(table.insert().values(
                    id=action_id, run_id=self.id, step=n, tool=tool.name, arguments=arguments,
                    proposed={"arguments": arguments, "parameters": tool.parameters}, status=status,
                    needs_approval=bool(reason), reason=reason, created_at=utcnow()))
        if reason:
            step.update(kind="approval", action=action_id, reason=reason)
            audit.record(self.store, action="agent.approval_requested", actor=self.actor, target=action_id,
                         details={"agent": self.spec.name, "tool": tool.name,
                                  "arguments": _fingerprint(self.home, arguments)})
            return True
        step["observation"] = await self._execute(action_id, tool, arguments, n)
        return False

    async def _execute(self, action_id: str, tool: Tool, arguments: dict, n: int) -> str:
        """Run an approved side effect once: a second attempt finds it done and reads the stored result."""
        table = self.store.tables.agent_actions
        with self.store.begin() as conn:
            claimed = conn.execute(table.update().where(table.c.id == action_id,
                                                        table.c.status.in_(("approved", "running")))
                                   .values(status="running")).rowcount
            row = conn.execute(sa.select(table).where(table.c.id == action_id)).mappings().one()
        if not claimed:
            if row["status"] == "done":
                return result_text(row["result"])
            return f"error: action {action_id} is {row['status']}"
        try:
            result = await self.tools.call(tool.name, arguments, ToolContext(self.id, n, self.home))
            status, stored, text = "done", result, result_text(result)
        except ToolError as exc:
            status, stored, text = "failed", {"error": str(exc)}, f"error: {exc}"
        with self.store.begin() as conn:
            conn.execute(table.update().where(table.c.id == action_id).values(
                status=status, result=json.loads(json.dumps(stored, default=str))))
        audit.record(self.store, action=f"agent.tool_{'executed' if status == 'done' else 'failed'}",
                     actor=self.actor, target=action_id,
                     details={"agent": self.spec.name, "tool": tool.name,
                              "arguments": _fingerprint(self.home, arguments), "result": _fingerprint(self.home, text)})
        return await self._screened(text)

    # -- storing ---------------------------------------------------------------------------------
    def _save(self, status: str, **values) -> None:
        table = self.store.tables.agent_runs
        with self.store.begin() as conn:
            conn.execute(table.update().where(table.c.id == self.id).values(
                status=status, steps=json.loads(json.dumps(self.steps, default=str)),
                prompt_tokens=self.usage.prompt_tokens, completion_tokens=self.usage.completion_tokens,
                cost_usd=self.cost, seconds=self.seconds, updated_at=utcnow(), **values))

    def _end(self, status: str, *, answer: str | None = None, error: str | None = None) -> AgentOutcome:
        self._save(status, answer=answer, error=error)
        pending = None
        if status == "waiting":
            step = self.steps[-1]
            pending = {"action": step["action"], "tool": step["tool"], "arguments": step["arguments"],
                       "reason": step["reason"]}
        return AgentOutcome(id=self.id, agent=self.spec.name, status=status, answer=answer, error=error,
                            steps=self.steps, pending=pending, usage=self.usage, cost_usd=self.cost,
                            seconds=self.seconds)


def _worked(example: dict) -> str:
    """A worked example for json-mode models: a ticket, then its steps and their observations."""
    lines = [f"\n\nExample.\nCustomer: {example.get('ticket', '')}"]
    for step in example.get("steps", []):
        lines.append(json.dumps({"tool": step["tool"], "arguments": step.get("arguments", {})}, ensure_ascii=False))
        if "observation" in step:
            lines.append(f"Observation: {json.dumps(step['observation'], ensure_ascii=False)}")
    return "\n".join(lines)


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


# -- reading runs and deciding actions ---------------------------------------------------------------

def get_run(store: Store, run_id: str) -> dict:
    table = store.tables.agent_runs
    with store.begin() as conn:
        row = conn.execute(sa.select(table).where(table.c.id == run_id)).mappings().first()
    if row is None:
        raise NotFound(f"there is no agent run '{run_id}'; `genfoundry agent runs` lists them")
    return dict(row)


def list_runs(store: Store, *, agent: str | None = None, status: str | None = None, limit: int = 50) -> list[dict]:
    table = store.tables.agent_runs
    query = sa.select(table).order_by(table.c.created_at.desc()).limit(limit)
    if agent:
        query = query.where(table.c.agent == agent)
    if status:
        query = query.where(table.c.status == status)
    with store.begin() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def get_action(store: Store, action_id: str) -> dict:
    table = store.tables.agent_actions
    with store.begin() as conn:
        row = conn.execute(sa.select(table).where(table.c.id == action_id)).mappings().first()
    if row is None:
        raise NotFound(f"there is no agent action '{action_id}'; `genfoundry agent approvals` lists pending ones")
    return dict(row)


def list_actions(store: Store, *, status: str | None = "pending", run_id: str | None = None,
                 limit: int = 100) -> list[dict]:
    table = store.tables.agent_actions
    query = sa.select(table).order_by(table.c.created_at.desc()).limit(limit)
    if status:
        query = query.where(table.c.status == status)
    if run_id:
        query = query.where(table.c.run_id == run_id)
    with store.begin() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def decide(store: Store, action_id: str, spec: AgentSpec, *, approve: bool, actor: str, role: str | None,
           arguments: dict | None = None, note: str | None = None, home=None) -> dict:
    """Approve (optionally with edited arguments) or reject a pending action; audited. Only the agent's
    approver roles may decide (``role`` None: the machine's own user), and only once."""
    if role is not None and role not in spec.approvers:
        raise PermissionDenied(f"only {', '.join(spec.approvers)} keys may decide actions of agent '{spec.name}'")
    action = get_action(store, action_id)
    run = get_run(store, action["run_id"])
    if action["status"] != "pending":
        raise Conflict(f"action {action_id} was already decided ({action['status']} by {action['decided_by']})")
    if run["status"] != "waiting":
        raise Conflict(f"run {run['id']} is {run['status']}, not waiting for this decision")
    edited = arguments is not None and arguments != action["arguments"]
    if edited:
        probe = Tool(name=action["tool"], description="", parameters=action["proposed"]["parameters"],
                     call=_never)
        try:
            validate_arguments(probe, arguments)
        except ToolError as exc:
            raise InvalidRequest(str(exc), param="arguments") from exc
    table = store.tables.agent_actions
    status = "approved" if approve else "rejected"
    with store.begin() as conn:
        won = conn.execute(table.update().where(table.c.id == action_id, table.c.status == "pending").values(
            status=status, arguments=arguments if edited else action["arguments"], decided_by=actor,
            decided_at=utcnow(), note=note)).rowcount
    if not won:
        raise Conflict(f"action {action_id} was decided by someone else a moment ago")
    verb = "rejected" if not approve else "edited" if edited else "approved"
    audit.record(store, action=f"agent.action_{verb}", actor=actor, target=action_id,
                 details={"agent": spec.name, "tool": action["tool"],
                          "proposed": _fingerprint(home, action["arguments"]),
                          "arguments": _fingerprint(home, arguments if edited else action["arguments"])})
    return get_action(store, action_id)


FORGOTTEN = "[forgotten]"


def forget_runs(store: Store, needle: str) -> int:
    """Erase the content (conversation, steps, answer, action arguments and results) of every agent run that
    mentions ``needle`` in any case; the rows stay, with their status, tokens and cost. Returns how many."""
    lowered = needle.strip().casefold()
    if len(lowered) < 3:
        raise InvalidRequest("give at least 3 characters to forget; shorter text matches too much", param="match")
    runs, actions = store.tables.agent_runs, store.tables.agent_actions
    with store.begin() as conn:
        rows = conn.execute(sa.select(runs.c.id, runs.c.input, runs.c.steps, runs.c.answer, runs.c.error)).all()
        acted = {}
        for row in conn.execute(sa.select(actions.c.run_id, actions.c.arguments, actions.c.proposed,
                                          actions.c.result, actions.c.note)):
            acted[row.run_id] = acted.get(row.run_id, "") + json.dumps(list(row[1:]), ensure_ascii=False)
        doomed = [r.id for r in rows if lowered in (json.dumps([r.input, r.steps, r.answer, r.error],
                                                               ensure_ascii=False) + acted.get(r.id, "")).casefold()]
        if doomed:
            conn.execute(runs.update().where(runs.c.id.in_(doomed)).values(
                input=[], steps=[], answer=FORGOTTEN, error=None))
            conn.execute(actions.update().where(actions.c.run_id.in_(doomed)).values(
                arguments={}, proposed={"arguments": {}, "parameters": {"type": "object"}}, result=None,
                note=None, reason=FORGOTTEN))
    return len(doomed)


def _fingerprint(home, value) -> str:
    """What the audit log keeps of arguments: a keyed fingerprint (the action row holds them, and forget
    can erase them there; the chained log cannot be edited)."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    if home is None:
        import hashlib
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:32]
    return audit.keyed_fingerprint(home, text)


async def _never(arguments, context):  # a stand-in: decide() only validates against the schema
    raise ToolError("not callable")
