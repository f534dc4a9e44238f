"""The life of one guarded generation, for every endpoint: one object owns it.

In order: the input rails (they may redact, re-route or refuse), the model's
admission queue and the call with its fallbacks (:class:`GenerationRun`), the
output rails on the stream or on the whole answer (vault tokens restored,
toxicity checked; a blocking rail ends the answer with ``content_filter``), the
hooks that look at the finished answer (the groundedness rail), the audit
entries, the call record and the spans. Endpoint modules only translate a
request in and frame the answer out:

Example::

    life = Lifecycle(rt, ctx, request, check=capabilities)
    await life.start()                      # errors here are HTTP errors
    async for piece in life.pieces():       # streaming: screened pieces, then the finish
        ...
    result = await life.whole()             # or the whole answer, screened

Virtual models (``rag:NAME`` today, ``agent:NAME`` and tuned adapters next)
are found through :data:`VIRTUAL_MODELS`, a table of name prefixes, not string
checks in routes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from genfoundry.core.types import Generation, GenerationRequest, ToolCall, Usage
from genfoundry.gateway.generation import CallContext, GenerationRun
from genfoundry.gateway.runtime import Runtime

__all__ = ["AfterHook", "Lifecycle", "Piece", "VIRTUAL_MODELS", "register_virtual_model", "virtual_model"]

# A hook on the finished answer: (text, streamed) -> (text, extra response fields, extra audit decisions).
# A streamed answer cannot be taken back: its hook reports, it does not change the text.
AfterHook = Callable[[str, bool], tuple[str, dict[str, Any], list]]


@dataclass
class Piece:
    """A piece of a screened stream: text, then (in the last piece) the finish."""

    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    tool_calls: list[ToolCall] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # response fields the hooks added (last piece)


class Lifecycle:
    """One generation through the gateway (see the module docstring)."""

    def __init__(self, rt: Runtime, ctx: CallContext, request: GenerationRequest, *,
                 check: Callable | None = None, screen=None, after: AfterHook | None = None,
                 guard: bool = True):
        self.rt = rt
        self.ctx = ctx
        self.run = GenerationRun(rt, ctx, request)
        self.run.screen = screen  # input already screened by the caller (a grounded question)
        self.check = check
        self.after = after
        self.guard = guard
        self.out = None  # the output rails, when anything needs to look at the output
        self.decisions: list = []  # audit decisions the hooks made
        self.extra: dict[str, Any] = {}

    @property
    def spec(self):
        return self.run.spec

    @property
    def screen(self):
        return self.run.screen

    async def start(self) -> None:
        """Input rails, then a model that starts answering; every failure here is recorded and raised
        (the request's audit entry is written before the error goes out)."""
        try:
            await self.run.start(check=self.check, guard=self.guard)
        except BaseException:
            await self._finish()
            raise
        if self.run.screen is not None:
            out = self.rt.guard.output(self.run.screen, self.ctx.key)
            self.out = None if out.idle else out

    async def pieces(self) -> AsyncIterator[Piece]:
        """The answer as it is generated, through the output rails; the last piece carries the finish."""
        chunks = self.run.chunks()
        parts: list[str] = []
        try:
            async for chunk in chunks:
                text, finish = chunk.text, chunk.finish_reason
                if self.out is not None:
                    text = self.out.screen_chunk(text, finish is not None)
                    if self.out.stopped:  # a blocking output rail fired: the answer ends here
                        self.run.stopped = True
                        yield Piece(finish_reason="content_filter")
                        return
                parts.append(text)
                if finish is not None:
                    self._after("".join(parts), streamed=True)
                    yield Piece(text, finish, chunk.usage, chunk.tool_calls, dict(self.extra))
                    return
                yield Piece(text, tool_calls=chunk.tool_calls)
                if self.run.screen is not None:
                    self.run.screen.write_record()  # the first token is out: now the audit write
        finally:
            try:
                await chunks.aclose()
            finally:  # a client gone mid-answer cancels this task: the guard's record is written all the same
                await self._finish()

    async def whole(self) -> Generation:
        """The whole answer, through the output rails and the hooks."""
        if self.run.screen is not None:
            self.run.screen.write_record()  # a whole answer: no first token to wait for
        try:
            result = await self.run.collect()
            if self.out is not None and result.text:
                result.text = self.out.feed(result.text) + self.out.finish()
                if self.out.stopped:
                    result.text, result.finish_reason = "", "content_filter"
            if result.finish_reason != "content_filter":
                result.text = self._after(result.text, streamed=False)
        finally:
            await self._finish()
        return result

    def _after(self, text: str, *, streamed: bool) -> str:
        if self.after is None:
            return text
        changed, extra, decisions = self.after(text, streamed)
        self.extra.update(extra)
        self.decisions.extend(decisions)
        return text if streamed else changed

    async def _finish(self) -> None:
        """The guard's last word (output findings, hook decisions) into the audit log, however it ended."""
        if self.run.screen is not None:
            await asyncio.shield(self.rt.guard.finish(self.run.screen, self.out, self.decisions))


# -- virtual models --------------------------------------------------------------------------------

# prefix -> handler(rt, ctx, body) for chat completions on a name that is not a hub entry.
VIRTUAL_MODELS: dict[str, Callable[[Runtime, CallContext, Any], Awaitable[Any]]] = {}


def register_virtual_model(prefix: str, handler: Callable[[Runtime, CallContext, Any], Awaitable[Any]]) -> None:
    """Serve model names starting with ``prefix`` (``rag:``) with ``handler`` instead of the hub."""
    VIRTUAL_MODELS[prefix] = handler


def virtual_model(name: str):
    """The handler of a virtual model name, or None for a hub model."""
    for prefix, handler in VIRTUAL_MODELS.items():
        if name.startswith(prefix):
            return handler
    return None
