from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from genfoundry.gateway.auth import authenticate
from genfoundry.gateway.chat.protocol import ChatCompletionRequest
from genfoundry.gateway.chat.serving import chat_completion, new_call_id
from genfoundry.gateway.generation import CallContext, guard_hints
from genfoundry.gateway.keys import ApiKey
from genfoundry.gateway.sse import STREAM_RESPONSES, sse_response

router = APIRouter()


@router.post("/v1/chat/completions", tags=["openai"], summary="Chat completion (OpenAI-compatible)",
             responses=STREAM_RESPONSES)
async def create_chat_completion(body: ChatCompletionRequest, request: Request,
                                 key: ApiKey = Depends(authenticate)):
    ctx = CallContext(id=new_call_id(), endpoint="chat", key=key, requested_model=body.model,
                      stream=body.stream, body=body.model_dump(exclude_none=True, by_alias=True),
                      **guard_hints(request.headers, body.metadata))
    result = await chat_completion(request.app.state.runtime, ctx, body)
    return sse_response(result) if body.stream else result
