"""/v1/fine_tuning/jobs in the shape of OpenAI's fine-tuning API (create, list, retrieve, cancel, events,
checkpoints), so its clients start and follow genfoundry runs; /admin/tune for the evaluation gate,
promotion and rollback.

Who may: fine-tuning reads a dataset's content, so app keys reach none of it; developers train on the
datasets they may read (public and internal) and follow any job; promoting or rolling back changes what a
model name serves, so it needs an admin key.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

from fastapi import APIRouter, Depends, Query, Request

from genfoundry.core.errors import InvalidRequest, PermissionDenied
from genfoundry.data.datasets import Datasets
from genfoundry.gateway.auth import require_role
from genfoundry.gateway.keys import ApiKey
from genfoundry.gateway.tune.protocol import JobCreate, PromoteBody, RollbackBody
from genfoundry.tune.jobs import TuneJobs
from genfoundry.tune.train import TrainConfig

router = APIRouter(tags=["fine-tuning"])
writer = require_role("admin", "developer")
admin = require_role("admin")
DEFAULT_LR = TrainConfig.model_fields["learning_rate"].default
_STATUS = {"queued": "queued", "running": "running", "succeeded": "succeeded", "failed": "failed",
           "cancelled": "cancelled"}


def _jobs(request: Request) -> TuneJobs:
    rt = request.app.state.runtime
    return TuneJobs(rt.settings, rt.store, rt.hub)


def _unix(value) -> int | None:
    """Unix seconds of a stored time (the store keeps naive UTC datetimes)."""
    if value is None:
        return None
    return int((value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp())


def job_object(job: dict) -> dict:
    """A job as OpenAI's ``fine_tuning.job``, with genfoundry's record under ``genfoundry``."""
    config, result = job["config"], job.get("result") or {}
    metrics = result.get("metrics") or {}
    hyper = {"n_epochs": config.get("epochs"), "batch_size": config.get("batch_size"),
             "learning_rate_multiplier": round(config.get("learning_rate", DEFAULT_LR) / DEFAULT_LR, 6)}
    return {
        "id": job["id"], "object": "fine_tuning.job", "model": job["base_model"],
        "created_at": _unix(job["created_at"]), "finished_at": _unix(job.get("finished_at")),
        "fine_tuned_model": result.get("fine_tuned_model"), "organization_id": "genfoundry",
        "status": _STATUS[job["status"]], "training_file": f"{job['dataset']}@v{job['dataset_version']}",
        "validation_file": None, "hyperparameters": hyper, "trained_tokens": metrics.get("tokens"),
        "error": {"code": "training_failed", "message": job["error"], "param": None}
        if job["status"] == "failed" and job.get("error") else None,
        "result_files": [], "seed": config.get("seed"), "user_provided_suffix": job.get("suffix"),
        "estimated_finish": None, "integrations": [],
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}},
        "genfoundry": {"config": config, "created_by": job["created_by"], "started_at": _unix(job.get("started_at")),
                       "metrics": metrics or None, "wall_s": result.get("wall_s"), "cost_usd": result.get("cost_usd"),
                       "hardware": result.get("hardware"), "dataset": result.get("dataset"),
                       "adapter_sha256": result.get("adapter_sha256"), "base": result.get("base"),
                       "adapter_gguf_sha256": result.get("adapter_gguf_sha256"),
                       "gates": [{k: v for k, v in g.items() if k != "suites"} | {"suites": {
                           n: {kk: vv for kk, vv in s.items() if kk != "items"} if n == "safety" else
                           {"gain": s["gain"], "passed": s["passed"], "candidate": s["candidate"]["score"],
                            "incumbent": s["incumbent"]["score"]} for n, s in g["suites"].items()}}
                           for g in result.get("gates", [])],
                       "cancel_requested": bool(job.get("cancel_requested"))},
    }


def _config(body: JobCreate) -> TrainConfig:
    values = dict(body.genfoundry or {})
    hyper = body.hyperparameters or (body.method.supervised.hyperparameters if body.method else None)
    if hyper is not None:
        if hyper.n_epochs != "auto":
            values["epochs"] = hyper.n_epochs
        if hyper.batch_size != "auto":
            values["batch_size"] = hyper.batch_size
        if hyper.learning_rate_multiplier != "auto":
            values["learning_rate"] = DEFAULT_LR * hyper.learning_rate_multiplier
    if body.seed is not None:
        values["seed"] = body.seed
    try:
        return TrainConfig.model_validate(values)
    except ValueError as exc:
        raise InvalidRequest(f"bad training settings: {exc}", param="genfoundry") from exc


def _dataset_ref(ref: str) -> tuple[str, int | None]:
    name, _, version = ref.partition("@")
    if not version:
        return name, None
    try:
        return name, int(version.removeprefix("v"))
    except ValueError as exc:
        raise InvalidRequest(f"training_file '{ref}': write NAME or NAME@vN", param="training_file") from exc


@router.post("/v1/fine_tuning/jobs", summary="Create a fine-tuning job (queued; the gateway trains one at a time)")
async def create_job(body: JobCreate, request: Request, key: ApiKey = Depends(writer)):
    if body.validation_file:
        raise InvalidRequest("validation_file is not used: the dataset's dev split validates", param="validation_file")
    jobs = _jobs(request)
    name, version = _dataset_ref(body.training_file)

    def create():
        from genfoundry.gateway.generation import check_model_access
        check_model_access(key, jobs.hub.resolve(body.model), body.model)  # a key limited to some models trains only those
        sensitivity = Datasets(jobs.settings, jobs.store).get(name).sensitivity
        if key.role != "admin" and sensitivity not in ("public", "internal"):
            raise PermissionDenied(f"dataset {name!r} is {sensitivity}: admin keys only", param="training_file")
        return jobs.create(base=body.model, dataset=name, version=version, config=_config(body),
                           suffix=body.suffix, actor=f"key:{key.id}")

    job = await asyncio.to_thread(create)
    queue = getattr(request.app.state, "tune_queue", None)
    if queue is not None:
        queue.wake()
    return job_object(job)


@router.get("/v1/fine_tuning/jobs", summary="Fine-tuning jobs, newest first")
async def list_jobs(request: Request, key: ApiKey = Depends(writer), after: str | None = None,
                    limit: int = Query(20, ge=1, le=100)):
    found = await asyncio.to_thread(_jobs(request).list, limit=limit + 1, after=after)
    return {"object": "list", "data": [job_object(j) for j in found[:limit]], "has_more": len(found) > limit}


@router.get("/v1/fine_tuning/jobs/{job_id}", summary="A fine-tuning job")
async def get_job(job_id: str, request: Request, key: ApiKey = Depends(writer)):
    return job_object(await asyncio.to_thread(_jobs(request).get, job_id))


@router.post("/v1/fine_tuning/jobs/{job_id}/cancel", summary="Cancel a job (a running one stops after its step)")
async def cancel_job(job_id: str, request: Request, key: ApiKey = Depends(writer)):
    return job_object(await asyncio.to_thread(_jobs(request).cancel, job_id, actor=f"key:{key.id}"))


@router.post("/v1/fine_tuning/jobs/{job_id}/resume", summary="Queue a failed or cancelled job again; it continues from its last checkpoint")
async def resume_job(job_id: str, request: Request, key: ApiKey = Depends(writer)):
    job = await asyncio.to_thread(_jobs(request).resume, job_id, actor=f"key:{key.id}")
    queue = getattr(request.app.state, "tune_queue", None)
    if queue is not None:
        queue.wake()
    return job_object(job)


@router.get("/v1/fine_tuning/jobs/{job_id}/events", summary="A job's events, newest first (metrics per step, evaluations, checkpoints)")
async def job_events(job_id: str, request: Request, key: ApiKey = Depends(writer), after: str | None = None,
                     limit: int = Query(20, ge=1, le=10000)):
    before = None
    if after:
        try:
            before = int(after.rsplit("-", 1)[1])
        except (IndexError, ValueError) as exc:
            raise InvalidRequest("after: an event id from this list", param="after") from exc
    # One more than asked for tells whether there are more.
    found = await asyncio.to_thread(_jobs(request).events, job_id, limit=limit + 1, newest_first=True, before=before)
    data = [{"object": "fine_tuning.job.event", "id": f"ftevent-{job_id}-{e['seq']}", "created_at": _unix(e["at"]),
             "level": e["level"], "message": e["message"], "data": e["data"] or {},
             "type": "metrics" if e["kind"] in ("metrics", "eval") else "message", "kind": e["kind"]}
            for e in found[:limit]]
    return {"object": "list", "data": data, "has_more": len(found) > limit}


@router.get("/v1/fine_tuning/jobs/{job_id}/checkpoints", summary="A job's kept checkpoints, newest first")
async def job_checkpoints(job_id: str, request: Request, key: ApiKey = Depends(writer)):
    jobs = _jobs(request)

    def load():
        job = jobs.get(job_id)
        evals = {e["data"]["step"]: e["data"] for e in jobs.events(job_id, kinds=("eval", "metrics"), limit=100_000)
                 if e["data"] and "step" in e["data"]}
        return job, jobs.checkpoints(job_id), evals

    job, checkpoints, evals = await asyncio.to_thread(load)
    data = [{"object": "fine_tuning.job.checkpoint", "id": f"ftckpt-{job_id}-{c['step']}",
             "created_at": _unix(c["created_at"]), "fine_tuning_job_id": job_id, "step_number": c["step"],
             "fine_tuned_model_checkpoint": f"{(job.get('result') or {}).get('fine_tuned_model') or job_id}:step-{c['step']}",
             "metrics": {k: v for k, v in {"step": c["step"], "valid_loss": evals.get(c["step"], {}).get("eval_loss"),
                                           "train_loss": evals.get(c["step"], {}).get("loss")}.items() if v is not None}}
            for c in reversed(checkpoints)]
    return {"object": "list", "data": data, "has_more": False}


@router.get("/admin/tune/promotions", summary="Promotions and rollbacks, newest first")
async def promotions(request: Request, key: ApiKey = Depends(writer), model: str | None = None):
    from genfoundry.tune.promote import history
    found = await asyncio.to_thread(history, request.app.state.runtime.store, model)
    return {"object": "list", "data": [{**p, "at": _unix(p["at"]), "rolled_back_at": _unix(p["rolled_back_at"])}
                                       for p in found]}


@router.post("/admin/tune/promotions", summary="Gate a job's adapter against what it would replace; serve it if it wins (admin)")
async def promote(body: PromoteBody, request: Request, key: ApiKey = Depends(admin)):
    from genfoundry.gateway.generation import CallContext
    from genfoundry.gateway.knowledge.serving import gateway_generate
    from genfoundry.tune.promote import GateContext
    from genfoundry.tune.promote import promote as do_promote

    rt = request.app.state.runtime
    call = CallContext(id=f"gate-{uuid.uuid4().hex}", endpoint="tune.gate", key=None, requested_model="", stream=False)
    ctx = GateContext(settings=rt.settings, store=rt.store, hub=rt.hub, generate=gateway_generate(rt, call, rag_model=False))
    report = await do_promote(ctx, body.job_id, target=body.target, suites=list(body.suites), margin=body.margin,
                              force=body.force, answers_options={"collection": body.collection}, actor=f"key:{key.id}")
    for suite in report["suites"].values():
        for side in ("candidate", "incumbent"):
            if isinstance(suite.get(side), dict):
                suite[side] = {k: v for k, v in suite[side].items() if k != "items"}
    return report


@router.post("/admin/tune/rollback", summary="Serve what a model served before its latest promotion (admin)")
async def rollback(body: RollbackBody, request: Request, key: ApiKey = Depends(admin)):
    from genfoundry.tune.promote import rollback as do_rollback
    rt = request.app.state.runtime
    return await asyncio.to_thread(do_rollback, rt.store, rt.hub, body.model, actor=f"key:{key.id}")
