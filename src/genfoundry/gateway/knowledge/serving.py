"""The knowledge routes' logic, and grounded chat for ``rag:NAME`` models."""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import UploadFile

from genfoundry.apps.answer import NOT_FOUND, Generate, GroundedAnswerer, cite
from genfoundry.core.errors import GenfoundryError, InvalidRequest, PayloadTooLarge, PermissionDenied
from genfoundry.core.types import Generation, GenerationRequest, Message, Usage
from genfoundry.gateway.chat.protocol import ChatCompletionRequest
from genfoundry.gateway.chat.serving import chat_events, chat_response
from genfoundry.gateway.generation import CallContext, record_call
from genfoundry.gateway.lifecycle import AfterHook, Lifecycle, register_virtual_model
from genfoundry.gateway.keys import ApiKey
from genfoundry.gateway.runtime import Runtime
from genfoundry.knowledge.base import KnowledgeBase
from genfoundry.knowledge.collections import Collection
from genfoundry.knowledge.retrieval import Passage
from genfoundry.models.hub import DEFAULT_ALIAS

__all__ = [
    "RAG_PREFIX", "check_knowledge_model", "collection_for", "gateway_generate", "grounded_chat_completion",
    "guarded_answer", "ingest_uploads",
    "passage_json", "request_reranker",
]

RAG_PREFIX = "rag:"
_UPLOAD_CHUNK = 1 << 20


def collection_for(rt: Runtime, name: str, key: ApiKey | None, action: str) -> tuple[KnowledgeBase, Collection]:
    kb = rt.knowledge()
    collection = kb.collection(name)
    kb.registry.check_access(collection, action, role=key.role if key else None, key_id=key.id if key else None)
    return kb, collection


def check_knowledge_model(rt: Runtime, key: ApiKey | None, collection: str, model: str) -> None:
    """A key that lists its models must list ``rag:COLLECTION`` to answer from it, and must be allowed
    the model it names; the model behind ``rag:`` (the default chat model) comes with the rag grant."""
    if key is None:
        return
    rag = f"{RAG_PREFIX}{collection}"
    if not key.may_use(rag):
        raise PermissionDenied(f"key '{key.name}' may not use model '{rag}' (answers from collection "
                               f"{collection!r})", param="model")
    if key.may_use(model):
        return
    spec = rt.hub.resolve(model)
    if key.may_use(spec.name) or spec.name == rt.hub.resolve(DEFAULT_ALIAS).name:
        return
    raise PermissionDenied(f"key '{key.name}' may not use model '{model}'", param="model")


def _unrestricted(key: ApiKey | None) -> ApiKey | None:
    """A key that may use ``rag:NAME`` may use the model that writes its answers."""
    return dataclasses.replace(key, allowed_models=None) if key is not None else None


def gateway_generate(rt: Runtime, ctx: CallContext, *, rag_model: bool = True) -> Generate:
    """Generation through the gateway's path: guard, model queue, budget re-checked per call, call log, cost.

    ``rag_model``: the calls write a collection's answers with a model the route already checked
    (:func:`check_knowledge_model`), so the key's model list is not applied again.
    """

    async def generate(model: str, request: GenerationRequest) -> Generation:
        key = _unrestricted(ctx.key) if rag_model else ctx.key
        life = Lifecycle(rt, dataclasses.replace(ctx, id=f"{ctx.id}-{uuid.uuid4().hex[:8]}", requested_model=model,
                                                 key=key), request)
        await life.start()
        return await life.whole()
    return generate


def request_reranker(rt: Runtime, ctx: CallContext, rerank: bool):
    """For a request that asks to re-rank with a chat model (the ``reranker`` setting ``model:NAME``): that
    reranker, its calls made through the gateway for the caller's key (which must be allowed the model),
    guarded, metered and capped; None for a cross-encoder or no re-ranking."""
    setting = rt.settings.reranker or ""
    if not rerank or not setting.startswith("model:"):
        return None
    from genfoundry.gateway.generation import check_model_access
    from genfoundry.knowledge.rerank import ChatModelReranker

    name = setting.removeprefix("model:")
    check_model_access(ctx.key, rt.hub.resolve(name), name)
    return ChatModelReranker(rt.hub, name, generate=gateway_generate(rt, ctx, rag_model=False))


