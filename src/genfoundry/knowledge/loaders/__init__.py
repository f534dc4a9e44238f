"""Turn files into text: one loader per format, each answering a LoadedDocument.

A document is a list of sections: text under one heading path ("Returns >
Refunds") or on one PDF page. Chunks never cross a section, so every chunk's
heading and page are true. Every way a file can be unusable is a ``LoadError``
that names the file and says what to do, so an ingest of a thousand files can
report the few bad ones and carry on.

Example::

    >>> files, problems = find_files([Path("handbook")])
    >>> doc = load_document(files[0])
    >>> doc.title, doc.sections[0].heading
    ('Handbook', 'Handbook > Returns')

Decisions worth knowing:

- Text-type files (txt, md, html, csv, jsonl) are UTF-8 (a BOM is fine), UTF-16
  with a BOM, or else Windows-1252 (legacy Windows exports). A NUL byte without a
  UTF-16 BOM means the file is binary: refused.
- JSONL: malformed lines are skipped and listed in ``LoadedDocument.warnings``;
  only a file where no line parses is a LoadError (naming the first bad line).
- CSV: the first row is the header; each row becomes "col: value; col: value".
- The size limit is checked with ``stat`` before reading, and reading stops one
  byte past it, so a huge file is never read into memory.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

from genfoundry.knowledge.loaders.base import (
    DEFAULT_MAX_FILE_BYTES, HEADING_SEPARATOR, LoadError, LoadedDocument, Section, _Parsed,
)
from genfoundry.knowledge.loaders.docx import _load_docx, check_zip
from genfoundry.knowledge.loaders.html import _load_html
from genfoundry.knowledge.loaders.pdf import _load_pdf
from genfoundry.knowledge.loaders.tabular import _load_csv, _load_jsonl
from genfoundry.knowledge.loaders.text import _load_markdown, _load_text

__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "HEADING_SEPARATOR",
    "LoadError",
    "LoadedDocument",
    "SUPPORTED_SUFFIXES",
    "Section",
    "check_zip",
    "find_files",
    "load_document",
]

_LOADERS: dict[str, Callable[[Path, bytes], _Parsed]] = {
    ".txt": _load_text, ".text": _load_text, ".md": _load_markdown, ".markdown": _load_markdown,
    ".html": _load_html, ".htm": _load_html, ".pdf": _load_pdf, ".docx": _load_docx,
    ".csv": _load_csv, ".jsonl": _load_jsonl,
}

SUPPORTED_SUFFIXES = frozenset(_LOADERS)


# ---------------------------------------------------------------- finding and reading files


def find_files(paths: Iterable[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Expand ``paths`` into the supported files to load, and the paths that could not be used.

    Folders are searched recursively in sorted order, skipping hidden files and
    folders, Office lock files (``~$report.docx``) and unsupported types. A file named
    explicitly is kept even if hidden, but an unsupported type or a missing path is
    reported in ``problems`` as ``(path, reason)``; one bad path never stops the rest.
    """
    files: list[Path] = []
    problems: list[tuple[Path, str]] = []
    seen: set[Path] = set()

    def keep(file: Path) -> None:
        key = file.resolve()
        if key not in seen:
            seen.add(key)
            files.append(file)

    for path in map(Path, paths):
        try:
            if path.is_dir():
                for file in _walk(path, problems):
                    keep(file)
            elif path.is_file():
                if path.suffix.lower() in SUPPORTED_SUFFIXES:
                    keep(path)
                else:
                    problems.append((path, _unsupported_reason(path)))
            elif path.exists():
                problems.append((path, "not a regular file (a device, socket or pipe); skipped"))
            else:
                problems.append((path, "does not exist; check the path"))
        except OSError as exc:
            problems.append((path, f"cannot be read ({exc.strerror or exc}); check its permissions"))
    return files, problems


def _walk(root: Path, problems: list[tuple[Path, str]]) -> Iterable[Path]:
    def on_error(exc: OSError) -> None:
        problems.append((Path(exc.filename or root), f"cannot list folder ({exc.strerror})"))

    for folder, dirnames, filenames in os.walk(root, onerror=on_error):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith((".", "~$")):
                continue
            if Path(name).suffix.lower() in SUPPORTED_SUFFIXES:
                yield Path(folder, name)


def load_document(path: Path, *, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> LoadedDocument:
    """Read one file and split it into sections; raise LoadError if it cannot be used.

    The loader is chosen by suffix (see ``SUPPORTED_SUFFIXES``). Files larger than
    ``max_bytes`` are refused before any byte is read.
    """
    path = Path(path)
    info = _stat(path)
    loader = _LOADERS.get(path.suffix.lower())
    if loader is None:
        raise LoadError(f"{path}: {_unsupported_reason(path)}", path=path,
                        code="unsupported_file_type")
    _check_size(path, info.st_size, max_bytes)
    data = _read(path, max_bytes)
    parsed = loader(path, data)
    sections = [s for s in parsed.sections if s.text.strip()]
    if not sections:
        raise LoadError(f"{path} has no text to ingest (it holds only whitespace or markup); "
                        "check that it is the file you meant", path=path, code="no_text")
    modified = dt.datetime.fromtimestamp(info.st_mtime, dt.UTC).isoformat(timespec="seconds")
    return LoadedDocument(
        source=str(path), title=parsed.title, sections=sections, modified=modified,
        content_hash=hashlib.sha256(data).hexdigest(), size=len(data), warnings=parsed.warnings,
    )


def _stat(path: Path) -> os.stat_result:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise LoadError(f"{path} does not exist; check the path", path=path,
                        code="file_not_found") from None
    except PermissionError:
        raise _permission_error(path) from None
    except OSError as exc:
        raise LoadError(f"cannot read {path}: {exc.strerror or exc}", path=path) from None
    if stat.S_ISDIR(info.st_mode):
        raise LoadError(f"{path} is a folder; pass the files in it, or use find_files() "
                        "to collect its supported files", path=path, code="is_a_directory")
    if not stat.S_ISREG(info.st_mode):
        raise LoadError(f"{path} is not a regular file (a device, socket or pipe); "
                        "copy its content into a file first", path=path, code="not_a_file")
    return info


def _check_size(path: Path, size: int, max_bytes: int) -> None:
    if size == 0:
        raise LoadError(f"{path} is empty (0 bytes); nothing to ingest", path=path,
                        code="empty_file")
    if size > max_bytes:
        raise LoadError(
            f"{path} is {_mib(size)}, over the {_mib(max_bytes)} limit for one file; "
            "split it into smaller files or raise the file size limit",
            path=path, code="file_too_large")


def _read(path: Path, max_bytes: int) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)  # one byte more tells us it grew past the limit
    except PermissionError:
        raise _permission_error(path) from None
    except OSError as exc:
        raise LoadError(f"cannot read {path}: {exc.strerror or exc}", path=path) from None
    _check_size(path, len(data), max_bytes)
    return data


def _permission_error(path: Path) -> LoadError:
    return LoadError(f"cannot read {path}: permission denied; give your user read access "
                     f"(e.g. `chmod u+r {path}`) or copy it somewhere readable",
                     path=path, code="permission_denied")


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def _unsupported_reason(path: Path) -> str:
    kind = f"{path.suffix!r} files" if path.suffix else "files without an extension"
    return (f"{kind} are not supported; convert it to one of "
            f"{', '.join(sorted(SUPPORTED_SUFFIXES))}")
