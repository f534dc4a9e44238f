"""``genfoundry doctor``: is this deployment sound?

Each check reads the deployment as a replica would and says ``ok``, ``warn`` or
``fail`` with the reason and what to do:

- **database**: reachable, every migration this version knows applied, none it
  does not know (a newer genfoundry migrated it), the server's version;
- **clock**: this machine's clock against the database server's (replicas stamp
  calls, budgets and the audit log with their own clocks): warn past 1 s of
  skew, fail past 5 s;
- **vault key**: present, and the key the stored PII values were encrypted with;
- **models**: every hub entry reachable (a server's ``/models`` answering 200,
  each backend of a pool; a local file or folder present), without loading any;
- **vector store**: LanceDB's folder writable, or PostgreSQL with pgvector;
- **audit chain**: unbroken;
- **replicas**: the gateway processes sharing the database (each says it is alive
  every 10 s): live ones running different versions, and ones that died without
  stopping;
- **reservations**: budget reservations older than a day, left by a replica that
  died mid-call (they count against their key's budget until the period ends).

Example::

    checks = run_checks(settings)
    assert all(c.status != "fail" for c in checks), [c.detail for c in checks]
"""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import sqlalchemy as sa

from genfoundry.core import audit
from genfoundry.core.errors import GenfoundryError
from genfoundry.core.settings import Settings
from genfoundry.core.store import MIGRATIONS, Store, utcnow
from genfoundry.models.spec import ModelSpec

__all__ = ["Check", "run_checks"]

PROBE_TIMEOUT_S = 3.0
SKEW_WARN_S, SKEW_FAIL_S = 1.0, 5.0
STALE_HOLD = dt.timedelta(days=1)


@dataclass
class Check:
    name: str
    status: str  # ok, warn, fail
    detail: str
    data: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def run_checks(settings: Settings, *, models: bool = True, store: Store | None = None) -> list[Check]:
    """Every check, in order; the database's failure skips the checks that need it."""
    checks: list[Check] = []
    own = store is None
    try:
        if store is None:
            store = Store.open(settings.resolved_database_url, migrate=False)
        checks.append(_database(store))
    except GenfoundryError as exc:
        return [Check("database", "fail", str(exc))]
    except sa.exc.SQLAlchemyError as exc:
        return [Check("database", "fail", f"cannot reach the database: {_first_line(exc)}")]
    try:
        migrated = checks[0].status != "fail" or not checks[0].data.get("pending")
        checks.append(_clock(store))
        if migrated:
            checks.append(_vault(settings, store))
            if models:
                checks.append(_models(settings, store))
            checks.append(_vectors(settings))
            checks.append(_audit(store))
            checks.append(_replicas(store))
            checks.append(_holds(store))
    finally:
        if own:
            store.close()
    return checks


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _database(store: Store) -> Check:
    with store.begin() as conn:
        if conn.dialect.name == "postgresql":
            version = conn.execute(sa.text("SHOW server_version")).scalar()
        elif conn.dialect.name == "sqlite":
            version = conn.execute(sa.text("SELECT sqlite_version()")).scalar()
        else:
            version = None
    try:
        applied = set(store.applied_migrations())
    except sa.exc.SQLAlchemyError:
        applied = set()
    known = [name for name, _ in MIGRATIONS]
    pending = [name for name in known if name not in applied]
    unknown = sorted(applied - set(known))
    data = {"dialect": store.engine.dialect.name, "version": version, "url": _safe(store),
            "applied": len(applied), "pending": pending, "unknown": unknown}
    where = f"{store.engine.dialect.name} {version or ''}".strip()
    if unknown:
        return Check("database", "fail", f"{where}: migrated by a newer genfoundry ({', '.join(unknown)}); "
                     "upgrade this replica", data)
    if pending:
        return Check("database", "fail", f"{where}: {len(pending)} migration(s) not applied ({', '.join(pending)}); "
                     "`genfoundry serve` applies them at start (replicas starting together take turns)", data)
    return Check("database", "ok", f"{where}, {len(applied)} migrations applied", data)


