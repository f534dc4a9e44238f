"""The data layer measured: weak supervision on WRENCH YouTube spam, the review queue, LF throughput.

- Label models on the given train/valid/test split and the 10 given LFs (``weak_labels``), fitted on
  the train rows' votes only: majority vote, Snorkel's ``LabelModel`` (when the ``snorkel`` package is
  installed: ``pip install genfoundry[bench]``), ours on the votes alone, and ours jointly with the rows'
  embeddings. Test accuracy counts a tie as half right (the figure WRENCH and SOURCES.md use).
- End models (logistic regression on TF-IDF word 1-2-grams, with or without character 2-5-grams, C of 10,
  100 or 1000: the setting chosen on the valid split's gold labels) trained on each label model's
  probabilities over the train rows some LF voted on; test accuracy.
- Review queue: rounds of 50 simulated reviews (the human is the gold label of a train row, never a
  test row), in the queue's order and in random order; test accuracy of the label and end models after
  each round.
- Prompt LFs on the built-in model (optional, ``llm_rows``): coverage and label-model accuracy with and
  without them, on the rows they were run on, and their rows/s beside the model's decode rate.
- Throughput of rule LFs (5 keyword/regex rules) on 100,000 rows: votes/s of the Arrow kernels, and rows/s
  of the whole cached apply (votes written to the store).

Example::

    result = run_data_bench(Path("../shared/data/weak_supervision/youtube"), embed=embed)
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from genfoundry.data.label_model import ABSTAIN, EndModel, LabelModel, majority_vote, select_end_model
from genfoundry.data.labeling import KeywordLF, PromptLF, RegexLF, apply_lfs
from genfoundry.data.tasks import _accuracy

__all__ = ["LLM_TEMPLATE", "load_wrench", "run_data_bench"]

# A few-shot completion prompt: the built-in model is a base model; asked a question in turns it echoes
# the question, shown examples it continues the pattern.
LLM_TEMPLATE = ("Label each YouTube comment as spam or ham.\n\n"
                "Comment: Subscribe to my channel please!\nLabel: spam\n\n"
                "Comment: I love this song so much\nLabel: ham\n\n"
                "Comment: Check out my video http://a.b\nLabel: spam\n\n"
                "Comment: Her voice is amazing\nLabel: ham\n\n"
                "Comment: {text}\nLabel:")


def load_wrench(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Votes, gold labels and texts of one WRENCH split file (``train.json``, ``valid.json``, ``test.json``)."""
    data = json.loads((folder / f"{split}.json").read_text())
    keys = sorted(data, key=lambda k: int(k) if k.isdigit() else k)
    L = np.array([data[k]["weak_labels"] for k in keys], dtype=np.int64)
    y = np.array([data[k]["label"] for k in keys], dtype=np.int64)
    return L, y, [data[k]["data"]["text"] for k in keys]


def _snorkel(L_train: np.ndarray, L_test: np.ndarray, seed: int = 0) -> np.ndarray | None:
    try:
        from snorkel.labeling.model import LabelModel as SnorkelLabelModel
    except ImportError:
        return None
    model = SnorkelLabelModel(cardinality=2, verbose=False)
    model.fit(L_train, n_epochs=500, log_freq=500, seed=seed, progress_bar=False)
    return model.predict_proba(L_train), model.predict_proba(L_test)


def _end(texts_train, probs, covered, texts_dev, y_dev, texts_test, y_test) -> dict:
    """The end model chosen on the valid split's gold labels (the grid of ``select_end_model``), refitted on
    the covered train rows; its test accuracy and the setting it chose."""
    chosen, table = select_end_model(texts_train, probs, mask=covered, dev_texts=texts_dev, dev_gold=y_dev)
    return {"test_accuracy": _accuracy(chosen.predict_proba(texts_test), y_test),
            "chosen": {"features": chosen.features, "C": chosen.C}, "dev": table}


