"""Datasets: named tables of records, kept as immutable, content-hashed versions with lineage.

A version's rows live in one Parquet file under ``home/datasets/NAME/``; the store records what each
version is (its hash, columns, split counts) and where its rows came from (a file, the call log, feedback,
a labeling run, a generation run) and which version it derives from. Every row carries ``_id`` (a hash of
its content, so the same row has the same id in every version) and ``split`` (train, dev or test: given
in the data, or drawn from a hash of the row's id and the seed, so adding rows never moves the others).

Example::

    ds = Datasets(settings, store)
    v = ds.import_file("tickets", Path("tickets.jsonl"), required=["text"])
    ds.rows("tickets", split="dev")[:3]
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from genfoundry.core.audit import keyed_fingerprint, record
from genfoundry.core.errors import InvalidRequest, NotFound
from genfoundry.core.settings import Settings
from genfoundry.core.store import Store
from genfoundry.models.spec import CLEARANCES

__all__ = ["DEFAULT_SPLITS", "DatasetInfo", "Datasets", "DiffReport", "SPLITS", "SplitSpec", "VersionInfo",
           "check_rows", "read_records", "row_id"]

SPLITS = ("train", "dev", "test")
DEFAULT_SPLITS = {"train": 0.8, "dev": 0.1, "test": 0.1}
RESERVED = ("_id", "split")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
MAX_REPORTED_ERRORS = 20


@dataclass
class SplitSpec:
    """How rows get their split: the seed and the fractions (a ``split`` column in the data wins)."""

    seed: int = 0
    fractions: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_SPLITS))

    def __post_init__(self):
        if set(self.fractions) - set(SPLITS) or any(v < 0 for v in self.fractions.values()):
            raise InvalidRequest(f"split fractions name {', '.join(SPLITS)} with values >= 0", param="splits")
        total = sum(self.fractions.values())
        if not 0.999 <= total <= 1.001:
            raise InvalidRequest(f"split fractions add up to {total:g}, not 1", param="splits")

    def assign(self, rid: str) -> str:
        # A row's place in [0, 1) comes from its id and the seed: stable when other rows come and go.
        x = int(hashlib.sha256(f"{self.seed}:{rid}".encode()).hexdigest()[:12], 16) / float(16 ** 12)
        edge = 0.0
        for name in SPLITS:
            edge += self.fractions.get(name, 0.0)
            if x < edge:
                return name
        return SPLITS[-1]


@dataclass
class VersionInfo:
    dataset: str
    number: int
    content_hash: str
    rows: int
    columns: dict[str, str]
    lineage: dict
    parent: int | None
    splits: dict | None
    forgotten_rows: int
    created_at: dt.datetime
    created_by: str

    @property
    def ref(self) -> str:
        return f"{self.dataset}@{self.number}"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat() + "Z"
        data["ref"] = self.ref
        return data


@dataclass
class DatasetInfo:
    name: str
    description: str
    sensitivity: str
    created_at: dt.datetime
    created_by: str
    versions: list[VersionInfo]

    @property
    def latest(self) -> VersionInfo | None:
        return self.versions[-1] if self.versions else None

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "sensitivity": self.sensitivity,
                "created_at": self.created_at.isoformat() + "Z", "created_by": self.created_by,
                "latest": self.latest.to_dict() if self.latest else None,
                "versions": [v.number for v in self.versions]}


@dataclass
class DiffReport:
    dataset: str
    a: int
    b: int
    added: int
    removed: int
    unchanged: int
    added_rows: list[dict]
    removed_rows: list[dict]

    def to_dict(self) -> dict:
        return asdict(self)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def row_id(row: dict) -> str:
    """The id of a row: a hash of its content (the reserved columns left out)."""
    return hashlib.sha256(_canonical({k: v for k, v in row.items() if k not in RESERVED}).encode()).hexdigest()[:16]


def _kind(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _check_rows(records: Iterable[tuple[int, Any]], required: Sequence[str], where: str,
                param: str = "file") -> list[dict]:
    """Rows as dicts, each checked: an object, the required columns present and not empty, a type per
    column. Every bad row is reported by its line; none is dropped quietly."""
    rows: list[dict] = []
    kinds: dict[str, tuple[str, int]] = {}
    errors: list[str] = []
    for line, value in records:
        if isinstance(value, Exception):
            errors.append(f"{where} line {line}: {value}")
            continue
        if not isinstance(value, dict):
            errors.append(f"{where} line {line}: a record must be an object, got {_kind(value)}")
            continue
        missing = [c for c in required if value.get(c) in (None, "")]
        if missing:
            errors.append(f"{where} line {line}: missing {', '.join(map(repr, missing))}")
            continue
        bad = False
        for column, item in value.items():
            kind = _kind(item)
            if kind is None:
                continue
            if kind not in ("bool", "number", "string", "list", "object"):
                errors.append(f"{where} line {line}: column {column!r} holds a {kind}")
                bad = True
                continue
            seen = kinds.setdefault(column, (kind, line))
            if seen[0] != kind:
                errors.append(f"{where} line {line}: column {column!r} is a {kind} here but a {seen[0]} "
                              f"on line {seen[1]}")
                bad = True
        if "split" in value and value["split"] not in (None, *SPLITS):
            errors.append(f"{where} line {line}: split {value['split']!r} is not one of {', '.join(SPLITS)}")
            bad = True
        if not bad:
            rows.append(value)
    if errors:
        more = f" (and {len(errors) - MAX_REPORTED_ERRORS} more)" if len(errors) > MAX_REPORTED_ERRORS else ""
        raise InvalidRequest(f"{len(errors)} bad rows, nothing imported: " + "; ".join(errors[:MAX_REPORTED_ERRORS])
                             + more, param=param)
    if not rows:
        raise InvalidRequest(f"{where} holds no records", param=param)
    return rows


def check_rows(rows: Sequence[Any], *, required: Sequence[str] = (), where: str = "rows") -> list[dict]:
    """Rows given as values (an API body) checked as a file's are; the first row is line 1."""
    return _check_rows(enumerate(rows, 1), required, where, param="rows")


