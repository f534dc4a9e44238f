"""Agent runs through the gateway: every model step a guarded, metered, traced generation.

``agent:NAME`` is a virtual model: a chat completion on it runs the agent and
answers with its reply (``agent_run`` in the response says how the run stands:
its id, status, steps, and the action waiting for approval). The user's message
goes through the input rails once for the run; each step's model call goes
through the one lifecycle (endpoint ``agent``), and every tool result through
the context rail before the model reads it (a poisoned one is withheld).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

from genfoundry.apps.agent_run import AgentOutcome, AgentRun, get_run
from genfoundry.apps.agents import AGENT_PREFIX, AgentSpec, build_tools, find_agent
from genfoundry.core.errors import GenfoundryError, PermissionDenied
from genfoundry.core.tracing import current_trace_id, start_span
from genfoundry.core.types import Generation, Message, Usage
from genfoundry.gateway.chat.protocol import ChatCompletionRequest
from genfoundry.gateway.chat.serving import chat_response
from genfoundry.gateway.generation import CallContext, record_call
from genfoundry.gateway.keys import ApiKey, list_keys
from genfoundry.gateway.knowledge.serving import collection_for, gateway_generate
from genfoundry.gateway.lifecycle import register_virtual_model
from genfoundry.gateway.runtime import Runtime
from genfoundry.knowledge.retrieval import RetrievalOptions

__all__ = ["agent_chat_completion", "caller_of", "check_agent_access", "resume_agent", "run_agent",
           "run_json", "step_mode"]

log = logging.getLogger(__name__)
REMOTE_PROVIDERS = ("openai_compat", "anthropic")


def caller_of(key: ApiKey | None) -> dict | None:
    """What a run keeps of the key that started it (permissions are checked again on resume)."""
    if key is None:
        return None
    return {"id": key.id, "name": key.name, "role": key.role, "permissions": list(key.permissions)}


def check_agent_access(key: ApiKey | None, name: str) -> None:
    """A key that lists its models must list ``agent:NAME``; the model behind it comes with that grant."""
    if key is not None and not key.may_use(f"{AGENT_PREFIX}{name}"):
        raise PermissionDenied(f"key '{key.name}' may not use model '{AGENT_PREFIX}{name}'", param="model")


def step_mode(rt: Runtime, spec: AgentSpec) -> str:
    """tools (native function calling) for remote APIs, json (grammar-held steps) for local engines."""
    if spec.mode != "auto":
        return spec.mode
    model = rt.hub.resolve(spec.model)
    return "tools" if model.provider in REMOTE_PROVIDERS and model.can("tools") else "json"


def _knowledge(rt: Runtime, key: ApiKey | None):
    async def search(collection: str, query: str) -> list[dict]:
        kb, _ = collection_for(rt, collection, key, "read")
        passages = await kb.retrieve(collection, query, RetrievalOptions(limit=3))
        return [{"source": p.chunk.source, "heading": p.chunk.heading, "text": p.chunk.text} for p in passages]
    return search


async def run_agent(rt: Runtime, ctx: CallContext, spec: AgentSpec, messages: list[Message] | None = None, *,
                    resume: str | None = None, constrained: bool = True) -> AgentOutcome:
    """Start a run on ``messages``, or resume run ``resume``; the run is stored whatever happens.
    ``constrained=False`` drops the step grammar (only the benchmark's peer wants that)."""
    screen = None
    with start_span(f"agent {spec.name}", {"genfoundry.agent": spec.name, "genfoundry.agent.resume": bool(resume)}):
        async with AsyncExitStack() as stack:
            tools = await build_tools(spec, stack, knowledge=_knowledge(rt, ctx.key))
            if rt.guard is not None:
                conversation = messages or [Message(**m) for m in get_run(rt.store, resume)["input"]]
                screen = await _screened(rt, ctx, spec, conversation, record=resume is None)

            async def screen_observation(text: str) -> bool:
                return bool(await rt.guard.screen_passages(screen, [text]))
            # Each step is a call of its own through the lifecycle; the model behind an allowed agent comes
            # with the grant, as the model behind rag:NAME does.
            steps = dataclasses.replace(ctx, endpoint="agent", stream=False)
            run = AgentRun(spec, tools, generate=gateway_generate(rt, steps), store=rt.store, hub=rt.hub,
                           caller=caller_of(ctx.key), mode=step_mode(rt, spec), constrained=constrained,
                           screen_observation=screen_observation if screen is not None else None,
                           actor=f"key:{ctx.key.id}" if ctx.key else "local", trace_id=current_trace_id(),
                           home=rt.settings.home)
            try:
                return await (run.resume(resume) if resume else run.start(messages or []))
            finally:
                if screen is not None:
                    await asyncio.shield(rt.guard.finish(screen))


async def _screened(rt: Runtime, ctx: CallContext, spec: AgentSpec, messages: list[Message], *, record: bool):
    try:
        return await rt.guard.screen_input(call_id=ctx.id, key=ctx.key, model=spec.model, messages=messages,
                                           app=ctx.app, label=ctx.label, record=record)
    except GenfoundryError as exc:
        record_call(rt, ctx, None, status="error", http_status=exc.status_code, usage=Usage(),
                    cost=None, error=exc)
        raise


def resume_agent(rt: Runtime, run_id: str, tasks: set) -> None:
    """Continue a run in the background once its pending action is decided (the approver does not wait)."""
    row = get_run(rt.store, run_id)
    owner = (row["caller"] or {}).get("id")
    key = next((k for k in list_keys(rt.store) if k.id == owner), None) if owner else None
    ctx = CallContext(id=f"agentrun-{uuid.uuid4().hex}", endpoint="agent", key=key,
                      requested_model=f"{AGENT_PREFIX}{row['agent']}", stream=False)

    async def work():
        try:
            await run_agent(rt, ctx, find_agent(rt.settings, row["agent"]), resume=run_id)
        except Exception:  # stored on the run (failed); nobody waits on this task
            log.warning("resuming agent run %s failed", run_id, exc_info=True)
    task = asyncio.create_task(work(), name=f"agent-resume-{run_id}")
    tasks.add(task)
    task.add_done_callback(tasks.discard)


def run_json(outcome: AgentOutcome) -> dict:
    return {"id": outcome.id, "agent": outcome.agent, "status": outcome.status, "error": outcome.error,
            "pending": outcome.pending, "steps": outcome.steps, "cost_usd": round(outcome.cost_usd, 8),
            "seconds": round(outcome.seconds, 3)}


async def agent_chat_completion(rt: Runtime, ctx: CallContext, body: ChatCompletionRequest):
    """A chat completion on ``agent:NAME``: run the agent on the conversation and answer with its reply."""
    name = body.model.removeprefix(AGENT_PREFIX)
    check_agent_access(ctx.key, name)
    spec = find_agent(rt.settings, name)
    messages = [Message(role=m.role, content=m.text() or "") for m in body.messages
                if m.role in ("user", "assistant")]
    started = time.perf_counter()
    outcome = await run_agent(rt, ctx, spec, messages)
    log.info("agent %s run %s: %s in %.1f s", name, outcome.id, outcome.status, time.perf_counter() - started)
    result = Generation(text=outcome.reply(), finish_reason="stop", usage=outcome.usage)
    response = chat_response(ctx, body.model, result, {"agent_run": run_json(outcome)})
    return _events(response) if body.stream else response


async def _events(response: dict) -> AsyncIterator[dict]:
    """A finished run as a stream: the reply in one chunk, then the finish with ``agent_run``."""
    base = {k: response[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
    choice = response["choices"][0]
    yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": choice["message"]["content"]},
                                "finish_reason": None, "logprobs": None}]}
    yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "logprobs": None}],
           "agent_run": response["agent_run"]}


register_virtual_model(AGENT_PREFIX, agent_chat_completion)
