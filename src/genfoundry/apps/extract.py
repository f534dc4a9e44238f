"""Structured extraction: text in, JSON that validates against a given schema out, with source spans.

The schema goes to the model as a constraint: local llama.cpp models decode
under a grammar built from it, remote models get it as ``response_format``
(``json_schema``), so the answer parses. The result is validated against the
schema (with one retry that names the error). For every string or number in the
result that appears in the text, the span where it was found is returned, so a
reviewer can check each field against its source.

Example::

    result = await extract(generate, model="default", text=invoice_text,
                           schema={"type": "object", "properties": {"total": {"type": "number"}}})
    result.data, result.valid, result.spans["/total"]
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from genfoundry.apps.answer import Generate
from genfoundry.core.errors import InvalidRequest, PayloadTooLarge
from genfoundry.core.types import GenerationRequest, Message, Usage

__all__ = ["Extraction", "MAX_TEXT_CHARS", "check_schema", "extract", "find_spans"]

MAX_TEXT_CHARS = 24_000
_SYSTEM = ("You extract information from a text into JSON that follows the given JSON schema. Use only what "
           "the text says; use null (or leave optional fields out) for what it does not say. Copy names, "
           "numbers and dates as they are written.")


@dataclass
class Extraction:
    data: Any
    valid: bool
    errors: list[str] = field(default_factory=list)
    spans: dict[str, dict] = field(default_factory=dict)  # JSON pointer -> {start, end, text}
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    attempts: int = 1

    def to_dict(self) -> dict:
        return {"data": self.data, "valid": self.valid, "errors": self.errors, "spans": self.spans,
                "model": self.model, "attempts": self.attempts,
                "usage": {"prompt_tokens": self.usage.prompt_tokens,
                          "completion_tokens": self.usage.completion_tokens,
                          "total_tokens": self.usage.total_tokens}}


def check_schema(schema: Any) -> None:
    if not isinstance(schema, dict):
        raise InvalidRequest("schema must be a JSON schema object", param="schema")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidRequest(f"schema is not valid JSON schema: {exc.message}", param="schema") from exc


async def extract(generate: Generate, *, model: str, text: str, schema: dict, instructions: str | None = None,
                  max_tokens: int = 1024) -> Extraction:
    """Extract ``schema``-shaped JSON from ``text`` with ``model`` (see the module docstring)."""
    check_schema(schema)
    if not text.strip():
        raise InvalidRequest("there is no text to extract from", param="text")
    if len(text) > MAX_TEXT_CHARS:
        raise PayloadTooLarge(f"the text has {len(text)} characters; extraction takes up to {MAX_TEXT_CHARS} "
                              "at once: split the document", param="text")
    system = _SYSTEM + (f"\n{instructions.strip()}" if instructions else "")
    messages = [Message(role="system", content=system),
                Message(role="user", content=f"JSON schema:\n{json.dumps(schema)}\n\nText:\n{text}")]
    usage, attempts, data, errors = Usage(), 0, None, []
    for attempts in (1, 2):
        generation = await generate(model, GenerationRequest(messages=messages, json_schema=schema,
                                                             temperature=0, max_tokens=max_tokens))
        usage = Usage(usage.prompt_tokens + generation.usage.prompt_tokens,
                      usage.completion_tokens + generation.usage.completion_tokens)
        data, errors = _parse(generation.text, schema)
        if not errors:
            break
        messages = [*messages, Message(role="assistant", content=generation.text),
                    Message(role="user", content=f"That JSON is not valid: {errors[0]}. Answer again with "
                                                 "JSON that follows the schema.")]
    return Extraction(data=data, valid=not errors, errors=errors, spans=find_spans(text, data) if data else {},
                      usage=usage, model=model, attempts=attempts)


def _parse(text: str, schema: dict) -> tuple[Any, list[str]]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        return None, [f"not JSON ({exc.msg} at character {exc.pos})"]
    found = sorted(jsonschema.Draft202012Validator(schema).iter_errors(data), key=lambda e: list(e.path))
    return data, [f"{'/'.join(str(p) for p in e.path) or '(root)'}: {e.message}" for e in found[:10]]


def find_spans(text: str, data: Any) -> dict[str, dict]:
    """Where each string and number of ``data`` occurs in ``text``: strings exactly, then ignoring case and
    spacing; numbers as whole numbers in the text (1250 matches "1,250" and "1250.00", not "12500")."""
    spans: dict[str, dict] = {}
    for pointer, value in _leaves(data, ""):
        match = re.search(_pattern(value), text, re.IGNORECASE) if _pattern(value) else None
        if match:
            spans[pointer] = {"start": match.start(), "end": match.end(), "text": match.group(0)}
    return spans


def _pattern(value: Any) -> str | None:
    if isinstance(value, str):
        words = value.split()
        return r"\s+".join(map(re.escape, words)) if len(value.strip()) >= 2 else None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        digits = str(abs(value))
        grouped = r"[,.\u00a0 ]?".join([digits[:len(digits) % 3 or 3]] +
                                        [digits[i:i + 3] for i in range(len(digits) % 3 or 3, len(digits), 3)])
        return rf"(?<![\d.,]){'-?' if value < 0 else ''}{grouped}(?:[.,]0{{1,2}})?(?![\d])"
    whole, _, fraction = f"{value}".partition(".")
    return rf"(?<![\d.,]){re.escape(whole)}[.,]{fraction}0*(?![\d])"


def _leaves(value: Any, pointer: str):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{pointer}/{str(key).replace('~', '~0').replace('/', '~1')}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, f"{pointer}/{index}")
    elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
        yield pointer, value
