"""Drift statistics: has the distribution of requests moved, and which topics are new?

- ``mmd_test``: a two-sample test on embeddings. The statistic is the unbiased
  squared maximum mean discrepancy with a Gaussian kernel (bandwidth by the
  median heuristic); the p-value comes from permuting the window labels, so it
  holds whatever the embedding distribution looks like.
- ``topic_shift``: k-means clusters over both windows; a cluster that holds a
  share of the recent window but (almost) none of the baseline is **new**, one
  whose share grew significantly (two-proportion z-test) is **grown**. Each is
  named by its top TF-IDF terms and shown with examples.
- ``answer_similarity`` / ``golden_verdict``: compare a golden prompt's answer
  now with the one stored.

Example::

    result = mmd_test(baseline_vectors, recent_vectors, permutations=500)
    result.p_value < 0.01  # drift
    [t for t in topic_shift(bv, rv, baseline_texts, recent_texts) if t.status == "new"]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["MIN_ROWS", "MmdResult", "TopicChange", "answer_similarity", "golden_verdict", "mmd_test",
           "topic_shift"]

MIN_ROWS = 5


@dataclass
class MmdResult:
    statistic: float
    p_value: float
    bandwidth: float
    n_baseline: int
    n_recent: int
    permutations: int


@dataclass
class TopicChange:
    cluster: int
    status: str  # new, grown, shrunk, stable
    baseline_share: float
    recent_share: float
    p_value: float
    size: int
    terms: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)
    recent_indices: list[int] = field(default_factory=list)  # rows of the recent window in the cluster


def _check(baseline: np.ndarray, recent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    baseline = np.asarray(baseline, dtype=np.float64)
    recent = np.asarray(recent, dtype=np.float64)
    for name, sample in (("baseline", baseline), ("recent", recent)):
        if sample.ndim != 2:
            raise ValueError(f"the {name} window must be a 2-d array of vectors, got shape {sample.shape}")
        if len(sample) < MIN_ROWS:
            raise ValueError(f"need at least {MIN_ROWS} requests in each window; the {name} window has "
                             f"{len(sample)}")
        if not np.isfinite(sample).all():
            raise ValueError(f"the {name} window holds NaN or infinite values")
    if baseline.shape[1] != recent.shape[1]:
        raise ValueError(f"the windows' vectors differ in dimension ({baseline.shape[1]} vs {recent.shape[1]}); "
                         "embed both with the same model")
    return baseline, recent


def _mmd2(kernel: np.ndarray, labels: np.ndarray, n: int, m: int) -> np.ndarray:
    """Unbiased MMD^2 for each row of ``labels`` (1 = baseline), from one pooled kernel matrix."""
    x = labels.astype(np.float64)  # (P, N)
    y = 1.0 - x
    kx = x @ kernel  # (P, N)
    ky = y @ kernel
    xx = (np.einsum("pn,pn->p", kx, x) - n) / (n * (n - 1))  # the diagonal (k(a, a) = 1) left out
    yy = (np.einsum("pn,pn->p", ky, y) - m) / (m * (m - 1))
    xy = np.einsum("pn,pn->p", kx, y) / (n * m)
    return xx + yy - 2 * xy


def mmd_test(baseline: np.ndarray, recent: np.ndarray, *, permutations: int = 500, seed: int = 0) -> MmdResult:
    """Permutation test of 'both windows come from one distribution' (see the module docstring)."""
    baseline, recent = _check(baseline, recent)
    if permutations < 1:
        raise ValueError("permutations must be at least 1")
    pooled = np.vstack([baseline, recent])
    n, m = len(baseline), len(recent)
    squared = np.sum(pooled ** 2, axis=1)
    distances = np.maximum(squared[:, None] + squared[None, :] - 2 * pooled @ pooled.T, 0.0)
    upper = distances[np.triu_indices(len(pooled), k=1)]
    bandwidth = float(np.median(upper[upper > 0])) if np.any(upper > 0) else 1.0
    kernel = np.exp(-distances / bandwidth)
    labels = np.zeros((permutations + 1, n + m), dtype=bool)
    labels[0, :n] = True
    rng = np.random.default_rng(seed)
    for row in range(1, permutations + 1):
        labels[row, rng.permutation(n + m)[:n]] = True
    stats = np.concatenate([_mmd2(kernel, labels[i:i + 128], n, m) for i in range(0, permutations + 1, 128)])
    observed = stats[0]
    p_value = (1 + int(np.sum(stats[1:] >= observed - 1e-12))) / (1 + permutations)
    return MmdResult(statistic=float(observed), p_value=float(p_value), bandwidth=bandwidth, n_baseline=n,
                     n_recent=m, permutations=permutations)


def _two_proportion_p(a: int, n: int, b: int, m: int) -> float:
    """One-sided p-value that the recent share (b/m) exceeds the baseline share (a/n)."""
    pooled = (a + b) / (n + m)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n + 1 / m)) if 0 < pooled < 1 else 0.0
    if se == 0:
        return 1.0
    z = (b / m - a / n) / se
    return 0.5 * math.erfc(z / math.sqrt(2))


def _terms(texts: list[str], labels: np.ndarray, clusters: int, top: int = 3) -> list[list[str]]:
    from sklearn.feature_extraction.text import TfidfVectorizer

    try:
        vectorizer = TfidfVectorizer(stop_words="english", max_features=5000, token_pattern=r"(?u)\b[^\W\d_]{3,}\b")
        matrix = vectorizer.fit_transform(texts)
    except ValueError:  # no words at all (numbers, emoji)
        return [[] for _ in range(clusters)]
    vocabulary = np.array(vectorizer.get_feature_names_out())
    overall = np.asarray(matrix.mean(axis=0)).ravel()
    names = []
    for c in range(clusters):
        rows = labels == c
        if not rows.any():
            names.append([])
            continue
        score = np.asarray(matrix[rows].mean(axis=0)).ravel() - overall
        names.append([str(vocabulary[i]) for i in np.argsort(-score)[:top] if score[i] > 0])
    return names


def topic_shift(baseline_vecs: np.ndarray, recent_vecs: np.ndarray, baseline_texts: list[str],
                recent_texts: list[str], *, clusters: int | None = None, seed: int = 0,
                min_share: float = 0.05, alpha: float = 0.01) -> list[TopicChange]:
    """Clusters of the two windows with their shares (see the module docstring); new and grown first."""
    from sklearn.cluster import KMeans

    baseline, recent = _check(baseline_vecs, recent_vecs)
    if len(baseline_texts) != len(baseline) or len(recent_texts) != len(recent):
        raise ValueError("each window needs one text per vector")
    pooled = np.vstack([baseline, recent])
    pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    n, m = len(baseline), len(recent)
    k = clusters or min(12, max(2, round(math.sqrt((n + m) / 4))))
    k = min(k, n + m)
    labels = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(pooled)
    texts = list(baseline_texts) + list(recent_texts)
    names = _terms(texts, labels, k)
    changes = []
    for c in range(k):
        a, b = int(np.sum(labels[:n] == c)), int(np.sum(labels[n:] == c))
        base_share, recent_share = a / n, b / m
        p = _two_proportion_p(a, n, b, m)
        if base_share < 0.02 and recent_share >= min_share and p < alpha:
            status = "new"
        elif recent_share >= min_share and recent_share >= 2 * base_share and p < alpha:
            status = "grown"
        elif base_share >= min_share and recent_share <= base_share / 2:
            status = "shrunk"
        else:
            status = "stable"
        members = np.flatnonzero(labels[n:] == c)
        examples = [recent_texts[i][:200] for i in members[:3]]
        changes.append(TopicChange(cluster=c, status=status, baseline_share=round(base_share, 4),
                                   recent_share=round(recent_share, 4), p_value=round(p, 6), size=a + b,
                                   terms=names[c], examples=examples, recent_indices=members.tolist()))
    order = {"new": 0, "grown": 1, "shrunk": 2, "stable": 3}
    return sorted(changes, key=lambda t: (order[t.status], -t.recent_share))


def answer_similarity(expected: np.ndarray, got: np.ndarray) -> float:
    """Cosine similarity of two answer embeddings."""
    a, b = np.asarray(expected, dtype=np.float64), np.asarray(got, dtype=np.float64)
    denominator = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denominator) if denominator else 0.0


def golden_verdict(similarity: float, exact: bool, threshold: float = 0.9) -> str:
    """'same' for the same text or a close paraphrase, else 'changed'."""
    return "same" if exact or similarity >= threshold else "changed"
