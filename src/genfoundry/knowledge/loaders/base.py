"""What every loader shares: the document types, LoadError, text decoding and the section builder."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from genfoundry.core.errors import InvalidRequest

__all__ = ["DEFAULT_MAX_FILE_BYTES", "HEADING_SEPARATOR", "LoadError", "LoadedDocument", "Section"]

DEFAULT_MAX_FILE_BYTES = 50 * 2**20

HEADING_SEPARATOR = " > "
_CSV_ROWS_PER_SECTION = 100


@dataclass
class Section:
    """Text under one heading path (``"Returns > Refunds"``), or on one 1-based ``page``."""

    text: str
    heading: str = ""
    page: int | None = None


@dataclass
class LoadedDocument:
    """A file's text in sections, with what the knowledge base records about the file.

    ``modified`` is the file's mtime in ISO-8601 UTC; ``content_hash`` the sha256 of
    its bytes (an unchanged hash means re-ingesting can be skipped); ``warnings``
    lists parts that were skipped (a malformed JSONL line, a PDF page without text).
    """

    source: str
    title: str
    sections: list[Section]
    modified: str
    content_hash: str
    size: int
    warnings: list[str] = field(default_factory=list)


class LoadError(InvalidRequest):
    """A file could not be loaded; the message names it and says what to do.

    ``code`` says why in one word for reports: ``file_not_found``, ``is_a_directory``,
    ``permission_denied``, ``unsupported_file_type``, ``file_too_large``,
    ``empty_file``, ``not_a_file``, ``binary_file``, ``corrupt_file``, ``encrypted_file``,
    ``no_text``.
    """

    code = "load_error"

    def __init__(self, message: str, *, path: Path | None = None, code: str | None = None):
        super().__init__(message, param="path", code=code)
        self.path = path


@dataclass
class _Parsed:
    title: str
    sections: list[Section]
    warnings: list[str] = field(default_factory=list)


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def _decode(path: Path, data: bytes) -> str:
    """Bytes of a text-type file as text with ``\\n`` line ends; binary content is refused."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        encodings = ["utf-16"]
    elif b"\x00" in data:
        raise LoadError(f"{path} looks like a binary file (it contains NUL bytes), not "
                        f"{path.suffix} text; check the file, or rename it to its real type",
                        path=path, code="binary_file")
    else:
        encodings = ["utf-8-sig", "cp1252"]
    for encoding in encodings:
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        if len(_CONTROL.findall(text)) > 8 + len(text) // 100:  # text has few; binary has many
            break
        return text.replace("\r\n", "\n").replace("\r", "\n")
    raise LoadError(f"{path} does not look like text (not UTF-8 or Windows-1252, or full of "
                    "control characters); check the file, or re-save it as UTF-8 text",
                    path=path, code="binary_file")


def _pretty_stem(path: Path) -> str:
    """``return_policy-v2.md`` -> ``Return policy v2``: a title when the file has none."""
    words = " ".join(re.split(r"[\s_\-.]+", path.stem)).strip() or path.name
    return words[0].upper() + words[1:] if words.islower() else words


def _tidy(text: str) -> str:
    """Trailing spaces off every line; at most one blank line in a row."""
    lines = [line.rstrip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


class _Sections:
    """Collects text blocks under a heading path that follows the heading levels."""

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self._path: list[tuple[int, str]] = []
        self._blocks: list[str] = []

    def add(self, block: str) -> None:
        if block.strip():
            self._blocks.append(block)

    def heading(self, level: int, text: str) -> None:
        self.flush()
        while self._path and self._path[-1][0] >= level:
            self._path.pop()
        self._path.append((level, text))

    def flush(self) -> None:
        text = _tidy("\n\n".join(self._blocks))
        if text.strip():
            heading = HEADING_SEPARATOR.join(t for _, t in self._path)
            self.sections.append(Section(text=text, heading=heading))
        self._blocks = []

    def done(self) -> list[Section]:
        self.flush()
        return self.sections
