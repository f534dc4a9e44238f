"""Re-ranking: a chat model grading passages, a (tiny, random) cross-encoder, and the setting."""

from __future__ import annotations

import asyncio

import pytest

from genfoundry.core.errors import ConfigError, InvalidRequest, ModelNotFound
from genfoundry.knowledge.base import KnowledgeBase
from genfoundry.knowledge.rerank import ChatModelReranker, CrossEncoderReranker, open_reranker
from genfoundry.knowledge.retrieval import RetrievalOptions
from genfoundry.knowledge.stores.lance import LanceVectorStore

from tests.conftest import fake_spec


def _kb(settings, hub, tmp_path, reranker=None) -> KnowledgeBase:
    kb = KnowledgeBase(settings=settings, store=hub.store, hub=hub, vectors=LanceVectorStore(tmp_path / "v"),
                       reranker=reranker)
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in (("a.md", "# Tents\nOur tents are green and light."),
                       ("b.md", "# Refunds\nRefunds take five days to arrive."),
                       ("c.md", "# Stoves\nStoves burn gas and refunds are rare.")):
        (folder / name).write_text(text)
    asyncio.run(kb.ingest("kb", [folder], create=True))
    return kb


def test_chat_model_grades_reorder_passages(settings, hub, tmp_path):
    hub.add(fake_spec("grader", options={"replies": ['{"score": 1}', '{"score": 9}', "no idea", '{"score": 4}']}))
    kb = _kb(settings, hub, tmp_path, reranker=ChatModelReranker(hub, "grader"))
    passages = asyncio.run(kb.retrieve("kb", "refunds", RetrievalOptions(limit=3, rerank=True)))
    scores = [p.score for p in passages]
    assert scores == sorted(scores, reverse=True) and scores[0] == 9.0
    assert 0.0 in scores  # an unparseable grade counts as 0, the passage stays


def test_rerank_without_a_reranker_is_an_error(settings, hub, tmp_path):
    kb = _kb(settings, hub, tmp_path)
    with pytest.raises(InvalidRequest, match="no reranker"):
        asyncio.run(kb.retrieve("kb", "refunds", RetrievalOptions(rerank=True)))


def test_setting_names_the_reranker(settings, hub, tmp_path):
    assert open_reranker(None, hub) is None
    assert isinstance(open_reranker("model:fake-chat", hub), ChatModelReranker)
    assert isinstance(open_reranker(f"cross-encoder:{tmp_path}", hub), CrossEncoderReranker)
    with pytest.raises(ConfigError):
        open_reranker("bogus", hub)
    with pytest.raises(ModelNotFound):
        open_reranker("model:nope", hub)
    settings.reranker = "model:fake-chat"
    kb = KnowledgeBase(settings=settings, store=hub.store, hub=hub, vectors=LanceVectorStore(tmp_path / "v"))
    assert isinstance(kb.reranker, ChatModelReranker)


def test_missing_cross_encoder_folder_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        asyncio.run(CrossEncoderReranker(tmp_path / "nowhere").score("q", ["a"]))


def test_cross_encoder_scores_every_pair(tmp_path):
    folder = _tiny_cross_encoder(tmp_path / "ce")
    reranker = CrossEncoderReranker(folder)
    first = asyncio.run(reranker.score("refund time", ["refunds take five days", "tents are green", "x"]))
    again = asyncio.run(reranker.score("refund time", ["refunds take five days", "tents are green", "x"]))
    assert len(first) == 3 and all(isinstance(s, float) for s in first)
    assert first == pytest.approx(again)
    assert asyncio.run(reranker.score("q", [])) == []


def _tiny_cross_encoder(folder):
    """A randomly initialised 2-layer BERT with a one-logit head and a word-level vocabulary."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder.mkdir()
    words = "refund refunds time take five days tents are green x q".split()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    (folder / "vocab.txt").write_text("\n".join(vocab))
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, num_labels=1, max_position_embeddings=64)
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder
