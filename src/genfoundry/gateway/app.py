"""The gateway application.

Example::

    app = create_app(load_settings())
    uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from genfoundry import __version__
from genfoundry.core.errors import GenfoundryError, PayloadTooLarge, RateLimited, error_body
from genfoundry.core.settings import Settings, load_settings
from genfoundry.core.store import Store
from genfoundry.core.types import Message
from genfoundry.gateway.admin.routes import router as admin_router
from genfoundry.gateway.agents.routes import router as agents_router
from genfoundry.gateway.chat.routes import router as chat_router
from genfoundry.gateway.completions.routes import router as completions_router
from genfoundry.gateway.console.routes import router as console_router
from genfoundry.gateway.console.routes import static_files
from genfoundry.gateway.data.routes import router as data_router
from genfoundry.gateway.embeddings.routes import router as embeddings_router
from genfoundry.gateway.knowledge.routes import router as knowledge_router
from genfoundry.gateway.metrics import Metrics
from genfoundry.gateway.models.routes import router as models_router
from genfoundry.gateway.observe.routes import router as observe_router
from genfoundry.gateway.quotas import Quotas
from genfoundry.gateway.replicas import Heartbeat
from genfoundry.gateway.runtime import Runtime
from genfoundry.gateway.tracing import TraceMiddleware
from genfoundry.gateway.tune.routes import router as tune_router
from genfoundry.guard.engine import open_guard
from genfoundry.models.builtin import register_builtins
from genfoundry.models.hub import ModelHub, lookup_scope
from genfoundry.observe.alerts import has_alert_since, record_alert
from genfoundry.observe.calls import CallRecorder
from genfoundry.observe.tracing import Tracing, prune_spans

__all__ = ["BodyLimit", "ERROR_SCHEMA", "ERROR_STATUSES", "LookupScope", "WORKER_CONFIG_ENV", "create_app",
           "open_runtime", "warm_model", "worker_app"]

log = logging.getLogger(__name__)


def _error(status: int, message: str, *, type_: str = "invalid_request_error", param=None, code=None,
           headers=None) -> JSONResponse:
    return JSONResponse(error_body(message, type_=type_, param=param, code=code),
                        status_code=status, headers=headers)


GUARD_CODES = ("guard_blocked", "sensitivity_exceeds_clearance")


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GenfoundryError)
    async def on_genfoundry_error(request: Request, exc: GenfoundryError):
        if exc.code in GUARD_CODES:
            runtime = getattr(request.app.state, "runtime", None)
            if runtime is not None:
                runtime.metrics.guard_blocks.labels(exc.param or exc.code).inc()
        headers = {"Retry-After": str(round(exc.retry_after))} if isinstance(exc, RateLimited) else None
        return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        if first.get("type") == "json_invalid":
            return _error(400, "the request body is not valid JSON", code="invalid_json")
        if first.get("type") == "extra_forbidden":
            return _error(400, f"unrecognized request argument supplied: {'.'.join(loc)}",
                          param=".".join(loc) or None, code="unknown_parameter")
        message = f"{'.'.join(loc) or 'body'}: {first.get('msg')}"
        return _error(400, message, param=".".join(loc) or None, code="invalid_value")

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return _error(exc.status_code, str(exc.detail), code=code)

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s", request.url.path)
        return _error(500, "internal error; see the gateway log", type_="server_error")


class LookupScope:
    """Each request sees one snapshot of the hub: its several model lookups cost one store query, made
    by :func:`~genfoundry.gateway.auth.authenticate` in its worker thread, next to the key check."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        with lookup_scope():
            await self.app(scope, receive, send)


