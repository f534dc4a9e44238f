"""Labeling: the label model, LF analysis, applying LFs with the cache, tasks, reviews."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from genfoundry.core.errors import Conflict, InvalidRequest, PermissionDenied
from genfoundry.core.types import Generation
from genfoundry.data.datasets import Datasets
from genfoundry.data.label_model import ABSTAIN, LabelModel, lf_summary, majority_vote
from genfoundry.data.labeling import KeywordLF, PromptLF, RegexLF, apply_lfs, labeling_function
from genfoundry.data.tasks import Labeling, TaskSpec


def synthetic_votes(n=4000, seed=0):
    """Votes of 6 LFs with known, different accuracies and coverages, independent given the class."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    accuracies = np.array([0.95, 0.9, 0.8, 0.75, 0.7, 0.65])
    coverage = np.array([0.3, 0.5, 0.6, 0.4, 0.7, 0.8])
    L = np.full((n, len(accuracies)), ABSTAIN)
    for j, (a, c) in enumerate(zip(accuracies, coverage)):
        votes = rng.random(n) < c
        right = rng.random(n) < a
        L[votes, j] = np.where(right[votes], y[votes], 1 - y[votes])
    return L, y, accuracies, coverage


def test_label_model_recovers_lf_accuracies_without_gold():
    L, y, accuracies, coverage = synthetic_votes()
    lm = LabelModel(2).fit(L)
    assert np.abs(lm.lf_accuracies - accuracies).max() < 0.04
    assert np.abs(lm.lf_propensities - coverage).max() < 0.03
    acc_lm = (lm.predict(L) == y).mean()
    acc_mv = (majority_vote(L, 2).argmax(1) == y).mean()
    assert acc_lm > acc_mv + 0.01  # weighting by learned accuracy beats counting


def test_label_model_learns_the_class_balance_when_asked():
    rng = np.random.default_rng(1)
    y = (rng.random(3000) < 0.2).astype(int)
    L = np.stack([np.where(rng.random(3000) < 0.85, y, 1 - y) for _ in range(5)], 1)
    lm = LabelModel(2, class_balance=None).fit(L)
    assert abs(lm.prior[1] - 0.2) < 0.03


def test_label_model_with_gold_rows_holds_them_and_rejects_bad_votes():
    L, y, *_ = synthetic_votes(500)
    gold = np.full(500, -1)
    gold[:50] = y[:50]
    lm = LabelModel(2).fit(L, gold=gold)
    assert (lm.train_posterior[:50].argmax(1) == y[:50]).all()
    with pytest.raises(InvalidRequest, match="outside the label space"):
        LabelModel(2).fit(np.array([[0, 2], [1, -1]]))
    with pytest.raises(InvalidRequest, match="fitted on 6"):
        lm.predict_proba(L[:, :3])


def test_label_model_with_features_labels_rows_without_votes():
    rng = np.random.default_rng(2)
    n = 1500
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, 5)) + y[:, None] * 1.5
    L = np.full((n, 3), ABSTAIN)
    for j in range(3):
        on = rng.random(n) < 0.3
        L[on, j] = np.where(rng.random(on.sum()) < 0.85, y[on], 1 - y[on])
    lm = LabelModel(2).fit(L, features=X)
    none = (L == ABSTAIN).all(1)
    assert none.sum() > 300
    assert (lm.predict(L, X)[none] == y[none]).mean() > 0.85  # votes alone would give a coin flip there
    with pytest.raises(InvalidRequest, match="pass them to predict"):
        lm.predict_proba(L)


def test_lf_summary_counts_coverage_overlap_conflict_and_accuracy():
    L = np.array([[1, 1, -1], [1, 0, -1], [-1, 0, 0], [-1, -1, -1]])
    gold = np.array([1, 0, 0, -1])
    stats = {s.name: s for s in lf_summary(L, ["a", "b", "c"], gold=gold)}
    assert stats["a"].coverage == 0.5 and stats["a"].overlaps == 0.5 and stats["a"].conflicts == 0.25
    assert (stats["a"].correct, stats["a"].incorrect, stats["a"].accuracy) == (1, 1, 0.5)
    assert stats["b"].polarity == [0, 1] and stats["c"].conflicts == 0.0 and stats["c"].accuracy == 1.0


