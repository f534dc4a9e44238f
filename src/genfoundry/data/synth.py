"""Synthetic question/answer pairs from a collection's chunks, filtered, with a count per filter.

Each row gets a chunk (the chunks are shuffled with ``seed`` and dealt round-robin, so
rows spread over the whole collection) and a question type, difficulty and persona
drawn with the same seed. In ``generative`` mode the model writes one question the chunk
answers, and the answer; in ``answer-first`` mode (``auto`` picks it for base models, such as
the built-in one) a whole sentence of the chunk is the answer and the model writes the question
it answers. The rows then pass these filters, in order, each reporting what it dropped:

- ``guard`` (only when it blocked some): the guard stopped the generation.
- ``parse``: the output holds a question and an answer ("Question: ...", "Answer: ..."); in
  answer-first mode, one line of at least three words ending in "?".
- ``near-duplicate``: the question is less similar than ``dedup_threshold`` (cosine) to
  every question kept before it.
- ``groundedness``: every claim of the answer is supported by the chunk (the guard's check).
  An answer of fewer than three terms must consist of words of the chunk.
- ``round-trip``: retrieving with the question brings the chunk back in the top ``retrieval_k``.
- ``answer-match`` (answer-first rows): of the chunk's sentences, the answer is the closest to
  the question.
- ``pii`` (with a detector): the question and answer hold no PII that the chunk does not.
- ``privacy`` (with seed examples): the question is at least ``privacy_min_distance``
  (1 - cosine) from every seed question, and ``dcr`` describes how far kept rows are.

Example::

    result = await synthesize_qa(kb, "handbook", SynthConfig(n=50), generate=direct_generate(hub),
                                 embed=embed)
    [step.to_dict() for step in result.steps]   # [{"name": "parse", "kept": 49, "dropped": 1}, ...]
"""

from __future__ import annotations

import asyncio
import functools
import random
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from genfoundry.apps.answer import Generate
from genfoundry.core.errors import InvalidRequest
from genfoundry.core.types import Chunk, GenerationRequest, Message
from genfoundry.guard.groundedness import DEFAULT_THRESHOLD, MIN_CLAIM_TERMS, check_groundedness, split_sentences
from genfoundry.guard.types import Embed, Rail
from genfoundry.knowledge.base import KnowledgeBase
from genfoundry.knowledge.retrieval import RetrievalOptions
from genfoundry.models.spec import ModelSpec

__all__ = ["FilterStep", "INSTRUCTION_TASKS", "SynthConfig", "SynthResult", "synthesize_instructions", "synthesize_qa"]

Progress = Callable[[int, int], None]

MAX_SHOTS = 3  # seed examples shown per prompt: more crowd out the chunk in a small model's context
TEMPERATURE = 0.8  # varied questions from the same chunk; each row's generation seed keeps it repeatable
_CONTEXT_CHARS = 1200  # of the chunk in the prompt (chunks are shorter by default)
_QUESTION = re.compile(r"^[\s>#*_-]*(?:question|q)\s*\d*\s*[*_]*\s*:[*_\s]*", re.IGNORECASE | re.MULTILINE)
# "Answer:" may also follow the question on its line; a bare "A:" only opens one.
_ANSWER = re.compile(r"(?:^[\s>#*_-]*(?:answer|a)|(?<=\s)[*_]*answer)\s*\d*\s*[*_]*\s*:[*_\s]*",
                     re.IGNORECASE | re.MULTILINE)
_STOPS = ["\nQuestion:"]  # a second pair: one is enough
# Worded as a documentation FAQ rather than as orders to the model: imperative wording ("reply in exactly
# this layout") is what prompt-injection classifiers flag, and the guard screens these prompts too.
_INSTRUCTIONS = ("FAQ entry ({difficulty}, {question_type}, asked by a {persona}), answered from the "
                 "documentation above.")


