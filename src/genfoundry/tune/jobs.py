"""Fine-tuning jobs: each one an experiment, recorded from its config to its cost.

A job is created ``queued`` (checked first: the base can be trained, the dataset
version exists and has columns fine-tuning reads), then run — in the foreground
by ``genfoundry tune run``, or by the gateway's queue in a worker process — one
at a time per machine (a file lock in the machine's cache). Running it:

1. resolves the base (de-quantising a GGUF once), reads the dataset version's
   train and dev rows;
2. trains (:mod:`genfoundry.tune.train`), logging an event per step, eval and
   checkpoint; a cancel request stops it at the next step, keeping the checkpoint;
3. exports the adapter as a GGUF LoRA for llama.cpp (GGUF bases) and registers
   it in the hub as ``ft:BASE:SUFFIX:ID`` with its lineage;
4. records hashes (base, dataset, adapter), metrics, hardware, wall time and
   cost (``local_hourly_price`` x hours, the observe layer's true-cost model).

A job whose worker was killed is found ``running`` with a dead pid and marked
``failed``; ``resume`` queues it again and it continues from its last checkpoint.

Example::

    jobs = TuneJobs(settings, store, hub)
    job = jobs.create(base="default", dataset="support-qa", config=TrainConfig(epochs=2))
    jobs.run(job["id"], on_event=print)
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import socket
import shutil
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from genfoundry.core import audit
from genfoundry.core.errors import Conflict, InvalidRequest, NotFound
from genfoundry.core.settings import Settings
from genfoundry.core.store import Store, utcnow
from genfoundry.models.spec import ModelSpec
from genfoundry.tune.records import detect_format
from genfoundry.tune.train import TrainConfig

__all__ = ["ACTIVE", "FINAL", "TuneJobs", "machine_lock"]

ACTIVE = ("queued", "running")
FINAL = ("succeeded", "failed", "cancelled")
Event = Callable[[str, str, dict], None]


@contextmanager
def machine_lock(*, wait: bool = True):
    """One training run at a time on this machine (runs from several homes included)."""
    from genfoundry.tune.base import bases_cache
    path = bases_cache().parent / "tune.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError as exc:
            raise Conflict("another fine-tuning run is using this machine; it runs one at a time") from exc
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _here(row) -> bool:
    """Whether the job's worker ran on this machine (only then can its pid be checked; older rows: yes)."""
    return row["worker_host"] in (None, socket.gethostname())


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (a child nobody waited for) is dead too
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


