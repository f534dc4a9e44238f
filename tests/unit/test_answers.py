"""Grounded answers and summaries over a small collection, with fake models.

The fake chat model answers from a queue of canned replies (or echoes the
question), so citations, the "not in the documents" path, the answer cache and
map-reduce summaries are all checked without loading a real model.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from genfoundry.apps.answer import NOT_FOUND, Answer, GroundedAnswerer, build_prompt, cite
from genfoundry.apps.summarise import Summariser, _without_overlap
from genfoundry.core.errors import InvalidRequest, NotFound
from genfoundry.core.types import Chunk, GenerationChunk, Message
from genfoundry.knowledge.base import KnowledgeBase
from genfoundry.knowledge.retrieval import Passage, RetrievalOptions
from genfoundry.knowledge.stores.lance import LanceVectorStore
from genfoundry.models.spec import ModelSpec

RETURNS = ("# Returns\n\nReturns are accepted within 30 days of purchase with a receipt.\n\n"
           "## Refunds\n\nRefunds are paid to the original card within 5 working days.\n")
SHIPPING = "Shipping is free for orders over 50 euros. Parcels usually arrive within three working days.\n"
QUESTION = "Are returns accepted within 30 days?"


def run(coro):
    return asyncio.run(coro)


@pytest.fixture()
def docs(tmp_path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "returns.md").write_text(RETURNS)
    (folder / "shipping.txt").write_text(SHIPPING)
    return folder.resolve()


@pytest.fixture()
def kb(settings, store, hub, docs):
    kb = KnowledgeBase(settings=settings, store=store, hub=hub, vectors=LanceVectorStore(settings.vectors_dir))
    run(kb.ingest("handbook", [docs], create=True))
    yield kb
    kb.close()


@pytest.fixture()
def chat(hub):
    """The fake chat model the answerer will use; queue replies with ``chat.replies.append``."""
    return run(hub.load_chat("default"))


@pytest.fixture()
def answerer(kb, hub, settings) -> GroundedAnswerer:
    return GroundedAnswerer(kb=kb, hub=hub, settings=settings)


def ask(answerer, question=QUESTION, **kwargs) -> Answer:
    return run(answerer.answer("handbook", question, **kwargs))


def cached_rows(kb) -> list[dict]:
    cache = kb.store.tables.answer_cache
    with kb.store.begin() as conn:
        return [dict(r) for r in conn.execute(sa.select(cache)).mappings()]


# -- grounded answers -------------------------------------------------------------------------


def test_cited_answer_maps_to_the_chunk(kb, answerer, chat, docs):
    passages = run(kb.retrieve("handbook", QUESTION))
    n = next(i for i, p in enumerate(passages, start=1) if "30 days" in p.chunk.text)
    chat.replies.append(f"Returns are accepted within 30 days [{n}].")

    answer = ask(answerer)

    assert answer.found and not answer.cached and answer.text == f"Returns are accepted within 30 days [{n}]."
    assert answer.model == "fake-chat" and answer.usage.completion_tokens == 7 and answer.latency_ms > 0
    [citation] = answer.citations
    chunk = passages[n - 1].chunk
    assert (citation.index, citation.chunk_id, citation.document_id) == (n, chunk.id, chunk.document_id)
    assert citation.source == str(docs / "returns.md") and citation.title == "Returns"
    assert citation.heading == "Returns" and citation.position == 0 and "30 days" in citation.text
    assert not citation.inferred and citation.similarity == round(passages[n - 1].similarity, 4)
    request = chat.requests[-1]
    assert request.messages[0].role == "system" and f"[{n}] Returns\n{chunk.text}" in request.messages[0].content
    assert request.messages[-1].content == QUESTION
    assert json.loads(json.dumps(answer.to_dict()))["citations"][0]["chunk_id"] == chunk.id


def test_repeated_citations_are_listed_once_in_order(kb, answerer, chat):
    chat.replies.append("Within 30 days [2]. Refunds take 5 days [1]. Again [2].")
    answer = ask(answerer)
    assert [c.index for c in answer.citations] == [2, 1]


def test_uncited_reply_is_attributed_by_overlap(answerer, chat, docs):
    chat.replies.append("Refunds are paid to the original card within 5 working days.")
    answer = ask(answerer, "How are refunds paid?")
    [citation] = answer.citations
    assert citation.inferred and citation.heading == "Returns > Refunds"
    assert citation.source == str(docs / "returns.md")


def test_reply_unrelated_to_the_sources_cites_nothing(answerer, chat):
    chat.replies.append("Penguins enjoy cold weather.")
    answer = ask(answerer)
    assert answer.found and answer.citations == []


def test_out_of_range_citations_are_stripped(kb, answerer, chat):
    count = len(run(kb.retrieve("handbook", QUESTION)))
    assert count < 9
    chat.replies.append("Returns are accepted within 30 days [1][9].")
    answer = ask(answerer)
    assert answer.text == "Returns are accepted within 30 days [1]."
    assert [c.index for c in answer.citations] == [1]

    chat.replies.append("Returns are accepted within 30 days of purchase [9].")
    answer = ask(answerer, use_cache=False)
    assert "[9]" not in answer.text and answer.text == "Returns are accepted within 30 days of purchase."
    assert [c.inferred for c in answer.citations] == [True]  # nothing valid cited: attributed instead
    assert "30 days" in answer.citations[0].text


def test_below_min_relevance_says_not_found_without_the_model(answerer, chat, settings):
    settings.min_relevance = 0.99
    chat.replies.append("should not be used")
    answer = ask(answerer)
    assert answer.text == NOT_FOUND and not answer.found and answer.citations == []
    assert chat.requests == [] and list(chat.replies) == ["should not be used"]
    assert answer.model == "fake-chat"


def test_empty_reply_is_not_found(answerer, chat):
    chat.replies.append("   ")
    answer = ask(answerer)
    assert answer.text == NOT_FOUND and not answer.found


def test_answer_cache(kb, answerer, chat):
    chat.replies.extend(["Returns are accepted within 30 days [1].", "A fresh answer [1]."])
    first = ask(answerer)
    second = ask(answerer, "  are RETURNS accepted   within 30 days? ")  # same question, spelled loosely

    assert second.cached and not first.cached and len(chat.requests) == 1
    assert (second.text, second.citations, second.found) == (first.text, first.citations, first.found)
    assert second.usage == first.usage
    [row] = cached_rows(kb)
    assert row["collection"] == "handbook" and row["question"] == QUESTION
    assert set(row["documents"]) == {d.id for d in kb.documents("handbook")}

    fresh = ask(answerer, use_cache=False)
    assert fresh.text == "A fresh answer [1]." and not fresh.cached
    assert ask(answerer).text == "A fresh answer [1]."  # the fresh answer replaced the cached one
    other = ask(answerer, options=RetrievalOptions(mode="bm25"))  # other options: another entry
    assert not other.cached and len(cached_rows(kb)) == 2


def test_answers_with_history_are_not_cached(kb, answerer, chat):
    history = [Message(role="user", content="Hi"), Message(role="assistant", content="Hello!")]
    ask(answerer, history=history)
    again = ask(answerer, history=history)
    assert not again.cached and cached_rows(kb) == []
    assert [m.role for m in chat.requests[-1].messages] == ["system", "user", "assistant", "user"]


def test_cache_can_be_switched_off(kb, answerer, settings):
    settings.answer_cache = False
    ask(answerer)
    assert not ask(answerer).cached and cached_rows(kb) == []


def test_ingest_that_changes_the_collection_clears_the_cache(kb, answerer, docs):
    ask(answerer)
    run(kb.ingest("handbook", [docs]))  # nothing changed: the cache stays
    assert ask(answerer).cached

    (docs / "shipping.txt").write_text("Shipping costs 5 euros everywhere.\n")
    report = run(kb.ingest("handbook", [docs]))
    assert report.updated and cached_rows(kb) == []
    assert not ask(answerer).cached


def test_not_found_answers_are_cached_until_the_documents_change(kb, answerer, settings, docs):
    settings.min_relevance = 0.99
    assert not ask(answerer).found
    assert ask(answerer).cached
    (docs / "more.txt").write_text("Returns are accepted within 30 days.\n")
    run(kb.ingest("handbook", [docs]))
    assert not ask(answerer).cached


def test_stream_yields_text_then_the_answer(answerer, chat):
    chat.replies.append("Returns are accepted within 30 days [1].")

    async def collect():
        return [item async for item in answerer.stream("handbook", QUESTION)]

    items = run(collect())
    *chunks, final = items
    assert all(isinstance(c, GenerationChunk) for c in chunks)
    assert "".join(c.text for c in chunks) == "Returns are accepted within 30 days [1]."
    assert isinstance(final, Answer) and final.citations[0].index == 1 and final.usage.completion_tokens == 7


def test_stream_not_found(answerer, chat, settings):
    settings.min_relevance = 0.99

    async def collect():
        return [item async for item in answerer.stream("handbook", QUESTION)]

    chunk, final = run(collect())
    assert chunk.text == NOT_FOUND and not final.found and chat.requests == []


def test_unknown_collection_and_model(answerer):
    with pytest.raises(NotFound, match="collection 'nope' does not exist"):
        run(answerer.answer("nope", QUESTION))
    with pytest.raises(NotFound):
        run(answerer.answer("handbook", QUESTION, model="no-such-model"))


def _passages() -> list[Passage]:
    texts = [("Returns", "Returns are accepted within 30 days."), ("Shipping", "Parcels arrive in 3 days.")]
    return [Passage(Chunk(id=f"c{i}", document_id=f"d{i}", version="v", text=text, position=0,
                          source=f"{title.lower()}.md", title=title, heading=title), score=1.0, similarity=0.5)
            for i, (title, text) in enumerate(texts)]


def test_build_prompt_for_chat_models():
    spec = ModelSpec(name="chatty", provider="fake", location="memory")
    request = build_prompt("How long for returns?", _passages(), spec=spec,
                           history=[Message(role="user", content="earlier")])
    assert request.prompt is None and request.temperature == 0 and request.stop == []
    system, earlier, question = request.messages
    assert system.role == "system" and "Cite the source" in system.content
    first = system.content.index("[1] Returns\nReturns are accepted within 30 days.")
    assert system.content.index("[2] Shipping\nParcels arrive in 3 days.") > first
    assert (earlier.content, question.role, question.content) == ("earlier", "user", "How long for returns?")


def test_build_prompt_for_base_models():
    spec = ModelSpec(name="base", provider="fake", location="memory", options={"base_model": True})
    request = build_prompt("How long for returns?", _passages(), spec=spec)
    assert request.messages is None and request.temperature == 0 and request.max_tokens > 0
    assert "[1] Returns\nReturns are accepted within 30 days.\n[2] Shipping\nParcels arrive" in request.prompt
    tail = request.prompt[request.prompt.rindex("[2] Shipping"):]
    assert "\nQuestion: How long for returns?\nAnswer" in tail  # ends where the answer starts
    assert request.stop and all(stop.startswith("\n") for stop in request.stop)


def test_base_model_answers_from_a_completion_prompt(kb, hub, settings):
    hub.add(ModelSpec(name="fake-base", provider="fake", location="memory", capabilities=["completion"],
                      options={"base_model": True, "replies": [" Within 30 days [1]."]}))
    answer = run(GroundedAnswerer(kb=kb, hub=hub, settings=settings).answer("handbook", QUESTION,
                                                                            model="fake-base"))
    assert answer.text == "Within 30 days [1]." and answer.model == "fake-base"
    base = run(hub.load_chat("fake-base"))
    assert base.requests[0].messages is None and f"Question: {QUESTION}\nAnswer" in base.requests[0].prompt


def test_cite_without_passages():
    assert cite("Some answer [1].", []) == ("Some answer.", [])
    assert cite("  ", _passages()) == ("", [])


# -- summaries --------------------------------------------------------------------------------


LONG = "# Warehouse manual\n\n" + "\n\n".join(
    f"Step {n}: move pallet {n} from bay {n % 7} to the loading dock before {n % 12 + 1} o'clock, "
    f"then log pallet {n} as moved." for n in range(40)) + "\n"


@pytest.fixture()
def manual(kb, docs):
    (docs / "manual.md").write_text(LONG)
    run(kb.ingest("handbook", [docs]))
    return next(d for d in kb.documents("handbook") if d.source.endswith("manual.md"))


def test_summarise_a_short_document(kb, hub, chat):
    returns = next(d for d in kb.documents("handbook") if d.source.endswith("returns.md"))
    chat.replies.append("Returns within 30 days; refunds in 5 days.")
    summary = run(Summariser(kb=kb, hub=hub).summarise_document(returns.id))
    assert summary.text == "Returns within 30 days; refunds in 5 days."
    assert (summary.windows, summary.rounds, summary.documents) == (1, 0, [returns.id])
    assert summary.model == "fake-chat" and summary.usage.prompt_tokens > 0
    prompt = chat.requests[0].messages[0].content
    assert prompt.startswith("Summarise this text from 'Returns'")
    assert "30 days of purchase" in prompt and "original card" in prompt
    assert summary.to_dict()["usage"]["completion_tokens"] == 8


def test_long_document_is_mapped_then_reduced(kb, hub, chat, manual):
    assert manual.chunks > 3
    summary = run(Summariser(kb=kb, hub=hub, window_tokens=450).summarise_document(manual.id))
    assert summary.windows > 1 and summary.rounds >= 1
    assert len(chat.requests) == summary.windows + summary.rounds  # echoes are short: one window per round
    assert summary.text.startswith("echo: ")
    map_prompts = [r.messages[0].content for r in chat.requests[: summary.windows]]
    assert all(len(p.split()) <= 450 + 20 for p in map_prompts)  # a window, plus the instruction
    sent = " ".join(map_prompts)
    assert all(f"move pallet {n} from" in sent for n in range(40))  # every step read...
    assert sent.count("move pallet 17 from") == 1  # ...once: chunk overlaps are dropped


def test_summarise_a_collection(kb, hub, chat, manual):
    summary = run(Summariser(kb=kb, hub=hub, window_tokens=450).summarise_collection("handbook"))
    final_prompt = chat.requests[-1].messages[0].content
    documents = kb.documents("handbook")
    assert summary.documents == [d.id for d in documents] and len(documents) == 3
    per_document = [run(Summariser(kb=kb, hub=hub, window_tokens=450).summarise_document(d.id)).windows
                    for d in documents]
    assert summary.windows == sum(per_document) + 1 > len(documents) + 1
    assert summary.usage.prompt_tokens > 0 and summary.usage.completion_tokens > 0
    assert final_prompt.startswith("Summarise this text from 'handbook'")
    assert "Warehouse manual: echo:" in final_prompt and "Returns: echo:" in final_prompt


def test_summarise_errors(kb, hub):
    run(kb.create_collection("empty"))
    with pytest.raises(InvalidRequest, match="holds no documents yet"):
        run(Summariser(kb=kb, hub=hub).summarise_collection("empty"))
    with pytest.raises(NotFound):
        run(Summariser(kb=kb, hub=hub).summarise_document("no-such-document"))
    with pytest.raises(NotFound):
        run(Summariser(kb=kb, hub=hub).summarise_collection("nope"))


def test_empty_summary_falls_back_to_the_text(kb, hub, chat):
    shipping = next(d for d in kb.documents("handbook") if d.source.endswith("shipping.txt"))
    chat.replies.append("")
    summary = run(Summariser(kb=kb, hub=hub).summarise_document(shipping.id))
    assert summary.text == SHIPPING.strip()


def test_base_model_summary_prompt(kb, hub):
    hub.add(ModelSpec(name="fake-base", provider="fake", location="memory", capabilities=["completion"],
                      options={"base_model": True, "replies": ["A short policy."]}))
    returns = next(d for d in kb.documents("handbook") if d.source.endswith("returns.md"))
    summary = run(Summariser(kb=kb, hub=hub, model="fake-base").summarise_document(returns.id))
    request = run(hub.load_chat("fake-base")).requests[0]
    assert summary.text == "A short policy." and request.stop == ["\n\n"]
    assert request.prompt.startswith("Document: Returns\n\n") and request.prompt.endswith("two sentences:\n")


def test_summary_reads_only_the_current_version(kb, hub, chat, docs, monkeypatch):
    """A crash that left the old version's chunks behind must not mix them into the summary."""
    returns = next(d for d in kb.documents("handbook") if d.source.endswith("returns.md"))
    (docs / "returns.md").write_text("# Returns\n\nReturns are accepted within ninety days.\n")

    def die(*args, **kwargs):
        raise RuntimeError("killed before the old chunks went")

    monkeypatch.setattr(kb.vectors, "delete", die)
    with pytest.raises(RuntimeError):
        run(kb.ingest("handbook", [docs]))
    monkeypatch.undo()

    run(Summariser(kb=kb, hub=hub).summarise_document(returns.id))
    prompt = chat.requests[-1].messages[0].content
    assert "ninety days" in prompt and "original card" not in prompt


def test_without_overlap_joins_chunks_back():
    first = "Alpha beta gamma delta epsilon zeta eta theta. Iota kappa lambda mu nu xi omicron pi."
    second = "Iota kappa lambda mu nu xi omicron pi. Rho sigma tau upsilon phi chi psi omega."
    assert _without_overlap([first, second]) == [first, "Rho sigma tau upsilon phi chi psi omega."]
    assert _without_overlap(["short", "short"]) == ["short", "short"]  # too short to tell
