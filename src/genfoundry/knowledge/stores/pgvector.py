"""The VectorStore on PostgreSQL with the pgvector extension.

Layout, in the database the URL names (its current schema):

* ``gf_collections``: the catalog, one row per collection (name, dimensions and a
  numeric id). It is created, with ``CREATE EXTENSION IF NOT EXISTS vector``, on
  the store's first use.
* ``gf_chunks_<id>``: one table per collection, a column for every ``Chunk`` field
  (``tags`` and ``terms`` as ``text[]``), ``n_terms`` (the chunk's length for BM25)
  and ``vector vector(N)`` under an HNSW index (``vector_cosine_ops``).
* ``gf_postings_<id>``: the inverted index for full-text search, one row per
  (term, chunk) with the term's frequency in the chunk, deleted with its chunk
  (``ON DELETE CASCADE``).
* ``gf_stats_<id>``: what BM25 needs of the whole collection (chunks, terms), as
  rows of changes: each add and delete inserts its own row in its transaction, so
  writers never wait on one counter row and a search sums a few rows instead of
  counting the collection; ``optimize`` folds them into one.

A table per collection rather than one shared table, because an HNSW index needs
a column of one fixed dimension (collections differ: 384, 768, 1536, ...), and
because dropping a collection is then ``DROP TABLE``: its data is gone from disk
at once, without a vacuum. The tables are named by the catalog id, not by the
collection name, because a name may be 64 characters (PostgreSQL truncates
identifiers at 63) and may hold '-' (which would need quoting everywhere).

Dense search is ``ORDER BY vector <=> query`` (cosine distance), score
``1 - distance``; with a filter, pgvector's iterative index scan (0.8+) keeps
looking until ``limit`` matches are found. Full-text search is Lucene's BM25
(k1=1.2, b=0.75, idf = ln(1 + (N - n + 0.5) / (n + 0.5))), computed in one query
over the postings with N and the average length of the whole collection (a filter
only picks which chunks come back, as in Lucene); PostgreSQL's own ``ts_rank`` is
not BM25, so it is not used. Every value reaches SQL as a parameter; identifiers
are composed with ``psycopg.sql``. PostgreSQL text cannot hold NUL, so a NUL
becomes U+FFFD in stored values and lookups alike (as in the gateway's store).

Example::

    store = PgVectorStore("postgresql+psycopg://genfoundry@/genfoundry?host=/var/run/postgresql")
    store.create_collection("handbook", dimensions=768)
    store.add("handbook", chunks)
    hits = store.search_text("handbook", analyze("refund policy"), limit=5)
"""

from __future__ import annotations

import math
import re
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

try:
    import psycopg
    from psycopg import sql
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("the PostgreSQL vector store needs psycopg 3: "
                      "pip install 'genfoundry[postgres]'") from exc

from genfoundry.core.errors import CollectionNotFound, ConfigError, InvalidRequest
from genfoundry.core.types import Chunk, Hit
from genfoundry.knowledge.stores.base import FILTER_FIELDS, Filter, check_filter, check_name

__all__ = ["PgVectorStore", "libpq_url"]

BM25_K1 = 1.2
BM25_B = 0.75
MAX_DIMENSIONS = 16_000  # pgvector's limit for the vector type
HNSW_MAX_DIMENSIONS = 2_000  # pgvector's limit for an HNSW index on vector; above it, exact search
DEFAULT_EF_SEARCH = 40  # pgvector's default candidate list for HNSW searches
MAX_EF_SEARCH = 1_000
MAX_IDLE_CONNECTIONS = 4
# Serialises schema changes (extension, catalog, collection tables) between processes.
_DDL_LOCK = 0x67665F7067766563  # "gf_pgvec"

_FIELDS = ("id", "document_id", "version", "text", "position", "source", "title", "heading", "page",
           "tags", "modified", "terms")
_COLUMNS = sql.SQL(", ").join(sql.Identifier("c", f) for f in _FIELDS)
_TERMS = _FIELDS.index("terms")
_SELECT = sql.SQL("{}, c.vector::real[]").format(_COLUMNS)  # the order Chunk's fields have

