"""A stand-in OpenAI-compatible server, for tests and benchmarks of pools and replicas.

It answers ``/v1/models``, ``/v1/chat/completions`` (whole or streamed),
``/v1/completions`` and ``/v1/embeddings`` at once, with a reply that names the
server (``--name``), so a test can tell which backend of a pool served it. It
runs in its own process, so a test can kill it mid-stream like a real backend::

    python -m genfoundry.testing.upstream --port 8101 --name a --chunks 20 --chunk-delay 0.05

``--mode fail`` answers 500 to every request (the health route too) and
``--mode garbage`` answers 200 with a body that is not the OpenAI shape.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

__all__ = ["build_app", "main"]


def build_app(name: str = "upstream", *, chunks: int = 3, chunk_delay: float = 0.0, mode: str = "ok") -> Starlette:
    """The server's app: a reply of ``chunks`` pieces, ``chunk_delay`` seconds apart when streamed."""

    def refuse() -> Response | None:
        if mode == "fail":
            return JSONResponse({"error": {"message": f"{name} is failing", "type": "server_error"}}, 500)
        if mode == "garbage":
            return PlainTextResponse("<html>not an API</html>", 200)
        return None

    async def models(_: Request) -> Response:
        return refuse() or JSONResponse({"object": "list", "data": [
            {"id": "pooled", "object": "model", "created": 0, "owned_by": name}]})

    def pieces(prompt: str) -> list[str]:
        first = f"{name}: {prompt[-40:]}"
        return [first] + [f" {i}" for i in range(1, chunks)]

    async def answer(request: Request) -> Response:
        refused = refuse()
        if refused is not None:
            return refused
        body = await request.json()
        chat = request.url.path.endswith("/chat/completions")
        prompt = (body["messages"][-1].get("content") or "") if chat else str(body.get("prompt", ""))
        parts = pieces(prompt)
        usage = {"prompt_tokens": max(1, len(prompt) // 4), "completion_tokens": len(parts),
                 "total_tokens": max(1, len(prompt) // 4) + len(parts)}
        ident, created, model = f"up-{time.monotonic_ns()}", int(time.time()), body.get("model", "pooled")
        kind = "chat.completion" if chat else "text_completion"
        if not body.get("stream"):
            choice = ({"index": 0, "message": {"role": "assistant", "content": "".join(parts)}, "finish_reason": "stop"}
                      if chat else {"index": 0, "text": "".join(parts), "finish_reason": "stop"})
            return JSONResponse({"id": ident, "object": kind, "created": created, "model": model,
                                 "choices": [choice], "usage": usage})

        async def events():
            for i, part in enumerate(parts):
                if chunk_delay and i:
                    await asyncio.sleep(chunk_delay)
                choice = {"index": 0, "delta": {"content": part}, "finish_reason": None} if chat else \
                    {"index": 0, "text": part, "finish_reason": None}
                yield f"data: {json.dumps({'id': ident, 'object': kind + '.chunk', 'created': created, 'model': model, 'choices': [choice]})}\n\n"
            last = {"index": 0, "delta": {}, "finish_reason": "stop"} if chat else \
                {"index": 0, "text": "", "finish_reason": "stop"}
            yield f"data: {json.dumps({'id': ident, 'object': kind + '.chunk', 'created': created, 'model': model, 'choices': [last], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def embeddings(request: Request) -> Response:
        refused = refuse()
        if refused is not None:
            return refused
        body = await request.json()
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": [float(len(t)), 1.0, 0.5]} for i, t in enumerate(texts)]
        tokens = sum(len(str(t)) // 4 + 1 for t in texts)
        return JSONResponse({"object": "list", "data": data, "model": body.get("model", "pooled"),
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    return Starlette(routes=[
        Route("/v1/models", models), Route("/v1/chat/completions", answer, methods=["POST"]),
        Route("/v1/completions", answer, methods=["POST"]), Route("/v1/embeddings", embeddings, methods=["POST"]),
    ])


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="upstream")
    parser.add_argument("--chunks", type=int, default=3)
    parser.add_argument("--chunk-delay", type=float, default=0.0)
    parser.add_argument("--mode", choices=["ok", "fail", "garbage"], default="ok")
    args = parser.parse_args(argv)
    app = build_app(args.name, chunks=args.chunks, chunk_delay=args.chunk_delay, mode=args.mode)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
