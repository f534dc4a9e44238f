"""Public evaluation sets the guard is measured on (the `eval run guard` suite and the benchmarks).

``benign_sets`` reads benign texts from a data folder laid out as ``shared/data``
(YouTube comments, Cranfield queries) plus the everyday questions shipped with the
guard: what an injection detector must leave alone.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

__all__ = ["benign_sets", "cranfield_queries"]


def cranfield_queries(folder: Path) -> list[str]:
    text = (folder / "cran.qry").read_text(encoding="utf-8", errors="replace")
    queries = (q.replace(".W", " ").strip() for q in re.split(r"^\.I .*$", text, flags=re.MULTILINE))
    return [" ".join(q.split()) for q in queries if q]


def benign_sets(data: Path) -> dict[str, list[str]]:
    ham = json.loads((data / "weak_supervision" / "youtube" / "test.json").read_text(encoding="utf-8"))
    everyday = resources.files("genfoundry.guard").joinpath("artifacts", "everyday-questions.txt").read_text(
        encoding="utf-8")
    return {"youtube_test_ham": [r["data"]["text"] for r in ham.values() if r["label"] == 0],
            "cranfield_queries": cranfield_queries(data / "retrieval" / "cranfield"),
            "everyday_questions": [q for q in everyday.splitlines() if q.strip() and not q.startswith("#")]}
