"""Word .docx: headings as sections, tables as rows; the archive is checked before it is inflated."""

from __future__ import annotations

import io
import re
from pathlib import Path

from genfoundry.knowledge.loaders.base import LoadError, _Parsed, _Sections, _pretty_stem

__all__ = ["check_zip"]


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
