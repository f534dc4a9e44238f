"""CSV (a section per 100 rows, 'col: value') and JSON Lines (a section per record)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from genfoundry.knowledge.loaders.base import LoadError, Section, _CSV_ROWS_PER_SECTION, _Parsed, _decode, _pretty_stem


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
