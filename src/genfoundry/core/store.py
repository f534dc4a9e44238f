"""The SQL store: one SQLAlchemy engine, the schema and named migrations.

SQLite by default (a file in ``GENFOUNDRY_HOME``); any SQLAlchemy URL, such as
``postgresql+psycopg://user@host/db``, works the same. Migrations are applied
in order and recorded by name in ``_migrations``, so users can query their own
history with any SQL tool.

Example::

    store = Store.open("sqlite:///tmp/gf.db")
    with store.begin() as conn:
        conn.execute(store.tables.models.select())
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from genfoundry.core.errors import ConfigError

__all__ = ["MIGRATIONS", "Store", "Tables", "utcnow"]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class _String(sa.types.TypeDecorator):
    """A string column. PostgreSQL text cannot hold NUL, which any client can send, so
    there a NUL becomes U+FFFD, in stored values and in lookups alike."""

    impl = sa.String
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if isinstance(value, str) and "\x00" in value and dialect.name == "postgresql":
            return value.replace("\x00", "\ufffd")
        return value


class _Text(_String):
    impl = sa.Text
    cache_ok = True  # SQLAlchemy reads it from each class's own __dict__


metadata = sa.MetaData()

models = sa.Table(
    "models", metadata,
    sa.Column("name", _String(200), primary_key=True),
    sa.Column("provider", _String(100), nullable=False),
    sa.Column("spec", sa.JSON, nullable=False),
    sa.Column("builtin", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.DateTime, nullable=False, default=utcnow),
    sa.Column("updated_at", sa.DateTime, nullable=False, default=utcnow, onupdate=utcnow),
)

api_keys = sa.Table(
    "api_keys", metadata,
    sa.Column("id", _String(32), primary_key=True),
    sa.Column("name", _String(200), nullable=False),
    sa.Column("key_hash", _String(64), nullable=False, unique=True),
    sa.Column("prefix", _String(32), nullable=False),
    sa.Column("role", _String(20), nullable=False),
    sa.Column("rpm_limit", sa.Integer, nullable=True),
    sa.Column("token_budget", sa.BigInteger, nullable=True),
    sa.Column("budget_period", _String(10), nullable=False, default="month"),
    sa.Column("allowed_models", sa.JSON, nullable=True),
    sa.Column("created_at", sa.DateTime, nullable=False, default=utcnow),
    sa.Column("revoked_at", sa.DateTime, nullable=True),
    # Dollars a key may spend per budget_period (added by m005); warnings before, 429 after.
    sa.Column("cost_budget_usd", sa.Float, nullable=True),
    # Permissions for agents' side-effect tools (added by m009), e.g. ["refunds"].
    sa.Column("permissions", sa.JSON, nullable=True),
)

calls = sa.Table(
    "calls", metadata,
    sa.Column("id", _String(64), primary_key=True),
    sa.Column("created_at", sa.DateTime, nullable=False, default=utcnow, index=True),
    sa.Column("key_id", _String(32), nullable=True, index=True),
    sa.Column("endpoint", _String(50), nullable=False),
    sa.Column("model", _String(200), nullable=True, index=True),
    sa.Column("resolved_model", _String(200), nullable=True),
    sa.Column("provider", _String(100), nullable=True),
    sa.Column("stream", sa.Boolean, nullable=False, default=False),
    sa.Column("status", _String(20), nullable=False),
    sa.Column("http_status", sa.Integer, nullable=False),
    sa.Column("error_type", _String(100), nullable=True),
    sa.Column("error_message", _Text, nullable=True),
    sa.Column("prompt_tokens", sa.Integer, nullable=False, default=0),
    sa.Column("completion_tokens", sa.Integer, nullable=False, default=0),
    sa.Column("ttft_ms", sa.Float, nullable=True),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("cost_usd", sa.Float, nullable=True),
    sa.Column("fallback_from", _String(200), nullable=True),
    sa.Column("request", sa.JSON, nullable=True),
    sa.Column("response", sa.JSON, nullable=True),
    # Added by m005: the trace of the request and the app that made it.
    sa.Column("trace_id", _String(32), nullable=True, index=True),
    sa.Column("app", _String(200), nullable=True),
    # Added by m006: the collections whose passages the call used (readers without access to them see
    # its content redacted).
    sa.Column("collections", sa.JSON, nullable=True),
)
sa.Index("ix_calls_key_created", calls.c.key_id, calls.c.created_at)

spans = sa.Table(
    "spans", metadata,
    sa.Column("span_id", _String(16), primary_key=True),
    sa.Column("trace_id", _String(32), nullable=False, index=True),
    sa.Column("parent_id", _String(16), nullable=True),
    sa.Column("name", _String(200), nullable=False),
    sa.Column("kind", _String(20), nullable=False),
    sa.Column("start_at", sa.DateTime, nullable=False, index=True),
    sa.Column("duration_ms", sa.Float, nullable=False),
    sa.Column("status", _String(10), nullable=False),  # ok, error, unset
    sa.Column("status_message", _Text, nullable=True),
    sa.Column("attributes", sa.JSON, nullable=False),
    sa.Column("events", sa.JSON, nullable=False),
)

feedback = sa.Table(
    "feedback", metadata,
    sa.Column("id", _String(32), primary_key=True),
    sa.Column("call_id", _String(64), nullable=False, index=True),
    sa.Column("trace_id", _String(32), nullable=True),
    sa.Column("key_id", _String(32), nullable=True),
    sa.Column("rating", sa.Integer, nullable=False),
    sa.Column("correction", _Text, nullable=True),
    sa.Column("comment", _Text, nullable=True),
    sa.Column("created_at", sa.DateTime, nullable=False, default=utcnow, index=True),
)

alerts = sa.Table(
    "alerts", metadata,
    sa.Column("id", _String(32), primary_key=True),
    sa.Column("at", sa.DateTime, nullable=False, default=utcnow, index=True),
    sa.Column("kind", _String(50), nullable=False, index=True),  # drift.embedding, drift.topic, drift.golden, budget.*
    sa.Column("severity", _String(10), nullable=False),  # info, warning, critical
    sa.Column("subject", _String(200), nullable=False),
    sa.Column("message", _Text, nullable=False),
    sa.Column("details", sa.JSON, nullable=False),
)

drift_runs = sa.Table(
    "drift_runs", metadata,
    sa.Column("id", _String(32), primary_key=True),
    sa.Column("at", sa.DateTime, nullable=False, default=utcnow, index=True),
    sa.Column("kind", _String(20), nullable=False),  # requests, golden
    sa.Column("subject", _String(200), nullable=False),
    sa.Column("drifted", sa.Boolean, nullable=False),
    sa.Column("result", sa.JSON, nullable=False),
)

golden_answers = sa.Table(
    "golden_answers", metadata,
    sa.Column("suite", _String(100), primary_key=True),
    sa.Column("model", _String(200), primary_key=True),
    sa.Column("prompt_id", _String(64), primary_key=True),
    sa.Column("prompt", _Text, nullable=False),
    sa.Column("answer", _Text, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False, default=utcnow),
)

eval_runs = sa.Table(
    "eval_runs", metadata,
    sa.Column("id", _String(32), primary_key=True),
    sa.Column("at", sa.DateTime, nullable=False, default=utcnow, index=True),
    sa.Column("suite", _String(100), nullable=False, index=True),
    sa.Column("target", _String(200), nullable=False),
    sa.Column("status", _String(20), nullable=False),
    sa.Column("duration_s", sa.Float, nullable=False),
    sa.Column("metrics", sa.JSON, nullable=False),
    sa.Column("details", sa.JSON, nullable=False),
)


collections = sa.Table(
    "collections", metadata,
    sa.Column("name", _String(64), primary_key=True),
    sa.Column("description", _Text, nullable=False, default=""),
    sa.Column("clearance", _String(20), nullable=False),
    sa.Column("embedding_model", _String(200), nullable=False),
    sa.Column("dimensions", sa.Integer, nullable=False),
    sa.Column("chunk_tokens", sa.Integer, nullable=False),
    sa.Column("chunk_overlap", sa.Integer, nullable=False),
    sa.Column("access", sa.JSON, nullable=False),  # {"read": [roles], "write": [roles], "keys": [ids]}
    sa.Column("created_at", sa.DateTime, nullable=False, default=utcnow),
    # What ingestion does with PII found in documents: off, label, redact, tokenize (added by m004).
    sa.Column("pii", _String(20), nullable=False, server_default="off"),
)

documents = sa.Table(
    "documents", metadata,
    sa.Column("id", _String(64), primary_key=True),
    sa.Column("collection", _String(64), sa.ForeignKey("collections.name", ondelete="CASCADE"),
              nullable=False, index=True),
    sa.Column("source", _Text, nullable=False),
    sa.Column("title", _Text, nullable=False, default=""),
    sa.Column("content_hash", _String(64), nullable=False),
    sa.Column("version", _String(32), nullable=True),  # the ingest whose chunks are current; NULL: none yet
    sa.Column("stale", sa.JSON, nullable=False),  # versions whose chunks must go (a crash may leave them)
    sa.Column("chunks", sa.Integer, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False, default=0),
    sa.Column("tags", sa.JSON, nullable=False),
    sa.Column("modified", _String(40), nullable=False, default=""),
    sa.Column("ingested_at", sa.DateTime, nullable=False, default=utcnow),
)

answer_cache = sa.Table(
    "answer_cache", metadata,
    sa.Column("key", _String(64), primary_key=True),
    sa.Column("collection", _String(64), nullable=False, index=True),
    sa.Column("question", _Text, nullable=False),
    sa.Column("answer", sa.JSON, nullable=False),  # the whole answer with its citations
    sa.Column("documents", sa.JSON, nullable=False),  # ids of the documents it drew on
    sa.Column("created_at", sa.DateTime, nullable=False, default=utcnow),
)


audit_log = sa.Table(
    "audit_log", metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=False),
    sa.Column("at", sa.DateTime, nullable=False, index=True),
    sa.Column("actor", _String(200), nullable=False),
    sa.Column("action", _String(100), nullable=False, index=True),
    sa.Column("target", _Text, nullable=False),
    sa.Column("details", sa.JSON, nullable=False),
    sa.Column("prev_hash", _String(64), nullable=False),
    sa.Column("hash", _String(64), nullable=False),
)


vault = sa.Table(
    "guard_vault", metadata,
    sa.Column("scope", _String(200), primary_key=True),  # a call id or a document id
    sa.Column("token", _String(80), primary_key=True),  # "<PERSON_1>", unique within its scope
    sa.Column("entity", _String(64), nullable=False),
    sa.Column("fingerprint", _String(64), nullable=False, index=True),  # keyed hash of the value
    sa.Column("nonce", sa.LargeBinary, nullable=False),
    sa.Column("ciphertext", sa.LargeBinary, nullable=False),  # AES-GCM, never the value in the clear
    sa.Column("created_at", sa.DateTime, nullable=False, default=utcnow),
)

# The data layer (m007): datasets as immutable, content-hashed versions (the rows live in Parquet files in
# home/datasets; these tables hold what they are and where they came from), labeling tasks, the votes of
# labeling functions (a cache keyed by the function's version and the row's hash) and human reviews.
datasets = sa.Table(
    "datasets", metadata,
    sa.Column("name", _String(200), primary_key=True),
    sa.Column("description", _Text, nullable=False, default=""),
    sa.Column("sensitivity", _String(20), nullable=False, default="internal"),
    sa.Column("created_at", sa.DateTime, nullable=False, default=utcnow),
    sa.Column("created_by", _String(200), nullable=False, default="local"),
)

dataset_versions = sa.Table(
    "dataset_versions", metadata,
    sa.Column("dataset", _String(200), primary_key=True),
    sa.Column("number", sa.Integer, primary_key=True),
    sa.Column("content_hash", _String(64), nullable=False),
    sa.Column("path", _String(500), nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("columns", sa.JSON, nullable=False),
    sa.Column("lineage", sa.JSON, nullable=False),
    sa.Column("parent", sa.Integer, nullable=True),
    sa.Column("splits", sa.JSON, nullable=True),
    sa.Column("forgotten_rows", sa.Integer, nullable=False, default=0),
    sa.Column("created_at", sa.DateTime, nullable=False, default=utcnow),
    sa.Column("created_by", _String(200), nullable=False, default="local"),
)

label_tasks = sa.Table(
    "label_tasks", metadata,
    sa.Column("name", _String(200), primary_key=True),
    sa.Column("dataset", _String(200), nullable=False, index=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("text_field", _String(200), nullable=False),
    sa.Column("labels", sa.JSON, nullable=False),
    sa.Column("spec", sa.JSON, nullable=False),
    sa.Column("result", sa.JSON, nullable=True),
    sa.Column("created_at", sa.DateTime, nullable=False, default=utcnow),
    sa.Column("updated_at", sa.DateTime, nullable=False, default=utcnow, onupdate=utcnow),
)

lf_votes = sa.Table(
    "lf_votes", metadata,
    sa.Column("lf_key", _String(64), primary_key=True),
    sa.Column("row_hash", _String(64), primary_key=True),
    sa.Column("vote", sa.Integer, nullable=False),  # index in the label space, -1 abstain, -2 error
    sa.Column("error", _Text, nullable=True),
)

label_reviews = sa.Table(
    "label_reviews", metadata,
    sa.Column("id", _String(32), primary_key=True),
    sa.Column("task", _String(200), nullable=False, index=True),
    sa.Column("row_id", _String(64), nullable=False),
    sa.Column("label", _String(200), nullable=False),
    sa.Column("reviewer", _String(200), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False, default=utcnow),
    sa.Column("undone_at", sa.DateTime, nullable=True),
)
sa.Index("ix_label_reviews_task_row", label_reviews.c.task, label_reviews.c.row_id)

# The tune layer (m008): fine-tuning jobs (an experiment each: its config, hashes, metrics, cost), their
# events (one per logged step, checkpoint or state change) and promotions of their adapters in the hub.
tune_jobs = sa.Table(
    "tune_jobs", metadata,
    sa.Column("id", _String(40), primary_key=True),
    sa.Column("status", _String(20), nullable=False, index=True),  # queued running succeeded failed cancelled
    sa.Column("base_model", _String(200), nullable=False),
    sa.Column("dataset", _String(200), nullable=False),
    sa.Column("dataset_version", sa.Integer, nullable=False),
    sa.Column("suffix", _String(64), nullable=True),
    sa.Column("config", sa.JSON, nullable=False),
    sa.Column("result", sa.JSON, nullable=True),  # adapter paths and hashes, metrics, hardware, wall time, cost
    sa.Column("error", _Text, nullable=True),
    sa.Column("created_by", _String(200), nullable=False, default="local"),
    sa.Column("created_at", sa.DateTime, nullable=False, default=utcnow),
    sa.Column("started_at", sa.DateTime, nullable=True),
    sa.Column("finished_at", sa.DateTime, nullable=True),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("worker_pid", sa.Integer, nullable=True),
    # The machine of worker_pid (added by m010): a replica on another machine cannot judge that pid.
    sa.Column("worker_host", _String(200), nullable=True),
)

tune_events = sa.Table(
    "tune_events", metadata,
    sa.Column("job_id", _String(40), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("at", sa.DateTime, nullable=False, default=utcnow),
    sa.Column("kind", _String(20), nullable=False),  # message metrics checkpoint status
    sa.Column("level", _String(10), nullable=False, default="info"),
    sa.Column("message", _Text, nullable=False),
    sa.Column("data", sa.JSON, nullable=True),
)

tune_promotions = sa.Table(
    "tune_promotions", metadata,
    sa.Column("id", _String(32), primary_key=True),
    sa.Column("model", _String(200), nullable=False, index=True),
    sa.Column("job_id", _String(40), nullable=True),
    sa.Column("previous_spec", sa.JSON, nullable=True),  # None: the promotion created the model
    sa.Column("spec", sa.JSON, nullable=False),
    sa.Column("report", sa.JSON, nullable=True),
    sa.Column("forced", sa.Boolean, nullable=False, default=False),
    sa.Column("actor", _String(200), nullable=False, default="local"),
    sa.Column("at", sa.DateTime, nullable=False, default=utcnow),
    sa.Column("rolled_back_at", sa.DateTime, nullable=True),
)


# The agents (m009): one row per run (its conversation and steps, so a paused run survives a restart) and
# one per side-effect action (its approval and its execution, keyed by run and step: never done twice).
agent_runs = sa.Table(
    "agent_runs", metadata,
    sa.Column("id", _String(40), primary_key=True),
    sa.Column("agent", _String(200), nullable=False, index=True),
    sa.Column("status", _String(20), nullable=False, index=True),  # running waiting succeeded failed stopped
    sa.Column("caller", sa.JSON, nullable=True),  # {id, name, role, permissions} of the key that started it
    sa.Column("input", sa.JSON, nullable=False),  # the conversation the run answers
    sa.Column("steps", sa.JSON, nullable=False),  # every step: the model's choice, the observation, usage
    sa.Column("answer", _Text, nullable=True),
    sa.Column("error", _Text, nullable=True),
    sa.Column("prompt_tokens", sa.Integer, nullable=False, default=0),
    sa.Column("completion_tokens", sa.Integer, nullable=False, default=0),
    sa.Column("cost_usd", sa.Float, nullable=False, default=0.0),
    sa.Column("seconds", sa.Float, nullable=False, default=0.0),
    sa.Column("trace_id", _String(32), nullable=True),
    sa.Column("created_at", sa.DateTime, nullable=False, default=utcnow, index=True),
    sa.Column("updated_at", sa.DateTime, nullable=False, default=utcnow),
)

agent_actions = sa.Table(
    "agent_actions", metadata,
    sa.Column("id", _String(64), primary_key=True),  # RUN:STEP, also the tool's idempotency key
    sa.Column("run_id", _String(40), nullable=False, index=True),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("tool", _String(200), nullable=False),
    sa.Column("arguments", sa.JSON, nullable=False),  # as executed (after an approver's edit)
    sa.Column("proposed", sa.JSON, nullable=False),  # as the model proposed them
    sa.Column("status", _String(20), nullable=False, index=True),  # pending approved rejected running done failed
    sa.Column("needs_approval", sa.Boolean, nullable=False, default=False),
    sa.Column("reason", _Text, nullable=True),  # why approval is needed
    sa.Column("result", sa.JSON, nullable=True),
    sa.Column("decided_by", _String(200), nullable=True),
    sa.Column("decided_at", sa.DateTime, nullable=True),
    sa.Column("note", _Text, nullable=True),
    sa.Column("created_at", sa.DateTime, nullable=False, default=utcnow),
)


# Scale-out (m010): what calls in flight have reserved of their keys' budgets, and the requests each
# rate-limited key made in the last minute, kept in the database so every gateway replica sharing it
# enforces one budget and one rate. A hold is deleted once its call's record is in the call log; a replica
# that dies leaves its holds, which keep counting (against the budget period they were made in).
quota_holds = sa.Table(
    "quota_holds", metadata,
    sa.Column("call_id", _String(64), primary_key=True),
    sa.Column("key_id", _String(32), nullable=False, index=True),
    sa.Column("tokens", sa.BigInteger, nullable=False, default=0),
    sa.Column("usd", sa.Float, nullable=False, default=0.0),
    sa.Column("replica", _String(100), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False, default=utcnow),
)

rate_hits = sa.Table(
    "rate_hits", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("key_id", _String(32), nullable=False),
    sa.Column("at", sa.Float, nullable=False),  # seconds (the quota clock: wall time, the same on every replica)
)
sa.Index("ix_rate_hits_key_at", rate_hits.c.key_id, rate_hits.c.at)

# Every gateway process sharing the database, seen every few seconds (`doctor`, the Deployment page).
replicas = sa.Table(
    "replicas", metadata,
    sa.Column("id", _String(100), primary_key=True),  # HOST:PID, as in quota_holds.replica
    sa.Column("host", _String(200), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("version", _String(50), nullable=False),
    sa.Column("address", _String(200), nullable=True),  # where it listens, as it was told
    sa.Column("started_at", sa.DateTime, nullable=False, default=utcnow),
    sa.Column("seen_at", sa.DateTime, nullable=False, default=utcnow),
)


@dataclass(frozen=True)
class Tables:
    models: sa.Table = models
    api_keys: sa.Table = api_keys
    calls: sa.Table = calls
    collections: sa.Table = collections
    documents: sa.Table = documents
    answer_cache: sa.Table = answer_cache
    audit_log: sa.Table = audit_log
    vault: sa.Table = vault
    spans: sa.Table = spans
    feedback: sa.Table = feedback
    alerts: sa.Table = alerts
    drift_runs: sa.Table = drift_runs
    golden_answers: sa.Table = golden_answers
    eval_runs: sa.Table = eval_runs
    datasets: sa.Table = datasets
    dataset_versions: sa.Table = dataset_versions
    label_tasks: sa.Table = label_tasks
    lf_votes: sa.Table = lf_votes
    label_reviews: sa.Table = label_reviews
    tune_jobs: sa.Table = tune_jobs
    tune_events: sa.Table = tune_events
    tune_promotions: sa.Table = tune_promotions
    agent_runs: sa.Table = agent_runs
    agent_actions: sa.Table = agent_actions
    quota_holds: sa.Table = quota_holds
    rate_hits: sa.Table = rate_hits
    replicas: sa.Table = replicas


def _owner_only(database: str) -> None:
    """The SQLite file (keys' hashes, call content, the vault) and its journal files readable by their owner only."""
    import os
    import stat

    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            mode = os.stat(database + suffix).st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                os.chmod(database + suffix, 0o600)
        except OSError:
            continue  # not there (or not ours to change)


def _m001_initial(conn: Connection) -> None:
    for table in (models, api_keys, calls):
        table.create(conn, checkfirst=True)


def _m002_knowledge(conn: Connection) -> None:
    for table in (collections, documents, answer_cache):
        table.create(conn, checkfirst=True)


def _m003_audit_log(conn: Connection) -> None:
    audit_log.create(conn, checkfirst=True)


def _m004_guard(conn: Connection) -> None:
    vault.create(conn, checkfirst=True)
    if "pii" not in {c["name"] for c in sa.inspect(conn).get_columns("collections")}:
        conn.execute(sa.text("ALTER TABLE collections ADD COLUMN pii VARCHAR(20) NOT NULL DEFAULT 'off'"))


def _add_column(conn: Connection, table: str, column: str, ddl: str) -> None:
    if column not in {c["name"] for c in sa.inspect(conn).get_columns(table)}:
        conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}"))


