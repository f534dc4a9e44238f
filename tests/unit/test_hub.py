"""The model hub: entries in the store, names and aliases, defaults, loaded instances."""

from __future__ import annotations

import asyncio

import pytest

from genfoundry.core.errors import ConfigError, InvalidRequest, ModelNotFound
from genfoundry.core.types import GenerationRequest, Message
from genfoundry.models.hub import ModelHub
from genfoundry.models.protocols import ChatModel, EmbeddingModel
from genfoundry.models.providers import get_provider, providers
from genfoundry.models.spec import ModelSpec
from genfoundry.testing.fakes import FakeChatModel, FakeEmbeddingModel


def spec(name: str, **fields) -> ModelSpec:
    return ModelSpec(name=name, provider="fake", location="memory", **fields)


def test_list_is_sorted_by_name(hub):
    hub.add(spec("aaa"))
    assert [s.name for s in hub.list()] == ["aaa", "fake-chat", "fake-embed"]


def test_resolve_by_name_and_alias(hub):
    hub.add(spec("tiny", aliases=["small", "mini"], context_length=128))
    assert hub.resolve("tiny").context_length == 128
    assert hub.resolve("mini").name == "tiny"
    assert hub.resolve("default").name == "fake-chat"
    assert hub.resolve("default-embedding").name == "fake-embed"


def test_entries_persist_in_the_store(hub, store, settings):
    hub.add(spec("kept", description="still here"))
    assert ModelHub(store, settings).resolve("kept").description == "still here"


def test_unknown_model_tells_what_to_run(hub):
    with pytest.raises(ModelNotFound) as info:
        hub.resolve("nope")
    assert "'nope'" in info.value.message
    assert "genfoundry models list" in info.value.message
    assert info.value.status_code == 404


def test_duplicate_name_needs_replace(hub):
    with pytest.raises(InvalidRequest, match="already exists"):
        hub.add(spec("fake-chat", description="second"))
    assert hub.resolve("fake-chat").description is None
    hub.add(spec("fake-chat", aliases=["default"], description="second"), replace=True)
    assert hub.resolve("default").description == "second"


@pytest.mark.parametrize("clashing", [
    {"name": "other", "aliases": ["default"]},       # alias = another model's alias
    {"name": "other", "aliases": ["fake-embed"]},    # alias = another model's name
    {"name": "default"},                             # name = another model's alias
])
def test_name_or_alias_clash_is_refused(hub, clashing):
    with pytest.raises(InvalidRequest, match="already used"):
        hub.add(spec(**clashing))
    assert "other" not in [s.name for s in hub.list()]


def test_replace_cannot_steal_another_models_alias(hub):
    with pytest.raises(InvalidRequest, match="already used by model 'fake-embed'"):
        hub.add(spec("fake-chat", aliases=["default-embedding"]), replace=True)


def test_unknown_provider_lists_installed_ones(hub):
    with pytest.raises(ConfigError) as info:
        hub.add(ModelSpec(name="x", provider="nosuch", location="memory"))
    assert "nosuch" in info.value.message
    assert "fake" in info.value.message and "llamacpp" in info.value.message


def test_remove_by_alias(hub):
    removed = hub.remove("default")
    assert removed.name == "fake-chat"
    assert [s.name for s in hub.list()] == ["fake-embed"]
    with pytest.raises(ModelNotFound):
        hub.resolve("fake-chat")
    with pytest.raises(ModelNotFound):
        hub.remove("fake-chat")


def test_set_default_moves_the_chat_alias(hub):
    hub.add(spec("second-chat"))
    hub.set_default("second-chat")
    assert hub.resolve("default").name == "second-chat"
    assert "default" not in hub.resolve("fake-chat").aliases
    assert hub.resolve("default-embedding").name == "fake-embed"  # the other default is untouched


def test_set_default_for_embedding_model_moves_the_embedding_alias(hub):
    hub.add(spec("second-embed", capabilities=["embedding"]))
    chosen = hub.set_default("second-embed")
    assert "default-embedding" in chosen.aliases
    assert hub.resolve("default-embedding").name == "second-embed"
    assert hub.resolve("fake-embed").aliases == []
    assert hub.resolve("default").name == "fake-chat"