def run_data_bench(folder: Path, *, embed: Callable[[list[str]], np.ndarray], store=None, generate=None,
                   llm_rows: int = 0, review_rounds: int = 4, review_batch: int = 50, seed: int = 0,
                   progress: Callable[[str], None] = lambda m: None) -> dict:
    L_tr, y_tr, t_tr = load_wrench(folder, "train")
    L_te, y_te, t_te = load_wrench(folder, "test")
    _, y_va, t_va = load_wrench(folder, "valid")  # its gold labels choose the end model's setting, nothing else
    covered = (L_tr != ABSTAIN).any(1)
    progress("embedding the rows")
    started = time.perf_counter()
    X_tr, X_te = embed(t_tr), embed(t_te)
    embed_s = time.perf_counter() - started
    result: dict = {"dataset": {"name": "WRENCH YouTube spam", "train": len(y_tr), "test": len(y_te),
                                "lfs": L_tr.shape[1], "test_coverage": round(float((L_te != ABSTAIN).any(1).mean()), 4)},
                    "embedding_s": round(embed_s, 2)}

    progress("label models")
    label_models, train_probs = {}, {}
    mv_tr, mv_te = majority_vote(L_tr, 2), majority_vote(L_te, 2)
    label_models["majority_vote"], train_probs["majority_vote"] = _accuracy(mv_te, y_te), mv_tr
    snorkel = _snorkel(L_tr, L_te, seed)
    if snorkel is None:
        label_models["snorkel"] = "not installed (pip install snorkel)"
    else:
        label_models["snorkel"], train_probs["snorkel"] = _accuracy(snorkel[1], y_te), snorkel[0]
    started = time.perf_counter()
    votes_only = LabelModel(2).fit(L_tr)
    label_models["ours_votes_only"] = _accuracy(votes_only.predict_proba(L_te), y_te)
    train_probs["ours_votes_only"] = votes_only.predict_proba(L_tr)
    joint = LabelModel(2).fit(L_tr, features=X_tr)
    label_models["ours_with_embeddings"] = _accuracy(joint.predict_proba(L_te, X_te), y_te)
    train_probs["ours_with_embeddings"] = joint.predict_proba(L_tr, X_tr)
    result["label_model_test_accuracy"] = label_models
    result["label_model_fit_s"] = round(time.perf_counter() - started, 2)
    result["learned_lf_accuracy"] = [round(float(a), 3) for a in votes_only.lf_accuracies]
    result["true_lf_accuracy_train"] = [round(float((L_tr[L_tr[:, j] != ABSTAIN, j] == y_tr[L_tr[:, j] != ABSTAIN]).mean()), 3)
                                         for j in range(L_tr.shape[1])]

    progress("end models")
    ends = {name: _end(t_tr, probs, covered, t_va, y_va, t_te, y_te) for name, probs in train_probs.items()}
    result["end_model_test_accuracy"] = {name: e["test_accuracy"] for name, e in ends.items()}
    result["end_model_chosen_on_valid"] = {name: {**e["chosen"], "dev": e["dev"]} for name, e in ends.items()}
    chosen = ends["ours_with_embeddings"]["chosen"]

    progress("review queue simulation")
    result["review"] = _review_simulation(L_tr, y_tr, t_tr, X_tr, L_te, y_te, t_te, X_te, joint, end=chosen,
                                          rounds=review_rounds, batch=review_batch, seed=seed)

    if store is not None:
        progress("rule LF throughput on 100,000 rows")
        result["throughput"] = _throughput(store, t_tr + t_te)
    if llm_rows and generate is not None and store is not None:
        progress(f"prompt LF on {llm_rows} train rows and the {len(y_te)} test rows")
        result["llm_lf"] = _llm(store, generate, L_tr, t_tr, L_te, y_te, t_te, rows=llm_rows, seed=seed)
    return result


def _review_simulation(L_tr, y_tr, t_tr, X_tr, L_te, y_te, t_te, X_te, fitted, *, end, rounds, batch, seed) -> dict:
    """Rounds of ``batch`` simulated reviews, in the queue's order (end and label models disagree first, then
    the label model's least sure rows) and in random order; after each round the label model is refitted with
    the reviewed rows held at their labels and the end model (setting ``end``) retrained."""
    covered = (L_tr != ABSTAIN).any(1)
    out = {}
    base_probs = fitted.predict_proba(L_tr, X_tr)
    base_end = EndModel(**end).fit(t_tr, base_probs, mask=covered)
    for order in ("queue", "random"):
        rng = np.random.default_rng(seed)
        gold = np.full(len(y_tr), ABSTAIN)
        probs, end_model = base_probs, base_end
        curve = [{"reviews": 0, "label_model": _accuracy(fitted.predict_proba(L_te, X_te), y_te),
                  "end_model": _accuracy(end_model.predict_proba(t_te), y_te)}]
        for _ in range(rounds):
            open_rows = np.flatnonzero(gold < 0)
            if order == "queue":
                disagree = (probs.argmax(1) != end_model.predict_proba(t_tr).argmax(1)).astype(float)
                entropy = -(probs * np.log(np.clip(probs, 1e-12, 1))).sum(1)
                score = disagree[open_rows] * 10 + entropy[open_rows]
                pick = open_rows[np.argsort(-score, kind="stable")[:batch]]
            else:
                pick = rng.choice(open_rows, size=batch, replace=False)
            gold[pick] = y_tr[pick]  # the simulated human: the train row's gold label
            model = LabelModel(2).fit(L_tr, gold=gold, features=X_tr)
            probs = model.predict_proba(L_tr, X_tr)
            probs[gold >= 0] = np.eye(2)[gold[gold >= 0]]
            end_model = EndModel(**end).fit(t_tr, probs, mask=covered | (gold >= 0))
            curve.append({"reviews": int((gold >= 0).sum()),
                          "label_model": _accuracy(model.predict_proba(L_te, X_te), y_te),
                          "end_model": _accuracy(end_model.predict_proba(t_te), y_te)})
        out[order] = curve
    out["gain_per_50_reviews"] = {
        order: {m: round((out[order][-1][m] - out[order][0][m]) / max(1, rounds) * 50 / batch, 4)
                for m in ("label_model", "end_model")}
        for order in ("queue", "random")}
    return out