_CATALOG = """
CREATE TABLE IF NOT EXISTS gf_collections (
    name text PRIMARY KEY,
    id integer GENERATED ALWAYS AS IDENTITY UNIQUE,
    dimensions integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)"""


@dataclass(frozen=True)
class _Collection:
    name: str
    id: int
    dimensions: int

    @property
    def chunks(self) -> sql.Identifier:
        return sql.Identifier(f"gf_chunks_{self.id}")

    @property
    def postings(self) -> sql.Identifier:
        return sql.Identifier(f"gf_postings_{self.id}")

    @property
    def stats(self) -> sql.Identifier:
        return sql.Identifier(f"gf_stats_{self.id}")


class _Connections:
    """A few idle connections, taken and given back under a lock (psycopg_pool is
    not a dependency). Connections are in autocommit; work that needs a transaction
    opens one explicitly, and VACUUM can run outside one."""

    def __init__(self, conninfo: str):
        self._conninfo = conninfo
        self._idle: list[psycopg.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            try:
                conn = psycopg.connect(self._conninfo, autocommit=True)
            except psycopg.OperationalError as exc:
                raise ConfigError(f"cannot connect to the PostgreSQL vector store: {exc}; check the server "
                                  "and the URL in the vector_store setting") from exc
        try:
            yield conn
        finally:
            self._give_back(conn)

    def _give_back(self, conn: psycopg.Connection) -> None:
        reusable = not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with self._lock:
            if reusable and not self._closed and len(self._idle) < MAX_IDLE_CONNECTIONS:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def libpq_url(url: str) -> str:
    """``postgresql+psycopg://...`` (SQLAlchemy's form) as libpq reads it: ``postgresql://...``."""
    return re.sub(r"^postgres(?:ql)?\+\w+://", "postgresql://", url)


class PgVectorStore:
    """Collections of chunks in PostgreSQL tables, searched with pgvector and BM25.

    Cheap to construct: it connects on first use, and keeps a few connections for
    the worker threads that call it. ``url`` is a SQLAlchemy or libpq URL.

    Example::

        store = PgVectorStore("postgresql+psycopg://me@/knowledge?host=/run/postgresql")
        store.create_collection("handbook", dimensions=8)
        store.add("handbook", [chunk])  # chunk.vector and chunk.terms set
        store.search_dense("handbook", query_vector, limit=5, where={"tags": ["policy"]})
        store.close()
    """

    def __init__(self, url: str):
        self._connections = _Connections(libpq_url(url))
        self._ready = False
        self._ready_lock = threading.Lock()
        self._iterative_scan = False

    # -- collections ----------------------------------------------------------------

    def create_collection(self, name: str, *, dimensions: int) -> None:
        """Create the collection if it does not exist (same dimensions: no-op)."""
        check_name(name)
        if isinstance(dimensions, bool) or not isinstance(dimensions, int) \
                or not 1 <= dimensions <= MAX_DIMENSIONS:
            raise InvalidRequest(f"dimensions must be a whole number from 1 to {MAX_DIMENSIONS}, "
                                 f"not {dimensions!r}", param="dimensions")
        with self._transaction(ddl=True) as conn:
            row = conn.execute("SELECT dimensions FROM gf_collections WHERE name = %s", (name,)).fetchone()
            if row is not None:
                if row[0] != dimensions:
                    raise InvalidRequest(
                        f"collection {name!r} already exists with {row[0]} dimensions, not {dimensions}; "
                        "drop it first to change its embedding model", param="dimensions")
                return
            (id_,) = conn.execute("INSERT INTO gf_collections (name, dimensions) VALUES (%s, %s) RETURNING id",
                                  (name, dimensions)).fetchone()
            for statement in _create_tables(_Collection(name, id_, dimensions)):
                conn.execute(statement)

    def drop_collection(self, name: str) -> None:
        """Remove the collection and everything in it, on disk too (``DROP TABLE``)."""
        with self._transaction(ddl=True) as conn:
            coll = _lookup(conn, name)
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}, {}, {}").format(coll.stats, coll.postings, coll.chunks))
            conn.execute("DELETE FROM gf_collections WHERE name = %s", (name,))

    def collections(self) -> list[str]:
        """Names of the collections, sorted."""
        with self._transaction() as conn:
            return [r[0] for r in conn.execute("SELECT name FROM gf_collections ORDER BY name")]

    # -- writing --------------------------------------------------------------------

    def add(self, collection: str, chunks: Sequence[Chunk]) -> None:
        """Store chunks (each with ``vector`` and ``terms`` set) in one transaction: all or none."""
        chunks = list(chunks)
        with self._open(collection) as (conn, coll):
            rows = [_chunk_row(chunk, coll) for chunk in chunks]
            ids = Counter(row[0] for row in rows)
            if len(ids) < len(rows):
                twice = next(id_ for id_, n in ids.items() if n > 1)
                raise InvalidRequest(f"chunk id {twice!r} appears more than once in one add", param="chunks")
            if not rows:
                return
            try:
                _copy_chunks(conn, coll, rows)
            except psycopg.errors.UniqueViolation as exc:
                raise InvalidRequest(f"a chunk id is already in collection {coll.name!r} "
                                     f"({exc.diag.message_detail}); delete it first", param="chunks") from exc

    def delete(self, collection: str, *, where: Filter) -> int:
        """Delete the chunks matching ``where`` (must not be empty); return how many."""
        pairs = check_filter(where)
        if not pairs:
            raise InvalidRequest("delete needs a filter; to remove everything, drop the collection",
                                 param="filter")
        clause, params = _where(pairs)
        with self._open(collection) as (conn, coll):
            query = sql.SQL("WITH gone AS (DELETE FROM {} AS c WHERE {} RETURNING c.n_terms) "
                            "INSERT INTO {} (chunks, terms) SELECT -count(*), -sum(n_terms) FROM gone "
                            "HAVING count(*) > 0 RETURNING -chunks").format(coll.chunks, clause, coll.stats)
            row = conn.execute(query, params).fetchone()
        return row[0] if row else 0

    def optimize(self, collection: str) -> None:
        """Fold the statistics rows into one, then VACUUM (ANALYZE) the collection's
        tables: deleted rows leave the tables and the HNSW graph, and the planner
        learns the new sizes. New rows need nothing: the indexes take them as they
        are added. Readers and writers are not blocked."""
        with self._open(collection) as (conn, coll):
            # One statement, one snapshot: exactly the rows summed are the rows deleted.
            conn.execute(sql.SQL("WITH old AS (DELETE FROM {0} RETURNING chunks, terms) INSERT INTO {0} "
                                 "SELECT coalesce(sum(chunks), 0), coalesce(sum(terms), 0) FROM old")
                         .format(coll.stats))
        with self._connections.connection() as conn:  # autocommit: VACUUM cannot run in a transaction
            try:
                conn.execute(sql.SQL("VACUUM (ANALYZE) {}, {}, {}").format(coll.chunks, coll.postings, coll.stats))
            except psycopg.errors.UndefinedTable as exc:  # dropped meanwhile
                raise _not_found(collection) from exc

    # -- reading --------------------------------------------------------------------

    def get(self, collection: str, *, where: Filter | None = None, limit: int | None = None) -> list[Chunk]:
        """Chunks matching ``where``, ordered by document then position; vectors included."""
        clause, params = _where(check_filter(where))
        if limit is not None:
            _check_limit(limit)
        with self._open(collection) as (conn, coll):
            query = sql.SQL("SELECT {} FROM {} AS c WHERE {} ORDER BY c.document_id, c.position, c.id LIMIT %s")
            rows = conn.execute(query.format(_SELECT, coll.chunks, clause), [*params, limit]).fetchall()
        return [_chunk(row) for row in rows]

    def count(self, collection: str, *, where: Filter | None = None) -> int:
        """How many chunks match ``where``."""
        clause, params = _where(check_filter(where))
        with self._open(collection) as (conn, coll):
            query = sql.SQL("SELECT count(*) FROM {} AS c WHERE {}").format(coll.chunks, clause)
            return conn.execute(query, params).fetchone()[0]

    def search_dense(
        self, collection: str, vector: Sequence[float], *, limit: int, where: Filter | None = None
    ) -> list[Hit]:
        """Nearest chunks by cosine similarity (score = 1 - cosine distance), best first."""
        clause, params = _where(check_filter(where))
        _check_limit(limit)
        with self._open(collection) as (conn, coll):
            query_vector = _vector_text(vector, coll, what="the query vector", param="vector")
            if not any(vector):
                raise InvalidRequest("the query vector is all zeros; cosine similarity needs a direction",
                                     param="vector")
            self._tune_hnsw(conn, limit)
            # MATERIALIZED: a relaxed scan's rows come nearly in order; the outer query sorts them.
            # A stored zero vector has no direction (distance NaN): HNSW leaves it out, so do we.
            query = sql.SQL("WITH found AS MATERIALIZED (SELECT {}, c.vector <=> %s::vector AS distance "
                            "FROM {} AS c WHERE {} AND (c.vector <=> %s::vector) <> 'NaN' "
                            "ORDER BY distance LIMIT %s) "
                            "SELECT * FROM found ORDER BY distance, id").format(_SELECT, coll.chunks, clause)
            rows = conn.execute(query, [query_vector, *params, query_vector, limit]).fetchall()
        return [Hit(_chunk(row[:-1]), 1.0 - row[-1]) for row in rows]

    def search_text(
        self, collection: str, terms: Sequence[str], *, limit: int, where: Filter | None = None
    ) -> list[Hit]:
        """Chunks ranked by Lucene's BM25 (k1=1.2, b=0.75) over their ``terms``, best first.

        N and the average length are the whole collection's (the filter only picks
        which chunks come back), as Lucene's are the whole index's."""
        clause, params = _where(check_filter(where))
        _check_limit(limit)
        query_terms = sorted({_clean(t) for t in terms})
        with self._open(collection) as (conn, coll):
            if not query_terms:
                return []
            query = _BM25.format(select=_SELECT, chunks=coll.chunks, postings=coll.postings, stats=coll.stats,
                                 where=clause, k1=_float(BM25_K1), b=_float(BM25_B))
            rows = conn.execute(query, [query_terms, *params, limit]).fetchall()
        return [Hit(_chunk(row[:-1]), row[-1]) for row in rows]

    def find_text(self, collection: str, needle: str) -> list[str]:
        """Ids of chunks whose text contains ``needle``, ignoring case (no wildcards:
        '%' and '_' are themselves), in document order."""
        with self._open(collection) as (conn, coll):
            if not needle:  # strpos would find it in every chunk; like the Lance store, nothing
                return []
            query = sql.SQL("SELECT c.id FROM {} AS c WHERE strpos(lower(c.text), lower(%s)) > 0 "
                            "ORDER BY c.document_id, c.position, c.id").format(coll.chunks)
            return [r[0] for r in conn.execute(query, (_clean(needle),))]

    def close(self) -> None:
        """Close the store's idle connections (a later call still works, unpooled)."""
        self._connections.close()

    # -- plumbing -------------------------------------------------------------------

    @contextmanager
    def _transaction(self, *, ddl: bool = False) -> Iterator[psycopg.Connection]:
        with self._connections.connection() as conn:
            self._prepare(conn)
            with conn.transaction():
                if ddl:
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
                yield conn

    @contextmanager
    def _open(self, name: str) -> Iterator[tuple[psycopg.Connection, _Collection]]:
        """A transaction in the named collection; the server's data errors become InvalidRequest."""
        try:
            with self._transaction() as conn:
                yield conn, _lookup(conn, name)
        except psycopg.errors.UndefinedTable as exc:  # dropped by someone else meanwhile
            raise _not_found(name) from exc
        except (psycopg.DataError, psycopg.errors.ProgramLimitExceeded) as exc:
            raise InvalidRequest(f"PostgreSQL refused the data: {exc.diag.message_primary or exc}") from exc

    def _tune_hnsw(self, conn: psycopg.Connection, limit: int) -> None:
        """An HNSW scan yields at most ef_search rows, before the filter drops some; an
        iterative scan (pgvector 0.8+) goes on until ``limit`` rows pass the filter.
        ``relaxed_order`` because ``strict_order`` drops rows that come out of order."""
        settings = "SELECT set_config('hnsw.ef_search', %s, true)"
        if self._iterative_scan:
            settings += ", set_config('hnsw.iterative_scan', 'relaxed_order', true)"
        conn.execute(settings, (str(min(max(limit, DEFAULT_EF_SEARCH), MAX_EF_SEARCH)),))

    def _prepare(self, conn: psycopg.Connection) -> None:
        """Once per store: the vector extension and the catalog."""
        if self._ready:
            return
        with self._ready_lock:
            if self._ready:
                return
            try:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
                    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                    conn.execute(_CATALOG)
                    (version,) = conn.execute(
                        "SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
            except (psycopg.errors.InsufficientPrivilege, psycopg.errors.FeatureNotSupported,
                    psycopg.errors.UndefinedFile) as exc:
                raise ConfigError(
                    f"cannot use the pgvector extension: {exc.diag.message_primary}; install pgvector "
                    "on the server and run `CREATE EXTENSION vector` in this database as a superuser"
                ) from exc
            self._iterative_scan = _version(version) >= (0, 8)
            self._ready = True


# The postings of the query's terms first (the primary key finds them), then their
# document frequencies, then the best chunks' scores, and only then the winners' rows.
_BM25 = sql.SQL("""
WITH stats AS (
    SELECT sum(chunks)::float8 AS n_docs, sum(terms)::float8 / nullif(sum(chunks), 0) AS avgdl FROM {stats}
), matches AS MATERIALIZED (
    SELECT term, chunk_id, tf FROM {postings} WHERE term = ANY(%s::text[])
), idf AS (
    SELECT m.term, ln(1 + (s.n_docs - count(*)::float8 + 0.5) / (count(*)::float8 + 0.5)) AS idf
    FROM matches AS m CROSS JOIN stats AS s GROUP BY m.term, s.n_docs
), best AS (
    SELECT c.id,
           sum(idf.idf * m.tf * ({k1} + 1) / (m.tf + {k1} * (1 - {b} + {b} * c.n_terms / s.avgdl))) AS score
    FROM matches AS m
    JOIN idf ON idf.term = m.term
    JOIN {chunks} AS c ON c.id = m.chunk_id
    CROSS JOIN stats AS s
    WHERE {where}
    GROUP BY c.id
    ORDER BY score DESC, c.id
    LIMIT %s
)
SELECT {select}, best.score FROM best JOIN {chunks} AS c ON c.id = best.id ORDER BY best.score DESC, c.id""")


def _create_tables(coll: _Collection) -> list[sql.Composed]:
    chunks, postings = coll.chunks, coll.postings
    statements = [
        sql.SQL("""CREATE TABLE {} (
            id text PRIMARY KEY,
            document_id text NOT NULL,
            version text NOT NULL,
            text text NOT NULL,
            position integer NOT NULL,
            source text NOT NULL,
            title text NOT NULL,
            heading text NOT NULL,
            page integer,
            tags text[] NOT NULL,
            modified text NOT NULL,
            terms text[] NOT NULL,
            n_terms integer GENERATED ALWAYS AS (cardinality(terms)) STORED,
            vector vector({}) NOT NULL
        )""").format(chunks, sql.Literal(coll.dimensions)),
        sql.SQL("CREATE INDEX ON {} (document_id, position)").format(chunks),
        sql.SQL("CREATE INDEX ON {} (source)").format(chunks),
        sql.SQL("CREATE INDEX ON {} USING gin (tags)").format(chunks),
        sql.SQL("""CREATE TABLE {} (
            term text NOT NULL,
            chunk_id text NOT NULL REFERENCES {} (id) ON DELETE CASCADE,
            tf integer NOT NULL,
            PRIMARY KEY (term, chunk_id)
        )""").format(postings, chunks),
        sql.SQL("CREATE INDEX ON {} (chunk_id)").format(postings),  # for the cascade
        sql.SQL("CREATE TABLE {} (chunks bigint NOT NULL, terms bigint NOT NULL)").format(coll.stats),
    ]
    if coll.dimensions <= HNSW_MAX_DIMENSIONS:
        statements.append(sql.SQL("CREATE INDEX ON {} USING hnsw (vector vector_cosine_ops)").format(chunks))
    return statements


def _copy_chunks(conn: psycopg.Connection, coll: _Collection, rows: list[tuple]) -> None:
    columns = sql.SQL(", ").join(map(sql.Identifier, (*_FIELDS, "vector")))
    with conn.cursor() as cur:
        with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(coll.chunks, columns)) as copy:
            for row in rows:
                copy.write_row(row)
        with cur.copy(sql.SQL("COPY {} (term, chunk_id, tf) FROM STDIN").format(coll.postings)) as copy:
            for row in rows:
                for term, tf in Counter(row[_TERMS]).items():
                    copy.write_row((term, row[0], tf))
        cur.execute(sql.SQL("INSERT INTO {} (chunks, terms) VALUES (%s, %s)").format(coll.stats),
                    (len(rows), sum(len(row[_TERMS]) for row in rows)))


