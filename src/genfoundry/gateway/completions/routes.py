from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Request

from genfoundry.gateway.auth import authenticate
from genfoundry.gateway.completions.protocol import CompletionRequest
from genfoundry.gateway.completions.serving import completion
from genfoundry.gateway.generation import CallContext, guard_hints
from genfoundry.gateway.keys import ApiKey
from genfoundry.gateway.sse import STREAM_RESPONSES, sse_response

router = APIRouter()


@router.post("/v1/completions", tags=["openai"], summary="Text completion (OpenAI-compatible)",
             responses=STREAM_RESPONSES)
async def create_completion(body: CompletionRequest, request: Request, key: ApiKey = Depends(authenticate)):
    ctx = CallContext(id=f"cmpl-{uuid.uuid4().hex}", endpoint="completions", key=key,
                      requested_model=body.model, stream=body.stream, body=body.model_dump(exclude_none=True),
                      **guard_hints(request.headers, None))
    result = await completion(request.app.state.runtime, ctx, body)
    return sse_response(result) if body.stream else result
