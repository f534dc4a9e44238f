"""Server-sent events, as the OpenAI streaming API sends them."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse

from genfoundry.core.errors import GenfoundryError, error_body

__all__ = ["STREAM_RESPONSES", "frame", "sse_response"]

log = logging.getLogger(__name__)

# OpenAPI for routes that answer with JSON, or with events when the request says "stream": true.
# (Before OpenAPI 3.2, the schema of an event stream describes one event.)
STREAM_RESPONSES: dict = {200: {
    "description": "A JSON object; with `\"stream\": true`, server-sent events ending in `data: [DONE]`.",
    "content": {"text/event-stream": {"schema": {
        "type": "object", "required": ["data"],
        "properties": {"data": {"type": "string", "description": "A JSON chunk, or [DONE] at the end."}}}}}}}


def frame(payload: dict | str) -> bytes:
    """One event, framed: ``data: <JSON>\\n\\n``."""
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


async def _frames(events: AsyncIterator[dict | bytes]) -> AsyncIterator[bytes]:
    """Frame each event; bytes are an event framed already (``data: ...\\n\\n``)."""
    try:
        async for event in events:
            yield event if isinstance(event, bytes) else frame(event)
    except GenfoundryError as exc:
        # Headers are gone already: the error travels as an event, as OpenAI does.
        yield frame(exc.to_dict())
        return
    except Exception:
        log.exception("stream failed")
        yield frame(error_body("internal error; see the gateway log", type_="server_error"))
        return
    yield frame("[DONE]")


def sse_response(events: AsyncIterator[dict | bytes]) -> StreamingResponse:
    return StreamingResponse(_frames(events), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
