"""/v1/collections: collections, documents (upload = ingest, delete = forget), search, answers, summaries."""

from __future__ import annotations

import asyncio

import dataclasses
import uuid

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile

from genfoundry.apps.answer import GroundedAnswerer
from genfoundry.apps.summarise import Summariser
from genfoundry.core.errors import NotFound
from genfoundry.gateway.auth import authenticate, require_role
from genfoundry.gateway.keys import ApiKey
from genfoundry.gateway.knowledge.protocol import AskBody, CollectionCreate, ForgetBody, SearchBody, SummaryBody
from genfoundry.gateway.generation import CallContext, guard_hints
from genfoundry.gateway.knowledge.serving import (
    check_knowledge_model, collection_for, gateway_generate, guarded_answer, ingest_uploads, passage_json,
    request_reranker,
)
from genfoundry.knowledge.collections import Access, Collection
from genfoundry.knowledge.retrieval import RetrievalOptions

router = APIRouter(tags=["knowledge"])


def _collection_json(c: Collection, documents: int | None = None) -> dict:
    data = {"name": c.name, "clearance": c.clearance, "description": c.description,
            "embedding_model": c.embedding_model, "dimensions": c.dimensions, "chunk_tokens": c.chunk_tokens,
            "chunk_overlap": c.chunk_overlap, "access": c.access.to_dict(), "pii": c.pii}
    if documents is not None:
        data["documents"] = documents
    return data


def _call(prefix: str, endpoint: str, key: ApiKey, body: AskBody | SummaryBody,
          collections: dict[str, str]) -> CallContext:
    """The call record the model calls behind an answer or a summary are written under.

    The collection's clearance is the sensitivity the guard gives those calls.
    """
    return CallContext(id=f"{prefix}-{uuid.uuid4().hex}", endpoint=endpoint, key=key, requested_model=body.model,
                       stream=False, body=body.model_dump(exclude_none=True), collections=collections)


@router.get("/v1/collections", summary="Collections this key may read")
async def list_collections(request: Request, key: ApiKey = Depends(authenticate)):
    kb = request.app.state.runtime.knowledge()
    return {"object": "list", "data": [_collection_json(c) for c in kb.collections()
                                       if kb.registry.may(c, "read", role=key.role, key_id=key.id)]}


@router.post("/v1/collections", summary="Create a collection", status_code=201)
async def create_collection(body: CollectionCreate, request: Request,
                            key: ApiKey = Depends(require_role("admin", "developer"))):
    kb = request.app.state.runtime.knowledge()
    collection = await kb.create_collection(
        body.name, clearance=body.clearance, description=body.description, embedding_model=body.embedding_model,
        access=Access(**body.access.model_dump()), chunk_tokens=body.chunk_tokens, chunk_overlap=body.chunk_overlap,
        pii=body.pii)
    return _collection_json(collection, documents=0)


@router.get("/v1/collections/{name}", summary="A collection and its documents")
async def get_collection(name: str, request: Request, key: ApiKey = Depends(authenticate)):
    kb, collection = collection_for(request.app.state.runtime, name, key, "read")
    documents = [dataclasses.asdict(d) for d in kb.documents(name)]
    return {**_collection_json(collection, documents=len(documents)), "data": documents}


@router.delete("/v1/collections/{name}", summary="Delete a collection and everything in it")
async def delete_collection(name: str, request: Request, key: ApiKey = Depends(require_role("admin", "developer"))):
    kb, _ = collection_for(request.app.state.runtime, name, key, "write")
    await kb.delete_collection(name, actor=f"key:{key.id}")
    return {"deleted": True, "name": name}


@router.get("/v1/collections/{name}/documents", summary="Documents of a collection")
async def list_documents(name: str, request: Request, key: ApiKey = Depends(authenticate)):
    kb, _ = collection_for(request.app.state.runtime, name, key, "read")
    return {"object": "list", "data": [dataclasses.asdict(d) for d in kb.documents(name)]}


@router.post("/v1/collections/{name}/documents", summary="Upload files and ingest them")
async def upload_documents(name: str, request: Request, files: list[UploadFile] = File(...),
                           tags: list[str] = Form(default=[]), key: ApiKey = Depends(authenticate)):
    rt = request.app.state.runtime
    kb, _ = collection_for(rt, name, key, "write")
    report = await ingest_uploads(rt, kb, name, files, tags)
    return report.to_dict()


