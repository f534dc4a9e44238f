"""HTML: visible text by block, headings as sections (BeautifulSoup)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from genfoundry.knowledge.loaders.base import Section, _Parsed, _Sections, _decode, _pretty_stem


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