@dataclass
class SynthConfig:
    """What to generate and how strictly to filter it.

    Example::

        SynthConfig(n=100, question_types=("factual",), seeds=[{"question": "...", "answer": "..."}], seed=7)
    """

    n: int = 20  # rows wanted (before filters)
    model: str = "default"  # hub chat model name
    question_types: tuple[str, ...] = ("factual", "how-to", "why")
    difficulties: tuple[str, ...] = ("easy", "hard")
    personas: tuple[str, ...] = ("customer", "new employee")
    seeds: list[dict] = field(default_factory=list)  # few-shot examples {"question": ..., "answer": ...}
    seed: int = 0  # which chunk and which attributes each row gets
    dedup_threshold: float = 0.9  # question cosine at or above which a row repeats an earlier one
    grounded_threshold: float | None = None  # None: the groundedness rail's default
    retrieval_k: int = 5  # round-trip: the source chunk must be in the top k for the question
    privacy_min_distance: float = 0.1  # 1 - cosine: a row closer than this to a seed question is dropped
    max_tokens: int = 160
    # "generative": the model writes the question and the answer; "answer-first": a sentence of the chunk is
    # the answer and the model writes the question it answers (easier for a small model, and grounded by
    # construction); "auto": answer-first for base models, generative for chat models.
    mode: str = "auto"

    def check(self) -> None:
        if self.n < 1:
            raise InvalidRequest(f"n is {self.n}; ask for at least 1 row", param="n")
        if self.mode not in ("auto", "generative", "answer-first"):
            raise InvalidRequest("mode is auto, generative or answer-first", param="mode")
        for name in ("question_types", "difficulties", "personas"):
            if not getattr(self, name):
                raise InvalidRequest(f"{name} is empty; give at least one", param=name)
        if not 1 <= self.retrieval_k <= 100:
            raise InvalidRequest("retrieval_k must be between 1 and 100", param="retrieval_k")
        if not 0 < self.dedup_threshold <= 1:
            raise InvalidRequest("dedup_threshold must be in (0, 1]", param="dedup_threshold")
        if self.max_tokens < 8:
            raise InvalidRequest("max_tokens must be at least 8 to hold a question and an answer",
                                 param="max_tokens")
        for i, example in enumerate(self.seeds):
            if not (isinstance(example, dict) and all(isinstance(example.get(k), str) and example[k].strip()
                                                      for k in ("question", "answer"))):
                raise InvalidRequest(f"seed example {i} needs a non-empty 'question' and 'answer'",
                                     param="seeds")


@dataclass
class FilterStep:
    name: str
    kept: int
    dropped: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SynthResult:
    rows: list[dict]  # question, answer, context, chunk_id, document_id, collection, question_type, ...
    generated: int
    steps: list[FilterStep] = field(default_factory=list)
    dropped: list[dict] = field(default_factory=list)  # each row with "filter" and "reason"
    dcr: dict = field(default_factory=dict)  # distance (1 - cosine) of kept rows to the closest seed

    def to_dict(self) -> dict:
        return {"rows": self.rows, "generated": self.generated, "kept": len(self.rows),
                "steps": [s.to_dict() for s in self.steps], "dropped": self.dropped, "dcr": self.dcr}

    def _apply(self, name: str, rows: list[dict], reasons: list[str | None]) -> list[dict]:
        """Record one filter's verdicts (a reason drops the row) and return the rows it kept."""
        kept = [row for row, reason in zip(rows, reasons) if reason is None]
        self.dropped += [{**row, "filter": name, "reason": reason} for row, reason in zip(rows, reasons) if reason]
        self.steps.append(FilterStep(name=name, kept=len(kept), dropped=len(rows) - len(kept)))
        return kept


