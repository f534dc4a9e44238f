"""Ingestion on a Ray cluster: files read, chunked and embedded by Ray workers.

When the ``ray_address`` setting is set (see :mod:`genfoundry.core.raycluster`),
``genfoundry ingest`` sends the heavy work to Ray actors, each holding
the collection's embedding model:

- **reading and chunking**: each file's bytes go to a worker (so workers on
  other machines need no shared disk), which loads and chunks it with the same
  code as the in-process path;
- **embedding**: each group of chunks is split across the workers.

Everything that decides what is stored stays in this process, as without Ray:
skipping unchanged files, PII screening, and the three-step crash-safe write
(:mod:`genfoundry.knowledge.ingest`). So the chunks are the same, and the
vectors the same up to floating-point rounding; and a run that stops half way
(a cluster that goes away) resumes by running it again: what was written is
skipped as unchanged.

Example::

    workers = RayWorkers.start(settings, embedding_spec)
    ingestor = Ingestor(..., embedder=workers.embedder, workers=workers)
    await ingestor.ingest_paths([Path("docs/")])
    workers.close()
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from genfoundry.core.errors import GenfoundryError, ProviderError
from genfoundry.core.settings import Settings
from genfoundry.core.types import Embeddings, Usage
from genfoundry.knowledge.collections import Collection
from genfoundry.knowledge.ingest import Prepared
from genfoundry.models.spec import ModelSpec

__all__ = ["RayEmbedder", "RayWorkers"]

log = logging.getLogger(__name__)
FILES_AHEAD = 32  # files sent to the workers before the first result is taken back


class _Worker:
    """One Ray actor: the embedding model, loaded once; reads, chunks and embeds on request."""

    def __init__(self, spec_json: dict, settings_json: dict):
        from genfoundry.models.providers import get_provider

        self.settings = Settings.model_validate(settings_json)
        self.spec = ModelSpec.model_validate(spec_json)
        self.loop = asyncio.new_event_loop()
        self.model = get_provider(self.spec.provider).create(self.spec, self.settings)
        self.loop.run_until_complete(self.model.warm_up())

    def prepare(self, name: str, data: bytes, chunk_tokens: int, chunk_overlap: int,
                max_file_bytes: int) -> Prepared:
        from genfoundry.knowledge.chunking import chunk_document
        from genfoundry.knowledge.loaders import LoadError, load_document

        suffix = Path(name).suffix
        with tempfile.TemporaryDirectory(prefix="gf-ray-") as folder:
            path = Path(folder) / f"document{suffix}"
            path.write_bytes(data)
            try:
                doc = load_document(path, max_bytes=max_file_bytes)
                pieces = chunk_document(doc, count_tokens=self.model.count_tokens,
                                        count_many=getattr(self.model, "count_tokens_many", None),
                                        max_tokens=chunk_tokens, overlap=chunk_overlap)
            except LoadError as exc:
                return Prepared(error=exc.message.replace(str(path), name))
            except (OSError, ValueError, GenfoundryError) as exc:
                return Prepared(error=f"{type(exc).__name__}: {exc}".replace(str(path), name))
        doc.source = name
        doc.warnings = [w.replace(str(path), name) for w in getattr(doc, "warnings", [])]
        return Prepared(doc=doc, pieces=pieces)

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        result = self.loop.run_until_complete(self.model.embed(texts))
        return result.vectors, result.usage.prompt_tokens

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [self.model.count_tokens(t) for t in texts]


class RayWorkers:
    """The Ray actors of one ingest (see the module docstring)."""

    def __init__(self, ray, actors: list, spec: ModelSpec, address: str):
        self.ray = ray
        self.actors = actors
        self.spec = spec
        self.address = address
        self.embedder = RayEmbedder(self)

    @classmethod
    def start(cls, settings: Settings, spec: ModelSpec, *, workers: int | None = None) -> "RayWorkers":
        """Join (or start) the cluster of ``settings.ray_address`` and start the actors."""
        from genfoundry.core.raycluster import cluster_cpus, connect

        ray = connect(settings)  # the workers import genfoundry as installed here: the same environment
        address = settings.ray_address
        try:
            count = workers or settings.ray_workers or cluster_cpus(ray)
            actor = ray.remote(num_cpus=1)(_Worker)
            actors = [actor.remote(spec.model_dump(mode="json"), settings.model_dump(mode="json"))
                      for _ in range(count)]
            ray.get([a.count_tokens.remote(["ready"]) for a in actors])  # the models are loaded
        except Exception as exc:  # Ray's actor errors have many types
            raise ProviderError(f"could not start ingest workers on the Ray cluster at {address!r}: "
                                f"{type(exc).__name__}: {exc}") from None
        log.info("ingest on Ray (%s): %d workers with %s", address, len(actors), spec.name)
        return cls(ray, actors, spec, address)

    def _lost(self, exc: Exception) -> ProviderError:
        return ProviderError(f"the Ray cluster at {self.address!r} failed during the ingest ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}); what was written is kept: run the "
                             "ingest again to go on (unchanged files are skipped)")

    async def _get(self, ref):
        try:
            return await ref
        except Exception as exc:
            raise self._lost(exc) from None

    async def prepare(self, files: Sequence[tuple[Path, str]], collection: Collection,
                      max_file_bytes: int) -> AsyncIterator[tuple[Path, str, Prepared]]:
        """Each file read and chunked by a worker, in order, with up to FILES_AHEAD in flight."""
        queue: list[tuple[Path, str, Any]] = []

        def submit(index: int) -> None:
            path, source = files[index]
            try:
                size = path.stat().st_size
                if size > max_file_bytes:
                    raise OSError(f"{size / 2**20:.1f} MiB is over the {max_file_bytes / 2**20:.0f} MiB limit "
                                  "(setting max_file_mb)")
                data = path.read_bytes()
            except OSError as exc:
                queue.append((path, source, Prepared(error=f"cannot read {source}: {exc}")))
                return
            actor = self.actors[index % len(self.actors)]
            try:
                ref = actor.prepare.remote(str(path), data, collection.chunk_tokens, collection.chunk_overlap,
                                           max_file_bytes)
            except Exception as exc:
                raise self._lost(exc) from None
            queue.append((path, source, ref))

        following = min(FILES_AHEAD, len(files))
        for index in range(following):
            submit(index)
        while queue:
            path, source, ref = queue.pop(0)
            if following < len(files):
                submit(following)
                following += 1
            outcome = ref if isinstance(ref, Prepared) else await self._get(ref)
            yield path, source, outcome

    async def embed(self, texts: list[str]) -> Embeddings:
        if not texts:
            return Embeddings(vectors=[], usage=Usage())
        shard = -(-len(texts) // len(self.actors))
        parts = [texts[i:i + shard] for i in range(0, len(texts), shard)]
        try:
            refs = [self.actors[i].embed.remote(part) for i, part in enumerate(parts)]
        except Exception as exc:
            raise self._lost(exc) from None
        results = await asyncio.gather(*(self._get(ref) for ref in refs))
        vectors = [v for part, _ in results for v in part]
        return Embeddings(vectors=vectors, usage=Usage(prompt_tokens=sum(tokens for _, tokens in results)))

    def close(self) -> None:
        for actor in self.actors:
            try:
                self.ray.kill(actor)
            except Exception:  # a cluster that is gone has nothing left to stop
                pass
        self.actors = []


class RayEmbedder:
    """The embedding model as the ingest sees it, its work done by the Ray workers."""

    local = False

    def __init__(self, workers: RayWorkers):
        self.workers = workers
        self.spec = workers.spec
        self.concurrency = len(workers.actors)
        self.dimensions = None

    async def warm_up(self) -> None:
        return None

    async def embed(self, texts: list[str]) -> Embeddings:
        return await self.workers.embed(texts)

    def count_tokens(self, text: str) -> int:
        return self.workers.ray.get(self.workers.actors[0].count_tokens.remote([text]))[0]

    async def close(self) -> None:
        return None