def read_records(path: Path, fmt: str | None = None, *, required: Sequence[str] = ()) -> list[dict]:
    """Read JSONL, CSV or Parquet records from ``path`` and check them (see :func:`_check_rows`)."""
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt in ("jsonl", "ndjson", "json"):
        def records():
            with path.open(encoding="utf-8", errors="strict") as fh:
                try:
                    for line, text in enumerate(fh, 1):
                        if not text.strip():
                            continue
                        try:
                            yield line, json.loads(text)
                        except json.JSONDecodeError as exc:
                            yield line, ValueError(f"not valid JSON ({exc.msg})")
                except UnicodeDecodeError:
                    yield line + 1, ValueError("not UTF-8 text")
        return _check_rows(records(), required, path.name)
    if fmt == "csv":
        def records():
            with path.open(encoding="utf-8", newline="") as fh:
                reader = csv.DictReader(fh)
                try:
                    for row in reader:
                        if None in row:
                            yield reader.line_num, ValueError("more fields than the header names")
                            continue
                        yield reader.line_num, {k: (v if v != "" else None) for k, v in row.items()}
                except (csv.Error, UnicodeDecodeError) as exc:
                    yield reader.line_num, ValueError(str(exc))
        return _check_rows(records(), required, path.name)
    if fmt == "parquet":
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError) as exc:
            raise InvalidRequest(f"{path.name} is not a readable Parquet file: {exc}", param="file") from exc
        return _check_rows(enumerate(table.to_pylist(), 1), required, path.name)
    raise InvalidRequest(f"unknown format {fmt!r}: use jsonl, csv or parquet", param="format")


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