async def synthesize_qa(kb: KnowledgeBase, collection: str, config: SynthConfig, *, generate: Generate,
                        embed: Embed, pii: Rail | None = None, progress: Progress | None = None) -> SynthResult:
    """Generate ``config.n`` question/answer rows from ``collection`` and filter them (see the module).

    ``pii`` finds PII with ``check(text) -> list[Finding]`` (the guard's ``PiiDetector``);
    ``progress`` is called with (rows generated, rows wanted) after each generation.
    """
    config.check()
    chunks = await _chunks(kb, collection)
    spec = kb.hub.resolve(config.model)
    jobs = [(_request(plan, spec, config),
             functools.partial(_row, plan, spec=spec, collection=collection, config=config))
            for plan in _plan(chunks, config)]
    result, rows = await _generated(jobs, generate=generate, model=spec.name, progress=progress)
    rows = result._apply("near-duplicate", rows, await asyncio.to_thread(
        _near_duplicates, rows, embed, config.dedup_threshold))
    threshold = DEFAULT_THRESHOLD if config.grounded_threshold is None else config.grounded_threshold
    rows = result._apply("groundedness", rows, await asyncio.to_thread(_ungrounded, rows, embed, threshold))
    rows = result._apply("round-trip", rows, await _lost_in_retrieval(kb, collection, rows, config.retrieval_k))
    if any(r.get("mode") == "answer-first" for r in rows):
        rows = result._apply("answer-match", rows, await asyncio.to_thread(_mismatched_answers, rows, embed))
    if pii is not None:
        rows = result._apply("pii", rows, await asyncio.to_thread(_leaked_pii, rows, pii))
    if config.seeds:
        distances = await asyncio.to_thread(_seed_distances, rows, config.seeds, embed)
        reasons = [f"question is {d:.3f} from a seed question (minimum {config.privacy_min_distance})"
                   if d < config.privacy_min_distance else None for d in distances]
        rows = result._apply("privacy", rows, reasons)
        result.dcr = _distribution([d for d, r in zip(distances, reasons) if r is None])
    result.rows = rows
    return result


# Instruction pairs: the instruction comes from a template (every row's instruction is well formed, whatever
# the model), the response from the model, grounded in the chunk the instruction is about.
INSTRUCTION_TASKS = {
    "summarise": "Summarise this for a {persona} in one or two sentences.",
    "key-facts": "Give the key facts a {persona} needs from this.",
    "explain": "Explain this to a {persona} in plain words.",
    "reply": "Write a short, friendly reply to a {persona} who asked about this.",
}
_WORKED_RESPONSE = {
    "summarise": "The library opens 9:00-18:00 on weekdays and 10:00-14:00 on Saturdays; it is closed on Sundays "
                 "and public holidays.",
    "key-facts": "Weekdays 9:00-18:00. Saturdays 10:00-14:00. Closed on Sundays and public holidays.",
    "explain": "You can come in on any weekday between 9:00 and 18:00, or on Saturday between 10:00 and 14:00. "
               "On Sundays and public holidays it is closed.",
    "reply": "Thanks for asking! We are open 9:00-18:00 on weekdays and 10:00-14:00 on Saturdays, and closed on "
             "Sundays and public holidays.",
}
_INSTRUCTION_STOPS = ["\n\n", "\nInstruction:", "\nDocumentation:"]


