"""Conformance test mixins: every chat model, embedding model, guard rail and reranker runs the
same tests as the built-in ones. Subclass in a pytest test module and provide a fixture::

    class TestMyChat(ChatModelConformance):
        @pytest.fixture(scope="class")
        def chat_model(self):
            model = MyChat(spec)
            asyncio.run(model.warm_up())
            yield model
            asyncio.run(model.close())
"""

from __future__ import annotations

import asyncio
import json
import math

import pytest

from genfoundry.core.errors import ContextLengthExceeded
from genfoundry.core.types import GenerationRequest, Message
from genfoundry.models.protocols import ChatModel, EmbeddingModel

__all__ = ["ChatModelConformance", "EmbeddingModelConformance", "RailConformance", "RerankerConformance"]


def _run(coro):
    return asyncio.run(coro)


async def _collect(model, request):
    chunks = []
    async for chunk in model.stream(request):
        chunks.append(chunk)
    return chunks


def _chat(text: str, **kw) -> GenerationRequest:
    return GenerationRequest(messages=[Message(role="user", content=text)], **kw)


class ChatModelConformance:
    """Tests every chat backend must pass. Needs a ``chat_model`` fixture."""

    def test_implements_protocol(self, chat_model):
        assert isinstance(chat_model, ChatModel)
        assert chat_model.concurrency >= 1

    def test_chat_returns_text_and_usage(self, chat_model):
        result = _run(chat_model.generate(_chat("Name a colour.", max_tokens=8, temperature=0)))
        assert isinstance(result.text, str)
        assert result.usage.prompt_tokens > 0
        assert 0 < result.usage.completion_tokens <= 8
        assert result.finish_reason in ("stop", "length")

    def test_completion_prompt(self, chat_model):
        if not chat_model.spec.can("completion"):
            pytest.skip("model does not do plain completion")
        result = _run(chat_model.generate(GenerationRequest(prompt="One, two, three,", max_tokens=5, temperature=0)))
        assert result.usage.completion_tokens > 0

    def test_stream_ends_with_usage(self, chat_model):
        chunks = _run(_collect(chat_model, _chat("Say hello.", max_tokens=8, temperature=0)))
        assert chunks, "stream yielded nothing"
        final = chunks[-1]
        assert final.finish_reason in ("stop", "length", "tool_calls")
        assert final.usage is not None and final.usage.completion_tokens > 0
        assert all(c.finish_reason is None for c in chunks[:-1])

    def test_stream_matches_generate_when_greedy(self, chat_model):
        request = _chat("Count: one, two, three,", max_tokens=6, temperature=0, seed=1)
        whole = _run(chat_model.generate(request)).text
        streamed = "".join(c.text for c in _run(_collect(chat_model, request)))
        assert streamed == whole

    def test_max_tokens_is_respected(self, chat_model):
        result = _run(chat_model.generate(_chat("Write a long story about the sea.", max_tokens=3, temperature=0)))
        assert result.usage.completion_tokens <= 3

    def test_stop_sequence_is_not_returned(self, chat_model):
        result = _run(chat_model.generate(_chat("List: a, b, c, d, e, f", max_tokens=12, temperature=0, stop=[","])))
        assert "," not in result.text

    def test_count_tokens_grows_with_text(self, chat_model):
        assert 0 < chat_model.count_tokens("hello world") < chat_model.count_tokens("hello world " * 20)

    def test_context_overflow_is_a_clear_error(self, chat_model):
        limit = chat_model.spec.context_length or 2048
        with pytest.raises(ContextLengthExceeded):
            _run(chat_model.generate(_chat("word " * (limit + 10), max_tokens=4)))

    def test_abandoned_stream_leaves_model_usable(self, chat_model):
        async def abandon():
            stream = chat_model.stream(_chat("Tell me a long story.", max_tokens=64, temperature=0))
            async for _ in stream:
                break
            await stream.aclose()
        _run(abandon())
        result = _run(chat_model.generate(_chat("Hi", max_tokens=4, temperature=0)))
        assert result.usage.completion_tokens > 0

    def test_json_schema_output_parses(self, chat_model):
        if not chat_model.spec.can("json"):
            pytest.skip("model does not constrain JSON")
        schema = {"type": "object", "properties": {"colour": {"type": "string", "maxLength": 12}},
                  "required": ["colour"], "additionalProperties": False}
        result = _run(chat_model.generate(_chat("Give a colour as JSON.", max_tokens=40, temperature=0, json_schema=schema)))
        data = json.loads(result.text)
        assert isinstance(data["colour"], str)


