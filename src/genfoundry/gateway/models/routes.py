"""/v1/models: the hub as OpenAI clients see it, with genfoundry's extra fields."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from genfoundry.core.errors import ModelNotFound
from genfoundry.gateway.auth import authenticate
from genfoundry.gateway.keys import ApiKey
from genfoundry.models.spec import ModelSpec

router = APIRouter()


def model_card(spec: ModelSpec) -> dict:
    return {"id": spec.name, "object": "model", "created": 0, "owned_by": spec.provider,
            "aliases": spec.aliases, "capabilities": spec.capabilities, "clearance": spec.clearance,
            "context_length": spec.context_length}


def rag_card(collection) -> dict:
    """A collection as a model: ``rag:NAME`` answers from it, with citations."""
    return {"id": f"rag:{collection.name}", "object": "model", "created": 0, "owned_by": "genfoundry",
            "aliases": [], "capabilities": ["chat"], "clearance": collection.clearance, "context_length": None}


def _readable_collections(rt, key: ApiKey) -> list:
    kb = rt.knowledge()
    return [c for c in kb.collections()
            if kb.registry.may(c, "read", role=key.role, key_id=key.id) and key.may_use(f"rag:{c.name}")]


@router.get("/v1/models", tags=["openai"], summary="List models (and rag: collections)")
async def list_models(request: Request, key: ApiKey = Depends(authenticate)):
    rt = request.app.state.runtime
    cards = [model_card(s) for s in rt.hub.list() if key.may_use(s.name)]
    cards += [rag_card(c) for c in _readable_collections(rt, key)]
    return {"object": "list", "data": cards}


@router.get("/v1/models/{model:path}", tags=["openai"], summary="Show one model")
async def get_model(model: str, request: Request, key: ApiKey = Depends(authenticate)):
    rt = request.app.state.runtime
    if model.startswith("rag:"):
        found = [c for c in _readable_collections(rt, key) if f"rag:{c.name}" == model]
        if not found:
            raise ModelNotFound(f"model '{model}' is not registered or not readable with this key", param="model")
        return rag_card(found[0])
    spec = rt.hub.resolve(model)
    if not (key.may_use(spec.name) or key.may_use(model)):
        # As if it did not exist: a key limited to some models learns nothing of the others.
        raise ModelNotFound(f"model '{model}' is not registered", param="model")
    return model_card(spec)
