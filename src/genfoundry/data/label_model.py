"""Combine labeling functions' noisy votes into probabilistic labels, and learn from them.

``L`` is the vote matrix: one row per record, one column per labeling function (LF), each cell a class
index or ``ABSTAIN`` (-1).

- :class:`LabelModel` is a generative model of the votes (Dawid & Skene, 1979): a class prior and, for
  each LF, the probability of each vote (abstaining included) given the true class, fitted by
  expectation-maximisation on the votes alone, no gold labels needed. Rows with a known label (reviews,
  dev gold) can be given and are held at it. With ``features`` it learns jointly with a logistic
  regression on the rows' features (Raykar et al., 2010, "Learning from crowds"), so that rows the LFs
  say little about are labeled from what similar rows got.
- :func:`lf_summary` is the per-LF analysis: coverage, overlaps, conflicts and, with gold labels,
  empirical accuracy.
- :class:`EndModel` is a classifier on the text (TF-IDF n-grams, optionally with embeddings) trained on
  the label model's probabilities, so that it labels rows no LF votes on.

Example::

    lm = LabelModel(cardinality=2).fit(L_train)
    probs = lm.predict_proba(L_test)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from genfoundry.core.errors import InvalidRequest

__all__ = ["ABSTAIN", "END_MODEL_GRID", "EndModel", "FEATURE_KINDS", "LFStats", "LabelModel", "MIN_JUDGED", "lf_summary",
           "majority_vote", "select_end_model"]

ABSTAIN = -1


def _check(L: np.ndarray, cardinality: int) -> np.ndarray:
    L = np.asarray(L)
    if L.ndim != 2 or L.shape[0] == 0 or L.shape[1] == 0:
        raise InvalidRequest("the vote matrix needs at least one row and one labeling function", param="votes")
    if not np.issubdtype(L.dtype, np.integer):
        raise InvalidRequest("votes are class indexes (integers) or -1 to abstain", param="votes")
    bad = (L < ABSTAIN) | (L >= cardinality)
    if bad.any():
        i, j = map(int, np.argwhere(bad)[0])
        raise InvalidRequest(f"row {i}, labeling function {j} votes {int(L[i, j])}, outside the label space "
                             f"0..{cardinality - 1} (or -1 to abstain)", param="votes")
    return L.astype(np.int64)


def majority_vote(L: np.ndarray, cardinality: int) -> np.ndarray:
    """Class shares of the votes per row; a row without votes gets the uniform distribution."""
    L = _check(L, cardinality)
    counts = np.stack([(L == c).sum(1) for c in range(cardinality)], 1).astype(float)
    total = counts.sum(1, keepdims=True)
    return np.where(total > 0, counts / np.maximum(total, 1), 1.0 / cardinality)


def _normalise_log(lp: np.ndarray) -> np.ndarray:
    lp = lp - lp.max(1, keepdims=True)
    p = np.exp(lp)
    return p / p.sum(1, keepdims=True)


class LabelModel:
    """A generative label model: P(y) and, per labeling function, P(vote | y) with abstaining as a vote.

    ``class_balance``: None learns the prior from the data; "uniform" or a sequence of probabilities fixes
    it. ``smoothing`` is a Dirichlet pseudo-count on every conditional probability (keeps a vote seen
    with one class only from ruling the other out).
    """

    def __init__(self, cardinality: int = 2, *, class_balance: str | Sequence[float] | None = "uniform",
                 smoothing: float = 1.0, max_iter: int = 300, tol: float = 1e-7, C: float = 1.0):
        if cardinality < 2:
            raise InvalidRequest("a label space needs at least two labels", param="labels")
        self.k = cardinality
        self.class_balance = class_balance
        self.smoothing = smoothing
        self.max_iter = max_iter
        self.tol = tol
        self.C = C
        self.prior: np.ndarray | None = None
        self.conditionals: np.ndarray | None = None  # (m, k, k + 1): P(vote v | y), v = k for abstain
        self.classifier = None
        self.iterations = 0

    # -- fitting ----------------------------------------------------------------------------------------
    def fit(self, L: np.ndarray, *, gold: np.ndarray | None = None, features: np.ndarray | None = None,
            gold_weight: float = 1.0) -> "LabelModel":
        L = _check(L, self.k)
        n, _ = L.shape
        known = np.zeros(n, bool) if gold is None else np.asarray(gold) >= 0
        if gold is not None and (len(gold) != n or (np.asarray(gold) >= self.k).any()):
            raise InvalidRequest("gold labels: one per row, a class index or -1 when unknown", param="gold")
        clamp = np.eye(self.k)[np.asarray(gold)[known]] if known.any() else None
        if features is not None and len(features) != n:
            raise InvalidRequest("features: one row per row of votes", param="features")
        weights = np.where(known, gold_weight, 1.0)
        post = majority_vote(L, self.k)
        if clamp is not None:
            post[known] = clamp
        self.classifier = None
        for it in range(1, self.max_iter + 1):
            self._m_step(L, post, weights)
            if features is not None:
                self._fit_classifier(features, post, weights)
            new = self._posterior(L, features)
            if clamp is not None:
                new[known] = clamp
            delta = float(np.abs(new - post).max())
            post = new
            self.iterations = it
            if delta < (self.tol if features is None else 1e-4):
                break
        self._m_step(L, post, weights)
        self.train_posterior = post
        return self

    def _m_step(self, L: np.ndarray, post: np.ndarray, weights: np.ndarray) -> None:
        m = L.shape[1]
        wpost = post * weights[:, None]
        if isinstance(self.class_balance, str) and self.class_balance == "uniform":
            self.prior = np.full(self.k, 1.0 / self.k)
        elif self.class_balance is None:
            self.prior = (wpost.sum(0) + 1.0) / (wpost.sum() + self.k)
        else:
            prior = np.asarray(self.class_balance, float)
            if prior.shape != (self.k,) or (prior <= 0).any():
                raise InvalidRequest("class_balance: one positive probability per label", param="class_balance")
            self.prior = prior / prior.sum()
        cond = np.full((m, self.k, self.k + 1), float(self.smoothing))
        votes = np.where(L == ABSTAIN, self.k, L)
        for j in range(m):
            # cond[j, y, v] += sum of P(y | row) over rows where LF j voted v
            np.add.at(cond[j].T, votes[:, j], wpost)
        self.conditionals = cond / cond.sum(2, keepdims=True)

    def _fit_classifier(self, X, post, weights) -> None:
        from sklearn.linear_model import LogisticRegression

        n = len(post)
        rows = np.repeat(np.arange(n), self.k)
        labels = np.tile(np.arange(self.k), n)
        w = (post * weights[:, None]).ravel()
        keep = w > 1e-6
        clf = LogisticRegression(C=self.C, max_iter=2000)
        clf.fit(X[rows[keep]], labels[keep], sample_weight=w[keep])
        self.classifier = clf

    def _log_likelihood(self, L: np.ndarray) -> np.ndarray:
        votes = np.where(L == ABSTAIN, self.k, L)
        lp = np.zeros((len(L), self.k))
        logc = np.log(self.conditionals)
        for j in range(L.shape[1]):
            lp += logc[j][:, votes[:, j]].T
        return lp

    def _posterior(self, L: np.ndarray, features=None) -> np.ndarray:
        lp = self._log_likelihood(L)
        if self.classifier is not None and features is not None:
            lp += np.log(np.clip(self.classifier.predict_proba(features), 1e-9, 1.0))
        else:
            lp += np.log(self.prior)[None, :]
        return _normalise_log(lp)

    # -- using --------------------------------------------------------------------------------------------
    def predict_proba(self, L: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        if self.conditionals is None:
            raise InvalidRequest("fit the label model first", param="label_model")
        L = _check(L, self.k)
        if L.shape[1] != self.conditionals.shape[0]:
            raise InvalidRequest(f"the model was fitted on {self.conditionals.shape[0]} labeling functions, "
                                 f"these votes have {L.shape[1]}", param="votes")
        if self.classifier is not None and features is None:
            raise InvalidRequest("this label model learned from features: pass them to predict too", param="features")
        return self._posterior(L, features)

    def predict(self, L: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        return self.predict_proba(L, features).argmax(1)

    @property
    def lf_accuracies(self) -> np.ndarray:
        """Per LF: the probability that a vote is right, P(y = v | LF votes v), under the fitted model."""
        cond, prior = self.conditionals, self.prior
        joint = cond[:, :, : self.k] * prior[None, :, None]  # (m, y, v)
        right = np.einsum("jvv->j", joint)
        return right / joint.sum((1, 2))

    @property
    def lf_propensities(self) -> np.ndarray:
        """Per LF: how often it votes, P(vote != abstain)."""
        return 1.0 - (self.conditionals[:, :, self.k] * self.prior[None, :]).sum(1)

    def to_dict(self) -> dict:
        return {"cardinality": self.k, "prior": self.prior.tolist(), "conditionals": self.conditionals.tolist(),
                "iterations": self.iterations}


@dataclass
class LFStats:
    name: str
    polarity: list[int]
    coverage: float
    overlaps: float
    conflicts: float
    correct: int | None = None
    incorrect: int | None = None
    accuracy: float | None = None
    errors: int = 0
    # With gold labels: the one-sided binomial p-value of its accuracy against guessing (1 / labels), and a
    # warning when it has at least MIN_JUDGED gold votes and is not significantly better than guessing.
    p_value: float | None = None
    warning: str | None = None

    def to_dict(self) -> dict:
        return {k: (float(v) if isinstance(v, np.floating) else v) for k, v in self.__dict__.items()}


MIN_JUDGED = 20  # gold votes an LF needs before the analysis judges it no better than guessing


def lf_summary(L: np.ndarray, names: Sequence[str], *, gold: np.ndarray | None = None,
               errors: np.ndarray | None = None, cardinality: int | None = None) -> list[LFStats]:
    """Per labeling function: the labels it votes (polarity), the share of rows it votes on (coverage),
    on which another LF votes too (overlaps) and another LF votes differently (conflicts); with ``gold``
    (-1 where unknown), its right and wrong votes on the gold rows and its empirical accuracy."""
    L = np.asarray(L)
    voted = L != ABSTAIN
    others = voted.sum(1, keepdims=True) - voted
    out = []
    for j, name in enumerate(names):
        col = L[:, j]
        v = voted[:, j]
        conflict = np.zeros(len(L), bool)
        for c in np.unique(col[v]):
            conflict |= (col == c) & ((L != ABSTAIN) & (L != c)).any(1)
        stats = LFStats(name=name, polarity=sorted(int(c) for c in np.unique(col[v])), coverage=float(v.mean()),
                        overlaps=float((v & (others[:, j] > 0)).mean()), conflicts=float(conflict.mean()),
                        errors=int(errors[:, j].sum()) if errors is not None else 0)
        if gold is not None:
            g = np.asarray(gold)
            mask = v & (g >= 0)
            stats.correct = int((col[mask] == g[mask]).sum())
            stats.incorrect = int(mask.sum() - stats.correct)
            stats.accuracy = stats.correct / mask.sum() if mask.sum() else None
            if mask.sum():
                from scipy.stats import binomtest

                k = cardinality or max(2, int(max(L.max(), g.max())) + 1)
                stats.p_value = float(binomtest(stats.correct, int(mask.sum()), 1.0 / k, alternative="greater").pvalue)
                if mask.sum() >= MIN_JUDGED and stats.p_value >= 0.05:
                    stats.warning = (f"no better than guessing on {int(mask.sum())} gold rows (accuracy "
                                     f"{stats.accuracy:.2f}, p={stats.p_value:.2f}): fix it or drop it")
        out.append(stats)
    return out


FEATURE_KINDS = ("tfidf", "chars", "embedding")
END_MODEL_GRID = [{"features": f, "C": c} for f in ("tfidf", "tfidf+chars") for c in (10.0, 100.0, 1000.0)]


class EndModel:
    """A logistic regression on the text, trained on probabilistic labels (each row weighted by its label
    probabilities). ``features`` joins with "+": ``tfidf`` (word 1-2-grams), ``chars`` (character 2-5-grams
    within words: robust to misspellings, URLs and short texts), ``embedding`` (an ``embed`` callable's
    normalised vectors)."""

    def __init__(self, *, features: str = "tfidf+chars", C: float = 1000.0, embed=None):
        kinds = features.split("+")
        if not kinds or set(kinds) - set(FEATURE_KINDS) or len(set(kinds)) != len(kinds):
            raise InvalidRequest(f"features: {', '.join(FEATURE_KINDS)} joined with '+'", param="features")
        if "embedding" in kinds and embed is None:
            raise InvalidRequest("embedding features need an embedding model", param="features")
        self.features, self.kinds, self.C, self.embed = features, kinds, C, embed
        self.vectorizers: dict = {}
        self.clf = None

    def _matrix(self, texts: Sequence[str], *, fit: bool = False):
        from scipy.sparse import csr_matrix, hstack
        from sklearn.feature_extraction.text import TfidfVectorizer

        parts = []
        for kind in self.kinds:
            if kind == "embedding":
                parts.append(csr_matrix(np.asarray(self.embed(list(texts)))))
                continue
            if fit:
                self.vectorizers[kind] = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True) if kind == "tfidf" \
                    else TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True)
                parts.append(self.vectorizers[kind].fit_transform(texts))
            else:
                parts.append(self.vectorizers[kind].transform(texts))
        return hstack(parts).tocsr() if len(parts) > 1 else parts[0]

    def fit(self, texts: Sequence[str], probs: np.ndarray, *, mask: np.ndarray | None = None) -> "EndModel":
        from sklearn.linear_model import LogisticRegression

        probs = np.asarray(probs, float)
        keep = np.ones(len(texts), bool) if mask is None else np.asarray(mask, bool)
        if keep.sum() < 2:
            raise InvalidRequest("the end model needs at least two labeled rows", param="rows")
        texts = [t for t, k in zip(texts, keep) if k]
        probs = probs[keep]
        k = probs.shape[1]
        X = self._matrix(texts, fit=True)
        rows = np.repeat(np.arange(len(texts)), k)
        labels = np.tile(np.arange(k), len(texts))
        w = probs.ravel()
        sel = w > 1e-6
        if len(np.unique(labels[sel])) < 2:
            raise InvalidRequest("the labels give every row the same class: nothing to learn", param="rows")
        self.clf = LogisticRegression(C=self.C, max_iter=3000, solver="liblinear" if k == 2 else "lbfgs")
        self.clf.fit(X[rows[sel]], labels[sel], sample_weight=w[sel])
        self.k = k
        return self

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        if self.clf is None:
            raise InvalidRequest("fit the end model first", param="end_model")
        p = self.clf.predict_proba(self._matrix(texts))
        out = np.zeros((len(texts), self.k))
        out[:, self.clf.classes_] = p
        return out


def select_end_model(texts: Sequence[str], probs: np.ndarray, *, mask: np.ndarray | None,
                     dev_texts: Sequence[str], dev_gold: np.ndarray, grid: Sequence[dict] = END_MODEL_GRID,
                     embed=None) -> tuple[EndModel, list[dict]]:
    """Fit an end model per setting of ``grid`` and keep the most accurate on the dev rows' gold labels (the
    first of equals); also returns each setting's dev accuracy. Needs dev gold: without it, use one setting."""
    dev_gold = np.asarray(dev_gold)
    if len(dev_texts) == 0 or not (dev_gold >= 0).any():
        raise InvalidRequest("choosing an end model needs dev rows with gold labels", param="gold_field")
    best, best_score, table = None, -1.0, []
    for setting in grid:
        model = EndModel(embed=embed, **setting).fit(texts, probs, mask=mask)
        p = model.predict_proba(dev_texts)
        known = dev_gold >= 0
        score = float((p[known].argmax(1) == dev_gold[known]).mean())
        table.append({**setting, "dev_accuracy": round(score, 4)})
        if score > best_score:
            best, best_score = model, score
    return best, table
