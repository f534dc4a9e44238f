"""Alerts: drift found, budgets nearly or fully spent. Recorded in the store, shown by
``genfoundry alerts`` and the console, counted in Prometheus.

Example::

    record_alert(store, kind="drift.embedding", severity="warning", subject="requests",
                 message="recent requests differ from the baseline (p=0.002)", details={...})
    list_alerts(store, kind="drift.")
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa

from genfoundry.core.errors import InvalidRequest
from genfoundry.core.store import Store, utcnow

__all__ = ["SEVERITIES", "has_alert_since", "list_alerts", "record_alert"]

SEVERITIES = ("info", "warning", "critical")


def record_alert(store: Store, *, kind: str, severity: str, subject: str, message: str,
                 details: dict[str, Any] | None = None) -> dict[str, Any]:
    if severity not in SEVERITIES:
        raise InvalidRequest(f"severity must be one of {', '.join(SEVERITIES)}")
    row = {"id": uuid.uuid4().hex, "at": utcnow(), "kind": kind, "severity": severity, "subject": subject,
           "message": message, "details": details or {}}
    with store.begin() as conn:
        conn.execute(store.tables.alerts.insert().values(**row))
    return {**row, "at": row["at"].isoformat()}


def has_alert_since(store: Store, *, kind: str, subject: str, since: dt.datetime) -> bool:
    alerts = store.tables.alerts
    with store.begin() as conn:
        return conn.execute(sa.select(alerts.c.id).where(
            alerts.c.kind == kind, alerts.c.subject == subject, alerts.c.at >= since).limit(1)).first() is not None


def list_alerts(store: Store, *, kind: str | None = None, since: dt.datetime | None = None,
                limit: int = 100) -> list[dict[str, Any]]:
    """Newest first; ``kind`` ending in '.' matches a family ('drift.')."""
    alerts = store.tables.alerts
    query = sa.select(alerts).order_by(alerts.c.at.desc()).limit(limit)
    if kind:
        query = query.where(alerts.c.kind.startswith(kind) if kind.endswith(".") else alerts.c.kind == kind)
    if since:
        query = query.where(alerts.c.at >= since)
    with store.begin() as conn:
        return [{**dict(r._mapping), "at": r.at.isoformat()} for r in conn.execute(query)]