def _chunk_row(chunk: Chunk, coll: _Collection) -> tuple:
    """The chunk as a COPY row (the vector in pgvector's text form), checked."""
    what = f"chunk {chunk.id!r}"
    if chunk.vector is None:
        raise InvalidRequest(f"{what} has no vector; embed the chunks before adding them", param="chunks")
    vector = _vector_text(chunk.vector, coll, what=f"the vector of {what}", param="chunks")
    return (*(_stored(getattr(chunk, f)) for f in _FIELDS), vector)


def _stored(value):
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, list):
        return [_clean(v) if isinstance(v, str) else v for v in value]
    return value


def _vector_text(vector: Sequence[float], coll: _Collection, *, what: str, param: str) -> str:
    if len(vector) != coll.dimensions:
        raise InvalidRequest(f"{what} has {len(vector)} dimensions; collection {coll.name!r} holds "
                             f"{coll.dimensions}-dimensional vectors (same embedding model?)", param=param)
    try:
        values = [float(v) for v in vector]  # numpy scalars too
    except (TypeError, ValueError):
        values = [math.nan]
    if not all(math.isfinite(v) for v in values):
        raise InvalidRequest(f"{what} holds a value that is not a finite number", param=param)
    return "[" + ",".join(map(repr, values)) + "]"


