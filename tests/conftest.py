"""Shared fixtures: settings isolated from the user's environment, a SQLite store
in a temporary folder, and a hub holding only fake models.

Example::

    def test_something(hub):
        assert hub.resolve("default").name == "fake-chat"
"""

from __future__ import annotations

import pytest

from genfoundry.core.settings import Settings, load_settings
from genfoundry.core.store import Store
from genfoundry.models.hub import DEFAULT_ALIAS, DEFAULT_EMBEDDING_ALIAS, ModelHub
from genfoundry.models.spec import ModelSpec

FAKE_CHAT = "fake-chat"
FAKE_EMBED = "fake-embed"


def fake_spec(name: str, **fields) -> ModelSpec:
    """A hub entry run by the ``fake`` provider (canned replies, hashed embeddings)."""
    fields.setdefault("capabilities", ["chat", "completion", "tools", "json"])
    return ModelSpec(name=name, provider="fake", location="memory", **fields)


@pytest.fixture()
def settings(tmp_path) -> Settings:
    """Defaults only: ``environ={}`` keeps the user's GENFOUNDRY_* variables out."""
    settings = load_settings(home=tmp_path, environ={})
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
