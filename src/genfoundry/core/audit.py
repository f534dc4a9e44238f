"""The audit log: append-only, each entry holding the hash of the one before.

Key changes, access changes, deletions and forget requests are written here.
Every entry's hash covers its own fields and the previous entry's hash, and
entries are numbered without gaps, so `genfoundry audit verify` finds an entry
that was edited (its hash no longer matches), deleted (a gap, or a broken link)
or inserted. Writers take turns at the head (a database lock held while the
head is read and the next entry written, across every gateway replica sharing
the database), and the number is the primary key, so the chain cannot fork.

Example::

    record(store, action="key.create", actor="cli", target="k1", details={"role": "app"})
    report = verify(store)
    assert report.ok, report.problems
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field

import sqlalchemy as sa

from genfoundry.core.store import Store, utcnow

__all__ = ["AuditEntry", "AuditReport", "GENESIS", "entries", "keyed_fingerprint", "record", "verify"]

GENESIS = "0" * 64  # the "previous hash" of the first entry
_RETRIES = 20


@dataclass
class AuditEntry:
    seq: int
    at: dt.datetime
    actor: str
    action: str
    target: str
    details: dict
    prev_hash: str
    hash: str


@dataclass
class AuditReport:
    entries: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _digest(seq: int, at: dt.datetime, actor: str, action: str, target: str, details: dict, prev: str) -> str:
    body = json.dumps([seq, at.isoformat(timespec="microseconds"), actor, action, target, details, prev],
                      sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def record(store: Store, *, action: str, actor: str = "local", target: str = "",
           details: dict | None = None) -> AuditEntry:
    """Append one entry after the current head (retrying if another writer got there first)."""
    table = store.tables.audit_log
    details = json.loads(json.dumps(details or {}, default=str))  # what the database will give back
    for _ in range(_RETRIES):
        try:
            # Writers in this process queue here, not in the database's busy wait (SQLite sleeps between
            # retries, milliseconds at a time); the database lock still orders writers across processes.
            with store.audit_lock, store.begin() as conn:
                store.lock(conn, "audit")  # writers on every replica take their turn at the head
                head = conn.execute(
                    sa.select(table.c.seq, table.c.hash).order_by(table.c.seq.desc()).limit(1)).first()
                seq, prev = (head[0] + 1, head[1]) if head else (1, GENESIS)
                at = utcnow()
                entry = AuditEntry(seq, at, actor, action, target, details, prev,
                                   _digest(seq, at, actor, action, target, details, prev))
                conn.execute(table.insert().values(**vars(entry)))
            return entry
        except sa.exc.IntegrityError:
            continue  # a writer that did not take the lock got there first: chain onto the new head
    raise RuntimeError("could not append to the audit log: too many concurrent writers")


def entries(store: Store, *, action: str | None = None, since: dt.datetime | None = None,
            limit: int | None = 100) -> list[AuditEntry]:
    """Entries newest first, optionally of one action (or a prefix such as 'key.') and since a time."""
    table = store.tables.audit_log
    query = sa.select(table).order_by(table.c.seq.desc())
    if action:
        query = query.where(table.c.action.startswith(action, autoescape=True))
    if since:
        query = query.where(table.c.at >= since)
    if limit:
        query = query.limit(limit)
    with store.begin() as conn:
        return [AuditEntry(**row) for row in conn.execute(query).mappings()]


def verify(store: Store) -> AuditReport:
    """Walk the whole chain; list every entry that was edited, removed or inserted."""
    report = AuditReport()
    expected_seq, prev = 1, GENESIS
    for entry in reversed(entries(store, limit=None)):
        report.entries += 1
        if entry.seq != expected_seq:
            report.problems.append(f"entries {expected_seq} to {entry.seq - 1} are missing (deleted)")
        if entry.prev_hash != prev:
            report.problems.append(f"entry {entry.seq} does not follow the entry before it (an entry before it "
                                   "was removed or changed)")
        if _digest(entry.seq, entry.at, entry.actor, entry.action, entry.target, entry.details,
                   entry.prev_hash) != entry.hash:
            report.problems.append(f"entry {entry.seq} ({entry.action}) was changed after it was written")
        expected_seq, prev = entry.seq + 1, entry.hash
    return report


def keyed_fingerprint(home, text: str) -> str:
    """A fingerprint of ``text`` for the audit log that cannot be checked against guesses without the
    installation's secret (``home/audit.key``, 32 random bytes, mode 600, made on first use): a plain hash
    of an e-mail address that was forgotten could be confirmed by hashing candidate addresses."""
    import hmac
    import os
    import secrets
    from pathlib import Path

    path = Path(home) / "audit.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it meanwhile
        else:
            with os.fdopen(fd, "wb") as out:
                out.write(secrets.token_bytes(32))
    key = path.read_bytes()
    return "hmac:" + hmac.new(key, text.encode(), "sha256").hexdigest()[:32]
