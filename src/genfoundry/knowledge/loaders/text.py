"""Plain text and Markdown (sections by ATX heading, fenced code kept whole)."""

from __future__ import annotations

import re
from pathlib import Path

from genfoundry.knowledge.loaders.base import Section, _Parsed, _Sections, _decode, _pretty_stem, _tidy


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