def passage_json(p: Passage) -> dict:
    c = p.chunk
    return {"chunk_id": c.id, "document_id": c.document_id, "source": c.source, "title": c.title,
            "heading": c.heading, "page": c.page, "position": c.position, "text": c.text, "tags": c.tags,
            "score": round(p.score, 6), "similarity": round(p.similarity, 4), "ranks": p.ranks}


async def ingest_uploads(rt: Runtime, kb: KnowledgeBase, name: str, files: list[UploadFile], tags: list[str]):
    """Save uploads to a private temporary folder (never over max_file_mb) and ingest them by file name."""
    if not files:
        raise InvalidRequest("send one or more files in the multipart field 'files'", param="files")
    limit = int(rt.settings.max_file_mb * 2**20)
    with tempfile.TemporaryDirectory(prefix="gf-upload-") as folder:
        pairs = []
        for index, upload in enumerate(files):
            filename = Path(upload.filename or f"upload-{index}").name
            target = Path(folder) / f"{index}-{filename}"
            await _save(upload, target, limit)
            pairs.append((target, f"upload:{filename}"))
        return await kb.ingest(name, files=pairs, tags=tags)


async def _save(upload: UploadFile, target: Path, limit: int) -> None:
    size = 0
    with target.open("wb") as out:
        while block := await upload.read(_UPLOAD_CHUNK):
            size += len(block)
            if size > limit:
                raise PayloadTooLarge(f"{upload.filename} is larger than max_file_mb "
                                      f"({limit // 2**20} MiB); nothing was ingested", param="files")
            out.write(block)


def _question(body: ChatCompletionRequest) -> tuple[str, list[Message]]:
    turns = [Message(role=m.role, content=m.text() or "") for m in body.messages if m.role in ("user", "assistant")]
    if not turns or turns[-1].role != "user" or not turns[-1].content.strip():
        raise InvalidRequest("a rag: model answers the last user message; send one with text", param="messages")
    return turns[-1].content, turns[:-1][-6:]  # the last few turns are the conversation's memory


async def grounded_chat_completion(rt: Runtime, ctx: CallContext, body: ChatCompletionRequest):
    """Chat completion whose answer is grounded in a collection (the ``rag:`` virtual model); adds
    ``citations`` (and ``groundedness``) to the response.

    With the guard on: the question goes through the input rails (with the collection's clearance as
    the request's sensitivity), retrieved passages through the context rail (poisoned ones dropped),
    and the answer through the output rails and the groundedness rail, in the one lifecycle.
    """
    name = body.model.removeprefix(RAG_PREFIX)
    check_knowledge_model(rt, ctx.key, name, DEFAULT_ALIAS)
    kb, collection = collection_for(rt, name, ctx.key, "read")
    question, history = _question(body)
    run_ctx = dataclasses.replace(ctx, requested_model=DEFAULT_ALIAS, key=_unrestricted(ctx.key),
                                  collections={name: collection.clearance})
    screen, screen_passages, model = None, None, DEFAULT_ALIAS
    if rt.guard is not None:
        screen = await _recorded(rt, run_ctx, _screen_question(rt, run_ctx, question, history))
        question, model = screen.messages[-1].content, screen.model

        async def screen_passages(texts: list[str]) -> list[int]:
            return await rt.guard.screen_passages(screen, texts)
    answerer = GroundedAnswerer(kb=kb, hub=rt.hub, settings=rt.settings)
    passages, request = await answerer.prepare(name, question, model=model, history=history,
                                               screen=screen_passages)
    if request is None:
        if screen is not None:
            await rt.guard.finish(screen)
        record_call(rt, run_ctx, None, status="ok", http_status=200, usage=Usage(), cost=None,
                    response={"text": NOT_FOUND, "finish_reason": "stop"})
        return _not_found(ctx, body)
    if body.max_tokens or body.max_completion_tokens:
        request.max_tokens = body.max_completion_tokens or body.max_tokens
    if screen is not None and collection.pii == "tokenize" and kb.pii is not None:
        # The passages carry the collection's vault tokens; answers are restored for roles allowed to see them.
        screen.restore.update(await asyncio.to_thread(kb.pii.restore_map, name, [p.chunk.text for p in passages]))
    life = Lifecycle(rt, run_ctx, request, screen=screen, after=_citing(rt, screen, passages))
    await life.start()
    if body.stream:
        return chat_events(ctx, life, bool(body.stream_options and body.stream_options.include_usage),
                           model=body.model)
    result = await life.whole()
    if result.finish_reason != "content_filter" and not result.text:
        result.text = NOT_FOUND
    return chat_response(ctx, body.model, result, life.extra if result.finish_reason != "content_filter"
                         else {"citations": []})


