"""Every call through the gateway, recorded in the store.

Writes happen on a background thread in small batches, so recording adds no
database round trip to a request; ``close()`` flushes what is pending.

Example::

    recorder = CallRecorder(store)
    recorder.record(CallRecord(id="chatcmpl-1", endpoint="chat", status="ok", ...))
    recorder.close()
    rows = list_calls(store, model="gemma-3-270m", limit=20)
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa

from genfoundry.core.store import Store, utcnow

__all__ = ["CallRecord", "CallRecorder", "list_calls", "tokens_used_since"]

log = logging.getLogger(__name__)
_STOP = object()


@dataclass
class CallRecord:
    id: str
    endpoint: str
    status: str
    http_status: int
    latency_ms: float
    key_id: str | None = None
    model: str | None = None
    resolved_model: str | None = None
    provider: str | None = None
    stream: bool = False
    error_type: str | None = None
    error_message: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float | None = None
    cost_usd: float | None = None
    fallback_from: str | None = None
    request: Any = None
    response: Any = None
    trace_id: str | None = None
    app: str | None = None
    collections: list[str] | None = None  # collections whose passages the call used
    created_at: dt.datetime = field(default_factory=utcnow)


class CallRecorder:
    """Queues call records and writes them from one background thread."""

    def __init__(self, store: Store, *, log_content: bool = True, batch: int = 64, on_written=None):
        self.store = store
        self.log_content = log_content
        self.batch = batch
        self.on_written = on_written  # called with the ids of each written batch (budgets stop holding them)
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="genfoundry-call-recorder", daemon=True)
        self._thread.start()
        self.written = 0

    def record(self, call: CallRecord) -> None:
        if not self.log_content:
            call.request = None
            call.response = None
        self._queue.put(call)

    def _run(self) -> None:
        while True:
            items = [self._queue.get()]
            while len(items) < self.batch:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            rows = [asdict(i) for i in items if isinstance(i, CallRecord)]
            if rows:
                self._write(rows)
                if self.on_written is not None:
                    try:
                        self.on_written([r["id"] for r in rows])
                    except Exception:  # the recorder thread must live on
                        log.exception("on_written failed")
            for item in items:
                if isinstance(item, threading.Event):
                    item.set()
            if any(item is _STOP for item in items):
                return

    def _write(self, rows: list[dict]) -> None:
        try:
            with self.store.begin() as conn:
                conn.execute(self.store.tables.calls.insert(), rows)
            self.written += len(rows)
        except Exception as exc:  # a failed write must not kill the recorder thread
            if len(rows) > 1:  # find the bad row; keep the others
                for row in rows:
                    self._write([row])
                return
            log.error("could not record call %s: %s", rows[0].get("id"), exc)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything queued so far is written."""
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout)

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=30)


def list_calls(store: Store, *, model: str | None = None, key_id: str | None = None,
               status: str | None = None, since: dt.datetime | None = None,
               until: dt.datetime | None = None, limit: int = 50, endpoint: str | None = None,
               with_content: bool = False, oldest_first: bool = False) -> list[dict[str, Any]]:
    """Logged calls, newest first (``oldest_first`` for the other order); ``with_content``: only calls whose
    request and response were kept (``log_content``)."""
    calls = store.tables.calls
    order = calls.c.created_at if oldest_first else calls.c.created_at.desc()
    query = sa.select(calls).order_by(order).limit(limit)
    if model:
        query = query.where(sa.or_(calls.c.model == model, calls.c.resolved_model == model))
    if key_id:
        query = query.where(calls.c.key_id == key_id)
    if status:
        query = query.where(calls.c.status == status)
    if endpoint:
        query = query.where(calls.c.endpoint == endpoint)
    if with_content:
        query = query.where(calls.c.request.is_not(None), calls.c.response.is_not(None))
    if since:
        query = query.where(calls.c.created_at >= since)
    if until:
        query = query.where(calls.c.created_at < until)
    with store.begin() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def tokens_used_since(store: Store, key_id: str, since: dt.datetime) -> int:
    calls = store.tables.calls
    total = sa.func.coalesce(sa.func.sum(calls.c.prompt_tokens + calls.c.completion_tokens), 0)
    with store.begin() as conn:
        return int(conn.execute(sa.select(total).where(
            calls.c.key_id == key_id, calls.c.created_at >= since)).scalar_one())
