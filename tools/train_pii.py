"""Train genfoundry's PII token classifier and write src/genfoundry/guard/artifacts/pii-crf-v1.{crfsuite,json}.

    python tools/train_pii.py [--data ../shared/data] [--sentences 8000]

Data (written or generated for this project; see the card it writes):

- positives: tools/pii_data/templates.txt (sentence templates written for genfoundry, CC0) filled with
  values from Faker (MIT) in 16 locales: names, street addresses (one line or several), cities, states,
  countries, postal codes, dates and times in many formats, and the other PII types as context;
- negatives: the ham comments of the youtube spam TRAIN split (weak_supervision) and genfoundry's
  everyday questions (guard/artifacts/everyday-questions.txt), every token "O".

The test data (../shared/data/pii, presidio-research's synthetic sentences) is never trained on: a
template whose word 5-grams (slots normalised) overlap any of its masked templates by more than 30 % of
the smaller text is dropped, and the count is recorded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import random
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from genfoundry.bench.pii import evaluate_tags  # noqa: E402
from genfoundry.guard.pii_model import ARTIFACT, LABELS, _crf_items, features, tokens  # noqa: E402

SEED = 20261203
LOCALES = ["en_US", "en_GB", "en_AU", "en_CA", "en_IE", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "fi_FI",
           "sv_SE", "da_DK", "pl_PL", "pt_BR", "hu_HU", "cs_CZ"]
SLOT_LABEL = {"PERSON": "PERSON", "FIRST_NAME": "PERSON", "LAST_NAME": "PERSON", "STREET_ADDRESS": "LOCATION",
              "ADDRESS": "LOCATION", "CITY": "LOCATION", "STATE": "LOCATION", "COUNTRY": "LOCATION",
              "ZIP": "LOCATION", "DATE": "DATE_TIME", "TIME": "DATE_TIME"}
NATIONALITIES = ["German", "French", "Brazilian", "Japanese", "Kenyan", "Canadian", "Polish", "Indian", "Irish",
                 "Mexican", "Finnish", "Egyptian", "Korean", "Dutch", "Turkish", "Nigerian", "Swedish"]
OVERLAP_LIMIT = 0.3
_SLOT = re.compile(r"\{([A-Z_]+)\}")


def shingles(text: str, n: int = 5) -> set[str]:
    words = re.findall(r"\w+", text.lower())
    return {" ".join(words[i:i + n]) for i in range(max(0, len(words) - n + 1))}


def overlap(a: set[str], b: set[str]) -> float:
    return len(a & b) / min(len(a), len(b)) if a and b else 0.0


def load_templates(test_masked: list[str]) -> tuple[list[str], int]:
    lines = [line.rstrip("\n") for line in (ROOT / "tools" / "pii_data" / "templates.txt").read_text().splitlines()]
    templates = [line for line in lines if line.strip() and not line.startswith("#")]
    test = [shingles(re.sub(r"\{\{?\w+\}?\}", " slot ", m)) for m in test_masked]
    kept, dropped = [], 0
    for template in templates:
        mine = shingles(_SLOT.sub(" slot ", template))
        if any(overlap(mine, other) > OVERLAP_LIMIT for other in test):
            dropped += 1
            continue
        kept.append(template)
    return kept, dropped


def _date(fake, rng: random.Random) -> str:
    day = fake.date_between(start_date="-60y", end_date="+2y")
    formats = ["%B %d, %Y", "%d %B %Y", "%Y-%m-%d", "%m/%d/%Y", "%d/%m/%Y", "%d.%m.%Y", "%b %d", "%d %b",
               "%A", "%B %Y", "%B", "%Y", "%A, %B %d", "%d-%m-%Y"]
    text = day.strftime(rng.choice(formats))
    return rng.choice([text, text, text, f"{day.day}{'th' if 10 < day.day < 14 else {1: 'st', 2: 'nd', 3: 'rd'}.get(day.day % 10, 'th')} of {day:%B}"])


def _time(fake, rng: random.Random) -> str:
    moment = fake.date_time()
    return moment.strftime(rng.choice(["%H:%M", "%I:%M %p", "%I %p", "%H:%M:%S", "%I.%M %p"])).lstrip("0")


def _value(slot: str, fake, rng: random.Random) -> str:
    if slot == "ADDRESS":
        text = fake.address()
        return text if rng.random() < 0.5 else re.sub(r"\s*\n\s*", ", ", text)
    if slot == "STREET_ADDRESS":
        text = fake.street_address()
        if rng.random() < 0.25 and hasattr(fake, "secondary_address"):
            try:
                text = f"{text} {fake.secondary_address()}"
            except AttributeError:
                pass
        return text
    if slot == "STATE":
        for name in ("state", "region", "administrative_unit", "county"):
            try:
                return getattr(fake, name)()
            except AttributeError:
                continue
        return fake.city()
    simple = {"PERSON": "name", "FIRST_NAME": "first_name", "LAST_NAME": "last_name", "CITY": "city",
              "COUNTRY": "country", "ZIP": "postcode", "ORG": "company", "PHONE": "phone_number", "EMAIL": "email",
              "CREDIT_CARD": "credit_card_number", "IBAN": "iban", "SSN": "ssn", "IP": "ipv4", "URL": "url",
              "JOB": "job"}
    if slot in simple:
        return str(getattr(fake, simple[slot])())
    if slot == "DATE":
        return _date(fake, rng)
    if slot == "TIME":
        return _time(fake, rng)
    if slot == "NRP":
        return rng.choice(NATIONALITIES)
    if slot == "AGE":
        return str(rng.randint(18, 90))
    raise ValueError(f"unknown slot {slot}")


def fill(template: str, fakers: dict, rng: random.Random) -> tuple[str, list[tuple[str, int, int]]]:
    fake = fakers[rng.choice(LOCALES)]
    text, spans, at = "", [], 0
    for m in _SLOT.finditer(template):
        text += template[at:m.start()]
        value = _value(m.group(1), fake, rng)
        if m.group(1) in SLOT_LABEL:
            spans.append((SLOT_LABEL[m.group(1)], len(text), len(text) + len(value)))
        text += value
        at = m.end()
    return text + template[at:], spans


def bio(text: str, spans: list[tuple[str, int, int]]) -> tuple[list, list[str]]:
    toks = tokens(text)
    labels, previous = [], None
    for _, start, _ in toks:
        label = next((f"{kind}" for kind, s, e in spans if s <= start < e), None)
        span = next(((kind, s) for kind, s, e in spans if s <= start < e), None)
        if label is None:
            labels.append("O")
        else:
            labels.append(("I-" if span == previous else "B-") + label)
        previous = span
    return toks, labels


def negatives(data: Path) -> list[str]:
    rows = json.loads((data / "weak_supervision" / "youtube" / "train.json").read_text(encoding="utf-8"))
    texts = [r["data"]["text"] for r in rows.values() if r["label"] == 0]
    texts += (ROOT / "src/genfoundry/guard/artifacts/everyday-questions.txt").read_text().splitlines()
    return [t for t in texts if t.strip()]


def token_scores(gold: list[list[str]], pred: list[list[str]]) -> dict:
    """Token-level precision and recall per label of BIO sequences, scored as `genfoundry bench guard` does."""
    def plain(seq: list[str]) -> list[str]:
        return [t[2:] if t != "O" else "O" for t in seq]

    per_type = evaluate_tags([(plain(g), plain(p)) for g, p in zip(gold, pred)])["per_type"]
    zero = {"precision": 0.0, "recall": 0.0}
    return {kind: {k: per_type.get(kind, zero)[k] for k in ("precision", "recall")} for kind in LABELS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--sentences", type=int, default=8000)
    parser.add_argument("--iterations", type=int, default=200)
    args = parser.parse_args()

    import pycrfsuite
    from faker import Faker

    rng = random.Random(SEED)
    Faker.seed(SEED)
    fakers = {locale: Faker(locale) for locale in LOCALES}
    test_rows = json.loads((args.data / "pii" / "presidio_synth_dataset_v2.json").read_text())
    templates, dropped = load_templates([r.get("masked") or "" for r in test_rows])
    examples = []
    for i in range(args.sentences):
        text, spans = fill(templates[i % len(templates)], fakers, rng)
        examples.append(bio(text, spans) + (text,))
    negative_texts = negatives(args.data)
    for text in negative_texts:
        toks = tokens(text)
        if toks:
            examples.append((toks, ["O"] * len(toks), text))
    rng.shuffle(examples)
    cut = int(len(examples) * 0.9)
    train, valid = examples[:cut], examples[cut:]

    trainer = pycrfsuite.Trainer(verbose=False)
    for toks, labels, text in train:
        trainer.append(_crf_items(features(toks, text)), labels)
    params = {"c1": 0.05, "c2": 0.01, "max_iterations": args.iterations, "feature.possible_transitions": True}
    trainer.set_params(params)
    model_path = ARTIFACT.with_suffix(".crfsuite")
    trainer.train(str(model_path))

    tagger = pycrfsuite.Tagger()
    tagger.open(str(model_path))
    predicted = [tagger.tag(_crf_items(features(toks, text))) for toks, _, text in valid]
    card = {
        "artifact": "pii-crf-v1", "trained": dt.date.today().isoformat(), "script": "tools/train_pii.py",
        "seed": SEED, "model": "linear-chain CRF (python-crfsuite, L-BFGS) over word, shape, affix, word-list "
                                "and line-break features of each token and its 2 neighbours each side",
        "labels": ["O"] + [f"{p}-{k}" for k in LABELS for p in "BI"],
        "params": params,
        "sources": {
            "templates": {"path": "tools/pii_data/templates.txt", "licence": "written for genfoundry (CC0)",
                          "kept": len(templates), "dropped_as_near_duplicates_of_test": dropped},
            "faker": {"url": "https://pypi.org/project/Faker/", "licence": "MIT", "locales": LOCALES},
            "youtube_train_ham": {"path": "weak_supervision/youtube (TRAIN split ham)",
                                  "licence": "CC BY 4.0 (UCI YouTube Spam Collection)"},
            "everyday_questions": {"path": "src/genfoundry/guard/artifacts/everyday-questions.txt",
                                   "licence": "written for genfoundry"},
        },
        "counts": {"generated_sentences": args.sentences, "negative_texts": len(negative_texts),
                   "train": len(train), "validation": len(valid)},
        "dedup_rule": f"word 5-gram overlap (slots normalised) with any test template > {OVERLAP_LIMIT}",
        "test_data_never_trained_on": "../shared/data/pii (presidio-research synthetic sentences)",
        "validation": token_scores([v[1] for v in valid], predicted),
        "weights_sha256": hashlib.sha256(model_path.read_bytes()).hexdigest(),
    }
    ARTIFACT.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card, indent=2))


if __name__ == "__main__":
    main()
