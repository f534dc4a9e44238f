"""Split a loaded document into chunks that fit the embedding model.

Chunks never cross a section (a heading path or a PDF page), so every chunk's
heading and page are true. Inside a section the text is cut at the gentlest
boundary that works: between paragraphs if a paragraph fits, else between
sentences (or lines), else between words, else between characters. Consecutive
chunks of one section share about ``overlap`` tokens, as whole sentences where
they fit, so a fact cut at a boundary is still whole in one of them.

Every chunk holds at most ``max_tokens`` as measured by ``count_tokens`` on the
chunk's final text. Tokens are counted once per sentence and once per chunk
(never on growing strings), so chunking is linear in the size of the text.

Example::

    >>> chunks = chunk_document(doc, count_tokens=lambda t: len(t.split()), max_tokens=200)
    >>> chunks[0].heading, chunks[0].position
    ('Returns > Refunds', 0)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from genfoundry.core.errors import InvalidRequest
from genfoundry.knowledge.loaders import LoadedDocument

__all__ = ["DEFAULT_MAX_TOKENS", "DEFAULT_OVERLAP", "TextChunk", "chunk_document"]

DEFAULT_MAX_TOKENS = 200
DEFAULT_OVERLAP = 40

_Count = Callable[[str], int]

# Where a sentence or line ends: whitespace holding a newline; whitespace after . ! ? (and
# a closing quote or bracket); right after CJK full stops, which need no space.
_BOUNDARY = re.compile(
    r"[ \t]*\n\s*"
    r"|(?:(?<=[.!?])|(?<=[.!?][\"'\u201d\u2019)\]]))\s+"
    r"|(?<=[\u3002\uff01\uff1f])\s*"
)
_WORD = re.compile(r"\s*\S+")


@dataclass
class TextChunk:
    """A piece of one section, at most ``max_tokens`` long; ``position`` counts from 0."""

    text: str
    heading: str
    page: int | None
    position: int


@dataclass
class _Piece:
    """A sentence (or a part of one), with the whitespace that came before it."""

    sep: str
    text: str
    tokens: int

    @property
    def starts_paragraph(self) -> bool:
        return self.sep.count("\n") >= 2


def chunk_document(
    doc: LoadedDocument,
    *,
    count_tokens: Callable[[str], int],
    max_tokens: int = DEFAULT_MAX_TOKENS,
    overlap: int = DEFAULT_OVERLAP,
    count_many: Callable[[list[str]], list[int]] | None = None,
) -> list[TextChunk]:
    """Split ``doc`` into chunks of at most ``max_tokens``, in document order.

    ``count_tokens`` is the embedding model's tokeniser (any function of text to a
    count); ``count_many``, when given, counts a list at once (a section's sentences in
    one tokeniser call rather than one call each). Raises InvalidRequest unless
    ``max_tokens > overlap >= 0``.
    """
    if not 0 <= overlap < max_tokens:
        raise InvalidRequest(
            f"chunk overlap must be at least 0 and less than the chunk size; got "
            f"max_tokens={max_tokens}, overlap={overlap}: lower the overlap or raise the size",
            param="overlap",
        )
    chunks: list[TextChunk] = []
    for section in doc.sections:
        text = section.text.strip()
        if not text:
            continue
        for piece in _Packer(count_tokens, max_tokens, overlap, count_many).pack(text):
            chunks.append(TextChunk(piece, section.heading, section.page, len(chunks)))
    return chunks


class _Packer:
    """Packs one section's sentences greedily into chunks, keeping paragraphs whole if they fit."""

    def __init__(self, count: _Count, max_tokens: int, overlap: int,
                 count_many: Callable[[list[str]], list[int]] | None = None):
        self.count = count
        self.count_many = count_many
        self.max = max_tokens
        self.overlap = overlap
        self.done: list[str] = []
        self.current: list[_Piece] = []
        self.used = 0

    def pack(self, text: str) -> list[str]:
        for paragraph in _paragraphs(self._pieces(text)):
            total = sum(p.tokens for p in paragraph)
            if self.used + total <= self.max:
                self._extend(paragraph)
            elif total <= self.max:
                self._start_next(total)  # the paragraph fits a chunk of its own: keep it whole
                self._extend(paragraph)
            else:
                for piece in paragraph:
                    if self.used + piece.tokens > self.max:
                        self._start_next(piece.tokens)
                    self._extend([piece])
        self._flush()
        return self.done

    def _pieces(self, text: str) -> Iterator[_Piece]:
        """Sentences and lines with their token counts; one too long is cut into words."""
        parts = list(_split(text, _BOUNDARY))
        counts = (self.count_many([sentence for _, sentence in parts]) if self.count_many
                  else [self.count(sentence) for _, sentence in parts])
        for (sep, sentence), tokens in zip(parts, counts):
            if tokens <= self.max:
                yield _Piece(sep, sentence, tokens)
            else:
                yield from self._fit(sep, sentence, self.max - self.overlap)  # room for overlap

    def _fit(self, sep: str, text: str, limit: int) -> list[_Piece]:
        """Cut ``text`` between words (or, for one huge word, characters) into pieces <= limit."""
        pieces = _fit_atoms(_WORD.findall(text), self.count, limit)
        if pieces is None:
            pieces = _fit_atoms(list(text), self.count, limit)
        if pieces is None:
            raise InvalidRequest(
                f"{limit} tokens (max_tokens={self.max} less overlap={self.overlap}) cannot hold "
                "even one character of the text; raise max_tokens or lower overlap",
                param="max_tokens")
        pieces[0].sep = sep
        return pieces

    def _extend(self, pieces: list[_Piece]) -> None:
        self.current.extend(pieces)
        self.used += sum(p.tokens for p in pieces)

    def _start_next(self, room_needed: int) -> None:
        """Close the current chunk; open the next with its tail as overlap, leaving room."""
        if not self.current:
            return
        tail = self._tail(min(self.overlap, self.max - room_needed))
        self._flush()
        self.current = tail
        self.used = sum(p.tokens for p in tail)

    def _tail(self, budget: int) -> list[_Piece]:
        """The last whole sentences within ``budget`` tokens, else the last words of the last."""
        tail: list[_Piece] = []
        used = 0
        for piece in reversed(self.current):
            if used + piece.tokens > budget:
                break
            tail.insert(0, piece)
            used += piece.tokens
        if tail or budget <= 0:
            return tail
        words: list[str] = []
        for word in reversed(_WORD.findall(self.current[-1].text)):
            tokens = self.count(word)
            if used + tokens > budget:
                break
            words.insert(0, word)
            used += tokens
        return [_Piece("", "".join(words).lstrip(), used)] if words else []

    def _flush(self) -> None:
        if not self.current:
            return
        text = _join(self.current)
        if self.count(text) <= self.max:
            self.done.append(text)
        else:  # the tokeniser is not additive here: measure the chunk and cut it to fit
            self.done.extend(p.text for p in self._fit("", text, self.max))
        self.current, self.used = [], 0


