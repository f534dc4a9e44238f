"""/v1/models: the hub as OpenAI clients see it, with genfoundry's extra fields."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from genfoundry.gateway.auth import authenticate
from genfoundry.gateway.keys import ApiKey
from genfoundry.models.spec import ModelSpec

router = APIRouter()


def model_card(spec: ModelSpec) -> dict:
    return {"id": spec.name, "object": "model", "created": 0, "owned_by": spec.provider,
            "aliases": spec.aliases, "capabilities": spec.capabilities, "clearance": spec.clearance,
            "context_length": spec.context_length}


@router.get("/v1/models", tags=["openai"], summary="List models")
async def list_models(request: Request, key: ApiKey = Depends(authenticate)):
    specs = request.app.state.runtime.hub.list()
    return {"object": "list", "data": [model_card(s) for s in specs if key.may_use(s.name)]}


@router.get("/v1/models/{model:path}", tags=["openai"], summary="Show one model")
async def get_model(model: str, request: Request, key: ApiKey = Depends(authenticate)):
    return model_card(request.app.state.runtime.hub.resolve(model))
