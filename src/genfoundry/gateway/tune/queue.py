"""The gateway's fine-tuning queue: queued jobs run one at a time, each in a worker process.

Training for minutes on every core does not belong in the process that serves requests: the queue starts
``genfoundry tune work JOB`` beside the gateway (its output goes to ``home/tune/JOB/worker.log``) and waits
for it. Stopping the gateway stops the worker; the job is then marked failed and ``tune resume`` continues
it from its last checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys

from genfoundry.tune.jobs import TuneJobs

__all__ = ["TuneQueue"]

log = logging.getLogger("genfoundry.tune")
POLL_S = 5.0


class TuneQueue:
    def __init__(self, jobs: TuneJobs):
        self.jobs = jobs
        self._wake = asyncio.Event()
        self._proc: subprocess.Popen | None = None
        self._task: asyncio.Task | None = None
        self.current: str | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="tune-queue")

    def wake(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_S)
            self._wake.clear()
            try:
                await self._step()
            except Exception as exc:  # a bad job must not stop the queue
                log.error("fine-tuning queue: %s", exc)

    async def _step(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                return
            log.info("fine-tuning worker for %s exited with %s", self.current, self._proc.returncode)
            await asyncio.to_thread(self.jobs.get, self.current)  # marks it failed if the worker died mid-run
            self._proc, self.current = None, None
        job = await asyncio.to_thread(self.jobs.next_queued)
        if job is None:
            return
        run_dir = self.jobs.run_dir(job["id"])
        run_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, GENFOUNDRY_HOME=str(self.jobs.settings.home))
        if self.jobs.settings.database_url:
            env["GENFOUNDRY_DATABASE_URL"] = self.jobs.settings.database_url
        with open(run_dir / "worker.log", "ab") as out:
            self._proc = subprocess.Popen([sys.executable, "-m", "genfoundry.cli", "tune", "work", job["id"], "--json"],
                                          stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.current = job["id"]
        log.info("fine-tuning job %s started in worker %s", job["id"], self._proc.pid)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                await asyncio.to_thread(self._proc.wait, 10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