ROWS = [{"_id": f"r{i}", "split": "train", "text": t} for i, t in enumerate(
    ["Subscribe to my channel!", "great song", "check out my video", "love it", "nice", "subscribe please",
     "best song ever", "CHECK OUT this link"])]


def test_rule_lfs_are_vectorised_and_votes_are_cached(store):
    lfs = [KeywordLF("kw", label="spam", keywords=["subscribe", "my channel"]),
           RegexLF("re", label="spam", pattern=r"check\s+out")]
    votes = asyncio.run(apply_lfs(store, lfs, ROWS, text_field="text", labels=["ham", "spam"]))
    assert votes.L[:, 0].tolist() == [1, -1, -1, -1, -1, 1, -1, -1]
    assert votes.L[:, 1].tolist() == [-1, -1, 1, -1, -1, -1, -1, 1]
    assert votes.computed == 16
    again = asyncio.run(apply_lfs(store, lfs, ROWS, text_field="text", labels=["ham", "spam"]))
    assert again.computed == 0 and (again.L == votes.L).all()
    changed = [KeywordLF("kw", label="spam", keywords=["subscribe"])]  # a new version is run again
    assert asyncio.run(apply_lfs(store, changed, ROWS, text_field="text", labels=["ham", "spam"])).computed == 8


def test_python_lf_errors_and_out_of_space_labels_are_recorded_per_row(store):
    @labeling_function()
    def fussy(row):
        if "song" in row["text"]:
            return "ham"
        if "nice" in row["text"]:
            raise ValueError("cannot judge")
        if "love" in row["text"]:
            return "maybe"
        return None

    votes = asyncio.run(apply_lfs(store, [fussy], ROWS, text_field="text", labels=["ham", "spam"]))
    assert votes.L[:, 0].tolist() == [-1, 0, -1, -1, -1, -1, 0, -1]
    assert votes.errors[:, 0].tolist() == [False, False, False, True, True, False, False, False]
    assert "fussy" in votes.messages
    again = asyncio.run(apply_lfs(store, [fussy], ROWS, text_field="text", labels=["ham", "spam"]))
    assert again.computed == 0 and again.errors.sum() == 2  # errors are cached records too


def test_apply_resumes_after_a_kill(store):
    calls = []

    @labeling_function()
    def counting(row):
        calls.append(row["_id"])
        if len(calls) == 5:
            raise KeyboardInterrupt  # the process is stopped mid-run
        return "ham"

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(apply_lfs(store, [counting], ROWS, text_field="text", labels=["ham", "spam"], batch=2))
    calls.clear()
    votes = asyncio.run(apply_lfs(store, [counting], ROWS, text_field="text", labels=["ham", "spam"], batch=2))
    assert votes.computed == 4 and len(calls) == 4  # two batches of two were kept
    assert (votes.L[:, 0] == 0).all()


def test_prompt_lf_parses_answers_and_caches(store):
    seen = []

    async def generate(model, request):
        seen.append(request.prompt)
        return Generation(text="Spam." if "subscribe" in request.prompt.lower() else "I think ham")

    lf = PromptLF("llm", model="m", template="Is this spam? {text}\nAnswer:", answers={"spam": "spam", "ham": "ham"},
                  generate=generate)
    votes = asyncio.run(apply_lfs(store, [lf], ROWS, text_field="text", labels=["ham", "spam"]))
    assert votes.L[0, 0] == 1 and votes.L[5, 0] == 1
    assert votes.L[1, 0] == -1  # "I think ham" does not start with an answer: abstain
    assert len(seen) == 8
    asyncio.run(apply_lfs(store, [lf], ROWS, text_field="text", labels=["ham", "spam"]))
    assert len(seen) == 8
    with pytest.raises(InvalidRequest, match="needs \\{text\\}"):
        PromptLF("x", model="m", template="no slot", answers={"a": "ham"})


def embed(texts):
    vecs = []
    for t in texts:
        v = np.zeros(64)
        for w in t.lower().split():
            v[hash(w.strip("!.,")) % 64] += 1
        vecs.append(v / (np.linalg.norm(v) or 1))
    return np.array(vecs)


