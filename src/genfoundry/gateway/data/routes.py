"""/v1/datasets and /v1/labeling: datasets (list, create from rows, read, delete), labeling tasks and their
review queue (label a row, undo). Tasks are made and run with `genfoundry label`; the console's Review page
reads and writes here.

Who sees what: datasets hold content (call logs, feedback, documents), so app keys (inference only) reach
none of these routes; developers reach datasets up to ``internal`` and the tasks on them; ``confidential``
and ``restricted`` datasets (call logs and feedback are confidential by default) and their tasks are for
admins, as call content is.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request, Response

from genfoundry.core.errors import NotFound, PermissionDenied
from genfoundry.data.datasets import Datasets, check_rows
from genfoundry.data.tasks import Labeling
from genfoundry.gateway.auth import require_role
from genfoundry.gateway.data.protocol import DatasetCreate, ReviewBody
from genfoundry.gateway.keys import ApiKey

router = APIRouter(tags=["data"])
writer = require_role("admin", "developer")
MAX_PAGE = 1000


DEVELOPER_LEVELS = ("public", "internal")


def _may_read(key: ApiKey, sensitivity: str) -> bool:
    return key.role == "admin" or sensitivity in DEVELOPER_LEVELS


def _check_read(ds: Datasets, key: ApiKey, name: str) -> None:
    sensitivity = ds.get(name).sensitivity
    if not _may_read(key, sensitivity):
        raise PermissionDenied(f"dataset {name!r} is {sensitivity}: admin keys only", param="name")


def _datasets(request: Request) -> Datasets:
    rt = request.app.state.runtime
    return Datasets(rt.settings, rt.store)


def _labeling(request: Request) -> Labeling:
    # Reviews and the queue need no model: prompt and embedding LFs run in `genfoundry label run`.
    return Labeling(_datasets(request), request.app.state.runtime.store)


def _create(ds: Datasets, body: DatasetCreate, actor: str) -> dict:
    rows = check_rows(body.rows, required=body.required)
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()
    try:
        parent = ds.version(body.name).number
    except NotFound:
        parent = None
    version = ds.add_version(body.name, rows, lineage={"source": "api", "rows": len(rows), "sha256": digest},
                             parent=parent, sensitivity=body.sensitivity, description=body.description, actor=actor)
    return version.to_dict()


@router.get("/v1/datasets", summary="Datasets and their latest versions")
async def list_datasets(request: Request, key: ApiKey = Depends(writer)):
    infos = await asyncio.to_thread(_datasets(request).list)
    return {"object": "list", "data": [info.to_dict() for info in infos if _may_read(key, info.sensitivity)]}


@router.post("/v1/datasets", status_code=201, summary="Add rows as a new dataset, or a new version of one")
async def create_dataset(body: DatasetCreate, request: Request, key: ApiKey = Depends(writer)):
    ds = _datasets(request)

    def create():
        try:
            _check_read(ds, key, body.name)  # adding to a dataset you may not read is refused too
        except NotFound:
            if not _may_read(key, body.sensitivity or "internal"):
                raise PermissionDenied(f"only admin keys make {body.sensitivity} datasets", param="sensitivity")
        return _create(ds, body, f"key:{key.id}")

    return await asyncio.to_thread(create)


@router.get("/v1/datasets/{name}", summary="A dataset with every version")
async def get_dataset(name: str, request: Request, key: ApiKey = Depends(writer)):
    info = await asyncio.to_thread(_datasets(request).get, name)
    if not _may_read(key, info.sensitivity):
        raise PermissionDenied(f"dataset {name!r} is {info.sensitivity}: admin keys only", param="name")
    return {**info.to_dict(), "versions_detail": [v.to_dict() for v in info.versions]}


@router.get("/v1/datasets/{name}/rows", summary="Rows of a version (default the latest), a page at a time")
async def dataset_rows(name: str, request: Request, key: ApiKey = Depends(writer),
                       version: int | None = Query(None, ge=1),
                       split: Literal["train", "dev", "test"] | None = None,
                       offset: int = Query(0, ge=0), limit: int = Query(50, ge=1, le=MAX_PAGE)):
    ds = _datasets(request)

    def rows_():
        _check_read(ds, key, name)
        return ds.rows(name, version, split=split, offset=offset, limit=limit)

    rows = await asyncio.to_thread(rows_)
    return {"object": "list", "data": rows}


@router.delete("/v1/datasets/{name}", summary="Delete a dataset, every version and its files (admin)")
async def delete_dataset(name: str, request: Request, key: ApiKey = Depends(require_role("admin"))):
    versions = await asyncio.to_thread(_datasets(request).delete, name, actor=f"key:{key.id}")
    return {"deleted": name, "versions": versions}


@router.get("/v1/labeling/tasks", summary="Labeling tasks and their last run")
async def list_tasks(request: Request, key: ApiKey = Depends(writer)):
    labeling = _labeling(request)

    def tasks():
        levels = {info.name: info.sensitivity for info in labeling.datasets.list()}
        return [t for t in labeling.list() if _may_read(key, levels.get(t["dataset"], "restricted"))]

    return {"object": "list", "data": await asyncio.to_thread(tasks)}


def _task(labeling: Labeling, key: ApiKey, task: str):
    spec, result = labeling.get(task)
    _check_read(labeling.datasets, key, spec.dataset)
    return spec, result


@router.get("/v1/labeling/tasks/{task}", summary="A labeling task: its spec and its last run's report")
async def get_task(task: str, request: Request, key: ApiKey = Depends(writer)):
    spec, result = await asyncio.to_thread(_task, _labeling(request), key, task)
    return {**spec.to_dict(), "result": result}


@router.get("/v1/labeling/tasks/{task}/queue", summary="Rows to review next, most useful first")
async def review_queue(task: str, request: Request, key: ApiKey = Depends(writer),
                       limit: int = Query(20, ge=1, le=200)):
    labeling = _labeling(request)

    def queue():
        spec, _ = _task(labeling, key, task)
        return spec.labels, labeling.queue(task, limit=limit)

    labels, rows = await asyncio.to_thread(queue)
    return {"object": "list", "data": rows, "labels": labels}


@router.post("/v1/labeling/tasks/{task}/reviews", status_code=201, summary="Label a row (409 if someone else did "
                                                                           "since you loaded it)")
async def add_review(task: str, body: ReviewBody, request: Request, key: ApiKey = Depends(writer)):
    labeling = _labeling(request)

    def review():
        _task(labeling, key, task)
        return labeling.review(task, body.row_id, body.label, reviewer=f"key:{key.name}", expected=body.expected)

    return await asyncio.to_thread(review)


@router.delete("/v1/labeling/tasks/{task}/reviews/{review_id}", status_code=204, summary="Undo a review",
               response_class=Response)
async def undo_review(task: str, review_id: str, request: Request, key: ApiKey = Depends(writer)):
    labeling = _labeling(request)

    def undo():
        _task(labeling, key, task)
        labeling.undo(task, review_id, reviewer=f"key:{key.name}")

    await asyncio.to_thread(undo)
    return Response(status_code=204)