def _safe(store: Store) -> str:
    return store.engine.url.render_as_string(hide_password=True)


def _clock(store: Store) -> Check:
    if store.engine.dialect.name != "postgresql":
        return Check("clock", "ok", "the database is a file on this machine: one clock")
    before = time.time()
    with store.begin() as conn:
        server = float(conn.execute(sa.text("SELECT EXTRACT(EPOCH FROM clock_timestamp())")).scalar())
    after = time.time()
    skew = server - (before + after) / 2
    data = {"skew_s": round(skew, 3), "round_trip_s": round(after - before, 3)}
    detail = f"{abs(skew):.2f} s {'behind' if skew < 0 else 'ahead of'} this machine" if abs(skew) >= 0.01 \
        else "in step with this machine"
    if abs(skew) > SKEW_FAIL_S:
        return Check("clock", "fail", f"the database server's clock is {detail}: budgets, rates and the audit log "
                     "need replicas in step; run NTP (chrony, systemd-timesyncd) everywhere", data)
    if abs(skew) > SKEW_WARN_S:
        return Check("clock", "warn", f"the database server's clock is {detail}; run NTP everywhere", data)
    return Check("clock", "ok", f"the database server's clock is {detail}", data)


def _vault(settings: Settings, store: Store) -> Check:
    from genfoundry.guard.keys import key_file_path, load_vault_key
    from genfoundry.guard.vault import Vault

    with store.begin() as conn:
        stored = conn.execute(sa.select(sa.func.count()).select_from(store.tables.vault)).scalar()
    try:
        key = load_vault_key(settings)
    except GenfoundryError as exc:
        return Check("vault key", "fail", str(exc), {"stored_values": stored})
    if key is None:
        status = "fail" if stored else "warn"
        return Check("vault key", status, f"no vault key (GENFOUNDRY_VAULT_KEY or {key_file_path(settings)})"
                     + (f", yet {stored} PII value(s) are stored encrypted: they cannot be restored"
                        if stored else "; policies that tokenize PII will refuse to start"),
                     {"stored_values": stored})
    try:
        checked = Vault(store, key).check_key()
    except GenfoundryError as exc:
        return Check("vault key", "fail", str(exc), {"stored_values": stored})
    source = "GENFOUNDRY_VAULT_KEY" if os.environ.get("GENFOUNDRY_VAULT_KEY") else str(key_file_path(settings))
    return Check("vault key", "ok", f"present ({source})" + (f"; decrypts the stored values ({checked} checked)"
                                                              if checked else "; nothing stored yet"),
                 {"stored_values": stored, "source": source})


def _probe(url: str, path: str) -> str | None:
    """None when ``url``/``path`` answers 200, else why not."""
    target = url.rstrip("/") + "/" + path.lstrip("/")
    try:
        response = httpx.get(target, timeout=PROBE_TIMEOUT_S)
    except httpx.HTTPError as exc:
        return f"{target}: {type(exc).__name__}: {exc}"
    return None if response.status_code == 200 else f"{target} answered {response.status_code}"


def _model_problems(spec: ModelSpec) -> tuple[list[str], int]:
    """What is wrong with one entry, and how many servers or files were looked at."""
    location = spec.location
    if location.startswith(("http://", "https://")):
        urls = [location, *(spec.pool.backends if spec.pool else [])]
        path = spec.pool.health_path if spec.pool else "models"
        if spec.provider == "anthropic":
            return [], 0  # a closed API: its key and terms are checked on first use
        return [p for p in (_probe(url, path) for url in urls) if p], len(urls)
    if spec.provider in ("anthropic",) or location in ("anthropic", "memory"):
        return [], 0
    return ([] if Path(location).exists() else [f"{location} does not exist"]), 1