@router.delete("/v1/collections/{name}/documents/{document_id}", summary="Forget a document")
async def forget_document(name: str, document_id: str, request: Request, key: ApiKey = Depends(authenticate)):
    kb, _ = collection_for(request.app.state.runtime, name, key, "write")
    if kb.document(document_id).collection != name:
        raise NotFound(f"document {document_id!r} is not in collection {name!r}", param="document_id")
    return (await kb.forget_document(document_id, actor=f"key:{key.id}")).to_dict()


@router.post("/v1/collections/{name}/search", summary="Retrieve passages (dense, BM25 or hybrid)")
async def search(name: str, body: SearchBody, request: Request, key: ApiKey = Depends(authenticate)):
    rt = request.app.state.runtime
    kb, collection = collection_for(rt, name, key, "read")
    ctx = CallContext(id=f"srch-{uuid.uuid4().hex}", endpoint="search", key=key,
                      requested_model=(rt.settings.reranker or "").removeprefix("model:"), stream=False,
                      body=body.model_dump(exclude_none=True), collections={name: collection.clearance})
    ctx.app = guard_hints(request.headers, None)["app"]
    options = RetrievalOptions(mode=body.mode, limit=body.limit, where=body.filter, mmr=body.mmr,
                               rerank=body.rerank, reranker=request_reranker(rt, ctx, body.rerank))
    passages = await kb.retrieve(name, body.query, options)
    return {"object": "list", "data": [passage_json(p) for p in passages]}


@router.post("/v1/collections/{name}/answers", summary="A grounded answer with citations")
async def answer(name: str, body: AskBody, request: Request, key: ApiKey = Depends(authenticate)):
    rt = request.app.state.runtime
    kb, collection = collection_for(rt, name, key, "read")
    check_knowledge_model(rt, key, name, body.model)
    ctx = _call("ans", "answers", key, body, {name: collection.clearance})
    hints = guard_hints(request.headers, None)
    ctx.app, ctx.label = hints["app"], hints["label"]
    answerer = GroundedAnswerer(kb=kb, hub=rt.hub, settings=rt.settings, generate=gateway_generate(rt, ctx))
    options = RetrievalOptions(mode=body.mode, limit=body.limit, where=body.filter, rerank=body.rerank,
                               reranker=request_reranker(rt, ctx, body.rerank))
    if rt.guard is None:
        data = (await answerer.answer(name, body.question, model=body.model, use_cache=body.cache,
                                      options=options)).to_dict()
    else:
        data = await guarded_answer(rt, ctx, answerer, name, body.question, model=body.model,
                                    use_cache=body.cache, options=options)
    if not data.get("cached") and data.get("usage", {}).get("total_tokens"):  # a logged model call: feedback can refer to it
        data["id"] = ctx.id
    return data


@router.post("/v1/collections/{name}/summaries", summary="Summarise a document or the whole collection")
async def summarise(name: str, body: SummaryBody, request: Request, key: ApiKey = Depends(authenticate)):
    rt = request.app.state.runtime
    kb, collection = collection_for(rt, name, key, "read")
    check_knowledge_model(rt, key, name, body.model)
    ctx = _call("sum", "summaries", key, body, {name: collection.clearance})
    summariser = Summariser(kb=kb, hub=rt.hub, model=body.model, generate=gateway_generate(rt, ctx))
    if body.document_id:
        if kb.document(body.document_id).collection != name:
            raise NotFound(f"document {body.document_id!r} is not in collection {name!r}", param="document_id")
        return (await summariser.summarise_document(body.document_id)).to_dict()
    return (await summariser.summarise_collection(name)).to_dict()


@router.post("/v1/forget", summary="Forget every document holding a text, everywhere (admin)")
async def forget_match(body: ForgetBody, request: Request, key: ApiKey = Depends(require_role("admin"))):
    kb = request.app.state.runtime.knowledge()
    runs = 0
    if not body.collections and body.erase_call_logs:  # agent runs hold conversations as the call log does;
        from genfoundry.apps.agent_run import forget_runs  # first, so that the store's vacuum below covers them

        runs = await asyncio.to_thread(forget_runs, kb.store, body.match)
    report = await kb.forget_match(body.match, collections=body.collections, erase_calls=body.erase_call_logs,
                                   actor=f"key:{key.id}")
    report.agent_runs = runs
    if not body.collections:  # everywhere: datasets too
        from genfoundry.data.datasets import Datasets

        report.dataset_rows = await asyncio.to_thread(Datasets(request.app.state.runtime.settings, kb.store).forget_match,
                                                      body.match, actor=f"key:{key.id}")
    return report.to_dict()
