"""Dataset rows → token sequences for supervised fine-tuning.

Three record formats (``auto`` picks by the columns a dataset has):

- ``chat``: a ``messages`` column (``[{"role", "content"}, ...]``); rendered in the
  same turn format the llama.cpp provider serves the model with, so the tuned
  model sees at serving time exactly the text it was trained on. Loss on every
  assistant turn, its end-of-turn marker included (that is what teaches it to stop).
- ``completion``: ``prompt`` and ``completion`` columns; loss on the completion
  and the end-of-sequence token.
- ``text``: a ``text`` column; loss on every token (continued pre-training).

Prompt tokens are masked (label -100). Sequences are packed first-fit into
blocks of at most ``max_length`` tokens with position ids that restart at each
example: transformers then gives each example an attention mask of its own, so
packed examples never see each other.

Example::

    examples, report = encode_rows(rows, tokenizer, template, fmt="auto", max_length=512)
    blocks = pack(examples, max_length=512)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from genfoundry.core.errors import InvalidRequest
from genfoundry.core.types import Message
from genfoundry.models.prompting import TurnTemplate, render_chat

__all__ = ["Encoded", "EncodeReport", "FORMATS", "detect_format", "encode_rows", "pack"]

FORMATS = ("auto", "chat", "completion", "text")
IGNORE = -100


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]

    @property
    def trained_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


@dataclass
class EncodeReport:
    format: str
    rows: int = 0
    examples: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> rows
    truncated: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    first_errors: list[str] = field(default_factory=list)

    def skip(self, reason: str, where: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if len(self.first_errors) < 5:
            self.first_errors.append(f"{where}: {reason}")

    def to_dict(self) -> dict:
        return {"format": self.format, "rows": self.rows, "examples": self.examples, "skipped": self.skipped,
                "truncated": self.truncated, "tokens": self.tokens, "trained_tokens": self.trained_tokens}


def detect_format(columns: list[str] | set[str], fmt: str = "auto") -> str:
    """The record format for a dataset with these columns; a clear error when they do not fit."""
    cols = set(columns)
    need = {"chat": {"messages"}, "completion": {"prompt", "completion"}, "text": {"text"}}
    if fmt not in FORMATS:
        raise InvalidRequest(f"format must be one of {', '.join(FORMATS)}", param="format")
    if fmt == "auto":
        for name in ("chat", "completion", "text"):
            if need[name] <= cols:
                return name
        raise InvalidRequest(
            "the dataset has none of the columns fine-tuning reads: 'messages' (chat), 'prompt' + 'completion', "
            f"or 'text'; it has {', '.join(sorted(c for c in cols if c not in ('_id', 'split')))}", param="dataset")
    missing = need[fmt] - cols
    if missing:
        raise InvalidRequest(f"format '{fmt}' needs the column(s) {', '.join(sorted(missing))}", param="dataset")
    return fmt


def _messages(value: Any) -> list[Message] | None:
    if not isinstance(value, list) or not value:
        return None
    out = []
    for m in value:
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or \
                m.get("role") not in ("system", "developer", "user", "assistant"):
            return None
        out.append(Message(role=m["role"], content=m["content"]))
    return out


class _Tokens:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    @property
    def bos(self) -> list[int]:
        """What the tokenizer puts before a text when asked for special tokens (BOS for most), as the
        serving side's encode(..., add_special_tokens=True) does."""
        plain = self.tokenizer("a", add_special_tokens=False)["input_ids"]
        special = self.tokenizer("a", add_special_tokens=True)["input_ids"]
        if len(special) > len(plain) and special[len(special) - len(plain):] == plain:
            return special[:len(special) - len(plain)]
        return []

    @property
    def eos(self) -> list[int]:
        eos = self.tokenizer.eos_token_id
        return [eos] if eos is not None else []


def _template_segments(messages: list[Message], tokenizer) -> list[tuple[str, bool]] | None:
    """Pieces of the conversation rendered by the tokenizer's own chat template (as the transformers
    provider and llama.cpp render it for a model that carries one): each assistant turn is what the
    template adds after the generation prompt, end-of-turn marker included."""
    turns = [i for i, m in enumerate(messages) if m.role == "assistant"]
    if not turns or not any((messages[i].content or "").strip() for i in turns):
        return None

    def render(upto: int, prompt: bool) -> str:
        return tokenizer.apply_chat_template([{"role": m.role, "content": m.content or ""} for m in messages[:upto]],
                                             tokenize=False, add_generation_prompt=prompt)

    segments: list[tuple[str, bool]] = []
    done = ""
    for i in turns:
        prompt, full = render(i, True), render(i + 1, False)
        if not full.startswith(prompt):
            return None
        if not prompt.startswith(done):  # history rendered differently later on: learn the last turn only
            segments, done = [], ""
        segments += [(prompt[len(done):], False), (full[len(prompt):], True)]
        done = full
    return segments