def test_set_default_twice_keeps_one_alias(hub):
    hub.set_default("fake-chat")
    assert hub.resolve("fake-chat").aliases == ["default"]


def test_record_measured_persists(hub, store, settings):
    hub.record_measured("default", prefill_tps=None, decode_tps=42.0)
    measured = ModelHub(store, settings).resolve("fake-chat").measured
    assert measured.decode_tokens_per_second == 42.0
    assert measured.prefill_tokens_per_second is None
    assert measured.measured_at is not None
    hub.record_measured("fake-chat", prefill_tps=100.0, decode_tps=None)
    measured = hub.resolve("fake-chat").measured
    assert (measured.prefill_tokens_per_second, measured.decode_tokens_per_second) == (100.0, 42.0)


def test_load_returns_one_warmed_instance(hub, monkeypatch):
    warmed = []

    async def warm_up(self):
        warmed.append(self)

    monkeypatch.setattr(FakeChatModel, "warm_up", warm_up)

    async def load_three_times():
        first, second = await asyncio.gather(hub.load("default"), hub.load("fake-chat"))
        return first, second, await hub.load("fake-chat")

    first, second, third = asyncio.run(load_three_times())
    assert first is second is third
    assert isinstance(first, FakeChatModel) and isinstance(first, ChatModel)
    assert warmed == [first]
    assert hub.loaded() == {"fake-chat": first}


def test_loaded_model_answers(hub):
    async def ask():
        model = await hub.load_chat("default")
        return await model.generate(GenerationRequest(messages=[Message("user", "hi there")]))

    assert asyncio.run(ask()).text == "echo: hi there"


def test_load_embedding(hub):
    model = asyncio.run(hub.load_embedding("default-embedding"))
    assert isinstance(model, FakeEmbeddingModel) and isinstance(model, EmbeddingModel)


def test_a_changed_entry_is_served_by_a_new_instance_started_beside_the_old(hub):
    async def scenario():
        first = await hub.load("fake-chat")
        hub.add(spec("fake-chat", aliases=["default"], options={"replies": ["new"], "warm_up_delay": 0.2}),
                replace=True)
        during = await hub.load("fake-chat")  # the new one is warming up: the old one answers meanwhile
        with hub.lease(during):
            await asyncio.sleep(0.3)  # swapped by now, but this request still holds the old instance
            assert hub.loaded()["fake-chat"] is not first
            assert not first.closed
            reply = await during.generate(GenerationRequest(prompt="still here"))
        await hub.settle()
        return first, during, reply, await hub.load("fake-chat")

    first, during, reply, after = asyncio.run(scenario())
    assert during is first and reply.text == "echo: still here"
    assert after is not first and after.spec.options["replies"] == ["new"]
    assert first.closed  # retired once its last request finished
    assert hub.swap_log[-1]["ok"] is True


def test_after_a_switch_new_requests_wait_for_the_old_instance_to_finish(hub):
    async def scenario():
        first = await hub.load("fake-chat")
        hub.add(spec("fake-chat", aliases=["default"], options={"replies": ["new"]}), replace=True)
        order = []

        async def old_request():
            with hub.lease(await hub.load("fake-chat")) as model:
                assert model is first
                await asyncio.sleep(0.6)  # still streaming when the new instance is ready
                assert (await hub.load("fake-chat")) is not None  # its own lookups never wait on itself
                order.append("old done")

        async def new_request():
            await asyncio.sleep(0.3)  # the switch has happened by now
            model = await hub.load("fake-chat")
            order.append("new admitted")
            return model

        _, model = await asyncio.gather(old_request(), new_request())
        await hub.settle()
        return first, model, order

    first, model, order = asyncio.run(scenario())
    assert model is not first and order == ["old done", "new admitted"]
    assert first.closed


