"""PDF: one section per page (pypdf)."""

from __future__ import annotations

import io
from pathlib import Path

from genfoundry.knowledge.loaders.base import LoadError, Section, _Parsed, _pretty_stem, _tidy


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