def _cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


class EmbeddingModelConformance:
    """Tests every embedding backend must pass. Needs an ``embedding_model`` fixture."""

    def test_implements_protocol(self, embedding_model):
        assert isinstance(embedding_model, EmbeddingModel)

    def test_one_vector_per_text_of_fixed_size(self, embedding_model):
        result = _run(embedding_model.embed(["first text", "second text", "third"]))
        assert len(result.vectors) == 3
        assert {len(v) for v in result.vectors} == {embedding_model.dimensions}
        assert result.usage.prompt_tokens > 0

    def test_similar_texts_score_closer(self, embedding_model):
        a, b, c = _run(embedding_model.embed([
            "the cat sat on the mat", "a cat sat on a mat", "quarterly revenue grew in europe"])).vectors
        assert _cosine(a, b) > _cosine(a, c)

    def test_same_text_same_vector(self, embedding_model):
        a, b = _run(embedding_model.embed(["repeatable", "repeatable"])).vectors
        assert _cosine(a, b) == pytest.approx(1.0, abs=1e-5)

    def test_empty_batch(self, embedding_model):
        assert _run(embedding_model.embed([])).vectors == []


ODD_TEXTS = ["", "   ", "\x00\x01\x02 binary \xff junk", "a" * 20_000, "\U0001f642 " * 500, "<PERSON_1> [1] ### ---"]


class RailConformance:
    """Tests every guard rail must pass (see ``genfoundry.guard.registry``).

    Needs fixtures ``rail`` (warmed up), ``flagged_text`` (a text the rail must find something in)
    and ``clean_text`` (an everyday text it must leave alone).
    """

    def test_implements_protocol(self, rail):
        from genfoundry.guard.types import Rail

        assert isinstance(rail, Rail) and rail.name

    def test_finds_what_it_is_for(self, rail, flagged_text):
        found = rail.check(flagged_text)
        assert found and all(f.rail == rail.name and 0 <= f.score <= 1 for f in found)

    def test_leaves_everyday_text_alone(self, rail, clean_text):
        assert rail.check(clean_text) == []

    def test_findings_point_into_the_text_and_never_carry_it(self, rail, flagged_text):
        for f in rail.check(flagged_text):
            if f.start is not None:
                assert 0 <= f.start < f.end <= len(flagged_text)
                assert flagged_text[f.start:f.end] not in json.dumps(f.detail)  # evidence, not the value

    def test_odd_input_gives_findings_not_errors(self, rail):
        for text in ODD_TEXTS:
            assert isinstance(rail.check(text), list)
        assert rail.check("") == []

    def test_the_same_text_gives_the_same_findings(self, rail, flagged_text):
        assert rail.check(flagged_text) == rail.check(flagged_text)

    def test_safe_from_several_threads(self, rail, flagged_text, clean_text):
        import concurrent.futures as cf

        expected = (rail.check(flagged_text), rail.check(clean_text))
        with cf.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda i: (rail.check(flagged_text), rail.check(clean_text)), range(8)))
        assert all(r == expected for r in results)


class RerankerConformance:
    """Tests every reranker must pass (``score(query, texts)`` -> one float per text, in order).

    Needs a ``reranker`` fixture; relevance is judged on an obvious pair.
    """

    def test_one_score_per_text_in_order(self, reranker):
        texts = ["Refunds take five days to reach your card.", "Our tents are green.", "Warranty: ten years."]
        scores = _run(reranker.score("How long do refunds take?", texts))
        assert len(scores) == 3 and all(isinstance(s, float) for s in scores)

    def test_the_relevant_passage_scores_highest(self, reranker):
        texts = ["Our tents are green and weigh two kilos.", "Refunds take five days to reach your card."]
        scores = _run(reranker.score("How long do refunds take to reach my card?", texts))
        assert scores[1] > scores[0]

    def test_no_texts_no_scores(self, reranker):
        assert _run(reranker.score("anything", [])) == []

    def test_same_input_same_scores(self, reranker):
        texts = ["Refunds take five days.", "Tents are green."]
        assert _run(reranker.score("refunds", texts)) == _run(reranker.score("refunds", texts))

    def test_odd_texts_are_scored_not_raised(self, reranker):
        scores = _run(reranker.score("refunds?", [t or "x" for t in ODD_TEXTS[:3]]))
        assert len(scores) == 3