def _chat_segments(messages: list[Message], template: TurnTemplate) -> list[tuple[str, bool]] | None:
    """(text, trained) pieces whose concatenation is the conversation as the server renders it."""
    turns = [i for i, m in enumerate(messages) if m.role == "assistant"]
    if not turns or not any((messages[i].content or "").strip() for i in turns):
        return None
    segments: list[tuple[str, bool]] = []
    done = ""
    for i in turns:
        prompt = render_chat(messages[:i], template).text
        if not prompt.startswith(done):  # a template whose history differs from its prompt: last turn only
            segments, done = [], ""
        segments.append((prompt[len(done):], False))
        target = (messages[i].content or "") + template.end.rstrip("\n")
        segments.append((target, True))
        done = prompt + target + template.end[len(template.end.rstrip("\n")):]
        if template.end.endswith("\n"):
            segments.append(("\n", False))
    return segments


def encode_rows(rows: list[dict], tokenizer, template: TurnTemplate, *, fmt: str, max_length: int,
                tokenizer_template: bool = True) -> tuple[list[Encoded], EncodeReport]:
    """Encode each row; rows that cannot be used are counted by reason (never silently dropped). Chat rows
    use the tokenizer's chat template when it has one (and ``tokenizer_template``), else ``template``."""
    tok = _Tokens(tokenizer)
    own_template = tokenizer_template and bool(getattr(tokenizer, "chat_template", None))
    bos = tok.bos
    report = EncodeReport(format=fmt)
    out: list[Encoded] = []
    for n, row in enumerate(rows, start=1):
        report.rows += 1
        where = f"row {n} ({str(row.get('_id', ''))[:12]})"
        if fmt == "chat":
            messages = _messages(row.get("messages"))
            if messages is None:
                report.skip("messages is not a list of {role, content} turns", where)
                continue
            segments = _template_segments(messages, tokenizer) if own_template else _chat_segments(messages, template)
            if segments is None:
                report.skip("no assistant turn with text to learn", where)
                continue
        elif fmt == "completion":
            prompt, completion = row.get("prompt"), row.get("completion")
            if not isinstance(prompt, str) or not isinstance(completion, str) or not completion.strip():
                report.skip("empty or non-text prompt/completion", where)
                continue
            segments = [(prompt, False), (completion, True)]
        else:
            text = row.get("text")
            if not isinstance(text, str) or not text.strip():
                report.skip("empty text", where)
                continue
            segments = [(text, True)]
        start = [] if fmt == "chat" and own_template else bos  # a chat template writes its own BOS
        ids, labels = list(start), [IGNORE] * len(start)
        for text, trained in segments:
            piece = tok(text)
            ids += piece
            labels += piece if trained else [IGNORE] * len(piece)
        if fmt != "chat":
            ids += tok.eos
            labels += tok.eos
        example = _fit(ids, labels, max_length)
        if example is None:
            report.skip(f"nothing left to learn within max_length {max_length}", where)
            continue
        if len(example.input_ids) < len(ids):
            report.truncated += 1
        out.append(example)
        report.examples += 1
        report.tokens += len(example.input_ids)
        report.trained_tokens += example.trained_tokens
    return out, report


def _fit(ids: list[int], labels: list[int], max_length: int) -> Encoded | None:
    """Cut an over-long example: drop the oldest prompt tokens first (keeping BOS), then the target's tail."""
    if len(ids) > max_length:
        first_trained = next((i for i, x in enumerate(labels) if x != IGNORE), len(labels))
        excess = len(ids) - max_length
        cut = min(excess, max(0, first_trained - 1))
        if cut:
            ids, labels = ids[:1] + ids[1 + cut:], labels[:1] + labels[1 + cut:]
        ids, labels = ids[:max_length], labels[:max_length]
    example = Encoded(ids, labels)
    # A label at position 0 can never be predicted; an example needs one trained token after it.
    return example if any(x != IGNORE for x in labels[1:]) else None


def pack(examples: list[Encoded], *, max_length: int, enabled: bool = True) -> list[dict[str, list[int]]]:
    """Blocks of examples (first-fit decreasing), each with restarting position ids; without packing,
    one example per block."""
    if not enabled:
        return [{"input_ids": e.input_ids, "labels": e.labels, "position_ids": list(range(len(e.input_ids)))}
                for e in examples]
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i].input_ids))
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        size = len(examples[i].input_ids)
        for b, free in enumerate(room):
            if size <= free:
                bins[b].append(i)
                room[b] -= size
                break
        else:
            bins.append([i])
            room.append(max_length - size)
    blocks = []
    for members in sorted(bins, key=min):  # a stable order, independent of the sizes' ties
        block: dict[str, list[int]] = {"input_ids": [], "labels": [], "position_ids": []}
        for i in sorted(members):
            e = examples[i]
            block["input_ids"] += e.input_ids
            block["labels"] += e.labels
            block["position_ids"] += list(range(len(e.input_ids)))
        blocks.append(block)
    return blocks