def _float(value: float) -> sql.Composable:
    return sql.SQL("{}::float8").format(sql.Literal(value))


def _chunk(row: Sequence) -> Chunk:
    return Chunk(**dict(zip(_FIELDS, row[:-1])), vector=list(row[-1]))


def _where(pairs: list[tuple[str, list]]) -> tuple[sql.Composable, list]:
    """A filter as SQL over the chunks table (aliased ``c``) and its parameters."""
    clauses: list[sql.Composable] = [sql.SQL("TRUE")]
    params: list = []
    for field, values in pairs:
        column = sql.Identifier("c", field)
        if field == "tags":
            clauses.append(sql.SQL("{} && %s::text[]").format(column))  # has any of
        elif FILTER_FIELDS[field] is int:
            clauses.append(sql.SQL("{} = ANY(%s::bigint[])").format(column))
        else:
            clauses.append(sql.SQL("{} = ANY(%s::text[])").format(column))
        params.append([_clean(v) if isinstance(v, str) else v for v in values])
    return sql.SQL(" AND ").join(clauses), params


def _lookup(conn: psycopg.Connection, name: str) -> _Collection:
    row = conn.execute("SELECT id, dimensions FROM gf_collections WHERE name = %s", (_clean(name),)).fetchone()
    if row is None:
        raise _not_found(name)
    return _Collection(name, *row)


def _not_found(name: str) -> CollectionNotFound:
    return CollectionNotFound(f"collection {name!r} does not exist; create it first", param="collection")


def _check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InvalidRequest(f"limit must be a whole number of 0 or more, not {limit!r}", param="limit")


def _clean(value: str) -> str:
    return value.replace("\x00", "\ufffd")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])
