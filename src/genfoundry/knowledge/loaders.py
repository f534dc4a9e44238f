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

import csv
import datetime as dt
import hashlib
import io
import json
import os
import re
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from genfoundry.core.errors import InvalidRequest

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


# ---------------------------------------------------------------- plain text and markdown


def _load_text(path: Path, data: bytes) -> _Parsed:
    return _Parsed(_pretty_stem(path), [Section(_tidy(_decode(path, data)))])


_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_FRONT_MATTER = re.compile(r"\A---\n(.*?)\n(?:---|\.\.\.)\n", re.DOTALL)


def _load_markdown(path: Path, data: bytes) -> _Parsed:
    text = _decode(path, data)
    title = ""
    if front := _FRONT_MATTER.match(text):  # YAML front matter: keep its title, not its text
        title = next((m.group(1).strip().strip("\"'") for m in
                      re.finditer(r"^title:\s*(.+)$", front.group(1), re.MULTILINE)), "")
        text = text[front.end():]
    builder, lines, fence = _Sections(), [], ""
    for line in text.split("\n"):
        if fence:
            fence = "" if _closes_fence(line, fence) else fence
        elif m := _FENCE.match(line):
            fence = m.group(1)
        elif (m := _ATX.match(line)) and (heading := (m.group(2) or "").strip()):
            builder.add("\n".join(lines))
            lines = []
            builder.heading(len(m.group(1)), heading)
            title = title or (heading if len(m.group(1)) == 1 else "")
            continue
        lines.append(line)
    builder.add("\n".join(lines))
    return _Parsed(title or _pretty_stem(path), builder.done())


def _closes_fence(line: str, fence: str) -> bool:
    """A closing fence is the opening's character, at least as many, and nothing else."""
    stripped = line.strip()
    return stripped.startswith(fence) and not stripped.strip(fence[0])


# ---------------------------------------------------------------- HTML


_HTML_DROP = frozenset({"script", "style", "nav", "noscript", "template", "head", "title", "svg"})
_HTML_BLOCKS = frozenset({
    "p", "div", "section", "article", "main", "aside", "blockquote", "pre", "table", "thead",
    "tbody", "tfoot", "dl", "dt", "dd", "figure", "figcaption", "address", "hr", "form",
    "fieldset", "details", "summary", "caption",
})
_CELL = "\x1f"  # marks a table cell's end until the row is tidied into "a | b"
_PRE = "\x1e"  # marks a line of <pre>, kept as it is


@dataclass
class _Close:
    name: str


class _HtmlText:
    """Walks the tree (iteratively: deep nesting must not hit the recursion limit)."""

    def __init__(self) -> None:
        self.builder = _Sections()
        self.parts: list[str] = []
        self.lists: list[int | None] = []  # a counter for each open <ol>, None for <ul>

    def walk(self, root) -> list[Section]:
        from bs4.element import NavigableString, PreformattedString, Tag

        stack = [root]
        while stack:
            node = stack.pop()
            if isinstance(node, _Close):
                self.close(node.name)
            elif isinstance(node, NavigableString):
                if not isinstance(node, PreformattedString):  # comments, doctypes, CDATA
                    self.parts.append(re.sub(r"\s+", " ", node))
            elif isinstance(node, Tag) and not _html_dropped(node):
                if node.name == "pre":  # keep its lines: code and ASCII tables need them
                    lines = node.get_text().strip("\n").split("\n")
                    self.parts.append("".join(f"\n{_PRE}{line}" for line in lines) + "\n\n")
                    continue
                if re.fullmatch(r"h[1-6]", node.name):
                    self.flush()
                    self.builder.heading(int(node.name[1]), " ".join(node.get_text(" ").split()))
                    continue
                self.open(node.name)
                stack.append(_Close(node.name))
                stack.extend(reversed(node.contents))
        self.flush()
        return self.builder.done()

    def open(self, name: str) -> None:
        if name in ("ul", "ol"):
            self.lists.append(0 if name == "ol" else None)
        elif name == "li":
            if self.lists and self.lists[-1] is not None:
                self.lists[-1] += 1
                self.parts.append(f"\n{self.lists[-1]}. ")
            else:
                self.parts.append("\n- ")
        elif name in ("br", "tr"):
            self.parts.append("\n")
        elif name in _HTML_BLOCKS:
            self.parts.append("\n\n")

    def close(self, name: str) -> None:
        if name in ("ul", "ol"):
            if self.lists:
                self.lists.pop()
            self.parts.append("\n\n")
        elif name in ("td", "th"):
            self.parts.append(_CELL)
        elif name in _HTML_BLOCKS:
            self.parts.append("\n\n")

    def flush(self) -> None:
        # "<li><p>Text</p></li>" puts the item's mark and its text on separate lines: rejoin.
        text = re.sub(r"(?m)^([ \t]*(?:-|\d+\.) )[ \t]*\n\s*", r"\1", "".join(self.parts))
        lines = []
        for line in text.split("\n"):
            if line.startswith(_PRE):
                lines.append(line[1:].rstrip())
                continue
            cells = [" ".join(c.split()) for c in line.split(_CELL)]
            while cells and not cells[-1]:  # the marker after the last cell
                cells.pop()
            lines.append(" | ".join(cells))
        self.builder.add("\n".join(lines))
        self.parts = []


