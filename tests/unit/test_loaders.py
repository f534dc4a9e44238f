"""Loaders: every format into sections with true headings and pages; every bad file a clear LoadError."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import os
from pathlib import Path

import docx
import pytest
from fpdf import FPDF

from genfoundry.core.errors import InvalidRequest
from genfoundry.knowledge import loaders
from genfoundry.knowledge.loaders import (
    DEFAULT_MAX_FILE_BYTES,
    SUPPORTED_SUFFIXES,
    LoadError,
    find_files,
    load_document,
)


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return path


def make_pdf(*pages: str, title: str | None = None) -> bytes:
    pdf = FPDF()
    if title:
        pdf.set_title(title)
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        if text:
            pdf.multi_cell(0, 10, text)
        else:
            pdf.rect(20, 20, 100, 60, style="F")  # a "scanned" page: ink, no text
    return bytes(pdf.output())


def load_error(path: Path, **kwargs) -> LoadError:
    with pytest.raises(LoadError) as info:
        load_document(path, **kwargs)
    assert str(path) in info.value.message
    return info.value


# ---------------------------------------------------------------- formats


def test_plain_text_is_one_section_with_paragraphs_and_file_facts(tmp_path):
    raw = "First paragraph\nstill first.\r\n\r\n\r\nSecond paragraph.   \n"
    path = write(tmp_path / "release_notes-v2.txt", raw)
    doc = load_document(path)
    assert doc.title == "Release notes v2"
    assert [s.text for s in doc.sections] == ["First paragraph\nstill first.\n\nSecond paragraph."]
    assert doc.sections[0].heading == "" and doc.sections[0].page is None
    assert doc.source == str(path) and doc.size == len(raw.encode())
    assert doc.content_hash == hashlib.sha256(raw.encode()).hexdigest()
    modified = dt.datetime.fromisoformat(doc.modified)
    assert modified.utcoffset() == dt.timedelta(0)
    assert abs(modified.timestamp() - path.stat().st_mtime) < 1


def test_markdown_sections_follow_the_heading_hierarchy(tmp_path):
    path = write(tmp_path / "handbook.md", """Intro before any heading.

# Handbook

Welcome.

## Returns

Return within 30 days.

### Refunds ###

Refunds take 5 days.

```bash
# not a heading: inside a fence
echo hi
```

## Shipping

#hashtag is not a heading either.
""")
    doc = load_document(path)
    assert doc.title == "Handbook"
    assert [s.heading for s in doc.sections] == [
        "", "Handbook", "Handbook > Returns", "Handbook > Returns > Refunds", "Handbook > Shipping",
    ]
    refunds = doc.sections[3].text
    assert "# not a heading: inside a fence" in refunds and refunds.endswith("```")
    assert doc.sections[4].text == "#hashtag is not a heading either."


def test_markdown_title_from_front_matter_or_file_name(tmp_path):
    front = load_document(write(tmp_path / "a.md", '---\ntitle: "Travel policy"\n---\n## Flights\nEconomy.'))
    assert front.title == "Travel policy"
    assert [(s.heading, s.text) for s in front.sections] == [("Flights", "Economy.")]
    plain = load_document(write(tmp_path / "on-call_guide.markdown", "## Paging\nAnswer fast."))
    assert plain.title == "On call guide"


def test_html_drops_noise_and_keeps_headings_lists_and_tables(tmp_path):
    path = write(tmp_path / "page.html", """<!doctype html>
