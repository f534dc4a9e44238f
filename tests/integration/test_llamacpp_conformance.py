"""LlamaCppModel on the real built-in Gemma GGUF, with both engines, passes the shared conformance tests."""

from __future__ import annotations

import asyncio

import pytest

from genfoundry.core.errors import ConfigError
from genfoundry.core.settings import load_settings
from genfoundry.core.types import GenerationRequest
from genfoundry.models.builtin import assemble_gemma
from genfoundry.models.providers.llama_server import find_llama_server
from genfoundry.models.providers.llamacpp import LlamaCppModel, inspect
from genfoundry.models.spec import ModelSpec
from genfoundry.testing.conformance import ChatModelConformance, EmbeddingModelConformance

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gguf(tmp_path_factory):
    settings = load_settings(home=tmp_path_factory.mktemp("gguf-home"), environ={})
    return str(assemble_gemma(settings))


def _model(gguf, tmp_path_factory, engine: str) -> LlamaCppModel:
    settings = load_settings(home=tmp_path_factory.mktemp(engine), environ={},
                             overrides={"llama_engine": engine, "llama_parallel": 2})
    spec = ModelSpec(name="gemma", provider="llamacpp", location=gguf, context_length=512,
                     capabilities=["chat", "completion", "tools", "json"], options={"chat_template": "gemma"})
    return LlamaCppModel(spec, settings)


def _warmed(model: LlamaCppModel):
    asyncio.run(model.warm_up())
    yield model
    asyncio.run(model.close())


class TestInProcess(ChatModelConformance):
    @pytest.fixture(scope="class")
    def chat_model(self, gguf, tmp_path_factory):
        yield from _warmed(_model(gguf, tmp_path_factory, "inprocess"))

    def test_runs_in_process(self, chat_model):
        assert type(chat_model.engine).__name__ == "InProcessEngine" and chat_model.concurrency == 1


@pytest.mark.skipif(find_llama_server() is None, reason="no llama-server (run `genfoundry engine build`)")
class TestServer(ChatModelConformance):
    @pytest.fixture(scope="class")
    def chat_model(self, gguf, tmp_path_factory):
        yield from _warmed(_model(gguf, tmp_path_factory, "server"))

    def test_runs_llama_server(self, chat_model):
        assert type(chat_model.engine).__name__ == "ServerEngine" and chat_model.concurrency == 2


def test_engines_agree_when_greedy(gguf, tmp_path_factory):
    request = GenerationRequest(prompt="Q: What is the capital of Italy?\nA: Rome.\nQ: What is the capital of France?\nA:",
                                max_tokens=6, temperature=0, stop=["\n"])
    answers = []
    for engine in ("inprocess", "server") if find_llama_server() else ("inprocess",):
        model = _model(gguf, tmp_path_factory, engine)

        async def run():
            await model.warm_up()
            try:
                return (await model.generate(request)).text
            finally:
                await model.close()
        answers.append(asyncio.run(run()))
    assert "Paris" in answers[0] and len(set(answers)) == 1


def test_inspect_reads_gguf_metadata(gguf):
    found = inspect(gguf, {})
    assert found["context_length"] == 32768 and found["license"] == "gemma" and found["parameters"] == 270_000_000


def test_missing_or_corrupt_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        inspect(str(tmp_path / "missing.gguf"), {})
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF" + b"\0" * 100)
    with pytest.raises(ConfigError, match="not a readable GGUF"):
        inspect(str(corrupt), {})


def test_server_engine_without_binary_is_a_clear_error(gguf, tmp_path):
    settings = load_settings(home=tmp_path, environ={},
                             overrides={"llama_engine": "server", "llama_server_path": str(tmp_path / "nope")})
    model = LlamaCppModel(ModelSpec(name="g", provider="llamacpp", location=gguf), settings)
    with pytest.raises(ConfigError, match="genfoundry engine build"):
        asyncio.run(model.warm_up())


class TestGGUFEmbeddings(EmbeddingModelConformance):
    """A GGUF chat model also embeds (mean-pooled), as llama.cpp allows."""

    @pytest.fixture(scope="class")
    def embedding_model(self, gguf, tmp_path_factory):
        settings = load_settings(home=tmp_path_factory.mktemp("embed"), environ={},
                                 overrides={"llama_engine": "inprocess"})
        spec = ModelSpec(name="gemma-embed", provider="llamacpp", location=gguf, context_length=512,
                         capabilities=["embedding"])
        yield from _warmed(LlamaCppModel(spec, settings))

    def test_dimensions_match_the_model(self, embedding_model):
        assert embedding_model.dimensions == 640