def test_a_changed_entry_that_fails_to_start_leaves_the_old_instance_serving(hub):
    async def scenario():
        first = await hub.load("fake-chat")
        hub.add(spec("fake-chat", aliases=["default"], options={"fail_warm_up": True}), replace=True)
        await hub.load("fake-chat")
        await hub.settle()
        return first, await hub.load("fake-chat")

    first, after = asyncio.run(scenario())
    assert after is first and not first.closed
    assert hub.swap_log[-1]["ok"] is False and "failed to start" in hub.swap_log[-1]["error"]


def test_a_model_removed_while_its_replacement_starts_leaves_nothing_running(hub):
    made = []
    create = hub.create
    hub.create = lambda entry: made.append(create(entry)) or made[-1]

    async def scenario():
        first = await hub.load("fake-chat")
        hub.add(spec("fake-chat", aliases=["default"], options={"warm_up_delay": 0.2}), replace=True)
        await hub.load("fake-chat")  # starts the replacement
        switching = hub._swaps["fake-chat"]
        hub.remove("fake-chat")
        await switching
        await hub.settle()
        return first

    first = asyncio.run(scenario())
    assert first.closed and hub.loaded() == {}
    assert len(made) == 2 and made[1].closed  # the replacement was closed too, not left running


def test_measured_speeds_do_not_restart_a_loaded_model(hub):
    async def scenario():
        first = await hub.load("fake-chat")
        hub.record_measured("fake-chat", prefill_tps=100.0, decode_tps=10.0)
        return first, await hub.load("fake-chat")

    first, again = asyncio.run(scenario())
    assert again is first and hub.swap_log == []


def test_load_chat_refuses_embedding_model(hub):
    with pytest.raises(InvalidRequest, match="cannot chat"):
        asyncio.run(hub.load_chat("fake-embed"))
    assert hub.loaded() == {}


def test_load_embedding_refuses_chat_model(hub):
    with pytest.raises(InvalidRequest, match="default-embedding"):
        asyncio.run(hub.load_embedding("fake-chat"))


def test_close_forgets_loaded_models(hub):
    asyncio.run(hub.load("fake-chat"))
    asyncio.run(hub.close())
    assert hub.loaded() == {}


def test_close_closes_every_model_even_when_one_fails(hub, monkeypatch):
    closed = []

    async def failing_close(self):
        closed.append(self.spec.name)
        raise RuntimeError("engine died")

    async def close(self):
        closed.append(self.spec.name)

    monkeypatch.setattr(FakeChatModel, "close", failing_close)
    monkeypatch.setattr(FakeEmbeddingModel, "close", close)

    async def load_both_then_close():
        await hub.load("fake-chat")
        await hub.load("fake-embed")
        await hub.close()

    with pytest.raises(ConfigError, match="fake-chat.*engine died"):
        asyncio.run(load_both_then_close())
    assert sorted(closed) == ["fake-chat", "fake-embed"]
    assert hub.loaded() == {}


def test_providers_are_discovered_through_entry_points():
    found = providers()
    assert {"llamacpp", "openai_compat", "anthropic", "transformers", "sentence_transformers",
            "fake"} <= set(found)
    assert list(found) == sorted(found)
    assert get_provider("fake").name == "fake"


def test_lookups_in_a_scope_query_the_store_once_and_see_other_processes_changes(store, settings, hub):
    import asyncio

    from genfoundry.models.hub import ModelHub, lookup_scope
    from tests.conftest import fake_spec

    calls = []
    real = hub._version
    hub._version = lambda: calls.append(1) or real()

    async def request():
        with lookup_scope():
            await asyncio.to_thread(hub.prefetch)  # in a worker thread, as the gateway's key check does
            before = len(calls)
            for _ in range(5):
                hub.resolve("default")
                hub.list()
            return len(calls) - before
    assert asyncio.run(request()) == 0, "lookups after the prefetch run from memory"
    other = ModelHub(store, settings)  # another process sharing the store
    other.add(fake_spec("added-elsewhere"))
    with lookup_scope():
        assert hub.resolve("added-elsewhere").name == "added-elsewhere"  # the next request sees it
