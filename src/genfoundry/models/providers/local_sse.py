"""A lean client for server-sent events from an engine on this machine.

The gateway relays every token of a local engine, so the per-event cost of
the client is paid hundreds of times a second on the same cores that run the
model. httpx costs about 0.5 ms of CPU per event here (its pure-Python HTTP
machinery), which took 7 % off decode speed on a 2-core machine; this client
reads the socket with asyncio and parses HTTP with httptools (the C parser
uvicorn uses), at a fraction of that. One connection per request, closed when
the caller stops reading, which is what tells the engine to stop generating.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httptools

__all__ = ["EngineHTTPError", "post_sse"]

READ_SIZE = 65536


class EngineHTTPError(Exception):
    def __init__(self, status: int, body: str):
        super().__init__(f"{status}: {body[:300]}")
        self.status = status
        self.body = body


class _Response:
    """httptools callbacks: collect status, body bytes and completion."""

    def __init__(self):
        self.body = bytearray()
        self.headers_done = False
        self.complete = False

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, data: bytes) -> None:
        self.body += data

    def on_message_complete(self) -> None:
        self.complete = True


async def _read(reader: asyncio.StreamReader, timeout: float) -> bytes:
    # asyncio.timeout rather than wait_for: no task per read (this runs once per token).
    async with asyncio.timeout(timeout):
        return await reader.read(READ_SIZE)


async def post_sse(host: str, port: int, path: str, payload: dict, *,
                   timeout: float) -> AsyncIterator[dict]:
    """POST JSON and yield each ``data:`` event as a dict until the stream ends."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=5.0)
    try:
        body = json.dumps(payload).encode()
        writer.write(b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                     b"Accept: text/event-stream\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                     % (path.encode(), host.encode(), port, len(body)) + body)
        response = _Response()
        parser = httptools.HttpResponseParser(response)
        pending = b""
        while not response.complete:
            data = await _read(reader, timeout)
            if not data:
                break
            parser.feed_data(data)
            if response.headers_done and parser.get_status_code() != 200:
                continue  # read the whole error body first
            if response.body:
                pending += bytes(response.body)
                response.body.clear()
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.startswith(b"data: "):
                        yield json.loads(line[6:])
        status = parser.get_status_code()
        if status != 200:
            raise EngineHTTPError(status, bytes(response.body).decode(errors="replace"))
        if not response.complete:
            raise ConnectionResetError("the engine closed the connection mid-stream")
    finally:
        writer.close()