def _m005_observe(conn: Connection) -> None:
    for table in (spans, feedback, alerts, drift_runs, golden_answers, eval_runs):
        table.create(conn, checkfirst=True)
    _add_column(conn, "calls", "trace_id", "VARCHAR(32)")
    _add_column(conn, "calls", "app", "VARCHAR(200)")
    _add_column(conn, "api_keys", "cost_budget_usd", "FLOAT")
    existing = {i["name"] for i in sa.inspect(conn).get_indexes("calls")}
    if "ix_calls_trace_id" not in existing:
        conn.execute(sa.text("CREATE INDEX ix_calls_trace_id ON calls (trace_id)"))


def _m006_call_collections(conn: Connection) -> None:
    _add_column(conn, "calls", "collections", "JSON")


def _m007_data(conn: Connection) -> None:
    for table in (datasets, dataset_versions, label_tasks, lf_votes, label_reviews):
        table.create(conn, checkfirst=True)


def _m008_tune(conn: Connection) -> None:
    for table in (tune_jobs, tune_events, tune_promotions):
        table.create(conn, checkfirst=True)


def _m009_agents(conn: Connection) -> None:
    for table in (agent_runs, agent_actions):
        table.create(conn, checkfirst=True)
    _add_column(conn, "api_keys", "permissions", "JSON")


