"""PII detection measured on presidio-research's synthetic sentences, ours beside Presidio's default.

Evaluation is token-level, as presidio-research's own evaluator does: the text
is split into words and punctuation, each token gets the gold entity type whose
span covers it (or none), and each detector's predictions are mapped the same
way. Dataset types are mapped to the types a detector can name
(``EVAL_TYPES``): street addresses, cities and countries (GPE) and postal codes
are all LOCATION; domain names are URL. TITLE and AGE are not PII types of
either detector and count as "no entity" (a prediction on them is a false
positive for both). Per type: precision, recall and F2 (beta 2: recall counts
four times as much, as it does when a missed value leaks). Overall figures pool
every token; a token predicted as the wrong type is both a false positive and
a false negative.

Example::

    result = run_pii_bench(Path("../shared/data/pii/presidio_synth_dataset_v2.json"))
    result["ours"]["overall"]["f2"], result["presidio_default"]["overall"]["f2"]
"""

from __future__ import annotations

import json
import re
import statistics
import time
from collections import Counter
from pathlib import Path

__all__ = ["EVAL_TYPES", "evaluate_tags", "run_pii_bench"]

EVAL_TYPES = {
    "PERSON": "PERSON", "STREET_ADDRESS": "LOCATION", "GPE": "LOCATION", "LOCATION": "LOCATION",
    "ZIP_CODE": "LOCATION", "ORGANIZATION": "ORGANIZATION", "CREDIT_CARD": "CREDIT_CARD",
    "DATE_TIME": "DATE_TIME", "PHONE_NUMBER": "PHONE_NUMBER", "NRP": "NRP", "EMAIL_ADDRESS": "EMAIL_ADDRESS",
    "DOMAIN_NAME": "URL", "URL": "URL", "IBAN_CODE": "IBAN_CODE", "US_SSN": "US_SSN", "IP_ADDRESS": "IP_ADDRESS",
    "US_DRIVER_LICENSE": "US_DRIVER_LICENSE",
}
_TOKEN = re.compile(r"\w+|[^\w\s]")
BETA = 2


def _labels(text: str, spans: list[tuple[str, int, int]]) -> list[str]:
    labels = []
    for m in _TOKEN.finditer(text):
        label = "O"
        for entity, start, end in spans:
            if start <= m.start() < end and entity in EVAL_TYPES:
                label = EVAL_TYPES[entity]
                break
        labels.append(label)
    return labels


def _scores(tp: int, fp: int, fn: int) -> dict:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f2 = (1 + BETA**2) * p * r / (BETA**2 * p + r) if p + r else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f2": round(f2, 4), "tp": tp, "fp": fp, "fn": fn}


def evaluate_tags(pairs: list[tuple[list[str], list[str]]]) -> dict:
    """Token-level precision, recall and F2, overall and per type, of (gold, predicted) tag sequences
    ("O" for none)."""
    tp, fp, fn = Counter(), Counter(), Counter()
    for gold, pred in pairs:
        for g, p in zip(gold, pred):
            if g == p:
                if g != "O":
                    tp[g] += 1
                continue
            if p != "O":
                fp[p] += 1
            if g != "O":
                fn[g] += 1
    types = sorted(set(tp) | set(fp) | set(fn))
    return {"overall": _scores(sum(tp.values()), sum(fp.values()), sum(fn.values())),
            "per_type": {t: _scores(tp[t], fp[t], fn[t]) for t in types}}


def _default_presidio():
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    from genfoundry.guard.pii import SPACY_MODEL, _offline_tldextract

    _offline_tldextract()
    provider = NlpEngineProvider(nlp_configuration={
        "nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": SPACY_MODEL}]})
    engine = AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])
    return lambda text: [(r.entity_type, r.start, r.end) for r in engine.analyze(text=text, language="en")]


def _ours():
    from genfoundry.guard.pii import PiiDetector

    detector = PiiDetector()
    detector.warm_up()
    return lambda text: [(f.kind, f.start, f.end) for f in detector.check(text)]


def _run(detect, rows: list[dict]) -> dict:
    pairs, times = [], []
    for row in rows:
        text = row["full_text"]
        gold = _labels(text, [(s["entity_type"], s["start_position"], s["end_position"]) for s in row["spans"]])
        started = time.perf_counter()
        found = detect(text)
        times.append((time.perf_counter() - started) * 1000)
        # Highest-scoring first is what both return; the first span covering a token wins.
        pairs.append((gold, _labels(text, found)))
    result = evaluate_tags(pairs)
    result["latency_ms_p50"] = round(statistics.median(times), 2)
    return result


def run_pii_bench(data_path: Path, *, limit: int | None = None) -> dict:
    rows = json.loads(Path(data_path).read_text(encoding="utf-8"))[:limit]
    gold_types = Counter(EVAL_TYPES.get(s["entity_type"], f"ignored:{s['entity_type']}")
                         for r in rows for s in r["spans"])
    ours = _run(_ours(), rows)
    default = _run(_default_presidio(), rows)
    return {"data": str(data_path), "sentences": len(rows), "scheme": "token-level, beta=2",
            "gold_spans_by_eval_type": dict(sorted(gold_types.items())),
            "ours": ours, "presidio_default": default,
            "f2_difference": round(ours["overall"]["f2"] - default["overall"]["f2"], 4)}