async def synthesize_instructions(kb: KnowledgeBase, collection: str, config: SynthConfig, *, generate: Generate,
                                  embed: Embed, tasks: tuple[str, ...] = tuple(INSTRUCTION_TASKS),
                                  pii: Rail | None = None, progress: Progress | None = None) -> SynthResult:
    """Instruction/response rows about ``collection``'s chunks: a templated instruction (a task of ``tasks``
    for a persona of ``config.personas``) and the model's response, filtered by guard, parse (at least five
    words), near-duplicate responses, groundedness of the response in its chunk and, with ``pii``, PII the
    chunk does not hold. Each row also carries ``messages`` (the chat form, chunk included) for fine-tuning."""
    config.check()
    unknown = sorted(set(tasks) - set(INSTRUCTION_TASKS))
    if not tasks or unknown:
        raise InvalidRequest(f"tasks are {', '.join(INSTRUCTION_TASKS)}" + (f"; not {', '.join(unknown)}" if unknown
                                                                             else ""), param="tasks")
    chunks = await _chunks(kb, collection)
    spec = kb.hub.resolve(config.model)
    rng = random.Random(config.seed)
    jobs = []
    for plan in _plan(chunks, config):
        task = tasks[rng.randrange(len(tasks))]
        instruction = INSTRUCTION_TASKS[task].format(persona=plan["persona"])
        chunk = plan["chunk"]
        text = chunk.text[:_CONTEXT_CHARS].strip()
        common = {"max_tokens": config.max_tokens, "temperature": TEMPERATURE, "seed": plan["seed"]}
        if spec.options.get("base_model"):
            worked = (f"Documentation:\n{_WORKED['factual'][0]}\n\nInstruction: {instruction}\n"
                      f"Response: {_WORKED_RESPONSE[task]}\n\n")
            request = GenerationRequest(prompt=f"{worked}Documentation:\n{text}\n\nInstruction: {instruction}\n"
                                               f"Response:", stop=list(_INSTRUCTION_STOPS), **common)
        else:
            request = GenerationRequest(messages=[Message(role="user", content=f"{instruction}\n\n{text}")], **common)
        row = {"instruction": instruction, "context": chunk.text, "chunk_id": chunk.id,
               "document_id": chunk.document_id, "collection": collection, "task": task,
               "persona": plan["persona"], "model": spec.name}
        jobs.append((request, functools.partial(_response_row, row, f"{instruction}\n\n{text}")))
    result, rows = await _generated(jobs, generate=generate, model=spec.name, progress=progress)
    rows = result._apply("near-duplicate", rows, await asyncio.to_thread(
        _near_duplicates, rows, embed, config.dedup_threshold, "response"))
    threshold = DEFAULT_THRESHOLD if config.grounded_threshold is None else config.grounded_threshold
    rows = result._apply("groundedness", rows, await asyncio.to_thread(_ungrounded, rows, embed, threshold, "response"))
    if pii is not None:
        rows = result._apply("pii", rows, await asyncio.to_thread(_leaked_pii, rows, pii, ("response",)))
    result.rows = rows
    return result


async def _chunks(kb: KnowledgeBase, collection: str) -> list[Chunk]:
    chunks = await asyncio.to_thread(kb.chunks, collection)
    if not chunks:
        raise InvalidRequest(f"collection {collection!r} holds no chunks yet; ingest documents into it first "
                             f"(`genfoundry ingest {collection} PATH`)", param="collection")
    return chunks


async def _generated(jobs: list[tuple[GenerationRequest, Callable[[str], tuple[dict, str | None]]]], *,
                     generate: Generate, model: str, progress: Progress | None) -> tuple[SynthResult, list[dict]]:
    """Run each job's request and make its row from the text (``parse`` returns the row and why it does not
    parse, or None); a generation the guard blocks is dropped by "guard" (listed only when one was), an
    unparseable one by "parse". Returns the result so far and the rows both kept."""
    from genfoundry.guard.engine import GuardBlocked

    rows, blocked, unparsed = [], [], []
    for i, (request, parse) in enumerate(jobs):
        try:
            generation = await generate(model, request)
        except GuardBlocked as exc:  # one row's prompt or output the guard stopped: that row is dropped
            row, _ = parse("")
            blocked.append(f"blocked by the guard ({exc.rule})")
            unparsed.append(None)
        else:
            row, error = parse(generation.text)
            blocked.append(None)
            unparsed.append(error)
        rows.append(row)
        if progress is not None:
            progress(i + 1, len(jobs))
    result = SynthResult(rows=[], generated=len(rows))
    if any(blocked):
        rows, unparsed = result._apply("guard", rows, blocked), [e for e, b in zip(unparsed, blocked) if b is None]
    return result, result._apply("parse", rows, unparsed)


def _response_row(row: dict, prompt: str, text: str) -> tuple[dict, str | None]:
    response = _clean(text)
    row = {**row, "response": response, "messages": [{"role": "user", "content": prompt},
                                                     {"role": "assistant", "content": response}]}
    return row, None if len(response.split()) >= 5 else "response shorter than five words"