class TuneJobs:
    """Jobs and their events in the store; runs in ``home/tune/JOB``."""

    def __init__(self, settings: Settings, store: Store, hub: Any = None):
        self.settings = settings
        self.store = store
        self.hub = hub
        self.root = settings.home / "tune"

    # -- creating -------------------------------------------------------------------------------------
    def create(self, *, base: str, dataset: str, version: int | None = None, config: TrainConfig | None = None,
               suffix: str | None = None, actor: str = "local", foreground: bool = False) -> dict:
        """Check and queue a job. ``foreground``: this process will run it (`tune run`), so the gateway's
        queue leaves it alone."""
        from genfoundry.data.datasets import Datasets
        from genfoundry.tune.base import TRAINABLE_PROVIDERS

        config = config or TrainConfig()
        spec = self.hub.resolve(base)
        if spec.provider not in TRAINABLE_PROVIDERS:
            raise InvalidRequest(f"model '{spec.name}' is served by '{spec.provider}' (an API or remote server): "
                                 "its weights are not here to train; pick a local GGUF or Hugging Face model",
                                 param="model")
        if spec.options.get("adapter"):
            raise InvalidRequest(f"model '{spec.name}' is a tuned adapter; train on its base "
                                 f"'{spec.options.get('tuned_from')}'", param="model")
        if suffix is not None and not (0 < len(suffix) <= 40 and all(c.isalnum() or c in "-_." for c in suffix)):
            raise InvalidRequest("suffix: up to 40 letters, digits, '-', '_' or '.'", param="suffix")
        ds = Datasets(self.settings, self.store)
        v = ds.version(dataset, version)
        detect_format(list(v.columns), config.format)
        if v.rows == 0:
            raise InvalidRequest(f"{v.ref} has no rows", param="dataset")
        job_id = "ftjob-" + uuid.uuid4().hex[:20]
        row = {"id": job_id, "status": "queued", "base_model": spec.name, "dataset": dataset,
               "dataset_version": v.number, "suffix": suffix, "config": config.model_dump(mode="json"),
               "created_by": actor, "created_at": utcnow(), "worker_pid": os.getpid() if foreground else None,
               "worker_host": socket.gethostname() if foreground else None}
        with self.store.begin() as conn:
            conn.execute(self.store.tables.tune_jobs.insert().values(**row))
        self.event(job_id, "status", f"queued: {spec.name} on {v.ref}", {"status": "queued"})
        return self.get(job_id)

    # -- reading --------------------------------------------------------------------------------------
    def get(self, job_id: str) -> dict:
        t = self.store.tables.tune_jobs
        with self.store.begin() as conn:
            row = conn.execute(sa.select(t).where(t.c.id == job_id)).mappings().first()
        if row is None:
            raise NotFound(f"no fine-tuning job '{job_id}'; `genfoundry tune list` shows them", param="job_id")
        return self._checked(dict(row))

    def list(self, *, status: str | None = None, limit: int = 50, after: str | None = None) -> list[dict]:
        t = self.store.tables.tune_jobs
        query = sa.select(t).order_by(t.c.created_at.desc(), t.c.id.desc()).limit(limit)
        if status:
            query = query.where(t.c.status == status)
        if after:
            anchor = self.get(after)
            query = query.where(t.c.created_at < anchor["created_at"])
        with self.store.begin() as conn:
            return [self._checked(dict(r)) for r in conn.execute(query).mappings()]

    def _checked(self, row: dict) -> dict:
        """A job 'running' whose worker is gone was killed: say so (it can be resumed)."""
        if row["status"] == "running" and row.get("worker_pid") and _here(row) and not _pid_alive(row["worker_pid"]):
            message = "the worker process died (killed or out of memory); `genfoundry tune resume` continues it"
            self._finish(row["id"], "failed", error=message)
            self.event(row["id"], "status", message, {"status": "failed"}, level="error")
            row.update(status="failed", error=message, finished_at=utcnow())
        return row

    def events(self, job_id: str, *, after: int = 0, limit: int = 1000, kinds: tuple[str, ...] | None = None,
               newest_first: bool = False, before: int | None = None) -> list[dict]:
        """Events in order (``after`` a number), or newest first (``before`` a number: the page after it)."""
        self.get(job_id)
        t = self.store.tables.tune_events
        query = sa.select(t).where(t.c.job_id == job_id, t.c.seq > after).limit(limit)
        query = query.order_by(t.c.seq.desc() if newest_first else t.c.seq)
        if before is not None:
            query = query.where(t.c.seq < before)
        if kinds:
            query = query.where(t.c.kind.in_(kinds))
        with self.store.begin() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def checkpoints(self, job_id: str) -> list[dict]:
        run_dir = self.run_dir(job_id)
        found = []
        for folder in sorted((run_dir / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])):
            found.append({"step": int(folder.name.split("-")[1]), "path": str(folder),
                          "created_at": dt.datetime.fromtimestamp(folder.stat().st_mtime, dt.UTC)})
        return found

    def run_dir(self, job_id: str) -> Path:
        return self.root / job_id

    # -- writing --------------------------------------------------------------------------------------
    def event(self, job_id: str, kind: str, message: str, data: dict | None = None, *, level: str = "info") -> None:
        t = self.store.tables.tune_events
        for _ in range(5):
            with self.store.begin() as conn:
                seq = (conn.execute(sa.select(sa.func.max(t.c.seq)).where(t.c.job_id == job_id)).scalar() or 0) + 1
                try:
                    conn.execute(t.insert().values(job_id=job_id, seq=seq, at=utcnow(), kind=kind, level=level,
                                                   message=message, data=data))
                    return
                except sa.exc.IntegrityError:
                    continue

    def _update(self, job_id: str, **values) -> None:
        t = self.store.tables.tune_jobs
        with self.store.begin() as conn:
            conn.execute(t.update().where(t.c.id == job_id).values(**values))

    def _finish(self, job_id: str, status: str, *, error: str | None = None, result: dict | None = None) -> None:
        values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "error": error}
        if result is not None:
            values["result"] = result
        self._update(job_id, **values)

    def cancel(self, job_id: str, *, actor: str = "local") -> dict:
        job = self.get(job_id)
        if job["status"] in FINAL:
            raise Conflict(f"job '{job_id}' is already {job['status']}", param="job_id")
        if job["status"] == "queued":
            self._finish(job_id, "cancelled")
            self.event(job_id, "status", f"cancelled by {actor} before it started", {"status": "cancelled"})
        else:
            self._update(job_id, cancel_requested=True)
            self.event(job_id, "message", f"cancel requested by {actor}; stopping after the current step")
        audit.record(self.store, action="tune.cancel", actor=actor, target=job_id)
        return self.get(job_id)

    def resume(self, job_id: str, *, actor: str = "local", foreground: bool = False) -> dict:
        job = self.get(job_id)
        if job["status"] not in ("failed", "cancelled"):
            raise Conflict(f"job '{job_id}' is {job['status']}; only failed or cancelled jobs resume", param="job_id")
        self._update(job_id, status="queued", cancel_requested=False, error=None, finished_at=None,
                     worker_pid=os.getpid() if foreground else None,
                     worker_host=socket.gethostname() if foreground else None)
        self.event(job_id, "status", f"queued again by {actor}; it continues from its last checkpoint",
                   {"status": "queued"})
        return self.get(job_id)

    def next_queued(self) -> dict | None:
        """The oldest queued job no live process has taken for itself (`tune run` runs its own)."""
        t = self.store.tables.tune_jobs
        with self.store.begin() as conn:
            rows = conn.execute(sa.select(t).where(t.c.status == "queued").order_by(t.c.created_at)).mappings().all()
        return next((dict(r) for r in rows
                     if not r["worker_pid"] or (_here(r) and not _pid_alive(r["worker_pid"]))), None)

    def delete(self, job_id: str, *, actor: str = "local") -> None:
        job = self.get(job_id)
        if job["status"] in ACTIVE:
            raise Conflict(f"job '{job_id}' is {job['status']}; cancel it first", param="job_id")
        t = self.store.tables
        with self.store.begin() as conn:
            conn.execute(t.tune_events.delete().where(t.tune_events.c.job_id == job_id))
            conn.execute(t.tune_jobs.delete().where(t.tune_jobs.c.id == job_id))
        shutil.rmtree(self.run_dir(job_id), ignore_errors=True)
        audit.record(self.store, action="tune.delete", actor=actor, target=job_id)

    # -- running --------------------------------------------------------------------------------------
    def run(self, job_id: str, *, on_event: Event | None = None, wait_for_machine: bool = True) -> dict:
        """Run a queued job here, now (blocking); returns the finished job."""
        job = self.get(job_id)
        if job["status"] != "queued":
            raise Conflict(f"job '{job_id}' is {job['status']}, not queued", param="job_id")
        with machine_lock(wait=wait_for_machine):
            claimed = self._claim(job_id)
            if not claimed:
                raise Conflict(f"job '{job_id}' was taken by another worker", param="job_id")
            return self._run(self.get(job_id), on_event)

    def _claim(self, job_id: str) -> bool:
        t = self.store.tables.tune_jobs
        with self.store.begin() as conn:
            done = conn.execute(t.update().where(t.c.id == job_id, t.c.status == "queued").values(
                status="running", started_at=utcnow(), worker_pid=os.getpid(), worker_host=socket.gethostname(),
                cancel_requested=False))
        return done.rowcount == 1

    def _cancel_requested(self, job_id: str) -> bool:
        t = self.store.tables.tune_jobs
        with self.store.begin() as conn:
            return bool(conn.execute(sa.select(t.c.cancel_requested).where(t.c.id == job_id)).scalar())

    def _run(self, job: dict, on_event: Event | None) -> dict:
        import time

        from genfoundry.data.datasets import Datasets
        from genfoundry.tune.base import resolve_base
        from genfoundry.tune.train import Cancelled, hardware, train

        job_id = job["id"]
        started = time.monotonic()

        def emit(kind: str, message: str, data: dict | None = None) -> None:
            self.event(job_id, kind, message, data)
            if on_event:
                on_event(kind, message, data or {})

        emit("status", "running", {"status": "running", "pid": os.getpid()})
        try:
            config = TrainConfig.model_validate(job["config"])
            spec = self.hub.resolve(job["base_model"])
            base = resolve_base(spec, progress=lambda m: emit("message", m))
            ds = Datasets(self.settings, self.store)
            version = ds.version(job["dataset"], job["dataset_version"])
            train_rows = ds.rows(job["dataset"], version.number, split="train")
            dev_rows = ds.rows(job["dataset"], version.number, split="dev")
            run_dir = self.run_dir(job_id)
            run_dir.mkdir(parents=True, exist_ok=True)
            metrics = train(base, train_rows, dev_rows, config, run_dir, on_event=emit,
                            should_stop=lambda: self._cancel_requested(job_id))
            emit("message", "exporting the adapter")
            result = self._publish(job, base, metrics, run_dir)
            wall = time.monotonic() - started
            result.update(wall_s=round(wall, 1), hardware=hardware(),
                          cost_usd=round(wall / 3600 * self.settings.local_hourly_price, 6),
                          dataset={"name": job["dataset"], "version": version.number,
                                   "content_hash": version.content_hash})
        except Cancelled as exc:
            self._finish(job_id, "cancelled", error=str(exc))
            emit("status", f"cancelled: {exc}", {"status": "cancelled"})
            return self.get(job_id)
        except KeyboardInterrupt:  # Ctrl-C in `tune run`: resumable from the last checkpoint
            self._finish(job_id, "cancelled", error="interrupted; `genfoundry tune resume` continues it")
            self.event(job_id, "status", "interrupted", {"status": "cancelled"}, level="warning")
            raise
        except Exception as exc:
            self._finish(job_id, "failed", error=f"{type(exc).__name__}: {exc}")
            self.event(job_id, "status", f"failed: {exc}", {"status": "failed"}, level="error")
            raise
        self._finish(job_id, "succeeded", result=result)
        emit("status", f"succeeded: {result['fine_tuned_model']}", {"status": "succeeded"})
        audit.record(self.store, action="tune.succeeded", actor=job["created_by"], target=job_id,
                     details={"model": result["fine_tuned_model"], "adapter_sha256": result["adapter_sha256"]})
        return self.get(job_id)

    def _publish(self, job: dict, base, metrics: dict, run_dir: Path) -> dict:
        """Export the adapter for the base's engine and register it in the hub."""
        from genfoundry.tune.export import export_gguf_adapter, file_sha256

        adapter_dir = Path(metrics["adapter"])
        result = {"metrics": metrics, "adapter_dir": str(adapter_dir),
                  "adapter_sha256": file_sha256(adapter_dir / "adapter_model.safetensors"),
                  "base": {"name": base.name, "folder": str(base.folder)}}
        from genfoundry.data.datasets import Datasets
        # What it learned from travels with it: a tuned model can repeat its training rows to anyone who may
        # call it, so whoever grants access to it should see what those rows were.
        trained_on = Datasets(self.settings, self.store).get(job["dataset"]).sensitivity
        options: dict[str, Any] = {"tuned_from": base.name, "tune_job": job["id"],
                                   "trained_on": f"{job['dataset']}@v{job['dataset_version']}",
                                   "trained_on_sensitivity": trained_on}
        if base.gguf is not None:
            gguf = export_gguf_adapter(base.folder, adapter_dir, run_dir / "adapter.gguf")
            result.update(adapter_gguf=str(gguf), adapter_gguf_sha256=file_sha256(gguf))
            result["base"]["gguf"] = str(base.gguf)
            result["base"]["gguf_sha256"] = _cached_sha256(base.gguf)
            options["adapter"] = str(gguf)
        else:
            options["adapter"] = str(adapter_dir)
        for key in ("engine", "chat_template", "default_max_tokens", "torch_dtype"):
            if key in base.spec.options:
                options[key] = base.spec.options[key]
        name = f"ft:{base.name}:{job['suffix'] or 'tuned'}:{job['id'].removeprefix('ftjob-')[:8]}"
        spec = ModelSpec(
            name=name, provider=base.spec.provider, location=base.spec.location, license=base.spec.license,
            parameters=base.spec.parameters, context_length=base.spec.context_length,
            capabilities=[c for c in base.spec.capabilities if c != "embedding"], clearance=base.spec.clearance,
            price=base.spec.price, options=options,
            description=f"LoRA of {base.name} on {job['dataset']}@v{job['dataset_version']} (job {job['id']})")
        self.hub.add(spec, replace=True)
        result["fine_tuned_model"] = name
        return result


def _cached_sha256(path: Path) -> str:
    """The base file's hash, computed once per file version (it is hundreds of megabytes)."""
    from genfoundry.tune.base import bases_cache
    from genfoundry.tune.export import file_sha256
    stat = path.stat()
    marker = bases_cache() / f".sha256-{path.name}-{stat.st_size}-{int(stat.st_mtime)}"
    if marker.is_file():
        return marker.read_text().strip()
    digest = file_sha256(path)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(digest)
    return digest