def _html_dropped(node) -> bool:
    if node.name in _HTML_DROP:
        return True
    # A page's header and footer are boilerplate; an article's own <header> holds its title.
    return node.name in ("header", "footer") and node.find_parent(
        ("article", "main", "section")) is None


def _load_html(path: Path, data: bytes) -> _Parsed:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(_decode(path, data), "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    if not title and (h1 := soup.find("h1")):
        title = h1.get_text(" ", strip=True)
    sections = _HtmlText().walk(soup.body or soup)
    return _Parsed(" ".join(title.split()) or _pretty_stem(path), sections)


# ---------------------------------------------------------------- PDF


def _load_pdf(path: Path, data: bytes) -> _Parsed:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise LoadError(f"{path} is password-protected; save an unprotected copy "
                            "(e.g. `qpdf --decrypt`) and ingest that", path=path,
                            code="encrypted_file")
        pages = list(reader.pages)
        meta_title = ((reader.metadata or {}).get("/Title") or "") if pages else ""
    except LoadError:
        raise
    except DependencyError:
        raise LoadError(f"{path} is encrypted and opening it needs the `cryptography` "
                        "package; `pip install cryptography`, or save an unencrypted copy",
                        path=path, code="encrypted_file") from None
    except Exception as exc:  # pypdf raises many types on a damaged file; all mean the same
        raise LoadError(f"{path} is not a readable PDF ({exc}); check that it opens in a "
                        "PDF viewer, or export it again", path=path, code="corrupt_file") from None
    return _pdf_pages(path, pages, str(meta_title).strip())


def _pdf_pages(path: Path, pages: list, title: str) -> _Parsed:
    sections, warnings = [], []
    for number, page in enumerate(pages, start=1):
        try:
            text = _tidy(page.extract_text() or "")
        except Exception as exc:  # one damaged page should not lose the others
            warnings.append(f"page {number}: text could not be extracted ({exc}); skipped")
            continue
        if text.strip():
            sections.append(Section(text=text, page=number))
        else:
            warnings.append(f"page {number}: no text (a scanned image?); skipped")
    if not sections:
        raise LoadError(f"{path} has no extractable text; it may be scanned images, and OCR "
                        "is not supported: run it through OCR (e.g. `ocrmypdf`) first",
                        path=path, code="no_text")
    first_line = sections[0].text.strip().split("\n", 1)[0].strip()[:200]
    return _Parsed(title or first_line or _pretty_stem(path), sections, warnings)


# ---------------------------------------------------------------- DOCX


# A .docx is a zip archive. python-docx inflates its members without a limit, so an 8 MiB upload
# could become gigabytes in memory: the archive's directory is checked before anything is inflated.
MAX_UNZIPPED_BYTES = 256 * 2**20  # all members together
MAX_MEMBER_RATIO = 200  # uncompressed / compressed, per member of any size worth checking
MAX_MEMBERS = 10_000


def check_zip(path: Path, data: bytes) -> None:
    """Refuse an archive whose members would inflate past the limits (a zip bomb), before inflating."""
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise LoadError(f"{path} is not a readable Word document ({exc}); check that it opens in Word, or "
                        "save it again as .docx", path=path, code="corrupt_file") from None
    total = sum(m.file_size for m in members)
    worst = max(members, key=lambda m: m.file_size / max(m.compress_size, 1), default=None)
    if len(members) > MAX_MEMBERS or total > MAX_UNZIPPED_BYTES or (
            worst is not None and worst.file_size > 1 << 20
            and worst.file_size / max(worst.compress_size, 1) > MAX_MEMBER_RATIO):
        raise LoadError(f"{path} would unpack to {total / 2**20:,.0f} MiB in {len(members):,} parts (a "
                        f"compression bomb?); the limit is {MAX_UNZIPPED_BYTES // 2**20} MiB and a ratio of "
                        f"{MAX_MEMBER_RATIO}:1; nothing was read", path=path, code="file_too_large")


def _load_docx(path: Path, data: bytes) -> _Parsed:
    import docx
    from docx.table import Table

    check_zip(path, data)
    try:
        document = docx.Document(io.BytesIO(data))
        blocks = list(document.iter_inner_content())
        title = (document.core_properties.title or "").strip()
    except Exception as exc:  # zip, XML and package errors all mean "not a usable .docx"
        raise LoadError(f"{path} is not a readable Word document ({exc}); check that it "
                        "opens in Word, or save it again as .docx", path=path,
                        code="corrupt_file") from None
    builder = _Sections()
    for block in blocks:
        if isinstance(block, Table):
            builder.add(_docx_table(block))
            continue
        text = block.text.strip()
        level = _docx_heading_level(getattr(block.style, "name", "") or "")
        if level is None:
            bullet = "List Bullet" in (getattr(block.style, "name", "") or "")
            builder.add(f"- {text}" if bullet and text else text)
        elif text:
            builder.heading(level, text)
            title = title or (text if level <= 1 else "")
    return _Parsed(title or _pretty_stem(path), builder.done())


def _docx_heading_level(style: str) -> int | None:
    """``Title`` is level 0, ``Heading N`` level N; anything else is body text."""
    if style.lower() == "title":
        return 0
    m = re.fullmatch(r"heading (\d)", style.strip().lower())
    return int(m.group(1)) if m else None


def _docx_table(table) -> str:
    rows = []
    for row in table.rows:
        cells: list[str] = []
        for cell in row.cells:
            text = " ".join(cell.text.split())
            if not cells or cells[-1] != text:  # a merged cell repeats once per grid column
                cells.append(text)
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n".join(rows)


# ---------------------------------------------------------------- CSV and JSONL


def _load_csv(path: Path, data: bytes) -> _Parsed:
    text = _decode(path, data)
    try:
        dialect = csv.Sniffer().sniff(text[:65536], delimiters=",;\t|")
    except csv.Error:  # one column, or too irregular to tell: plain commas
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    header: list[str] = []
    rows: list[str] = []
    try:
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            if not header:
                header = [c.strip() for c in cells]
                continue
            rows.append(_csv_row(header, cells))
    except csv.Error as exc:
        raise LoadError(f"{path} line {reader.line_num} is not valid CSV ({exc}); fix that "
                        "line or export the file again", path=path, code="corrupt_file") from None
    step = _CSV_ROWS_PER_SECTION
    sections = [Section("\n".join(rows[i:i + step]), heading=path.name)
                for i in range(0, len(rows), step)]
    return _Parsed(_pretty_stem(path), sections)


def _csv_row(header: list[str], cells: list[str]) -> str:
    pairs = []
    for i, value in enumerate(cells):
        value = " ".join(value.split())
        if value:
            name = header[i] if i < len(header) and header[i] else f"column {i + 1}"
            pairs.append(f"{name}: {value}")
    return "; ".join(pairs)


def _load_jsonl(path: Path, data: bytes) -> _Parsed:
    sections: list[Section] = []
    warnings: list[str] = []
    for number, line in enumerate(_decode(path, data).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            warnings.append(f"line {number}: not valid JSON ({exc}); skipped")
            continue
        sections.append(_jsonl_section(record))
    if warnings and not sections:
        raise LoadError(f"{path} has no valid JSON lines ({warnings[0]}); each line must be "
                        "one JSON object", path=path, code="corrupt_file")
    return _Parsed(_pretty_stem(path), sections, warnings)


def _jsonl_section(record) -> Section:
    """``text``/``content``/``body`` with ``question``/``answer``, under ``title``; else the JSON."""
    if isinstance(record, str):
        return Section(record)
    if not isinstance(record, dict):
        return Section(json.dumps(record, ensure_ascii=False))

    def field_text(name: str) -> str:
        value = record.get(name)
        return value.strip() if isinstance(value, str) else ""

    parts = [f"{label}: {field_text(key)}" for key, label in
             (("question", "Question"), ("answer", "Answer")) if field_text(key)]
    body = next((t for t in map(field_text, ("text", "content", "body")) if t), "")
    text = "\n\n".join(p for p in ("\n".join(parts), body) if p)
    return Section(text or json.dumps(record, ensure_ascii=False), heading=field_text("title"))


_LOADERS: dict[str, Callable[[Path, bytes], _Parsed]] = {
    ".txt": _load_text, ".text": _load_text, ".md": _load_markdown, ".markdown": _load_markdown,
    ".html": _load_html, ".htm": _load_html, ".pdf": _load_pdf, ".docx": _load_docx,
    ".csv": _load_csv, ".jsonl": _load_jsonl,
}

SUPPORTED_SUFFIXES = frozenset(_LOADERS)