@pytest.fixture()
def spam_task(settings, store):
    datasets = Datasets(settings, store)
    rng = np.random.default_rng(0)
    spam = ["subscribe to my channel", "check out my video", "free gift click link", "visit my page now"]
    ham = ["great song", "love this tune", "the singer is amazing", "best video ever"]
    rows = []
    for i in range(300):
        label = "spam" if i % 2 else "ham"
        base = rng.choice(spam if label == "spam" else ham)
        rows.append({"text": f"{base} {i}", "gold": label, "split": ["train", "train", "train", "dev", "test"][i % 5]})
    datasets.add_version("comments", rows, lineage={"source": "test"})
    labeling = Labeling(datasets, store, embed=embed, clearance=lambda model: "public")
    spec = TaskSpec.from_dict({"name": "spam", "dataset": "comments", "labels": ["ham", "spam"], "gold_field": "gold",
                               "lfs": [{"name": "subscribe", "type": "keyword", "label": "spam",
                                        "keywords": ["subscribe", "check out"]},
                                       {"name": "link", "type": "regex", "label": "spam", "pattern": "link|page"},
                                       {"name": "music", "type": "keyword", "label": "ham", "keywords": ["song", "tune"]}]})
    labeling.create(spec)
    return labeling, datasets


def test_task_run_writes_labeled_version_with_lineage_and_metrics(spam_task):
    labeling, datasets = spam_task
    report = asyncio.run(labeling.run("spam"))
    assert report.rows == 300 and 0.5 < report.coverage < 1.0
    assert report.metrics["test"]["end_model"] >= 0.9
    out = datasets.version("spam-labels")
    assert out.lineage["source"] == "labeling" and out.lineage["dataset"] == "comments@1"
    rows = datasets.rows("spam-labels")
    assert {r["label_source"] for r in rows} == {"label_model", "end_model"}
    by_source = [r for r in rows if r["label_source"] == "end_model"]
    assert all(r["votes"] == [None, None, None] for r in by_source)
    assert {lf["name"] for lf in report.lfs} == {"subscribe", "link", "music"}


def test_review_queue_conflicts_and_undo(spam_task):
    labeling, datasets = spam_task
    asyncio.run(labeling.run("spam"))
    queue = labeling.queue("spam", limit=5)
    assert len(queue) == 5 and all(q["split"] != "test" for q in queue)
    first = queue[0]["row_id"]
    a = labeling.review("spam", first, "spam", reviewer="ann")
    with pytest.raises(Conflict, match="by ann"):
        labeling.review("spam", first, "ham", reviewer="bob")  # bob loaded the row before ann labeled it
    b = labeling.review("spam", first, "ham", reviewer="bob", expected=a["id"])
    assert labeling.reviews("spam")[first]["label"] == "ham"
    labeling.undo("spam", b["id"], reviewer="bob")
    assert labeling.reviews("spam")[first]["label"] == "spam"
    assert first not in [q["row_id"] for q in labeling.queue("spam", limit=300)]
    report = asyncio.run(labeling.run("spam"))
    assert report.reviewed == 1
    row = next(r for r in datasets.rows("spam-labels") if r["source_id"] == first)
    assert (row["label"], row["label_source"]) == ("spam", "review")
    with pytest.raises(InvalidRequest, match="not in the label space"):
        labeling.review("spam", first, "maybe", reviewer="ann")


def test_task_whose_lfs_never_vote_is_a_clear_error(spam_task):
    labeling, _ = spam_task
    labeling.create(TaskSpec.from_dict({"name": "silent", "dataset": "comments", "labels": ["ham", "spam"],
                                        "lfs": [{"name": "never", "type": "keyword", "label": "spam",
                                                 "keywords": ["zzzz"]}]}))
    with pytest.raises(InvalidRequest, match="no labeling function voted"):
        asyncio.run(labeling.run("silent"))