def _plan(chunks: list[Chunk], config: SynthConfig) -> list[dict]:
    """Each row's chunk, attributes, examples and generation seed, all from ``config.seed``."""
    rng = random.Random(config.seed)
    order = sorted(chunks, key=lambda c: c.id)  # the store's order is not part of the seed's promise
    rng.shuffle(order)
    plans = []
    for i in range(config.n):
        chunk = order[i % len(order)]
        sentences = _answerable(chunk.text)
        plans.append({"chunk": chunk, "sentence": rng.choice(sentences) if sentences else None,
                      "question_type": rng.choice(config.question_types),
                      "difficulty": rng.choice(config.difficulties), "persona": rng.choice(config.personas),
                      "shots": rng.sample(config.seeds, min(MAX_SHOTS, len(config.seeds))),
                      "seed": rng.randrange(2**31)})
    return plans


# A base model continues patterns rather than following instructions: it is shown one worked entry (a
# neutral library handbook, one per question type) in the very layout it is to continue.
_WORKED = {
    "factual": ("The city library is open from 9:00 to 18:00 on weekdays and from 10:00 to 14:00 on Saturdays. "
                "It is closed on Sundays and public holidays.",
                "When does the library open on Saturdays?", "At 10:00, and it closes at 14:00."),
    "how-to": ("To renew a book, sign in to your library account, open 'My loans' and press 'Renew' next to the "
               "book. A book can be renewed twice unless another reader has reserved it.",
               "How do I renew a book?", "Sign in to your library account, open 'My loans' and press 'Renew' "
               "next to the book."),
    "why": ("Late returns cost 0.50 per day because other readers are waiting for the books. The fee stops at "
            "10 per book.", "Why do late returns cost a fee?",
            "Because other readers are waiting for the books; it is 0.50 per day, at most 10 per book."),
}
_BASE_STOPS = ["\n\n", "\nDocumentation:", "\nQuestion:"]


_LABEL = re.compile(r"^(?:answer|a)\s*:\s*", re.IGNORECASE)


def _answerable(text: str) -> list[str]:
    """Sentences of a chunk that can answer a question: whole prose sentences of 5 to 60 words (capital or
    digit first, closing punctuation last), not headings, questions or fragments cut at a chunk's edge."""
    out = []
    for sentence in split_sentences(text):
        line = _LABEL.sub("", " ".join(sentence.split()).lstrip("-*# ").strip())
        if not 5 <= len(line.split()) <= 60 or not (line[0].isupper() or line[0].isdigit()):
            continue
        if line.endswith("?") or line.lower().startswith(("question", "q:")) or line[-1] not in ".!)\"'":
            continue
        out.append(line)
    return out


def _answer_first(spec: ModelSpec, config: SynthConfig) -> bool:
    return config.mode == "answer-first" or (config.mode == "auto" and bool(spec.options.get("base_model")))


def _entry_header(plan: dict) -> str:
    return f"A {plan['persona']} asks a {plan['difficulty']} {plan['question_type']} question.\n"


def _request(plan: dict, spec: ModelSpec, config: SynthConfig) -> GenerationRequest:
    """A base model gets a completion prompt: a worked entry, then the chunk, the seed examples and an open
    "Question:" to continue; a chat model gets the documentation and the FAQ wording as a user turn."""
    shots = "".join(f"Question: {s['question'].strip()}\nAnswer: {s['answer'].strip()}\n\n" for s in plan["shots"])
    chunk = plan["chunk"].text[:_CONTEXT_CHARS].strip()
    common = {"max_tokens": config.max_tokens, "temperature": TEMPERATURE, "seed": plan["seed"]}
    if _answer_first(spec, config) and plan["sentence"]:
        doc, question, answer = _WORKED.get(plan["question_type"], _WORKED["factual"])
        shots = "".join(f"Answer: {s['answer'].strip()}\nQuestion: {s['question'].strip()}\n\n" for s in plan["shots"])
        worked = f"Documentation:\n{doc}\n\nAnswer: {answer}\nQuestion: {question}\n\n"
        prompt = f"{worked}Documentation:\n{chunk}\n\n{shots}Answer: {plan['sentence']}\nQuestion:"
        return GenerationRequest(prompt=prompt, stop=["\n"], **{**common, "max_tokens": min(config.max_tokens, 48)})
    if spec.options.get("base_model"):
        doc, question, answer = _WORKED.get(plan["question_type"], _WORKED["factual"])
        worked = f"Documentation:\n{doc}\n\n{_entry_header(plan)}Question: {question}\nAnswer: {answer}\n\n"
        prompt = f"{worked}Documentation:\n{chunk}\n\n{shots}{_entry_header(plan)}Question:"
        return GenerationRequest(prompt=prompt, stop=list(_BASE_STOPS), **common)
    instructions = _INSTRUCTIONS.format(**{k: plan[k] for k in ("difficulty", "question_type", "persona")})
    examples = f"Other FAQ entries:\n\n{shots}" if shots else ""
    content = f"Documentation:\n{chunk}\n\n{examples}{instructions} (Question: / Answer:)"
    return GenerationRequest(messages=[Message(role="user", content=content)], stop=list(_STOPS), **common)