class Datasets:
    """The datasets of one genfoundry home."""

    def __init__(self, settings: Settings, store: Store):
        self.settings = settings
        self.store = store
        self.root = settings.home / "datasets"

    # -- reading --------------------------------------------------------------------------------------
    def list(self) -> list[DatasetInfo]:
        t = self.store.tables
        with self.store.begin() as conn:
            sets = conn.execute(sa.select(t.datasets).order_by(t.datasets.c.name)).mappings().all()
            versions = conn.execute(sa.select(t.dataset_versions).order_by(
                t.dataset_versions.c.dataset, t.dataset_versions.c.number)).mappings().all()
        by_name: dict[str, list[VersionInfo]] = {}
        for v in versions:
            by_name.setdefault(v["dataset"], []).append(self._version(v))
        return [self._info(s, by_name.get(s["name"], [])) for s in sets]

    def get(self, name: str) -> DatasetInfo:
        t = self.store.tables
        with self.store.begin() as conn:
            found = conn.execute(sa.select(t.datasets).where(t.datasets.c.name == name)).mappings().first()
            if found is None:
                raise NotFound(f"no dataset named {name!r}; `genfoundry data list` shows them", param="dataset")
            versions = conn.execute(sa.select(t.dataset_versions).where(t.dataset_versions.c.dataset == name)
                                    .order_by(t.dataset_versions.c.number)).mappings().all()
        return self._info(found, [self._version(v) for v in versions])

    def version(self, name: str, number: int | None = None) -> VersionInfo:
        info = self.get(name)
        if not info.versions:
            raise NotFound(f"dataset {name!r} has no versions", param="version")
        if number is None:
            return info.versions[-1]
        for v in info.versions:
            if v.number == number:
                return v
        raise NotFound(f"dataset {name!r} has no version {number} (it has {', '.join(str(v.number) for v in info.versions)})",
                       param="version")

    def table(self, name: str, number: int | None = None, *, columns: Sequence[str] | None = None) -> pa.Table:
        """A version's rows as an Arrow table (``columns``: only these are read from the file)."""
        v = self.version(name, number)
        path = self._path(name, v.number)
        try:
            return pq.read_table(path, columns=list(columns) if columns is not None else None)
        except (OSError, pa.ArrowException) as exc:
            raise InvalidRequest(f"the rows of {v.ref} cannot be read ({type(exc).__name__}: {exc}); "
                                 f"`genfoundry data show {name}` checks its hash", param="dataset") from exc

    def rows(self, name: str, number: int | None = None, *, split: str | None = None, offset: int = 0,
             limit: int | None = None) -> list[dict]:
        if split is not None and split not in SPLITS:
            raise InvalidRequest(f"split must be one of {', '.join(SPLITS)}", param="split")
        table = self.table(name, number)
        if split is not None:
            import pyarrow.compute as pc

            table = table.filter(pc.equal(table["split"], split))
        end = None if limit is None else offset + limit
        return table.slice(offset, None if end is None else max(0, end - offset)).to_pylist()

    def verify(self, name: str, number: int | None = None) -> bool:
        """Whether the stored rows still have the hash recorded for their version."""
        v = self.version(name, number)
        return _content_hash(self.table(name, v.number).to_pylist()) == v.content_hash

    def diff(self, name: str, a: int, b: int, *, sample: int = 5) -> DiffReport:
        left = {r["_id"]: r for r in self.rows(name, a)}
        right = {r["_id"]: r for r in self.rows(name, b)}
        added = [right[k] for k in right if k not in left]
        removed = [left[k] for k in left if k not in right]
        return DiffReport(dataset=name, a=a, b=b, added=len(added), removed=len(removed),
                          unchanged=len(set(left) & set(right)), added_rows=added[:sample], removed_rows=removed[:sample])

    def export(self, name: str, path: Path, *, number: int | None = None, fmt: str | None = None,
               split: str | None = None) -> int:
        rows = self.rows(name, number, split=split)
        fmt = (fmt or path.suffix.lstrip(".") or "jsonl").lower()
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "jsonl":
            with path.open("w", encoding="utf-8") as fh:
                for r in rows:
                    fh.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
        elif fmt == "csv":
            columns = list(dict.fromkeys(c for r in rows for c in r))
            with path.open("w", encoding="utf-8", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=columns)
                writer.writeheader()
                for r in rows:
                    writer.writerow({k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in r.items()})
        elif fmt == "parquet":
            pq.write_table(pa.Table.from_pylist(rows), path)
        else:
            raise InvalidRequest(f"unknown format {fmt!r}: use jsonl, csv or parquet", param="format")
        return len(rows)

    # -- writing --------------------------------------------------------------------------------------
    def add_version(self, name: str, rows: Sequence[dict], *, lineage: dict, parent: int | None = None,
                    splits: SplitSpec | None = None, sensitivity: str | None = None, description: str | None = None,
                    actor: str = "local") -> VersionInfo:
        """Store ``rows`` as the next version of ``name`` (made if new). Rows get ``_id`` and ``split``."""
        if not _NAME.match(name or ""):
            raise InvalidRequest("a dataset name is 1-100 letters, digits, '_', '.' or '-'", param="name")
        if sensitivity is not None and sensitivity not in CLEARANCES:
            raise InvalidRequest(f"sensitivity must be one of {', '.join(CLEARANCES)}", param="sensitivity")
        if not rows:
            raise InvalidRequest("a dataset version needs at least one row", param="rows")
        splits = splits or SplitSpec()
        prepared = _prepare(rows, splits)
        table = _arrow(prepared)
        content_hash = _content_hash(table.to_pylist())
        counts = {s: 0 for s in SPLITS}
        for r in prepared:
            counts[r["split"]] += 1
        given = any(r.get("split") for r in rows)
        t = self.store.tables
        with self.store.begin() as conn:
            found = conn.execute(sa.select(t.datasets).where(t.datasets.c.name == name)).mappings().first()
            if found is None:
                conn.execute(t.datasets.insert().values(name=name, description=description or "",
                                                        sensitivity=sensitivity or "internal", created_by=actor))
            elif sensitivity is not None and sensitivity != found["sensitivity"]:
                conn.execute(t.datasets.update().where(t.datasets.c.name == name).values(sensitivity=sensitivity))
            number = (conn.execute(sa.select(sa.func.max(t.dataset_versions.c.number))
                                   .where(t.dataset_versions.c.dataset == name)).scalar() or 0) + 1
            if parent is not None and parent >= number:
                raise InvalidRequest(f"parent version {parent} of {name!r} does not exist", param="parent")
            path = self._path(name, number)
            _write_parquet(table, path)  # before the row that names it: a crash leaves an orphan file, not a gap
            conn.execute(t.dataset_versions.insert().values(
                dataset=name, number=number, content_hash=content_hash, path=str(path.relative_to(self.root)),
                rows=len(prepared), columns=_columns(table), lineage=lineage, parent=parent,
                splits={"seed": splits.seed, "fractions": splits.fractions, "counts": counts, "given": given},
                created_by=actor))
        record(self.store, action="data.version", actor=actor, target=f"{name}@{number}",
               details={"rows": len(prepared), "content_hash": content_hash, "source": lineage.get("source")})
        return self.version(name, number)

    def import_file(self, name: str, path: Path, *, fmt: str | None = None, required: Sequence[str] = (),
                    splits: SplitSpec | None = None, sensitivity: str | None = None, description: str | None = None,
                    actor: str = "local") -> VersionInfo:
        rows = read_records(path, fmt, required=required)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        lineage = {"source": "file", "file": path.name, "sha256": digest, "format": (fmt or path.suffix.lstrip("."))}
        parent = self._latest_number(name)
        return self.add_version(name, rows, lineage=lineage, parent=parent, splits=splits, sensitivity=sensitivity,
                                description=description, actor=actor)

    def from_calls(self, name: str, *, model: str | None = None, endpoint: str | None = None,
                   since: dt.datetime | None = None, until: dt.datetime | None = None, limit: int = 10_000,
                   splits: SplitSpec | None = None, sensitivity: str | None = None, actor: str = "local") -> VersionInfo:
        """Rows from the call log: the prompt (chat messages or text) and the answer of each successful call
        whose content was logged (``log_content``)."""
        from genfoundry.observe.calls import list_calls

        calls = list_calls(self.store, model=model, endpoint=endpoint, status="ok", since=since, until=until,
                           limit=limit, with_content=True, oldest_first=True)
        rows = [r for r in (_call_row(call) for call in calls) if r is not None]
        if not rows:
            raise InvalidRequest("no logged call matches (calls keep their content only with log_content on)",
                                 param="filter")
        lineage = {"source": "calls", "filter": {"model": model, "endpoint": endpoint,
                                                 "since": since.isoformat() if since else None,
                                                 "until": until.isoformat() if until else None, "limit": limit},
                   "calls": len(rows)}
        return self.add_version(name, rows, lineage=lineage, parent=self._latest_number(name), splits=splits,
                                sensitivity=sensitivity or "confidential", actor=actor)

    def from_feedback(self, name: str, *, since: dt.datetime | None = None, min_rating: int = 4,
                      splits: SplitSpec | None = None, sensitivity: str | None = None, actor: str = "local") -> VersionInfo:
        """Labeled rows from feedback (the latest on each response): the conversation and the answer, ``label``
        good (rating >= ``min_rating``) or bad, and, where the user wrote one, ``correction`` (the answer they
        wanted: a fine-tuning target)."""
        from genfoundry.observe.feedback import export_feedback

        rows = []
        for fb in export_feedback(self.store, fmt="records", since=since, min_rating=min_rating):
            if not fb["messages"] or fb["response"] is None:
                continue  # the call's content was not logged
            row = {"response_id": fb["response_id"], "model": fb["model"], "messages": fb["messages"],
                   "prompt": next((m["content"] for m in reversed(fb["messages"]) if m.get("role") == "user"), ""),
                   "completion": fb["response"], "rating": fb["rating"],
                   "label": "good" if fb["rating"] >= min_rating else "bad"}
            if fb["correction"]:
                row["correction"] = fb["correction"]
            rows.append(row)
        if not rows:
            raise InvalidRequest("no feedback on a call whose content was logged", param="filter")
        lineage = {"source": "feedback", "since": since.isoformat() if since else None, "min_rating": min_rating,
                   "feedback": len(rows)}
        return self.add_version(name, rows, lineage=lineage, parent=self._latest_number(name), splits=splits,
                                sensitivity=sensitivity or "confidential", actor=actor)

    def from_chunks(self, name: str, collection: str, chunks: Sequence[Any], *, clearance: str,
                    splits: SplitSpec | None = None, actor: str = "local") -> VersionInfo:
        """Rows from a collection's chunks (``KnowledgeBase.chunks``): text, chunk and document ids, source and
        position; the dataset takes the collection's clearance as its sensitivity."""
        rows = [{"text": c.text, "chunk_id": c.id, "document_id": c.document_id, "collection": collection,
                 "source": c.source, "title": c.title, "heading": c.heading, "page": c.page, "position": c.position}
                for c in sorted(chunks, key=lambda c: (c.source, c.document_id, c.position))]
        if not rows:
            raise InvalidRequest(f"collection {collection!r} holds no chunks", param="collection")
        lineage = {"source": "collection", "collection": collection, "chunks": len(rows)}
        return self.add_version(name, rows, lineage=lineage, parent=self._latest_number(name), splits=splits,
                                sensitivity=clearance, actor=actor)

    def delete(self, name: str, *, actor: str = "local") -> int:
        """Delete a dataset, every version and its files. Returns how many versions went."""
        info = self.get(name)
        t = self.store.tables
        with self.store.begin() as conn:
            conn.execute(t.dataset_versions.delete().where(t.dataset_versions.c.dataset == name))
            conn.execute(t.datasets.delete().where(t.datasets.c.name == name))
        for v in info.versions:
            self._path(name, v.number).unlink(missing_ok=True)
        folder = self.root / name
        if folder.exists() and not any(folder.iterdir()):
            folder.rmdir()
        record(self.store, action="data.delete", actor=actor, target=name, details={"versions": len(info.versions)})
        return len(info.versions)

    def forget_match(self, needle: str, *, actor: str = "local") -> dict[str, int]:
        """Remove every row holding ``needle`` (any case, in any text value) from every version of every
        dataset; the version keeps its number, its hash is recomputed and ``forgotten_rows`` counts the
        removals. Returns rows removed per ``dataset@version``."""
        needle = needle.strip()
        if len(needle) < 3:
            raise InvalidRequest("give at least 3 characters to forget; shorter text matches too much", param="match")
        lowered = needle.casefold()
        removed: dict[str, int] = {}
        t = self.store.tables
        for info in self.list():
            for v in info.versions:
                rows = self.table(info.name, v.number).to_pylist()
                kept = [r for r in rows if not any(lowered in s.casefold() for s in _strings(r))]
                if len(kept) == len(rows):
                    continue
                path = self._path(info.name, v.number)
                schema = pq.read_schema(path)
                _write_parquet(pa.Table.from_pylist(kept, schema=schema) if kept else schema.empty_table(), path)
                with self.store.begin() as conn:
                    conn.execute(t.dataset_versions.update().where(
                        t.dataset_versions.c.dataset == info.name, t.dataset_versions.c.number == v.number).values(
                        rows=len(kept), content_hash=_content_hash(kept),
                        forgotten_rows=v.forgotten_rows + len(rows) - len(kept)))
                removed[v.ref] = len(rows) - len(kept)
        if removed:
            record(self.store, action="data.forget_match", actor=actor,
                   target=keyed_fingerprint(self.settings.home, lowered), details={"removed": removed})
        return removed

    # -- helpers --------------------------------------------------------------------------------------
    def _latest_number(self, name: str) -> int | None:
        t = self.store.tables
        with self.store.begin() as conn:
            return conn.execute(sa.select(sa.func.max(t.dataset_versions.c.number))
                                .where(t.dataset_versions.c.dataset == name)).scalar()

    def _path(self, name: str, number: int) -> Path:
        return self.root / name / f"v{number:05d}.parquet"

    @staticmethod
    def _version(row) -> VersionInfo:
        return VersionInfo(dataset=row["dataset"], number=row["number"], content_hash=row["content_hash"],
                           rows=row["rows"], columns=row["columns"], lineage=row["lineage"], parent=row["parent"],
                           splits=row["splits"], forgotten_rows=row["forgotten_rows"], created_at=row["created_at"],
                           created_by=row["created_by"])

    @staticmethod
    def _info(row, versions: list[VersionInfo]) -> DatasetInfo:
        return DatasetInfo(name=row["name"], description=row["description"], sensitivity=row["sensitivity"],
                           created_at=row["created_at"], created_by=row["created_by"], versions=versions)


