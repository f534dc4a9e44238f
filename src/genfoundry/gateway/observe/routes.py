"""Observability routes: feedback (any key), and traces, usage, alerts, guard events, drift and
evaluation results (admin and developer keys). The console reads these."""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from genfoundry.core import audit
from genfoundry.gateway.access import redact_calls, redact_trace
from genfoundry.gateway.auth import authenticate, require_role
from genfoundry.gateway.keys import ApiKey
from genfoundry.observe import evals
from genfoundry.observe.alerts import list_alerts
from genfoundry.observe.feedback import MAX_CORRECTION_CHARS, add_feedback, list_feedback
from genfoundry.observe.monitor import default_windows, list_drift_runs, run_request_drift
from genfoundry.observe.tracing import get_trace, list_traces
from genfoundry.observe.usage import GROUPS, check_range, parse_time, timeseries, usage_report

router = APIRouter(tags=["observe"])
reader = require_role("admin", "developer")


class FeedbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    response_id: str = Field(min_length=1, max_length=64, description="The id of a chat, completion or answer "
                                                                       "response.")
    # Checked in add_feedback, so every caller (API, CLI) gets the same error.
    rating: int = Field(description="1 (bad) to 5 (good).")
    correction: str | None = Field(None, max_length=MAX_CORRECTION_CHARS, description="What the answer should "
                                                                                       "have been.")
    comment: str | None = Field(None, max_length=MAX_CORRECTION_CHARS)


class DriftBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recent_hours: float = Field(24, gt=0, le=24 * 366)
    baseline_days: float = Field(7, gt=0, le=3660)
    model: str | None = None
    alpha: float = Field(0.01, gt=0, lt=1)


def _range(since: str | None, until: str | None):
    return check_range(parse_time(since, param="since"), parse_time(until, param="until"))


@router.post("/v1/feedback", status_code=201, summary="Rate a response and optionally correct it")
async def post_feedback(body: FeedbackBody, request: Request, key: ApiKey = Depends(authenticate)):
    rt = request.app.state.runtime
    # A response given a moment ago may still be on its way to the call log; wait off the event loop.
    await asyncio.to_thread(rt.recorder.flush, 2.0)
    row = await asyncio.to_thread(add_feedback, rt.store, response_id=body.response_id, rating=body.rating,
                                  correction=body.correction, comment=body.comment, key_id=key.id,
                                  admin=key.role == "admin")
    rt.metrics.feedback.labels(str(body.rating)).inc()
    return row


@router.get("/admin/feedback", summary="Feedback with the responses it is about")
async def get_feedback(request: Request, key: ApiKey = Depends(reader), since: str | None = None,
                       until: str | None = None, rating: int | None = None, model: str | None = None,
                       limit: int = Query(100, ge=1, le=10_000)):
    since_t, until_t = _range(since, until)
    rt = request.app.state.runtime
    rows = await asyncio.to_thread(list_feedback, rt.store, since=since_t, until=until_t, rating=rating,
                                   model=model, limit=limit)
    return {"data": redact_calls(rt, key, rows, ("request", "response", "messages", "answer", "correction",
                                                  "comment"))}


@router.get("/admin/traces", summary="Traces, newest first, with their call's model, tokens and cost")
async def get_traces(request: Request, _: ApiKey = Depends(reader), since: str | None = None,
                     until: str | None = None, model: str | None = None, status: str | None = None,
                     app: str | None = None, path: str | None = None, limit: int = Query(50, ge=1, le=1000)):
    since_t, until_t = _range(since, until)
    rt = request.app.state.runtime
    return {"data": await asyncio.to_thread(list_traces, rt.store, since=since_t, until=until_t, model=model,
                                            status=status, app=app, path=path, limit=limit)}


@router.get("/admin/traces/{trace_id}", summary="One trace: its spans as a list and as a tree")
async def get_one_trace(trace_id: str, request: Request, key: ApiKey = Depends(reader)):
    rt = request.app.state.runtime
    return await asyncio.to_thread(lambda: redact_trace(rt, key, get_trace(rt.store, trace_id)))


