"""Scoring grounded answers against a question file, with the fake chat model."""

from __future__ import annotations

import asyncio
import json

from genfoundry.apps.answer import GroundedAnswerer
from genfoundry.apps.answer_eval import evaluate_answers
from genfoundry.knowledge.base import KnowledgeBase
from genfoundry.knowledge.stores.lance import LanceVectorStore

from tests.conftest import fake_spec


def test_answers_are_scored_right_cited_and_declined(settings, hub, tmp_path):
    hub.add(fake_spec("writer", options={"replies": ["Returns are accepted within 30 days [1].",
                                                     "Shipping is slow."]}))
    settings.min_relevance = 0.0  # fake embeddings: every question reaches the model
    kb = KnowledgeBase(settings=settings, store=hub.store, hub=hub, vectors=LanceVectorStore(tmp_path / "v"))
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "returns.md").write_text("# Returns\nReturns are accepted within 30 days of delivery.")
    asyncio.run(kb.ingest("kb", [docs], create=True))
    questions = tmp_path / "q.jsonl"
    questions.write_text("\n".join(json.dumps(q) for q in [
        {"question": "How long for returns?", "answer": "30 days", "source": "docs/returns.md", "keywords": ["30 days"]},
        {"question": "How fast is shipping?", "answer": "3 days", "source": "docs/shipping.md", "keywords": ["3 days"]},
    ]))
    figures = asyncio.run(evaluate_answers(GroundedAnswerer(kb=kb, hub=hub, settings=settings), "kb", questions,
                                           model="writer"))
    assert figures["answered_right"] == "1/2" and figures["cited_the_right_source"] == "1/2"
    assert figures["declined_unanswerable"] == "0/0" and figures["questions"] == 2
    assert [r["right"] for r in figures["answers"]] == [True, False]