def _row(plan: dict, text: str, *, spec: ModelSpec, collection: str,
         config: SynthConfig | None = None) -> tuple[dict, str | None]:
    """The row for one generation, and why its output did not parse (None: it did)."""
    chunk = plan["chunk"]
    if config is not None and _answer_first(spec, config) and plan["sentence"]:
        question = _clean(text.split("\n")[0])
        parsed = (question, plan["sentence"]) if question.endswith("?") and len(question.split()) >= 3 else \
            "no question (a line of at least three words ending in '?')"
    else:
        if spec.options.get("base_model"):
            text = f"Question:{text}"  # the prompt ended with it
        parsed = _parse_pair(text)
    question, answer = parsed if isinstance(parsed, tuple) else ("", "")
    row = {"question": question, "answer": answer, "context": chunk.text, "chunk_id": chunk.id,
           "document_id": chunk.document_id, "collection": collection,
           **{k: plan[k] for k in ("question_type", "difficulty", "persona")}, "model": spec.name}
    if config is not None:
        row["mode"] = "answer-first" if _answer_first(spec, config) and plan["sentence"] else "generative"
    if isinstance(parsed, str):
        row["output"] = text  # what the model wrote, to see why it did not parse
        return row, parsed
    return row, None


def _parse_pair(text: str) -> tuple[str, str] | str:
    """(question, answer) from "Question: ...\\nAnswer: ..." (also "Q:"/"A:", markdown bold), else why not."""
    question = _QUESTION.search(text or "")
    if question is None:
        return "no 'Question:' in the output"
    answer = _ANSWER.search(text, question.end())
    if answer is None:
        return "no 'Answer:' after the question"
    following = _QUESTION.search(text, answer.end())  # a second pair is not part of this answer
    q = _clean(text[question.end():answer.start()])
    a = _clean(text[answer.end():following.start() if following else len(text)])
    if not q or not a:
        return "empty question" if not q else "empty answer"
    return q, a


def _clean(text: str) -> str:
    return " ".join(text.split()).strip("*_\"' ")


def _vectors(embed: Embed, texts: list[str]) -> np.ndarray:
    return np.asarray(embed(texts), dtype=np.float32) if texts else np.zeros((0, 0), dtype=np.float32)


def _near_duplicates(rows: list[dict], embed: Embed, threshold: float, field: str = "question") -> list[str | None]:
    vectors = _vectors(embed, [r[field] for r in rows])
    kept: list[int] = []
    reasons: list[str | None] = []
    for i in range(len(rows)):
        similarity = vectors[kept] @ vectors[i] if kept else np.zeros(0)
        if similarity.size and similarity.max() >= threshold:
            twin = rows[kept[int(similarity.argmax())]][field]
            reasons.append(f"{field} has cosine {similarity.max():.3f} to kept {field} {twin[:120]!r}")
        else:
            reasons.append(None)
            kept.append(i)
    return reasons


_TERM = re.compile(r"[a-z0-9][a-z0-9'-]*[a-z0-9]|[0-9]", re.IGNORECASE)
_FILLER = {"yes", "no", "the", "and", "for", "you", "your", "are", "can", "not", "with", "this", "that", "our"}