<html><head><title>Support  Centre</title><style>p {color: red}</style></head>
<body>
<header>Site banner</header>
<nav><a href="/">Home</a> | <a href="/x">Menu item</a></nav>
<script>var tracking = 1;</script><noscript>Enable JS</noscript>
<!-- a comment -->
<h1>Support</h1>
<p>Call us  any
time.</p><p>Or write.</p>
<h2>Prices</h2>
<table><tr><th>Plan</th><th>Price</th></tr><tr><td>Basic</td><td>10 EUR</td></tr></table>
<h3>Steps</h3>
<ol><li>Open the app</li><li>Tap <b>Help</b></li></ol>
<ul><li>Fast</li><li>Free</li></ul>
<article><header><h2>News</h2></header><p>New office.</p></article>
<footer>Copyright</footer>
</body></html>""")
    doc = load_document(path)
    assert doc.title == "Support Centre"
    by_heading = {s.heading: s.text for s in doc.sections}
    assert list(by_heading) == ["Support", "Support > Prices", "Support > Prices > Steps",
                                "Support > News"]
    assert by_heading["Support"] == "Call us any time.\n\nOr write."
    assert by_heading["Support > Prices"] == "Plan | Price\nBasic | 10 EUR"
    assert by_heading["Support > Prices > Steps"] == "1. Open the app\n2. Tap Help\n\n- Fast\n- Free"
    assert by_heading["Support > News"] == "New office."
    everything = " ".join(by_heading.values())
    for noise in ("banner", "Menu item", "tracking", "Enable JS", "comment", "Copyright", "color"):
        assert noise not in everything


def test_html_keeps_preformatted_lines_and_list_items_with_paragraphs(tmp_path):
    doc = load_document(write(tmp_path / "code.html", "<p>Run:</p><pre>\nmake\n  test  </pre>"
                              "<ul><li><p>One</p></li><li>Two</li></ul>"))
    assert doc.sections[0].text == "Run:\n\nmake\n  test\n\n- One\n\n- Two"


def test_html_title_from_first_h1_and_deep_nesting(tmp_path):
    deep = "<div>" * 5000 + "Deep text." + "</div>" * 5000
    doc = load_document(write(tmp_path / "x.htm", f"<h1>Guide</h1>{deep}"))
    assert doc.title == "Guide"
    assert doc.sections[0].text == "Deep text."


def test_pdf_has_one_section_per_page(tmp_path):
    path = write(tmp_path / "manual.pdf", make_pdf("Page one says hello.", "Page two says bye.",
                                                   title="The Manual"))
    doc = load_document(path)
    assert doc.title == "The Manual"
    assert [(s.page, s.text) for s in doc.sections] == [
        (1, "Page one says hello."), (2, "Page two says bye.")]


def test_pdf_title_from_first_line_and_pages_without_text_are_warned(tmp_path):
    path = write(tmp_path / "scan-mix.pdf", make_pdf("Quarterly Report\nNumbers went up.", ""))
    doc = load_document(path)
    assert doc.title == "Quarterly Report"
    assert [s.page for s in doc.sections] == [1]
    assert doc.warnings == ["page 2: no text (a scanned image?); skipped"]


def test_pdf_without_any_text_says_ocr_is_not_supported(tmp_path):
    error = load_error(write(tmp_path / "scan.pdf", make_pdf("", "")))
    assert error.code == "no_text" and "OCR" in error.message


def test_corrupt_pdf_is_refused(tmp_path):
    good = make_pdf("Hello.")
    error = load_error(write(tmp_path / "broken.pdf", good[:200] + b"garbage" * 10))
    assert error.code in ("corrupt_file", "no_text")
    error = load_error(write(tmp_path / "not.pdf", b"this is not a pdf at all"))
    assert error.code == "corrupt_file" and "PDF viewer" in error.message


def test_password_protected_pdf_is_refused(tmp_path):
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf("Secret."))))
    writer.encrypt(user_password="secret", owner_password="owner", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    error = load_error(write(tmp_path / "locked.pdf", out.getvalue()))
    assert error.code == "encrypted_file" and "password" in error.message


def make_docx(path: Path) -> Path:
    document = docx.Document()
    document.add_paragraph("Employee Handbook", style="Title")
    document.add_paragraph("Read this first.")
    document.add_heading("Leave", level=1)
    document.add_paragraph("You get 25 days.")
    document.add_heading("Sick leave", level=2)
    document.add_paragraph("Tell your manager.")
    document.add_paragraph("Call before nine", style="List Bullet")
    table = document.add_table(rows=2, cols=2)
    for row, cells in zip(table.rows, [("Days", "Pay"), ("1-3", "Full")], strict=True):
        for cell, text in zip(row.cells, cells, strict=True):
            cell.text = text
    document.add_heading("Travel", level=1)
    document.add_paragraph("Book economy.")
    document.save(path)
    return path


def test_docx_headings_make_paths_and_tables_are_text(tmp_path):
    doc = load_document(make_docx(tmp_path / "handbook.docx"))
    assert doc.title == "Employee Handbook"
    assert [(s.heading, s.text) for s in doc.sections] == [
        ("Employee Handbook", "Read this first."),
        ("Employee Handbook > Leave", "You get 25 days."),
        ("Employee Handbook > Leave > Sick leave",
         "Tell your manager.\n\n- Call before nine\n\nDays | Pay\n1-3 | Full"),
        ("Employee Handbook > Travel", "Book economy."),
    ]


def test_corrupt_docx_is_refused(tmp_path):
    error = load_error(write(tmp_path / "bad.docx", b"PK\x03\x04 not really a zip"))
    assert error.code == "corrupt_file" and "Word" in error.message


def test_csv_rows_become_labelled_lines_with_bom_and_sniffed_delimiter(tmp_path):
    text = "\ufeffname;city;note\nAda;London;\n\nLinus;Helsinki;\"likes; semicolons\"\nX;Y;Z;extra\n"
    doc = load_document(write(tmp_path / "people.csv", text.encode("utf-8")))
    assert doc.title == "People"
    assert [(s.heading, s.text.split("\n")) for s in doc.sections] == [("people.csv", [
        "name: Ada; city: London",
        "name: Linus; city: Helsinki; note: likes; semicolons",
        "name: X; city: Y; note: Z; column 4: extra",
    ])]


def test_csv_rows_are_grouped_into_sections(tmp_path):
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "value"])
    writer.writerows([i, f"v{i}"] for i in range(250))
    doc = load_document(write(tmp_path / "big.csv", out.getvalue()))
    assert [len(s.text.split("\n")) for s in doc.sections] == [100, 100, 50]
    assert doc.sections[2].text.endswith("id: 249; value: v249")


def test_csv_with_only_a_header_has_no_text(tmp_path):
    assert load_error(write(tmp_path / "h.csv", "a,b,c\n")).code == "no_text"


def test_jsonl_records_and_malformed_lines(tmp_path):
    lines = [
        json.dumps({"title": "Refunds", "text": "Refunds take 5 days."}),
        "{not json",
        json.dumps({"question": "Can I return shoes?", "answer": "Yes, unworn."}),
        "",
        json.dumps({"sku": 12, "colour": "blue"}),
        json.dumps("just a string"),
    ]
    doc = load_document(write(tmp_path / "faq.jsonl", "\n".join(lines)))
    assert [(s.heading, s.text) for s in doc.sections] == [
        ("Refunds", "Refunds take 5 days."),
        ("", "Question: Can I return shoes?\nAnswer: Yes, unworn."),
        ("", '{"sku": 12, "colour": "blue"}'),
        ("", "just a string"),
    ]
    assert len(doc.warnings) == 1 and doc.warnings[0].startswith("line 2: not valid JSON")


def test_jsonl_where_no_line_parses_is_refused(tmp_path):
    error = load_error(write(tmp_path / "bad.jsonl", "{oops\n\n[1,\n"))
    assert error.code == "corrupt_file" and "line 1" in error.message


# ---------------------------------------------------------------- encodings


def test_text_encodings_utf8_bom_utf16_and_windows_1252(tmp_path):
    assert load_document(write(tmp_path / "a.txt", "\ufeffcafé".encode())).sections[0].text == "café"
    assert load_document(write(tmp_path / "b.txt", "naïve".encode("utf-16"))).sections[0].text == "naïve"
    assert load_document(write(tmp_path / "c.txt", "café – ok".encode("cp1252"))).sections[0].text == "café – ok"


def test_binary_content_in_a_text_file_is_refused(tmp_path):
    error = load_error(write(tmp_path / "image.md", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"))
    assert error.code == "binary_file" and "binary" in error.message
    # Bytes that are neither UTF-8 nor Windows-1252 (0x81 and 0x8d are unassigned there).
    error = load_error(write(tmp_path / "odd.txt", b"abc \x81\x8d\xff def"))
    assert error.code == "binary_file" and "UTF-8" in error.message
    # No NUL, decodable as Windows-1252, but full of control characters: still binary.
    noise = bytes(b for b in range(1, 256) if b not in b"\x81\x8d\x8f\x90\x9d") * 4
    assert load_error(write(tmp_path / "noise.csv", noise)).code == "binary_file"


# ---------------------------------------------------------------- bad input


def test_missing_file(tmp_path):
    error = load_error(tmp_path / "nope.md")
    assert error.code == "file_not_found" and "does not exist" in error.message
    assert isinstance(error, InvalidRequest) and error.to_dict()["error"]["param"] == "path"


def test_folder_is_refused_with_a_hint(tmp_path):
    error = load_error(tmp_path)
    assert error.code == "is_a_directory" and "find_files" in error.message


def test_unsupported_suffix(tmp_path):
    error = load_error(write(tmp_path / "deck.pptx", b"PK..."))
    assert error.code == "unsupported_file_type"
    assert ".pptx" in error.message and ".pdf" in error.message
    assert load_error(write(tmp_path / "README", "hi")).code == "unsupported_file_type"


def test_empty_and_whitespace_only_files(tmp_path):
    error = load_error(write(tmp_path / "empty.txt", b""))
    assert error.code == "empty_file" and "empty" in error.message
    assert load_error(write(tmp_path / "blank.md", " \n\n\t\n")).code == "no_text"
    assert load_error(write(tmp_path / "markup.html", "<script>x()</script>")).code == "no_text"


def test_file_over_the_limit_is_refused_without_being_read(tmp_path, monkeypatch):
    path = tmp_path / "huge.txt"
    with open(path, "wb") as f:
        f.truncate(200 * 2**20)  # sparse: no disk, no time

    def no_reading(*args, **kwargs):
        raise AssertionError("a file over the limit must not be opened")

    monkeypatch.setattr(loaders, "open", no_reading, raising=False)
    error = load_error(path)
    assert error.code == "file_too_large"
    assert "200.0 MiB" in error.message and "50.0 MiB" in error.message
    assert DEFAULT_MAX_FILE_BYTES == 50 * 2**20
    monkeypatch.undo()
    assert load_error(write(tmp_path / "small.txt", "x" * 11), max_bytes=10).code == "file_too_large"
    assert load_document(write(tmp_path / "fits.txt", "x" * 10), max_bytes=10).size == 10


def test_unreadable_file_simulated(tmp_path, monkeypatch):
    path = write(tmp_path / "secret.txt", "classified")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(loaders, "open", denied, raising=False)
    error = load_error(path)
    assert error.code == "permission_denied" and "chmod" in error.message


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_for_real(tmp_path):
    path = write(tmp_path / "secret.txt", "classified")
    path.chmod(0)
    try:
        assert load_error(path).code == "permission_denied"
    finally:
        path.chmod(0o644)


# ---------------------------------------------------------------- finding files


def test_find_files_expands_folders_and_reports_problems(tmp_path):
    for name in ["b/z.md", "b/a.txt", "a.pdf", "b/c/deep.jsonl", "notes.pptx", ".hidden.md",
                 ".git/config.md", "b/~$lock.docx", "b/UPPER.HTML"]:
        write(tmp_path / "kb" / name, "x")
    explicit_unsupported = write(tmp_path / "deck.key", "x")
    explicit_hidden = write(tmp_path / ".secret.md", "x")
    missing = tmp_path / "missing"
    files, problems = find_files([tmp_path / "kb", missing, explicit_unsupported,
                                  explicit_hidden, tmp_path / "kb" / "a.pdf"])
    kb = tmp_path / "kb"
    assert files == [kb / "a.pdf", kb / "b" / "UPPER.HTML", kb / "b" / "a.txt",
                     kb / "b" / "z.md", kb / "b" / "c" / "deep.jsonl", explicit_hidden]
    assert [p for p, _ in problems] == [missing, explicit_unsupported]
    assert "does not exist" in problems[0][1] and "not supported" in problems[1][1]


def test_supported_suffixes_are_the_documented_ones():
    assert SUPPORTED_SUFFIXES == {".txt", ".text", ".md", ".markdown", ".html", ".htm", ".pdf",
                                  ".docx", ".csv", ".jsonl"}
