"""Ingestion on a local Ray cluster, against the in-process path, with the built-in embedding model.

Ray starts a real local cluster (``ray_address: local``) with two workers; each loads the built-in
embedding model. The module skips when Ray is not installed; CI installs it (the ``test`` extra).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import psutil
import pytest

from genfoundry.core.errors import ProviderError
from genfoundry.core.settings import load_settings
from genfoundry.core.store import Store
from genfoundry.knowledge.base import KnowledgeBase
from genfoundry.knowledge.stores.lance import LanceVectorStore
from genfoundry.models.builtin import register_builtins
from genfoundry.models.hub import ModelHub

ray = pytest.importorskip("ray", reason="ray is not installed", exc_type=ImportError)

pytestmark = [pytest.mark.integration]

TOPICS = ["returns and refunds", "shipping times", "warranty claims", "store opening hours", "gift cards",
          "loyalty points", "furniture care", "delivery to islands", "price matching", "assembly service"]


def write_docs(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        topic = TOPICS[i % len(TOPICS)]
        body = "\n\n".join(f"## Part {j}\n\nThis section {j} of document {i} explains {topic} in detail. "
                           f"Customers asking about {topic} should read rule {i}.{j} carefully; "
                           "the staff handbook repeats it. " * 3 for j in range(4))
        (folder / f"doc{i:02d}.md").write_text(f"# {topic.title()} ({i})\n\n{body}\n")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 not really a pdf")
    return folder


def open_kb(home: Path, **overrides) -> KnowledgeBase:
    settings = load_settings(home=home, environ={}, overrides=overrides)
    settings.ensure_home()
    store = Store.open(settings.resolved_database_url)
    hub = ModelHub(store, settings)
    register_builtins(hub)
    return KnowledgeBase(settings=settings, store=store, hub=hub, vectors=LanceVectorStore(settings.vectors_dir))


def chunks_of(kb: KnowledgeBase, collection: str) -> dict[tuple[str, int], tuple[str, list[float]]]:
    return {(Path(c.source).name, c.position): (c.text, c.vector) for c in kb.vectors.get(collection)}


@pytest.fixture(scope="module", autouse=True)
def shutdown_ray():
    yield
    if ray.is_initialized():
        ray.shutdown()


def test_ray_ingest_gives_the_same_chunks_and_vectors_as_in_process(tmp_path):
    docs = write_docs(tmp_path / "docs", 24)
    here = open_kb(tmp_path / "here")
    local = asyncio.run(here.ingest("handbook", [docs], create=True))
    on_ray = open_kb(tmp_path / "ray", ray_address="local", ray_workers=2)
    report = asyncio.run(on_ray.ingest("handbook", [docs], create=True))
    assert sorted(Path(s).name for s in report.added) == sorted(Path(s).name for s in local.added)
    assert len(report.added) == 24 and report.chunks == local.chunks > 24
    assert [Path(s).name for s, _ in report.failed] == ["broken.pdf"]
    assert "broken.pdf" in report.failed[0][0] and "gf-ray-" not in report.failed[0][1], \
        "errors name the file as the user knows it, not the worker's copy"
    mine, theirs = chunks_of(here, "handbook"), chunks_of(on_ray, "handbook")
    assert mine.keys() == theirs.keys()
    assert all(mine[k][0] == theirs[k][0] for k in mine), "the same text in every chunk"
    diff = max(float(np.max(np.abs(np.array(mine[k][1]) - np.array(theirs[k][1])))) for k in mine)
    assert diff < 1e-4, f"vectors differ by {diff}"
    # Search works the same on what Ray wrote.
    hits = asyncio.run(on_ray.retrieve("handbook", "how long does shipping take"))
    assert hits and "shipping" in hits[0].chunk.text
    # A second run over the same files skips them all.
    again = asyncio.run(on_ray.ingest("handbook", [docs]))
    assert len(again.skipped) == 24 and not again.added


def test_a_cluster_that_goes_away_fails_the_ingest_cleanly_and_a_rerun_resumes(tmp_path):
    docs = write_docs(tmp_path / "docs", 150)
    kb = open_kb(tmp_path / "home", ray_address="local", ray_workers=2, embed_batch_size=4)  # groups of 64 chunks
    seen = []

    def progress(event):
        seen.append(event)
        if len(seen) == 40:  # the workers' machines go away half way: every worker process is killed
            killed = [p.kill() or p for p in psutil.process_iter(["cmdline"])
                      if any("_Worker" in part for part in (p.info["cmdline"] or []))]
            assert killed, "the Ray workers were found"

    with pytest.raises(ProviderError, match="run the ingest again"):
        asyncio.run(kb.ingest("handbook", [docs], create=True, on_progress=progress))
    written = {Path(d.source).name for d in kb.documents("handbook")}
    assert 0 < len(written) < 150, "what was committed before the failure is kept"
    report = asyncio.run(kb.ingest("handbook", [docs]))
    assert len(report.skipped) == len(written)
    assert len(report.added) == 150 - len(written)
    assert len({Path(d.source).name for d in kb.documents("handbook")}) == 150


# -- labeling functions on Ray ------------------------------------------------------------------------------

LF_MODULE = '''
def shouting(row):
    text = row["text"]
    return "spam" if sum(c.isupper() for c in text) > len(text) / 3 else None


def fails_on_sevens(row):
    if "7" in row["text"]:
        raise ValueError("no sevens")
    return "ham" if len(row["text"]) > 30 else None
'''


def test_labeling_functions_on_ray_vote_as_in_process_and_fill_the_cache(tmp_path, monkeypatch):
    import sys

    from genfoundry.data.labeling import KeywordLF, RegexLF, apply_lfs, lf_from_spec
    from genfoundry.data.ray_votes import RayVoteWorkers

    (tmp_path / "my_rules.py").write_text(LF_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))  # a module of the user's own, not installed anywhere
    sys.modules.pop("my_rules", None)
    labels = ["ham", "spam"]
    lfs = [KeywordLF("win", label="spam", keywords=["win", "prize"]),
           RegexLF("money", label="spam", pattern=r"\$\d+"),
           lf_from_spec({"name": "shouting", "type": "python", "function": "my_rules:shouting"}, labels=labels),
           lf_from_spec({"name": "sevens", "type": "python", "function": "my_rules:fails_on_sevens"}, labels=labels)]
    words = ["hello", "WIN", "a", "prize", "$100", "meeting", "tomorrow", "CALL NOW", "lunch", "7"]
    rows = [{"_id": str(i), "text": " ".join(words[(i * k) % len(words)] for k in range(1, 2 + i % 7))}
            for i in range(3000)]
    here = open_kb(tmp_path / "here")
    there = open_kb(tmp_path / "ray", ray_address="local", ray_workers=2)
    local = asyncio.run(apply_lfs(here.store, lfs, rows, text_field="text", labels=labels, batch=200))
    workers = RayVoteWorkers.start(there.settings)
    remote = asyncio.run(apply_lfs(there.store, lfs, rows, text_field="text", labels=labels, batch=200,
                                   workers=workers))
    assert (remote.L == local.L).all() and (remote.errors == local.errors).all()
    assert remote.errors[:, 3].any() and "no sevens" in remote.messages["sevens"]
    assert (remote.L[:, 2] >= 0).any(), "the user's own Python LF voted on the workers"
    assert remote.computed == len(rows) * len(lfs)
    again = asyncio.run(apply_lfs(there.store, lfs, rows, text_field="text", labels=labels, batch=200,
                                  workers=workers))
    assert again.computed == 0 and (again.L == local.L).all(), "a second run takes every vote from the cache"