def _prepare(rows: Sequence[dict], splits: SplitSpec) -> list[dict]:
    seen: dict[str, int] = {}
    out = []
    for row in rows:
        rid = row_id(row)
        n = seen.get(rid, 0)
        seen[rid] = n + 1
        if n:  # the same content again: a distinct, stable id for each copy
            rid = hashlib.sha256(f"{rid}#{n}".encode()).hexdigest()[:16]
        body = {k: v for k, v in row.items() if k not in RESERVED}
        out.append({"_id": rid, "split": row.get("split") or splits.assign(rid), **body})
    return out


def _arrow(rows: list[dict]) -> pa.Table:
    try:
        return pa.Table.from_pylist(rows)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise InvalidRequest(f"the rows do not make one table: {exc}", param="rows") from exc


def _columns(table: pa.Table) -> dict[str, str]:
    return {f.name: str(f.type) for f in table.schema}


def _content_hash(rows: list[dict]) -> str:
    digest = hashlib.sha256()
    for r in rows:
        digest.update(_canonical(r).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _write_parquet(table: pa.Table, path: Path) -> None:
    """Write atomically (a temporary file renamed over the target), readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".parquet")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _call_row(call) -> dict | None:
    request, response = call["request"] or {}, call["response"] or {}
    answer = response.get("text") if isinstance(response, dict) else None
    if answer is None and isinstance(response, dict):
        choices = response.get("choices") or []
        if choices and isinstance(choices[0], dict):
            message = choices[0].get("message") or {}
            answer = message.get("content") if isinstance(message, dict) else None
            answer = answer if answer is not None else choices[0].get("text")
    if not isinstance(answer, str):
        return None
    row: dict[str, Any] = {"call_id": call.get("call_id") or call.get("id"), "model": call.get("model")}
    if isinstance(request.get("messages"), list):
        messages = [{"role": m.get("role"), "content": m.get("content")} for m in request["messages"]
                    if isinstance(m, dict) and isinstance(m.get("content"), str)]
        row["messages"] = messages + [{"role": "assistant", "content": answer}]
        row["prompt"] = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    elif isinstance(request.get("prompt"), str):
        row["prompt"] = request["prompt"]
    else:
        return None
    row["completion"] = answer
    return row