def test_task_spec_checks_labels_and_rules():
    base = {"name": "t", "dataset": "d", "labels": ["a", "b"]}
    with pytest.raises(InvalidRequest, match="not in the label space"):
        TaskSpec.from_dict({**base, "lfs": [{"name": "x", "type": "keyword", "label": "c", "keywords": ["k"]}]})
    with pytest.raises(InvalidRequest, match="bad pattern"):
        TaskSpec.from_dict({**base, "lfs": [{"name": "x", "type": "regex", "label": "a", "pattern": "("}]})
    with pytest.raises(InvalidRequest, match="unknown type"):
        TaskSpec.from_dict({**base, "lfs": [{"name": "x", "type": "magic"}]})
    with pytest.raises(InvalidRequest, match="at least two"):
        TaskSpec.from_dict({**base, "labels": ["a"], "lfs": [{"name": "x", "type": "keyword"}]})


def test_prompt_lf_with_a_model_not_cleared_for_the_dataset_is_refused(spam_task):
    labeling, datasets = spam_task

    async def generate(model, request):  # pragma: no cover - must not be reached
        raise AssertionError("the model was called")

    labeling.generate = generate
    labeling.create(TaskSpec.from_dict({"name": "ext", "dataset": "comments", "labels": ["ham", "spam"],
                                        "lfs": [{"name": "gpt", "type": "prompt", "model": "external",
                                                 "template": "{text}", "answers": {"spam": "spam"}}]}))
    with pytest.raises(PermissionDenied, match="cleared for public data"):
        asyncio.run(labeling.run("ext"))


def test_the_end_model_is_chosen_on_dev_gold_unless_the_spec_names_one(spam_task):
    labeling, _ = spam_task
    report = asyncio.run(labeling.run("spam"))
    table = report.metrics["end_model_selection"]
    assert len(table) == 6 and {t["features"] for t in table} == {"tfidf", "tfidf+chars"}
    best = max(table, key=lambda t: t["dev_accuracy"])
    assert report.metrics["end_model"]["features"] in {t["features"] for t in table
                                                       if t["dev_accuracy"] == best["dev_accuracy"]}
    spec, _ = labeling.get("spam")
    spec.end_model = {"features": "chars", "C": 10}
    labeling.create(spec)
    fixed = asyncio.run(labeling.run("spam"))
    assert "end_model_selection" not in fixed.metrics and fixed.metrics["end_model"] == {"features": "chars", "C": 10.0}
    with pytest.raises(InvalidRequest, match="joined with"):
        from genfoundry.data.label_model import EndModel
        EndModel(features="tfidf+bigrams")


def test_lf_summary_warns_about_an_lf_no_better_than_guessing():
    rng = np.random.default_rng(3)
    gold = rng.integers(0, 2, 200)
    coin = rng.integers(0, 2, 200)  # votes on every row, right half the time
    good = np.where(rng.random(200) < 0.9, gold, 1 - gold)
    few = np.full(200, -1)
    few[:5] = 1 - gold[:5]  # always wrong, but on 5 rows only: too few to judge
    stats = {s.name: s for s in lf_summary(np.stack([coin, good, few], 1), ["coin", "good", "few"], gold=gold,
                                           cardinality=2)}
    assert stats["coin"].warning and "no better than guessing on 200 gold rows" in stats["coin"].warning
    assert stats["good"].warning is None and stats["good"].p_value < 1e-6
    assert stats["few"].warning is None and stats["few"].accuracy == 0.0


def test_the_queue_puts_disagreements_first_then_the_least_sure(spam_task):
    labeling, _ = spam_task
    asyncio.run(labeling.run("spam"))
    queue = labeling.queue("spam", limit=1000)
    assert len(queue) == 240  # the 300 rows less the 60 test rows

    def entropy(row):
        p = np.array(list(row["label_probs"].values()))
        return float(-(p * np.log(np.clip(p, 1e-12, 1))).sum())

    flags = [q["disagree"] for q in queue]
    assert flags == sorted(flags, reverse=True)
    for flag in (True, False):
        group = [entropy(q) for q in queue if q["disagree"] is flag]
        assert all(a >= b - 1e-9 for a, b in zip(group, group[1:]))
    assert [v["lf"] for v in queue[0]["votes"]] == ["subscribe", "link", "music"]
