"""Labeling tasks: a dataset, a text field, a label space and labeling functions; runs and reviews.

A run applies the LFs (cached), fits the label model on the votes (with every review and the dev rows'
gold labels held fixed, never the test rows'), trains the end model on its probabilities, and writes
a new version of the dataset ``TASK-labels``: each source row with ``label``, ``label_probs``,
``label_source`` (review, label_model, end_model) and ``end_probs``. The review queue puts first the
rows where the end model and the label model disagree, then the rows the label model is least sure of.

Example::

    labeling = Labeling(datasets, store, embed=embed)
    labeling.create(TaskSpec.from_dict(yaml.safe_load(open("spam.yaml"))))
    report = asyncio.run(labeling.run("spam"))
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import sqlalchemy as sa

from genfoundry.core.audit import record
from genfoundry.core.errors import Conflict, InvalidRequest, NotFound
from genfoundry.core.store import Store, utcnow
from genfoundry.data.datasets import Datasets
from genfoundry.data.label_model import ABSTAIN, EndModel, LabelModel, lf_summary, majority_vote, select_end_model
from genfoundry.data.labeling import LabelingFunction, PromptLF, VoteWorkers, apply_lfs, clipped, lf_from_spec

__all__ = ["Labeling", "RunReport", "TaskSpec"]


@dataclass
class TaskSpec:
    name: str
    dataset: str
    labels: list[str]
    lfs: list[dict]
    text_field: str = "text"
    version: int | None = None  # None: the dataset's latest version when the task is made
    gold_field: str | None = None  # a column with known labels; used on dev rows, scored on test rows
    label_model: dict = field(default_factory=lambda: {"features": "embedding"})
    end_model: dict = field(default_factory=dict)  # {features, C}; empty: chosen on the dev gold rows

    @classmethod
    def from_dict(cls, data: dict) -> "TaskSpec":
        if not isinstance(data, dict):
            raise InvalidRequest("a labeling task is a mapping (name, dataset, labels, lfs)", param="task")
        missing = [k for k in ("name", "dataset", "labels", "lfs") if not data.get(k)]
        if missing:
            raise InvalidRequest(f"a labeling task needs {', '.join(missing)}", param=missing[0])
        labels = [str(x) for x in data["labels"]]
        if len(labels) < 2 or len(set(labels)) != len(labels):
            raise InvalidRequest("labels: at least two, all different", param="labels")
        known = {"name", "dataset", "labels", "lfs", "text_field", "version", "gold_field", "label_model", "end_model"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidRequest(f"unknown task fields: {', '.join(unknown)}", param=unknown[0])
        spec = cls(name=str(data["name"]), dataset=str(data["dataset"]), labels=labels, lfs=list(data["lfs"]),
                   text_field=str(data.get("text_field", "text")), version=data.get("version"),
                   gold_field=data.get("gold_field"))
        spec.label_model.update(data.get("label_model") or {})
        spec.end_model.update(data.get("end_model") or {})
        for lf in spec.lfs:  # declared rules are checked now (labels, patterns), not halfway through a run
            if not isinstance(lf, dict) or lf.get("type") not in ("keyword", "regex", "prompt", "embedding", "python"):
                lf_from_spec(lf, labels=labels)  # raises: not a mapping, or an unknown type
            if lf.get("type") in ("keyword", "regex", "prompt"):
                lf_from_spec(lf, labels=labels)
        names = [lf.get("name") if isinstance(lf, dict) else None for lf in spec.lfs]
        if len(set(names)) != len(names):
            raise InvalidRequest("labeling function names must be unique", param="lfs")
        return spec

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class RunReport:
    task: str
    rows: int
    lfs: list[dict]
    coverage: float
    votes_computed: int
    metrics: dict
    output: str
    reviewed: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class Labeling:
    """Labeling tasks of one home. ``generate`` runs prompt LFs (``async (model, request) -> Generation``);
    ``embed`` (texts -> normalised vectors) serves embedding LFs and the label model's features;
    ``clearance`` (model name -> its clearance) lets a run refuse a model not cleared for the dataset."""

    def __init__(self, datasets: Datasets, store: Store, *, generate=None,
                 embed: Callable[[list[str]], np.ndarray] | None = None,
                 clearance: Callable[[str], str] | None = None, functions: Sequence[LabelingFunction] = (),
                 vote_workers: Callable[[], VoteWorkers] | None = None):
        self.datasets, self.store = datasets, store
        self.vote_workers = vote_workers  # makes the workers a run sends LF batches to (Ray); None: here
        self.generate, self.clearance = generate, clearance
        self.embed = clipped(embed) if embed is not None else None
        self.functions = list(functions)  # Python LFs given in code, added to every run of a task

    # -- tasks ------------------------------------------------------------------------------------------
    def create(self, spec: TaskSpec, *, actor: str = "local") -> TaskSpec:
        version = self.datasets.version(spec.dataset, spec.version)
        spec.version = version.number
        t = self.store.tables.label_tasks
        with self.store.begin() as conn:
            conn.execute(t.delete().where(t.c.name == spec.name))
            conn.execute(t.insert().values(name=spec.name, dataset=spec.dataset, version=spec.version,
                                           text_field=spec.text_field, labels=spec.labels, spec=spec.to_dict()))
        record(self.store, action="label.task", actor=actor, target=spec.name,
               details={"dataset": version.ref, "lfs": [lf.get("name") for lf in spec.lfs]})
        return spec

    def get(self, name: str) -> tuple[TaskSpec, dict | None]:
        t = self.store.tables.label_tasks
        with self.store.begin() as conn:
            row = conn.execute(sa.select(t).where(t.c.name == name)).mappings().first()
        if row is None:
            raise NotFound(f"no labeling task named {name!r}; `genfoundry label list` shows them", param="task")
        return TaskSpec.from_dict(row["spec"]), row["result"]

    def list(self) -> list[dict]:
        t = self.store.tables.label_tasks
        with self.store.begin() as conn:
            rows = conn.execute(sa.select(t).order_by(t.c.name)).mappings().all()
        return [{"name": r["name"], "dataset": r["dataset"], "version": r["version"], "labels": r["labels"],
                 "text_field": r["text_field"], "result": r["result"]} for r in rows]

    def functions_for(self, spec: TaskSpec, examples: Sequence[tuple[str, str]] = ()) -> list[LabelingFunction]:
        lfs = [lf_from_spec(s, labels=spec.labels, generate=self.generate, embed=self.embed, examples=examples)
               for s in spec.lfs]
        return lfs + self.functions

    def _check_clearance(self, spec: TaskSpec, lfs: Sequence[LabelingFunction]) -> None:
        from genfoundry.guard.engine import SensitivityRefused, level_index

        sensitivity = self.datasets.get(spec.dataset).sensitivity
        for lf in lfs:
            if isinstance(lf, PromptLF) and self.clearance is not None:
                cleared = self.clearance(lf.model)
                if level_index(cleared) < level_index(sensitivity):
                    raise SensitivityRefused(f"labeling function {lf.name!r}: model {lf.model!r} is cleared for "
                                             f"{cleared} data, dataset {spec.dataset!r} is {sensitivity}")

    # -- runs ---------------------------------------------------------------------------------------------
    async def run(self, name: str, *, progress: Callable[[int, int], None] | None = None,
                  actor: str = "local") -> RunReport:
        spec, _ = self.get(name)
        rows = await asyncio.to_thread(self.datasets.rows, spec.dataset, spec.version)
        reviews = self.reviews(name)
        index = {label: i for i, label in enumerate(spec.labels)}
        gold = np.full(len(rows), ABSTAIN)
        test_gold = np.full(len(rows), ABSTAIN)
        for i, row in enumerate(rows):
            given = row.get(spec.gold_field) if spec.gold_field else None
            given = spec.labels[given] if isinstance(given, int) and 0 <= given < len(spec.labels) else given
            if given is not None and given in index:
                if row["split"] == "dev":
                    gold[i] = index[given]
                elif row["split"] == "test":
                    test_gold[i] = index[given]
            if row["_id"] in reviews and row["split"] != "test":
                gold[i] = index[reviews[row["_id"]]["label"]]
        texts = [row[spec.text_field] if isinstance(row.get(spec.text_field), str) else str(row.get(spec.text_field))
                 for row in rows]
        examples = [(texts[i], spec.labels[g]) for i, g in enumerate(gold) if g >= 0]
        lfs = await asyncio.to_thread(self.functions_for, spec, examples)  # embedding LFs embed their examples
        self._check_clearance(spec, lfs)
        workers = await asyncio.to_thread(self.vote_workers) if self.vote_workers is not None else None
        votes = await apply_lfs(self.store, lfs, rows, text_field=spec.text_field, labels=spec.labels,
                                progress=progress, workers=workers)
        L = votes.L
        covered = (L != ABSTAIN).any(1)
        if not covered.any():
            raise InvalidRequest(f"no labeling function voted on any of the {len(rows)} rows of {spec.dataset}: "
                                 "nothing to learn from; check the rules against `genfoundry data head`",
                                 param="lfs")
        features = None
        if spec.label_model.get("features") == "embedding" and self.embed is not None:
            features = await asyncio.to_thread(self.embed, texts)
        k = len(spec.labels)
        lm = LabelModel(k, class_balance=spec.label_model.get("class_balance", "uniform"),
                        C=float(spec.label_model.get("C", 1.0)))
        await asyncio.to_thread(lambda: lm.fit(L, gold=gold, features=features))
        probs = lm.predict_proba(L, features)
        probs[gold >= 0] = np.eye(k)[gold[gold >= 0]]
        train = (covered | (gold >= 0)) & np.array([r["split"] != "test" for r in rows])
        dev = np.array([r["split"] == "dev" for r in rows]) & (gold >= 0)
        end, end_table = await asyncio.to_thread(self._end_model, spec, texts, probs, train, dev, gold)
        end_probs = await asyncio.to_thread(end.predict_proba, texts)
        out_rows = []
        for i, row in enumerate(rows):
            if row["_id"] in reviews:
                label, source = reviews[row["_id"]]["label"], "review"
            elif covered[i]:
                label, source = spec.labels[int(probs[i].argmax())], "label_model"
            else:
                label, source = spec.labels[int(end_probs[i].argmax())], "end_model"
            out_rows.append({"source_id": row["_id"], "split": row["split"], spec.text_field: texts[i],
                             "label": label, "label_source": source,
                             "label_probs": [round(float(p), 6) for p in probs[i]],
                             "end_probs": [round(float(p), 6) for p in end_probs[i]],
                             "votes": [spec.labels[v] if v >= 0 else None for v in L[i]]})
        metrics = _metrics(L, probs, end_probs, gold_dev=_only(gold, rows, "dev", reviews), test_gold=test_gold, k=k)
        version = self.datasets.version(spec.dataset, spec.version)
        out = await asyncio.to_thread(lambda: self.datasets.add_version(
            f"{name}-labels", out_rows, sensitivity=self.datasets.get(spec.dataset).sensitivity,
            lineage={"source": "labeling", "task": name, "dataset": version.ref,
                     "lfs": {lf.name: lf.version for lf in lfs}}, actor=actor))
        stats = lf_summary(L, votes.names, gold=np.where(test_gold >= 0, ABSTAIN, gold), errors=votes.errors,
                           cardinality=k)
        learned = lm.lf_accuracies
        lf_rows = []
        for j, s in enumerate(stats):
            item = s.to_dict()
            item["learned_accuracy"] = round(float(learned[j]), 4)
            if s.name in votes.messages:
                item["error"] = votes.messages[s.name]
            lf_rows.append(item)
        if end_table:
            metrics["end_model_selection"] = end_table
        metrics["end_model"] = {"features": end.features, "C": end.C}
        report = RunReport(task=name, rows=len(rows), lfs=lf_rows, coverage=float(covered.mean()),
                           votes_computed=votes.computed, metrics=metrics, output=out.ref, reviewed=len(reviews))
        t = self.store.tables.label_tasks
        with self.store.begin() as conn:
            conn.execute(t.update().where(t.c.name == name).values(result=report.to_dict()))
        record(self.store, action="label.run", actor=actor, target=name, details={"output": out.ref, **metrics})
        return report

    def _end_model(self, spec: TaskSpec, texts, probs, train, dev, gold) -> tuple[EndModel, list[dict]]:
        """The end model the spec names, or, when it names none and dev rows have gold labels (data or
        reviews), the best of a small grid on those rows (tfidf+chars, C=1000 without them)."""
        embed = self.embed
        if spec.end_model.get("features") or not dev.sum() >= 10:
            features = spec.end_model.get("features", "tfidf+chars")
            model = EndModel(features=features, C=float(spec.end_model.get("C", 1000.0)),
                             embed=embed if "embedding" in features else None)
            return model.fit(texts, probs, mask=train), []
        # Dev rows the end model learns from would flatter it: choose on models fitted without them, then
        # fit the chosen setting on every training row.
        chosen, table = select_end_model(texts, probs, mask=train & ~dev, dev_texts=[t for t, d in zip(texts, dev) if d],
                                         dev_gold=gold[dev])
        return EndModel(features=chosen.features, C=chosen.C).fit(texts, probs, mask=train), table

    # -- reviews ------------------------------------------------------------------------------------------
    def reviews(self, name: str) -> dict[str, dict]:
        """The standing review of each reviewed row (the latest not undone)."""
        t = self.store.tables.label_reviews
        with self.store.begin() as conn:
            rows = conn.execute(sa.select(t).where(t.c.task == name, t.c.undone_at.is_(None))
                                .order_by(t.c.created_at, t.c.id)).mappings().all()
        return {r["row_id"]: dict(r) for r in rows}

    def queue(self, name: str, *, limit: int = 20) -> list[dict]:
        """Rows to review next (train and dev only; test rows stay for evaluation), scored on whole columns:
        only the rows returned become Python objects, so a queue over 100,000 rows stays quick."""
        import pyarrow.compute as pc

        spec, result = self.get(name)
        if not result:
            raise InvalidRequest(f"run the task first: `genfoundry label run {name}`", param="task")
        ds, _, number = result["output"].rpartition("@")
        table = self.datasets.table(ds, int(number))
        reviewed = list(self.reviews(name))
        open_rows = pc.and_(pc.not_equal(table["split"], "test"),
                            pc.invert(pc.is_in(table["source_id"], value_set=pa.array(reviewed, pa.string()))))
        table = table.filter(open_rows)
        if table.num_rows == 0:
            return []
        k = len(spec.labels)
        probs = pc.list_flatten(table["label_probs"]).to_numpy(zero_copy_only=False).reshape(-1, k)
        ends = pc.list_flatten(table["end_probs"]).to_numpy(zero_copy_only=False).reshape(-1, k)
        disagree = probs.argmax(1) != ends.argmax(1)
        entropy = -(probs * np.log(np.clip(probs, 1e-12, 1))).sum(1)
        ids = table["source_id"].to_numpy(zero_copy_only=False)
        order = np.lexsort((ids, -entropy, ~disagree))[:limit]  # disagreements, then the least sure; ties by id
        names = [lf["name"] for lf in result.get("lfs", [])] or [lf.get("name") for lf in spec.lfs]
        out = []
        for i, r in zip(order, table.take(pa.array(order)).to_pylist()):
            out.append({"row_id": r["source_id"], "text": r[spec.text_field], "split": r["split"],
                        "votes": [{"lf": lf, "label": v} for lf, v in zip(names, r["votes"])], "label": r["label"],
                        "label_probs": dict(zip(spec.labels, r["label_probs"])),
                        "end_probs": dict(zip(spec.labels, r["end_probs"])), "disagree": bool(disagree[i])})
        return out

    def review(self, name: str, row_id: str, label: str, *, reviewer: str, expected: str | None = None) -> dict:
        """Record ``reviewer``'s label for a row. ``expected`` is the id of the review the reviewer saw on the
        row (None: none); if another reviewer labeled it meanwhile, nothing is written and Conflict says who."""
        spec, _ = self.get(name)
        if label not in spec.labels:
            raise InvalidRequest(f"label {label!r} is not in the label space ({', '.join(spec.labels)})", param="label")
        if not self._has_row(spec, row_id):
            raise NotFound(f"no row {row_id!r} in {spec.dataset}@{spec.version}", param="row_id")
        t = self.store.tables.label_reviews
        with self.store.begin() as conn:
            current = conn.execute(sa.select(t).where(t.c.task == name, t.c.row_id == row_id, t.c.undone_at.is_(None))
                                   .order_by(t.c.created_at.desc(), t.c.id.desc())).mappings().first()
            if current is not None and current["id"] != expected:
                raise Conflict(f"row {row_id} was labeled {current['label']!r} by {current['reviewer']} at "
                               f"{current['created_at']:%H:%M:%S} since you loaded it; reload to see it")
            review = {"id": uuid.uuid4().hex, "task": name, "row_id": row_id, "label": label, "reviewer": reviewer,
                      "created_at": utcnow()}
            conn.execute(t.insert().values(**review))
        record(self.store, action="label.review", actor=reviewer, target=f"{name}/{row_id}",
               details={"label": label, "replaces": current["id"] if current else None})
        return {**review, "created_at": review["created_at"].isoformat() + "Z"}

    def _has_row(self, spec: TaskSpec, row_id: str) -> bool:
        import pyarrow.compute as pc

        table = self.datasets.table(spec.dataset, spec.version, columns=["_id"])
        return bool(pc.any(pc.equal(table["_id"], row_id)).as_py())

    def undo(self, name: str, review_id: str, *, reviewer: str) -> None:
        t = self.store.tables.label_reviews
        with self.store.begin() as conn:
            found = conn.execute(sa.select(t).where(t.c.task == name, t.c.id == review_id)).mappings().first()
            if found is None or found["undone_at"] is not None:
                raise NotFound(f"no standing review {review_id} in task {name!r}", param="review_id")
            conn.execute(t.update().where(t.c.id == review_id).values(undone_at=utcnow()))
        record(self.store, action="label.review_undone", actor=reviewer, target=f"{name}/{found['row_id']}",
               details={"review": review_id})


def _only(gold: np.ndarray, rows: list[dict], split: str, reviews: dict) -> np.ndarray:
    """Gold labels of ``split`` rows that came from the data, not from reviews (those are fitted exactly)."""
    out = gold.copy()
    for i, row in enumerate(rows):
        if row["split"] != split or row["_id"] in reviews:
            out[i] = ABSTAIN
    return out


def _accuracy(probs: np.ndarray, gold: np.ndarray) -> float | None:
    mask = gold >= 0
    if not mask.any():
        return None
    top = probs[mask].max(1, keepdims=True)
    hits = (np.isclose(probs[mask], top)) & (np.arange(probs.shape[1])[None, :] == gold[mask][:, None])
    ties = np.isclose(probs[mask], top).sum(1)
    return round(float((hits.any(1) / ties).mean()), 4)  # a tie counts as a fair coin


def _metrics(L, probs, end_probs, *, gold_dev, test_gold, k) -> dict:
    mv = majority_vote(L, k)
    out = {"coverage": round(float((L != ABSTAIN).any(1).mean()), 4)}
    for split, gold in (("dev", gold_dev), ("test", test_gold)):
        if (gold >= 0).any():
            out[split] = {"rows": int((gold >= 0).sum()), "majority_vote": _accuracy(mv, gold),
                          "label_model": _accuracy(probs, gold), "end_model": _accuracy(end_probs, gold)}
    return out