RULES = [KeywordLF("subscribe", label="spam", keywords=["subscribe", "my channel"]),
         KeywordLF("song", label="ham", keywords=["song", "music", "voice"]),
         RegexLF("check_out", label="spam", pattern=r"check\s+(it\s+)?out"),
         RegexLF("link", label="spam", pattern=r"https?://|www\.|\.com"),
         KeywordLF("please", label="spam", keywords=["please", "plz"])]


def _throughput(store, texts: list[str], n: int = 100_000) -> dict:
    rows = [{"_id": str(i), "text": f"{texts[i % len(texts)]} #{i}"} for i in range(n)]
    texts_n = [r["text"] for r in rows]
    started = time.perf_counter()
    for lf in RULES:
        lf.vote(texts_n, rows)
    kernel_s = time.perf_counter() - started
    started = time.perf_counter()
    asyncio.run(apply_lfs(store, RULES, rows, text_field="text", labels=["ham", "spam"], batch=20_000))
    apply_s = time.perf_counter() - started
    started = time.perf_counter()
    cached = asyncio.run(apply_lfs(store, RULES, rows, text_field="text", labels=["ham", "spam"], batch=20_000))
    cached_s = time.perf_counter() - started
    return {"rows": n, "lfs": len(RULES),
            "kernel_rows_per_s": round(n / kernel_s), "kernel_votes_per_s": round(n * len(RULES) / kernel_s),
            "apply_rows_per_s_with_cache_writes": round(n / apply_s), "apply_rows_per_s_from_cache": round(n / cached_s),
            "recomputed_on_second_apply": cached.computed}


def _llm(store, generate, L_tr, t_tr, L_te, y_te, t_te, *, rows: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(t_tr), size=min(rows, len(t_tr)), replace=False))
    texts = [t_tr[i] for i in pick] + list(t_te)
    L = np.vstack([L_tr[pick], L_te])
    test = np.arange(len(pick), len(texts))
    tokens = {"n": 0}

    async def counting(model, request):
        out = await generate(model, request)
        tokens["n"] += out.usage.completion_tokens
        return out

    lf = PromptLF("llm_spam", model="default", template=LLM_TEMPLATE, answers={"spam": "spam", "ham": "ham"},
                  generate=counting, max_tokens=3, concurrency=1)
    records = [{"_id": str(i), "text": t} for i, t in enumerate(texts)]
    started = time.perf_counter()
    votes = asyncio.run(apply_lfs(store, [lf], records, text_field="text", labels=["ham", "spam"]))
    took = time.perf_counter() - started
    L_plus = np.hstack([L, votes.L])
    out = {"rows": len(texts)}
    for name, matrix in (("given_10", L), ("given_10_plus_llm", L_plus)):
        model = LabelModel(2).fit(matrix)
        out[name] = {"coverage": round(float((matrix != ABSTAIN).any(1).mean()), 4),
                     "test_label_model_accuracy": _accuracy(model.predict_proba(matrix)[test], y_te)}
    llm_votes = votes.L[:, 0]
    voted = llm_votes[test] != ABSTAIN
    out["llm_lf"] = {"coverage": round(float((llm_votes != ABSTAIN).mean()), 4),
                     "test_accuracy_where_it_voted": round(float((llm_votes[test][voted] == y_te[voted]).mean()), 4)
                     if voted.any() else None,
                     "rows_per_s": round(len(texts) / took, 2),
                     "completion_tokens_per_s": round(tokens["n"] / took, 1) if votes.computed else None}
    return out