class BodyLimit:
    """Refuses bodies over ``limit`` bytes before reading them (413), chunked ones included."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._refuse(send)
        seen = 0
        too_large = started = False

        async def limited_receive():
            nonlocal seen, too_large
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                too_large = True
                raise PayloadTooLarge(self._message())
            return message

        async def guarded_send(message):
            nonlocal started
            # FastAPI turns an error raised while it reads the body into its own 400;
            # the client must get the 413 instead.
            if too_large and not started:
                return
            started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except PayloadTooLarge:
            pass
        if too_large and not started:
            await self._refuse(send)

    def _message(self) -> str:
        return f"request body is larger than the limit of {self.limit} bytes (setting max_body_bytes)"

    async def _refuse(self, send) -> None:
        response = JSONResponse(PayloadTooLarge(self._message()).to_dict(), status_code=413)
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(k.encode(), v.encode()) for k, v in response.headers.items()]})
        await send({"type": "http.response.body", "body": response.body})


ERROR_SCHEMA = {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["message", "type", "param", "code"], "properties": {
        "message": {"type": "string"}, "type": {"type": "string"},
        "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}}
ERROR_STATUSES = {
    "400": "Invalid request: bad JSON, unknown field, invalid value, context length exceeded",
    "401": "Missing, invalid or revoked API key",
    "403": "The key may not use this model or route",
    "404": "Unknown model or resource",
    "413": "Request body over max_body_bytes",
    "429": "Rate limit, token budget or model queue full (see Retry-After)",
    "502": "The model provider failed and no fallback worked",
}


def _openapi(app: FastAPI) -> dict:
    """FastAPI documents 422 validation errors; the gateway answers in the OpenAI error shape instead."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas["Error"] = ERROR_SCHEMA
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    for path, operations in schema["paths"].items():
        if not path.startswith(("/v1/", "/admin/")):
            continue
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for status, description in ERROR_STATUSES.items():
                responses.setdefault(status, {"description": description, **error})
    app.openapi_schema = schema
    return schema


def _budget_alert(runtime: Runtime, state) -> None:
    """One alert per key, kind and budget period."""
    kind = "budget.exceeded" if state.exceeded else "budget.warning"
    subject = f"key:{state.key.id}"
    if has_alert_since(runtime.store, kind=kind, subject=subject, since=state.period_start):
        return
    record_alert(runtime.store, kind=kind, severity="critical" if state.exceeded else "warning", subject=subject,
                 message=state.header(), details={"key": state.key.name, "spent_usd": state.spent_usd,
                                                  "budget_usd": state.budget_usd,
                                                  "period": state.key.budget_period})
    runtime.metrics.alerts.labels(kind).inc()


async def warm_model(model) -> None:
    """Run a model once (one token, or one embedding): engines page their weights in, allocate
    their buffers and compile their kernels on the first call, not on a user's request."""
    from genfoundry.core.types import GenerationRequest

    spec = model.spec
    if spec.can("chat") or spec.can("completion"):
        # A chat turn when the model chats: it also warms the chat template (the common path).
        request = GenerationRequest(messages=[Message(role="user", content="Hello")], max_tokens=2,
                                    temperature=0.0) if spec.can("chat") else \
            GenerationRequest(prompt="Hello", max_tokens=2, temperature=0.0)
        stream = model.stream(request)
        try:
            async for _ in stream:
                pass
        finally:
            await stream.aclose()
    elif spec.can("embedding"):
        await model.embed(["warm up"])


async def _warm_up(runtime: Runtime, names: list[str]) -> None:
    started = time.perf_counter()
    try:
        for name in names:
            model = await runtime.hub.load(name)
            if model.spec.name not in runtime.warmed:
                await warm_model(model)
                runtime.warmed.add(model.spec.name)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        runtime.startup_error = f"{type(exc).__name__}: {exc}"
        log.error("warming up the preloaded models failed: %s", runtime.startup_error)
        return
    runtime.ready = True
    if names:
        log.info("ready: %s loaded and warmed in %.1f s", ", ".join(names), time.perf_counter() - started)


@asynccontextmanager
async def open_runtime(settings: Settings, *, builtins: bool = True):
    """The gateway's runtime (store, hub, guard, recorder, quotas, tracing) without the HTTP server: what
    the server runs on, and what commands use to send model calls down the same guarded, recorded path."""
    settings.ensure_home()
    store = Store.open(settings.resolved_database_url)
    hub = ModelHub(store, settings)
    if builtins:
        register_builtins(hub)
    quotas = Quotas(store, default_rpm=settings.default_rpm)
    recorder = CallRecorder(store, log_content=settings.log_content, on_written=quotas.release)
    metrics = Metrics()
    metrics.watch_pools(hub.pools)
    runtime = Runtime(settings=settings, store=store, hub=hub, recorder=recorder, quotas=quotas, metrics=metrics)
    runtime.quotas.on_budget = lambda state: _budget_alert(runtime, state)
    try:
        if settings.tracing:
            await asyncio.to_thread(prune_spans, store, older_than_days=settings.trace_retention_days)
            runtime.tracing = Tracing(settings, store)
        runtime.guard = open_guard(settings, store, hub)  # a bad policy or a missing vault key stops here
        if runtime.guard is not None:
            await asyncio.to_thread(runtime.guard.warm_up)
        yield runtime
    finally:
        try:
            await hub.close()
            if runtime.kb is not None:
                runtime.kb.close()
        finally:
            recorder.close()  # pending call records are written even if a model failed to close
            if runtime.tracing is not None:
                runtime.tracing.shutdown()  # pending spans too
            store.close()