def _short_unsupported(answer: str, context: str) -> str | None:
    """The groundedness check sees no claim in an answer of a few words ("Yes.", "The Lamm Sleepers"), so
    each of its words must be in the source chunk, and it must hold at least one such word."""
    terms = {t.lower() for t in _TERM.findall(answer)} - _FILLER
    if len(terms) >= MIN_CLAIM_TERMS:
        return None
    if not terms:
        return "answer too short to check against its source"
    held = {t.lower() for t in _TERM.findall(context)}
    missing = sorted(terms - held)
    return f"short answer with words not in its source: {', '.join(missing)}" if missing else None


def _ungrounded(rows: list[dict], embed: Embed, threshold: float, field: str = "answer") -> list[str | None]:
    reasons: list[str | None] = []
    for row in rows:
        short = _short_unsupported(row[field], row["context"])
        if short is not None:
            reasons.append(short)
            continue
        report = check_groundedness(row[field], [row["context"]], embed=embed, threshold=threshold)
        unsupported = report.unsupported
        reasons.append(f"supported_share {report.supported_share:.2f} at threshold {threshold}; unsupported: "
                       f"{unsupported[0].text!r}" if unsupported else None)
    return reasons


def _mismatched_answers(rows: list[dict], embed: Embed) -> list[str | None]:
    """Answer-first rows: of the chunk's sentences, the one given as the answer must be the closest to the
    question (a round trip within the chunk: the question asks for that sentence, not another)."""
    reasons: list[str | None] = []
    for row in rows:
        if row.get("mode") != "answer-first":
            reasons.append(None)
            continue
        candidates = _answerable(row["context"])
        if row["answer"] not in candidates or len(candidates) == 1:
            reasons.append(None)
            continue
        vectors = _vectors(embed, [row["question"], *candidates])
        scores = vectors[1:] @ vectors[0]
        best = int(np.argmax(scores))
        reasons.append(None if candidates[best] == row["answer"] else
                       f"the question matches another sentence of the chunk better: {candidates[best][:80]!r}")
    return reasons


async def _lost_in_retrieval(kb: KnowledgeBase, collection: str, rows: list[dict], k: int) -> list[str | None]:
    reasons: list[str | None] = []
    for row in rows:
        passages = await kb.retrieve(collection, row["question"], RetrievalOptions(limit=k))
        found = [p.chunk.id for p in passages]
        reasons.append(None if row["chunk_id"] in found else
                       f"source chunk not in the top {k} for the question; top hit: "
                       f"{found[0] if found else 'nothing'}")
    return reasons


def _leaked_pii(rows: list[dict], pii, fields: tuple[str, ...] = ("question", "answer")) -> list[str | None]:
    """PII in the generated fields that the chunk does not hold (the model made it up or moved it)."""
    reasons: list[str | None] = []
    for row in rows:
        context = row["context"].lower()
        leaked = sorted({f"{part} {f.kind}" for part in fields for f in pii.check(row[part])
                         if f.start is None or row[part][f.start:f.end].lower() not in context})
        # Entity kinds only: the reason is logged, the values must not be.
        reasons.append(f"PII not in the source chunk: {', '.join(leaked)}" if leaked else None)
    return reasons


def _seed_distances(rows: list[dict], seeds: list[dict], embed: Embed) -> list[float]:
    """Each row's distance (1 - cosine) from its question to the closest seed question."""
    if not rows:
        return []
    vectors = _vectors(embed, [r["question"] for r in rows] + [s["question"] for s in seeds])
    similarity = vectors[:len(rows)] @ vectors[len(rows):].T
    return [float(1 - s) for s in similarity.max(axis=1)]


def _distribution(distances: list[float]) -> dict:
    if not distances:
        return {}
    values = np.asarray(distances)
    return {"min": round(float(values.min()), 4), "p5": round(float(np.percentile(values, 5)), 4),
            "p50": round(float(np.percentile(values, 50)), 4), "mean": round(float(values.mean()), 4)}