def _split(text: str, boundary: re.Pattern) -> Iterator[tuple[str, str]]:
    """``(whitespace before, piece)`` for each piece of ``text`` between boundaries."""
    start, sep = 0, ""
    for m in boundary.finditer(text):
        if m.start() > start:
            yield sep, text[start:m.start()]
            sep = ""
        sep += m.group()
        start = m.end()
    if start < len(text):
        yield sep, text[start:]


def _paragraphs(pieces: Iterator[_Piece]) -> Iterator[list[_Piece]]:
    paragraph: list[_Piece] = []
    for piece in pieces:
        if piece.starts_paragraph and paragraph:
            yield paragraph
            paragraph = []
        paragraph.append(piece)
    if paragraph:
        yield paragraph


def _join(pieces: list[_Piece]) -> str:
    return pieces[0].text + "".join(p.sep + p.text for p in pieces[1:])


def _fit_atoms(atoms: list[str], count: _Count, max_tokens: int) -> list[_Piece] | None:
    """Greedy runs of atoms, each counted at most a few times; None if one atom alone is too big.

    The run length is guessed from the last run's tokens per atom, then shrunk in
    proportion until the run fits, so the work stays linear in the text.
    """
    pieces: list[_Piece] = []
    start, guess = 0, max(1, max_tokens)
    while start < len(atoms):
        n = min(guess, len(atoms) - start)
        while True:
            run = "".join(atoms[start:start + n])
            tokens = count(run.lstrip())
            if tokens <= max_tokens:
                break
            if n == 1:
                return None
            n = max(1, min(n - 1, n * max_tokens // tokens))
        sep = run[:len(run) - len(run.lstrip())]
        pieces.append(_Piece(sep, run.lstrip(), tokens))
        start += n
        guess = max(1, n * max_tokens // max(tokens, 1))
    return pieces