WORKER_CONFIG_ENV = "GENFOUNDRY_SERVE_WORKER"  # JSON from `genfoundry serve --workers N` for each worker


def worker_app() -> FastAPI:
    """The app of one worker of `genfoundry serve --workers N` (uvicorn calls this in each process)."""
    config = json.loads(os.environ[WORKER_CONFIG_ENV])
    settings = load_settings(home=Path(config["home"]), overrides=config["overrides"])
    return create_app(settings, preload=config["preload"])


def create_app(settings: Settings, *, preload: list[str] | None = None, builtins: bool = True) -> FastAPI:
    """Build the gateway. ``preload`` names models to load at start-up rather than on first use."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with open_runtime(settings, builtins=builtins) as runtime:
            app.state.runtime = runtime
            # The server answers (liveness) at once; it is ready once the preloaded models are
            # loaded and have run once, so the first request is as fast as the next.
            runtime.ready = not preload
            warming = asyncio.create_task(_warm_up(runtime, preload), name="warm-up") if preload else None
            queue = None
            if settings.tune_queue:
                from genfoundry.gateway.tune.queue import TuneQueue
                from genfoundry.tune.jobs import TuneJobs
                queue = TuneQueue(TuneJobs(settings, runtime.store, runtime.hub))
                queue.start()
            app.state.tune_queue = queue
            heartbeat = Heartbeat(runtime.store, replica=runtime.quotas.replica,
                                  address=f"{settings.host}:{settings.port}")
            await heartbeat.start()
            try:
                yield
            finally:
                if warming is not None:
                    warming.cancel()
                if queue is not None:
                    await queue.stop()
                await heartbeat.stop()

    # Swagger UI and ReDoc load their scripts from a CDN into this origin: off unless asked for
    # (api_docs). The OpenAPI document itself is always at /openapi.json.
    docs = {} if settings.api_docs else {"docs_url": None, "redoc_url": None}
    app = FastAPI(title="genfoundry gateway", version=__version__, lifespan=lifespan, **docs,
                  description="OpenAI-compatible gateway of genfoundry.")
    _install_error_handlers(app)
    for router in (chat_router, completions_router, embeddings_router, models_router, knowledge_router,
                   data_router, tune_router, agents_router, admin_router, observe_router, console_router):
        app.include_router(router)
    app.mount("/console/static", static_files(), name="console-static")

    @app.get("/health/live", tags=["ops"], summary="Liveness: the process answers")
    async def live():
        return {"status": "alive", "version": __version__}

    @app.get("/health", tags=["ops"], summary="Readiness (503 until the preloaded models are warm) and loaded models")
    @app.get("/health/ready", tags=["ops"], summary="Readiness, as /health")
    async def health(request: Request):
        rt = request.app.state.runtime
        if not rt.ready:
            failed = rt.startup_error is not None
            return JSONResponse({"status": "failed" if failed else "starting", "version": __version__,
                                 "error": rt.startup_error, "models_loaded": sorted(rt.hub.loaded())},
                                status_code=503)
        engines = {}
        for name, model in rt.hub.loaded().items():
            engine = getattr(model, "engine", None)
            if engine is not None:
                engines[name] = {"kind": type(engine).__name__, "pid": getattr(engine, "pid", None),
                                 "port": getattr(engine, "port", None),
                                 "restarts": getattr(engine, "restarts", 0),
                                 "concurrency": engine.concurrency,
                                 "adapter": getattr(model, "spec", None) and model.spec.options.get("adapter")}
        queues = {name: {"running": gate.running, "waiting": gate.waiting}
                  for name, gate in rt.admissions.items()}
        return {"status": "ok", "version": __version__, "models_loaded": sorted(rt.hub.loaded()),
                "engines": engines, "queues": queues, "switches": rt.hub.swap_log[-10:]}

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics", response_class=Response)
    async def metrics(request: Request):
        return Response(request.app.state.runtime.metrics.render(),
                        media_type="text/plain; version=0.0.4; charset=utf-8")

    app.add_middleware(LookupScope)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(TraceMiddleware)  # outermost: refused bodies are traced too
    app.openapi = lambda: _openapi(app)
    return app
