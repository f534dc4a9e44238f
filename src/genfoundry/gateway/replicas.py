"""The gateway processes sharing one database: each says it is alive every few seconds.

A gateway writes its row in ``replicas`` (``HOST:PID``, version, where it listens)
when it starts, updates ``seen_at`` every ``HEARTBEAT_S``, and deletes it when it
stops. A row not seen for ``STALE_S`` is a replica that died without stopping;
``genfoundry doctor`` and the console's Deployment page list both, and warn when
live replicas run different versions.

Example::

    heartbeat = Heartbeat(store, replica="host:123", address="0.0.0.0:8000")
    await heartbeat.start()   # in the gateway's lifespan
    await heartbeat.stop()
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

import sqlalchemy as sa

from genfoundry import __version__
from genfoundry.core.store import Store, utcnow

__all__ = ["HEARTBEAT_S", "Heartbeat", "STALE_S", "list_replicas"]

log = logging.getLogger(__name__)
HEARTBEAT_S = 10.0
STALE_S = 60.0


class Heartbeat:
    def __init__(self, store: Store, *, replica: str, address: str | None = None, interval: float = HEARTBEAT_S):
        self.store, self.replica, self.address, self.interval = store, replica, address, interval
        self._task: asyncio.Task | None = None

    def beat(self) -> None:
        table = self.store.tables.replicas
        now = utcnow()
        with self.store.begin() as conn:
            updated = conn.execute(table.update().where(table.c.id == self.replica).values(
                seen_at=now, version=__version__, address=self.address)).rowcount
            if not updated:
                conn.execute(table.insert().values(id=self.replica, host=socket.gethostname(), pid=os.getpid(),
                                                   version=__version__, address=self.address, started_at=now,
                                                   seen_at=now))

    async def start(self) -> None:
        await asyncio.to_thread(self.beat)
        self._task = asyncio.ensure_future(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await asyncio.to_thread(self.beat)
            except Exception:  # the database may be away a moment: the next beat tries again
                log.warning("replica heartbeat failed", exc_info=True)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        table = self.store.tables.replicas
        try:
            await asyncio.to_thread(self._delete, table)
        except Exception:
            log.warning("could not remove this replica's row", exc_info=True)

    def _delete(self, table) -> None:
        with self.store.begin() as conn:
            conn.execute(table.delete().where(table.c.id == self.replica))


def list_replicas(store: Store) -> list[dict]:
    """Every replica row, with ``alive`` (seen within STALE_S) and ``seen_s_ago``."""
    table = store.tables.replicas
    now = utcnow()
    with store.begin() as conn:
        rows = [dict(r) for r in conn.execute(sa.select(table).order_by(table.c.started_at)).mappings()]
    for row in rows:
        age = (now - row["seen_at"]).total_seconds()
        row.update(seen_s_ago=round(age, 1), alive=age <= STALE_S,
                   started_at=row["started_at"].isoformat(), seen_at=row["seen_at"].isoformat())
    return rows
