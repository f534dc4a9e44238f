from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Request

from genfoundry.gateway.auth import authenticate
from genfoundry.gateway.embeddings.protocol import EmbeddingRequest
from genfoundry.gateway.embeddings.serving import embeddings
from genfoundry.gateway.generation import CallContext, guard_hints
from genfoundry.gateway.keys import ApiKey

router = APIRouter()


@router.post("/v1/embeddings", tags=["openai"], summary="Embeddings (OpenAI-compatible)")
async def create_embeddings(body: EmbeddingRequest, request: Request, key: ApiKey = Depends(authenticate)):
    ctx = CallContext(id=f"emb-{uuid.uuid4().hex}", endpoint="embeddings", key=key,
                      requested_model=body.model, stream=False, body=body.model_dump(exclude_none=True),
                      **guard_hints(request.headers, None))
    return await embeddings(request.app.state.runtime, ctx, body)