def _citing(rt: Runtime, screen, passages: list[Passage]) -> AfterHook:
    """The hook on a grounded answer: the groundedness rail, then citations mapped to the passages."""
    texts = [p.chunk.text for p in passages]

    def after(text: str, streamed: bool):
        decisions, extra = [], {}
        if screen is not None:
            text, report, decisions = rt.guard.groundedness(screen, text, texts, streamed=streamed)
            if report is not None:
                extra["groundedness"] = report
        text, citations = cite(text, passages)
        extra["citations"] = [dataclasses.asdict(c) for c in citations]
        return text, extra, decisions
    return after


async def _screen_question(rt: Runtime, ctx: CallContext, question: str, history: list[Message]):
    messages = [*history, Message(role="user", content=question)]
    return await rt.guard.screen_input(call_id=ctx.id, key=ctx.key, model=DEFAULT_ALIAS, messages=messages,
                                       app=ctx.app, label=ctx.label, collections=ctx.collections)


async def guarded_answer(rt: Runtime, ctx: CallContext, answerer: GroundedAnswerer, collection: str, question: str,
                         *, model: str, **kwargs) -> dict:
    """An answer from the answers route with the guard: the question through the input rails, passages
    through the context rail, the answer through the groundedness rail (its report in ``groundedness``)."""
    screen = await _recorded(rt, ctx, rt.guard.screen_input(
        call_id=ctx.id, key=ctx.key, model=model, messages=[Message(role="user", content=question)], app=ctx.app,
        label=ctx.label, collections=ctx.collections))

    async def screen_passages(texts: list[str]) -> list[int]:
        return await rt.guard.screen_passages(screen, texts)
    report, decisions = None, []
    try:
        scope = f"policy:{screen.policy_name};role:{ctx.key.role if ctx.key else 'local'}"
        result = await answerer.answer(collection, screen.messages[-1].content, model=screen.model,
                                       screen=screen_passages, cache_scope=scope, **kwargs)
        if result.found:
            shown = {c.index: c.text for c in result.citations}
            passages = [shown.get(i, "") for i in range(1, max(shown, default=0) + 1)]
            result.text, report, decisions = rt.guard.groundedness(screen, result.text, passages)
    finally:
        await asyncio.shield(rt.guard.finish(screen, None, decisions))
    data = result.to_dict()
    if report is not None:
        data["groundedness"] = report
    return data


async def _recorded(rt: Runtime, ctx: CallContext, screening):
    """Await the guard's screening of a question; a refusal is recorded as the request's (failed) call."""
    try:
        return await screening
    except GenfoundryError as exc:
        record_call(rt, ctx, None, status="error", http_status=exc.status_code, usage=Usage(), cost=None, error=exc)
        raise


def _not_found(ctx: CallContext, body: ChatCompletionRequest):
    response = chat_response(ctx, body.model, Generation(text=NOT_FOUND), {"citations": []})
    if not body.stream:
        return response

    async def events() -> AsyncIterator[dict]:
        base = {"id": ctx.id, "object": "chat.completion.chunk", "created": response["created"], "model": body.model}
        yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": NOT_FOUND},
                                    "finish_reason": None, "logprobs": None}]}
        yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "logprobs": None}],
               "citations": []}
    return events()


register_virtual_model(RAG_PREFIX, grounded_chat_completion)