def _models(settings: Settings, store: Store) -> Check:
    from genfoundry.models.hub import ModelHub

    entries = ModelHub(store, settings).list()  # as registered: a check writes nothing
    problems: dict[str, list[str]] = {}
    looked = 0
    for spec in entries:
        found, count = _model_problems(spec)
        looked += count
        if found:
            problems[spec.name] = found
    data = {"models": len(entries), "problems": problems}
    if problems:
        names = ", ".join(problems)
        first = next(iter(problems.values()))[0]
        return Check("models", "fail", f"{len(problems)} of {len(entries)} model(s) unreachable ({names}): {first}",
                     data)
    return Check("models", "ok", f"{len(entries)} model(s), {looked} server(s) or file(s) reachable", data)


def _vectors(settings: Settings) -> Check:
    target = settings.vector_store
    if target.startswith(("postgresql", "postgres:")):
        from genfoundry.knowledge.stores.pgvector import libpq_url

        try:
            import psycopg

            with psycopg.connect(libpq_url(target), connect_timeout=int(PROBE_TIMEOUT_S)) as conn:
                row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        except Exception as exc:  # the driver's errors vary; all mean the same here
            return Check("vector store", "fail", f"cannot reach the pgvector database: {_first_line(exc)}")
        if row is None:
            return Check("vector store", "warn", "PostgreSQL is reachable but the vector extension is not created "
                         "yet (the first ingest creates it, which needs the right to CREATE EXTENSION)")
        return Check("vector store", "ok", f"PostgreSQL with pgvector {row[0]}")
    folder = settings.home / "vectors"
    probe = folder if folder.exists() else settings.home
    if not os.access(probe, os.W_OK):
        return Check("vector store", "fail", f"{probe} is not writable")
    return Check("vector store", "ok", f"LanceDB in {folder}")


def _audit(store: Store) -> Check:
    report = audit.verify(store)
    if not report.ok:
        return Check("audit chain", "fail", f"{len(report.problems)} problem(s) in {report.entries} entries: "
                     f"{report.problems[0]}", {"entries": report.entries, "problems": report.problems[:20]})
    return Check("audit chain", "ok", f"{report.entries} entries, unbroken", {"entries": report.entries})


def _holds(store: Store) -> Check:
    holds = store.tables.quota_holds
    with store.begin() as conn:
        rows = conn.execute(sa.select(holds.c.replica, sa.func.count(), sa.func.sum(holds.c.tokens),
                                      sa.func.sum(holds.c.usd))
                            .where(holds.c.created_at < utcnow() - STALE_HOLD).group_by(holds.c.replica)).all()
    if rows:
        stale = {r[0]: {"calls": r[1], "tokens": int(r[2] or 0), "usd": float(r[3] or 0)} for r in rows}
        return Check("reservations", "warn", f"{sum(v['calls'] for v in stale.values())} budget reservation(s) "
                     f"older than a day, from {', '.join(stale)}: a replica died mid-call; they count against "
                     "their keys' budgets until the period ends", {"stale": stale})
    return Check("reservations", "ok", "no reservations left behind by a dead replica")


def _replicas(store: Store) -> Check:
    from genfoundry import __version__
    from genfoundry.gateway.replicas import STALE_S, list_replicas

    rows = list_replicas(store)
    alive = [r for r in rows if r["alive"]]
    dead = [r for r in rows if not r["alive"]]
    versions = sorted({r["version"] for r in alive} | {__version__})
    data = {"alive": [r["id"] for r in alive], "gone": [r["id"] for r in dead], "versions": versions}
    if len(versions) > 1:
        return Check("replicas", "warn", f"{len(alive)} live replica(s) run different versions ({', '.join(versions)}, "
                     f"this one {__version__}); finish the upgrade", data)
    if dead:
        return Check("replicas", "warn", f"{len(alive)} live replica(s); {len(dead)} not seen for over "
                     f"{STALE_S:.0f} s without stopping ({', '.join(r['id'] for r in dead)}): they died or lost the "
                     "database", data)
    return Check("replicas", "ok", f"{len(alive)} live replica(s), version {__version__}", data)
