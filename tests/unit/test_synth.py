"""Synthetic question/answer rows from a collection, with fake models and a scripted generator.

Four one-chunk documents with distinct words make a collection; the scripted
``generate`` answers each prompt by the chunk it shows, so each test decides what
the "model" wrote for which chunk and checks which filter drops it.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from genfoundry.core.errors import InvalidRequest, NotFound
from genfoundry.core.types import Generation, GenerationRequest
from genfoundry.data.synth import SynthConfig, SynthResult, synthesize_qa
from genfoundry.guard.types import Finding
from genfoundry.knowledge.base import KnowledgeBase
from genfoundry.knowledge.stores.lance import LanceVectorStore
from tests.conftest import fake_spec

DOCS = {
    "returns": "Returns are accepted within 30 days of purchase with a receipt. Refunds go back to the original card.",
    "shipping": "Shipping is free for orders over 50 euros. Parcels usually arrive by courier in three weekdays.",
    "warranty": "Backpacks carry a ten year warranty against broken zips and torn seams.",
    "hours": "The shop opens at nine in the morning and closes at six in the evening. "
             "Write to hello@shop.example with questions.",
}
GOOD = {
    "returns": "Question: How many days do I have for returns with a receipt?\n"
               "Answer: Returns are accepted within 30 days of purchase with a receipt.",
    "shipping": "Question: When is shipping free for orders?\nAnswer: Shipping is free for orders over 50 euros.",
    "warranty": "Question: How long is the warranty on backpacks?\n"
                "Answer: Backpacks carry a ten year warranty against broken zips.",
    "hours": "Question: When does the shop open and close?\n"
             "Answer: The shop opens at nine in the morning and closes at six in the evening.",
}


def run(coro):
    return asyncio.run(coro)


def embed(texts: list[str]) -> np.ndarray:
    """Hashed bag of words, L2-normalised: texts sharing words are close, others near 0."""
    out = np.zeros((len(texts), 1024), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in re.findall(r"[a-z0-9]+", text.lower()):
            out[i, int(hashlib.sha256(word.encode()).hexdigest(), 16) % 1024] += 1.0
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


class ScriptedGenerate:
    """A ``Generate`` that answers by the chunk the prompt shows: ``replies[topic]``, in turn (the last repeats)."""

    def __init__(self, **replies: str | list[str]):
        self.replies = {topic: [r] if isinstance(r, str) else list(r) for topic, r in {**GOOD, **replies}.items()}
        self.requests: list[tuple[str, GenerationRequest]] = []

    async def __call__(self, model: str, request: GenerationRequest) -> Generation:
        self.requests.append((model, request))
        text = request.prompt or "\n".join(m.content or "" for m in request.messages or [])
        topic = next(t for t, doc in DOCS.items() if doc in text)
        queue = self.replies[topic]
        return Generation(text=queue.pop(0) if len(queue) > 1 else queue[0])


class EmailFinder:
    """A PII detector for e-mail addresses only (the guard's PiiDetector needs spaCy)."""

    name = "pii"

    def warm_up(self) -> None:
        return None

    def check(self, text: str) -> list[Finding]:
        return [Finding("pii", "EMAIL_ADDRESS", 1.0, m.start(), m.end()) for m in re.finditer(r"\S+@\S+\w", text)]


@pytest.fixture()
def kb(settings, store, hub, tmp_path):
    # A wide fake embedding: the default 32 dimensions collide too often for top-1 retrieval to be exact.
    hub.add(fake_spec("fake-embed-wide", capabilities=["embedding"], options={"dimensions": 1024}))
    kb = KnowledgeBase(settings=settings, store=store, hub=hub, vectors=LanceVectorStore(settings.vectors_dir))
    folder = tmp_path / "docs"
    folder.mkdir()
    for topic, text in DOCS.items():
        (folder / f"{topic}.txt").write_text(text + "\n")
    run(kb.create_collection("handbook", embedding_model="fake-embed-wide"))
    run(kb.ingest("handbook", [folder.resolve()]))
    yield kb
    kb.close()


def synth(kb, generate=None, **config) -> SynthResult:
    config.setdefault("n", 4)
    config.setdefault("retrieval_k", 1)
    extra = {k: config.pop(k) for k in ("pii", "progress") if k in config}
    return run(synthesize_qa(kb, "handbook", SynthConfig(**config), generate=generate or ScriptedGenerate(),
                             embed=embed, **extra))


def pair(topic: str) -> tuple[str, str]:
    """The (question, answer) of ``GOOD[topic]``."""
    question, answer = GOOD[topic].split("\n")
    return question.removeprefix("Question: "), answer.removeprefix("Answer: ")


def topic_of(row: dict) -> str:
    return next(t for t, doc in DOCS.items() if doc == row["context"].strip())


def dropped_by(result: SynthResult, name: str) -> list[dict]:
    return [d for d in result.dropped if d["filter"] == name]


def test_rows_carry_their_lineage(kb):
    result = synth(kb)
    chunks = {c.id: c for c in kb.vectors.get("handbook")}
    documents = {Path(d.source).stem: d.id for d in kb.documents("handbook")}
    assert sorted(topic_of(r) for r in result.rows) == sorted(DOCS)  # round-robin: every chunk once
    for row in result.rows:
        topic = topic_of(row)
        assert row["chunk_id"] in chunks and chunks[row["chunk_id"]].text == row["context"]
        assert row["document_id"] == documents[topic]
        assert (row["question"], row["answer"]) == pair(topic)
        assert row["collection"] == "handbook" and row["model"] == "fake-chat"
        assert row["question_type"] in ("factual", "how-to", "why") and row["difficulty"] in ("easy", "hard")
        assert row["persona"] in ("customer", "new employee")
    assert [s.to_dict() for s in result.steps] == [
        {"name": n, "kept": 4, "dropped": 0} for n in ("parse", "near-duplicate", "groundedness", "round-trip")]
    assert result.to_dict()["kept"] == 4 and result.dcr == {}


def test_a_repeated_question_is_dropped_as_a_near_duplicate(kb):
    result = synth(kb, n=8)  # each chunk twice, and the script writes the same pair both times
    assert result.generated == 8 and len(result.rows) == 4
    dupes = dropped_by(result, "near-duplicate")
    assert len(dupes) == 4 and all("cosine 1.000" in d["reason"] for d in dupes)
    assert sorted(topic_of(d) for d in dupes) == sorted(DOCS)


def test_an_answer_its_chunk_does_not_hold_is_dropped_by_groundedness(kb):
    generate = ScriptedGenerate(warranty="Question: How long is the warranty on backpacks?\n"
                                         "Answer: The cafeteria serves lasagne every Thursday for lunch.")
    result = synth(kb, generate=generate)
    [dropped] = dropped_by(result, "groundedness")
    assert topic_of(dropped) == "warranty" and "supported_share 0.00" in dropped["reason"]
    assert "warranty" not in {topic_of(r) for r in result.rows} and len(result.rows) == 3


def test_a_question_that_finds_another_chunk_is_dropped_by_the_round_trip(kb):
    # Grounded in the warranty chunk, but the question is about opening hours.
    generate = ScriptedGenerate(warranty="Question: When does the shop open in the morning?\n"
                                         "Answer: Backpacks carry a ten year warranty against broken zips.")
    result = synth(kb, generate=generate)
    [dropped] = dropped_by(result, "round-trip")
    assert topic_of(dropped) == "warranty" and "top 1" in dropped["reason"]
    hours_chunk = next(c.id for c in kb.vectors.get("handbook") if "shop opens" in c.text)
    assert hours_chunk in dropped["reason"]
    assert [s.name for s in result.steps][-1] == "round-trip" and result.steps[-1].dropped == 1
    # With the top 4 of 4 chunks, the same question passes.
    assert not dropped_by(synth(kb, generate=ScriptedGenerate(warranty=generate.replies["warranty"]),
                                retrieval_k=4), "round-trip")


def test_a_copied_seed_question_is_dropped_by_privacy_and_dcr_is_reported(kb):
    question, answer = pair("returns")
    generate = ScriptedGenerate()
    result = synth(kb, generate=generate, seeds=[{"question": question, "answer": answer}])
    [dropped] = dropped_by(result, "privacy")
    assert topic_of(dropped) == "returns" and "0.000 from a seed question" in dropped["reason"]
    assert len(result.rows) == 3 and result.steps[-1].to_dict() == {"name": "privacy", "kept": 3, "dropped": 1}
    assert set(result.dcr) == {"min", "p5", "p50", "mean"}
    assert 0.1 <= result.dcr["min"] <= result.dcr["p50"] <= 1.0
    # The seed is shown to the model as an example.
    assert all(f"Question: {question}\nAnswer: {answer}" in r.messages[0].content for _, r in generate.requests)


def test_unparseable_output_is_dropped_by_parse(kb):
    result = synth(kb, generate=ScriptedGenerate(hours="I am sorry, I cannot help with that.",
                                                 shipping="Question: When is shipping free?\nAnswer:"))
    parse = {topic_of(d): d for d in dropped_by(result, "parse")}
    assert set(parse) == {"hours", "shipping"}
    assert parse["hours"]["reason"] == "no 'Question:' in the output"
    assert parse["hours"]["output"] == "I am sorry, I cannot help with that."
    assert parse["shipping"]["reason"] == "empty answer"
    assert result.steps[0].to_dict() == {"name": "parse", "kept": 2, "dropped": 2}


def test_pii_the_chunk_does_not_hold_is_dropped(kb):
    generate = ScriptedGenerate(
        returns="Question: How many days do I have for returns with a receipt?\n"
                "Answer: Returns are accepted within 30 days of purchase with a receipt, write to ann@mail.example.",
        hours="Question: When does the shop open and close?\nAnswer: The shop opens at nine in the morning. "
              "Write to hello@shop.example with questions.")
    result = synth(kb, generate=generate, pii=EmailFinder(), retrieval_k=4)
    [dropped] = dropped_by(result, "pii")
    assert topic_of(dropped) == "returns"
    assert dropped["reason"] == "PII not in the source chunk: answer EMAIL_ADDRESS"
    assert "ann@" not in dropped["reason"]  # the reason names kinds, never values
    assert "hours" in {topic_of(r) for r in result.rows}  # its address is in the chunk


def test_counts_add_up_across_the_filters(kb):
    generate = ScriptedGenerate(
        hours=["no layout at all", GOOD["hours"]],
        warranty=["Question: How long is the warranty on backpacks?\nAnswer: Lasagne is served on Thursday.",
                  ("Question: When does the shop open in the morning?\nAnswer: "
                   "Backpacks carry a ten year warranty against broken zips.")])
    question, answer = pair("shipping")
    result = synth(kb, generate=generate, n=10, seeds=[{"question": question, "answer": answer}])
    steps = {s.name: s.dropped for s in result.steps}
    assert all(steps[name] >= 1 for name in ("parse", "near-duplicate", "groundedness", "round-trip", "privacy"))
    assert result.generated == 10 == len(result.rows) + sum(steps.values())
    assert len(result.dropped) == sum(steps.values())
    for before, after in zip(result.steps, result.steps[1:]):
        assert after.kept + after.dropped == before.kept
    assert result.steps[-1].kept == len(result.rows)


def test_the_same_seed_gives_the_same_rows(kb):
    first, again, other = (synth(kb, n=6, seed=s) for s in (3, 3, 4))
    assert first.to_dict() == again.to_dict()

    def plan(result):
        return [(topic_of(r), r["question_type"], r["difficulty"], r["persona"]) for r in result.rows]
    assert plan(first) != plan(other)
    # The chunks are shuffled by the seed too, not only the attributes.
    assert [topic_of(r) for r in first.rows] != [topic_of(r) for r in other.rows]


def test_base_models_get_a_worked_example_completion_prompt(kb, hub):
    hub.add(fake_spec("fake-base", options={"base_model": True, "chat_template": "gemma"}))
    generate = ScriptedGenerate(**{t: reply.removeprefix("Question:") for t, reply in GOOD.items()})
    progress: list[tuple[int, int]] = []
    result = synth(kb, generate=generate, model="fake-base", mode="generative",
                   progress=lambda *step: progress.append(step))
    model, request = generate.requests[0]
    assert model == "fake-base" and request.messages is None
    # A worked entry in the layout to continue, then this row's chunk and attributes, open at "Question:".
    assert request.prompt.startswith("Documentation:\n") and request.prompt.count("Documentation:\n") == 2
    assert request.prompt.endswith("question.\nQuestion:") and "\nAnswer: " in request.prompt
    chunk_text = request.prompt.split("Documentation:\n")[2]
    assert any(doc in chunk_text for doc in DOCS.values())
    assert "\n\n" in request.stop and request.max_tokens == 160
    assert len(result.rows) == 4 and all(r["model"] == "fake-base" for r in result.rows)
    assert progress == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_bad_requests_are_refused(kb):
    run(kb.create_collection("empty"))
    with pytest.raises(InvalidRequest, match="holds no chunks"):
        run(synthesize_qa(kb, "empty", SynthConfig(), generate=ScriptedGenerate(), embed=embed))
    with pytest.raises(NotFound):
        run(synthesize_qa(kb, "nowhere", SynthConfig(), generate=ScriptedGenerate(), embed=embed))
    with pytest.raises(InvalidRequest, match="at least 1 row"):
        synth(kb, n=0)
    with pytest.raises(InvalidRequest, match="seed example 0"):
        synth(kb, seeds=[{"question": "only a question"}])


def test_a_row_the_guard_blocks_is_dropped_and_the_run_goes_on(kb):
    from genfoundry.guard.engine import GuardBlocked

    scripted = ScriptedGenerate()

    async def guarded(model, request):
        text = request.prompt or "\n".join(m.content or "" for m in request.messages or [])
        if DOCS["warranty"] in text:
            raise GuardBlocked("blocked by guard rule 'input.injection'", rule="input.injection")
        return await scripted(model, request)

    result = synth(kb, generate=guarded)
    [blocked] = dropped_by(result, "guard")
    assert topic_of(blocked) == "warranty" and "input.injection" in blocked["reason"]
    assert result.steps[0].to_dict() == {"name": "guard", "kept": 3, "dropped": 1}
    assert result.steps[1].to_dict() == {"name": "parse", "kept": 3, "dropped": 0}
    assert len(result.rows) == 3 and result.generated == 4


def test_short_answers_must_be_made_of_words_from_the_source(kb):
    generate = ScriptedGenerate(warranty="Question: How long is the warranty?\nAnswer: Yes.",
                                hours=["Question: When does the shop open?\nAnswer: The Lamm Sleepers"])
    result = synth(kb, generate=generate)
    reasons = {topic_of(d): d["reason"] for d in dropped_by(result, "groundedness")}
    assert reasons["warranty"] == "answer too short to check against its source"
    assert reasons["hours"].startswith("short answer with words not in its source: lamm, sleepers")
    assert len(result.rows) == 2


QUESTIONS = {"returns": " How many days do I have to return something?", "shipping": " When is shipping free?",
             "warranty": " How long is the warranty on backpacks?", "hours": " When does the shop open?"}
HOURS = DOCS["hours"].split(". ")  # two sentences: opening hours, then the e-mail address


class AnswerFirstGenerate(ScriptedGenerate):
    """Writes the question for the sentence the prompt gives as the answer (its words, as a question); with
    ``wrong_for``: for that topic, a question asking for the chunk's other sentence."""

    def __init__(self, wrong_for: str | None = None):
        super().__init__()
        self.wrong_for = wrong_for

    async def __call__(self, model: str, request: GenerationRequest) -> Generation:
        self.requests.append((model, request))
        given = re.findall(r"Answer: (.*)\nQuestion:$", request.prompt)[0]
        if self.wrong_for == "hours" and given.startswith(HOURS[0][:12]):
            return Generation(text=" Who do I write to at hello@shop.example with questions?")
        if self.wrong_for == "hours" and given.startswith("Write"):
            return Generation(text=" When does the shop open in the morning and close in the evening?")
        return Generation(text=f" Is it so that {given.rstrip('.').lower()}?")


def test_answer_first_mode_takes_a_sentence_of_the_chunk_as_the_answer(kb, hub):
    hub.add(fake_spec("fake-base", options={"base_model": True}))
    generate = AnswerFirstGenerate()
    result = synth(kb, generate=generate, model="fake-base")  # auto: answer-first for a base model
    _, request = generate.requests[0]
    assert request.prompt.endswith("\nQuestion:") and request.stop == ["\n"] and request.max_tokens <= 48
    assert len(result.rows) == 4 and all(r["mode"] == "answer-first" for r in result.rows)
    for row in result.rows:
        assert row["answer"] in " ".join(row["context"].split())  # a sentence of its chunk, word for word
        assert row["question"] == f"Is it so that {row['answer'].rstrip('.').lower()}?"


def test_answer_first_output_that_is_not_a_question_is_dropped(kb, hub):
    hub.add(fake_spec("fake-base", options={"base_model": True}))
    generate = ScriptedGenerate(**{**QUESTIONS, "warranty": " Backpacks are great"})
    result = synth(kb, generate=generate, model="fake-base")
    [dropped] = dropped_by(result, "parse")
    assert topic_of(dropped) == "warranty" and "ending in '?'" in dropped["reason"]
    with pytest.raises(InvalidRequest, match="mode"):
        synth(kb, mode="creative")


def test_answer_first_drops_a_question_that_asks_for_another_sentence_of_the_chunk(kb, hub):
    hub.add(fake_spec("fake-base", options={"base_model": True}))
    result = synth(kb, generate=AnswerFirstGenerate(wrong_for="hours"), model="fake-base", n=8)
    mismatched = dropped_by(result, "answer-match")
    # The hours chunk's two rows: each mismatched, unless both drew the same sentence (then the second is a
    # near-duplicate of the first).
    assert 1 <= len(mismatched) <= 2 and all(topic_of(d) == "hours" for d in mismatched)
    assert all("matches another sentence" in d["reason"] for d in mismatched)
    assert {topic_of(r) for r in result.rows} == {"returns", "shipping", "warranty"}


class ResponseGenerate(ScriptedGenerate):
    """Responds with the first sentence of the chunk the prompt shows (grounded), or ``replies[topic]``."""

    def __init__(self, **replies):
        super().__init__()
        self.by_topic = replies

    async def __call__(self, model: str, request: GenerationRequest) -> Generation:
        self.requests.append((model, request))
        text = request.prompt or request.messages[0].content
        topic = next(t for t, doc in DOCS.items() if doc in text)
        return Generation(text=" " + self.by_topic.get(topic, DOCS[topic].split(". ")[0] + "."))


def test_instruction_pairs_carry_templated_instructions_and_grounded_responses(kb, hub):
    from genfoundry.data.synth import INSTRUCTION_TASKS, synthesize_instructions

    hub.add(fake_spec("fake-base", options={"base_model": True}))
    generate = ResponseGenerate(warranty="The cafeteria serves lasagne every Thursday for lunch today.",
                                hours="Yes.")
    result = run(synthesize_instructions(kb, "handbook", SynthConfig(n=4, model="fake-base"), generate=generate,
                                         embed=embed))
    assert result.generated == 4 and {s.name for s in result.steps} == {"parse", "near-duplicate", "groundedness"}
    assert {topic_of(d): d["filter"] for d in result.dropped} == {"warranty": "groundedness", "hours": "parse"}
    assert len(result.rows) == 2
    for row in result.rows:
        assert row["task"] in INSTRUCTION_TASKS and row["persona"] in row["instruction"]
        assert row["response"] and row["response"] in row["context"]
        assert row["messages"][0]["role"] == "user" and row["context"].strip() in row["messages"][0]["content"]
        assert row["messages"][1] == {"role": "assistant", "content": row["response"]}
    prompt = generate.requests[0][1].prompt
    assert prompt.count("Instruction: ") == 2 and prompt.endswith("\nResponse:")
    with pytest.raises(InvalidRequest, match="tasks are"):
        run(synthesize_instructions(kb, "handbook", SynthConfig(n=1), generate=generate, embed=embed, tasks=("poem",)))
