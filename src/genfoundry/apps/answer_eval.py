"""How well grounded answers come out on a question set with expected answers.

Each line of the question file is ``{"question", "answer", "source", "keywords"}``;
``answer`` null means the documents do not hold it. A question counts as answered
right when every keyword appears in the answer (any case), as cited right when its
source is among the citations, and an unanswerable one as declined when the answer
says it could not find it. The shipped sample knowledge base has such a file
(:data:`genfoundry.knowledge.SAMPLE_QUESTIONS`).

Example::

    figures = await evaluate_answers(answerer, "sample", SAMPLE_QUESTIONS)
    figures["answered_right"]  # e.g. "16/25"
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from genfoundry.apps.answer import NOT_FOUND, GroundedAnswerer
from genfoundry.knowledge.retrieval import RetrievalOptions

__all__ = ["evaluate_answers"]


async def evaluate_answers(answerer: GroundedAnswerer, collection: str, questions: Path, *,
                           model: str = "default") -> dict:
    """Ask every question (no cache) and score the answers; returns figures and each answer."""
    items = [json.loads(line) for line in questions.read_text().splitlines() if line.strip()]
    rows, latencies = [], []
    for item in items:
        answer = await answerer.answer(collection, item["question"], model=model, options=RetrievalOptions(),
                                       use_cache=False)
        latencies.append(answer.latency_ms)
        text = answer.text.lower()
        sources = [c.source for c in answer.citations]
        if item.get("answer") is None:
            row = {"declined": answer.text == NOT_FOUND or "could not find" in text}
        else:
            row = {"right": all(k.lower() in text for k in item.get("keywords", [])),
                   "cited": any(s.endswith(Path(item["source"]).name) for s in sources)}
        rows.append({"question": item["question"], "expected": item.get("answer"), "answer": answer.text,
                     "sources": sources, **row})
    answerable = [r for r in rows if r["expected"] is not None]
    unanswerable = [r for r in rows if r["expected"] is None]
    return {
        "model": answerer.hub.resolve(model).name,
        "questions": len(rows),
        "answered_right": f"{sum(r['right'] for r in answerable)}/{len(answerable)}",
        "cited_the_right_source": f"{sum(r['cited'] for r in answerable)}/{len(answerable)}",
        "declined_unanswerable": f"{sum(r['declined'] for r in unanswerable)}/{len(unanswerable)}",
        "latency_ms_p50": round(statistics.median(latencies), 1) if latencies else None,
        "scoring": "right: every expected keyword in the answer; cited: the expected file among the citations; "
                   "declined: the answer says the documents do not hold it",
        "answers": rows,
    }
