"""Injection detection measured: attacks caught, and benign texts wrongly flagged.

Attacks: ../shared/data/injection/giskard_prompt_injections.csv (35 prompts from
garak and PromptInject; never trained on). Benign: the ham comments of the
youtube TEST split, the 225 Cranfield queries, and the everyday questions in
``artifacts/everyday-questions.txt`` (written for this benchmark, not trained
on). The threshold is the one in the classifier's card, chosen on its
validation split. Latency is ``check`` on 500-token prompts.

Example::

    result = run_injection_bench(Path("../shared/data"))
    result["combined"]["tpr"], result["combined"]["fpr"]["all"]
"""

from __future__ import annotations

import csv
import statistics
import time
from collections import defaultdict
from pathlib import Path

from genfoundry.guard.datasets import benign_sets
from genfoundry.guard.injection import PATTERNS, InjectionDetector, windows

__all__ = ["run_injection_bench"]


def _rates(flags: dict[str, list[bool]]) -> dict:
    out = {name: round(sum(f) / len(f), 4) for name, f in flags.items()}
    every = [x for f in flags.values() for x in f]
    out["all"] = round(sum(every) / len(every), 4)
    return out


def run_injection_bench(data: Path) -> dict:
    detector = InjectionDetector()
    detector.warm_up()
    threshold = detector.threshold
    with open(data / "injection" / "giskard_prompt_injections.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    benign = benign_sets(data)

    def layers(text: str) -> tuple[bool, bool]:
        pattern = any(p.search(text) for p in PATTERNS.values())
        classifier = float(detector.classifier_scores(windows(text)).max()) >= threshold
        return pattern, classifier
    attack = [layers(r["prompt"]) for r in rows]
    by_group = defaultdict(list)
    for r, (p, c) in zip(rows, attack):
        by_group[r["group"]].append(p or c)
    benign_layers = {name: [layers(t) for t in texts] for name, texts in benign.items()}
    missed = [r["name"] for r, (p, c) in zip(rows, attack) if not (p or c)]
    fp_examples = [t[:120] for name, texts in benign.items() for t, (p, c) in zip(texts, benign_layers[name])
                   if p or c][:10]

    def summary(pick) -> dict:
        return {"tpr": round(sum(pick(a) for a in attack) / len(attack), 4),
                "fpr": _rates({n: [pick(x) for x in v] for n, v in benign_layers.items()})}
    prompts = _latency_prompts()
    times = []
    for prompt in prompts:
        started = time.perf_counter()
        detector.check(prompt)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {
        "threshold": threshold, "threshold_chosen_on": detector.card["split"]["validation_is"],
        "artifact": detector.card["artifact"], "attacks": len(rows),
        "benign": {n: len(v) for n, v in benign.items()},
        "combined": summary(lambda x: x[0] or x[1]), "patterns_only": summary(lambda x: x[0]),
        "classifier_only": summary(lambda x: x[1]),
        "tpr_by_group": {g: round(sum(v) / len(v), 4) for g, v in by_group.items()},
        "missed_attacks": missed, "false_positive_examples": fp_examples,
        "latency_500_tokens_ms": {"p50": round(statistics.median(times), 2),
                                  "p95": round(times[int(len(times) * 0.95) - 1], 2), "n": len(times)},
        "targets": {"tpr": 0.90, "fpr": 0.02},
    }


def _latency_prompts(count: int = 100) -> list[str]:
    from genfoundry.knowledge import SAMPLE_DOCS

    words = " ".join(p.read_text(encoding="utf-8") for p in sorted(Path(SAMPLE_DOCS).rglob("*.md"))).split()
    # About 375 words is 500 tokens for English prose.
    return [" ".join(words[i * 97 % (len(words) - 400):][:375]) for i in range(count)]