def _m010_scale(conn: Connection) -> None:
    for table in (quota_holds, rate_hits, replicas):
        table.create(conn, checkfirst=True)
    _add_column(conn, "tune_jobs", "worker_host", "VARCHAR(200)")


# Append only: a migration, once released, is never edited or reordered.
MIGRATIONS: list[tuple[str, Callable[[Connection], None]]] = [
    ("m001_initial", _m001_initial),
    ("m002_knowledge", _m002_knowledge),
    ("m003_audit_log", _m003_audit_log),
    ("m004_guard", _m004_guard),
    ("m005_observe", _m005_observe),
    ("m006_call_collections", _m006_call_collections),
    ("m007_data", _m007_data),
    ("m008_tune", _m008_tune),
    ("m009_agents", _m009_agents),
    ("m010_scale", _m010_scale),
]

_migration_log = sa.Table(
    "_migrations", sa.MetaData(),
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("applied_at", sa.DateTime, nullable=False),
)


class Store:
    """A SQL database with genfoundry's schema, migrated on open."""

    tables = Tables()

    def __init__(self, engine: Engine):
        self.engine = engine
        self.audit_lock = threading.Lock()  # this process's audit writers take turns (see core.audit)

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> "Store":
        kwargs: dict = {"future": True}
        if url.startswith("sqlite"):
            # Several threads (gateway workers, the call recorder) share the file.
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            # Enough pooled connections for the threads that write at once (requests, the call recorder,
            # spans, audit entries): past the pool, each connection is opened, set up and closed per use.
            if sa.engine.make_url(url).database not in (None, "", ":memory:"):
                kwargs.update(pool_size=20, max_overflow=20)
        else:
            kwargs["pool_pre_ping"] = True
        try:
            engine = sa.create_engine(url, **kwargs)
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
            raise ConfigError(f"database_url {_safe_url(url)!r} is not a database URL SQLAlchemy can use "
                              f"({exc}); see docs/store.md") from None
        if url.startswith("sqlite"):
            sa.event.listen(engine, "connect", _sqlite_pragmas)
        store = cls(engine)
        if migrate:
            try:
                engine.connect().close()  # a database that cannot be reached is the user's to fix: say so
            except sa.exc.OperationalError as exc:
                engine.dispose()
                reason = (str(exc.orig or exc).strip().splitlines() or [type(exc).__name__])[0]
                raise ConfigError(f"cannot reach the database at {_safe_url(url)}: {reason}; check database_url "
                                  "(GENFOUNDRY_DATABASE_URL) and that the server is up") from None
            store.migrate()
        if url.startswith("sqlite") and engine.url.database not in (None, "", ":memory:"):
            _owner_only(engine.url.database)
        return store

    def migrate(self) -> list[str]:
        """Apply pending migrations; return the names applied."""
        applied: list[str] = []
        with self.engine.begin() as conn:
            # Replicas starting at once: one migrates, the others wait here and then find nothing to do.
            self.lock(conn, "migrations")
            _migration_log.create(conn, checkfirst=True)
            done = {row[0] for row in conn.execute(sa.select(_migration_log.c.name))}
            for name, migration in MIGRATIONS:
                if name in done:
                    continue
                migration(conn)
                conn.execute(_migration_log.insert().values(name=name, applied_at=utcnow()))
                applied.append(name)
        return applied

    def applied_migrations(self) -> list[str]:
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(
                sa.select(_migration_log.c.name).order_by(_migration_log.c.name))]

    @staticmethod
    def lock(conn: Connection, name: str) -> None:
        """Hold the lock ``name`` until ``conn``'s transaction ends, across every process using the database.

        PostgreSQL takes a transaction-level advisory lock; SQLite has one writer at a time, so the
        transaction becomes a write transaction now (``BEGIN IMMEDIATE``) instead of at its first write.
        Call it first in a transaction whose reads decide what it writes (the audit chain's head, a budget).
        """
        dialect = conn.dialect.name
        if dialect == "postgresql":
            number = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:n)"), {"n": number})
        elif dialect == "sqlite":
            if not conn.connection.dbapi_connection.in_transaction:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    def close(self) -> None:
        self.engine.dispose()


def _safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable URL>"


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cursor = dbapi_conn.cursor()
    # WAL lets the CLI read logs while the gateway writes them.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    # Deleted rows are overwritten with zeros, so forgotten content leaves the file.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