@router.get("/admin/usage", summary="Requests, tokens, cost and latency grouped by day, key, app, model")
async def get_usage(request: Request, _: ApiKey = Depends(reader), since: str | None = None,
                    until: str | None = None,
                    group_by: str = Query("model", description=f"comma-separated: {', '.join(GROUPS)}")):
    since_t, until_t = _range(since, until)
    groups = [g.strip() for g in group_by.split(",") if g.strip()]
    return await asyncio.to_thread(usage_report, request.app.state.runtime.store, since=since_t, until=until_t,
                                   group_by=groups)


@router.get("/admin/usage/timeseries", summary="Requests, tokens, cost and latency per minute, hour or day")
async def get_timeseries(request: Request, _: ApiKey = Depends(reader), since: str | None = None,
                         until: str | None = None, bucket: Literal["minute", "hour", "day"] = "hour",
                         model: str | None = None):
    since_t, until_t = _range(since, until)
    return await asyncio.to_thread(timeseries, request.app.state.runtime.store, since=since_t, until=until_t,
                                   bucket=bucket, model=model)


@router.get("/admin/alerts", summary="Drift and budget alerts, newest first")
async def get_alerts(request: Request, _: ApiKey = Depends(reader), kind: str | None = None,
                     since: str | None = None, limit: int = Query(100, ge=1, le=1000)):
    return {"data": list_alerts(request.app.state.runtime.store, kind=kind,
                                since=parse_time(since, param="since"), limit=limit)}


@router.get("/admin/guard/events", summary="The guard's decisions from the audit log, newest first")
async def get_guard_events(request: Request, _: ApiKey = Depends(reader), since: str | None = None,
                           limit: int = Query(100, ge=1, le=1000)):
    entries = audit.entries(request.app.state.runtime.store, action="guard.", since=parse_time(since), limit=limit)
    return {"data": [{"seq": e.seq, "at": e.at.isoformat(), "action": e.action, "actor": e.actor,
                      "target": e.target, "details": e.details} for e in entries]}


@router.post("/admin/drift/requests", summary="Compare recent requests with a baseline window now")
async def post_drift(body: DriftBody, request: Request, _: ApiKey = Depends(require_role("admin"))):
    rt = request.app.state.runtime
    recent, baseline = default_windows(recent_hours=body.recent_hours, baseline_days=body.baseline_days)
    return await run_request_drift(rt.store, rt.hub, recent=recent, baseline=baseline, model=body.model,
                                   alpha=body.alpha, on_alert=lambda a: rt.metrics.alerts.labels(a["kind"]).inc())


@router.get("/admin/drift/runs", summary="Drift checks, newest first")
async def get_drift_runs(request: Request, _: ApiKey = Depends(reader),
                         kind: Literal["requests", "golden"] | None = None, limit: int = Query(50, ge=1, le=500)):
    return {"data": list_drift_runs(request.app.state.runtime.store, kind=kind, limit=limit)}


@router.get("/admin/evals", summary="Evaluation runs, newest first")
async def get_evals(request: Request, _: ApiKey = Depends(reader), suite: str | None = None,
                    limit: int = Query(50, ge=1, le=500)):
    return {"data": evals.list_runs(request.app.state.runtime.store, suite=suite, limit=limit)}


@router.get("/admin/evals/compare", summary="Two evaluation runs side by side")
async def get_eval_compare(request: Request, a: str, b: str, _: ApiKey = Depends(reader)):
    return evals.compare_runs(request.app.state.runtime.store, a, b)


@router.get("/admin/evals/{run_id}", summary="One evaluation run with its per-item results")
async def get_eval(run_id: str, request: Request, _: ApiKey = Depends(reader)):
    return evals.get_run(request.app.state.runtime.store, run_id)
