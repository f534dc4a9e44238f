"""`genfoundry ingest | ask | search | forget | summarise`: the knowledge base from the shell."""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager
from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from genfoundry.cli.common import Context, console, get_context, handle_errors
from genfoundry.core.errors import InvalidRequest
from genfoundry.guard.documents import CollectionPii
from genfoundry.knowledge.base import KnowledgeBase
from genfoundry.knowledge.retrieval import RetrievalOptions

__all__ = ["ask", "forget", "ingest", "open_kb", "search", "summarise"]


@asynccontextmanager
async def open_kb(context: Context):
    """A knowledge base on the context's store and hub; models are closed at the end."""
    hub = context.hub()
    kb = KnowledgeBase(settings=context.settings, store=context.store, hub=hub,
                       pii=CollectionPii(context.settings, context.store))
    try:
        yield kb
    finally:
        await hub.close()
        kb.close()


def _run(coro):
    return asyncio.run(coro)


def _parse_filter(values: list[str] | None) -> dict | None:
    where: dict[str, list] = {}
    for value in values or []:
        field, sep, wanted = value.partition("=")
        if not sep or not wanted:
            raise InvalidRequest(f"--filter {value!r} must look like field=value (for example tags=policy)")
        where.setdefault(field.strip(), []).append(int(wanted) if field.strip() == "page" and wanted.isdigit()
                                                   else wanted)
    return where or None


@handle_errors
def ingest(ctx: typer.Context,
           paths: list[Path] = typer.Argument(..., help="Files and folders to ingest (folders recursively)."),
           collection: str = typer.Option(..., "--collection", "-c", help="Collection to ingest into."),
           tag: list[str] = typer.Option(None, "--tag", help="Tag every document (repeat for several)."),
           create: bool = typer.Option(True, help="Create the collection when it does not exist."),
           clearance: str = typer.Option(None, help="Clearance of a new collection: public, internal (default), "
                                                    "confidential or restricted; for an existing one it must match."),
           pii: str = typer.Option(None, help="PII in a new collection's documents: off (default), label, redact "
                                              "or tokenize; for an existing one it must match."),
           as_json: bool = typer.Option(False, "--json", help="Print the report as JSON.")):
    """Ingest files into a collection: unchanged files are skipped, changed ones replaced."""
    context = get_context(ctx)

    async def work():
        async with open_kb(context) as kb:
            with Progress(TextColumn("[bold]ingest"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          TextColumn("{task.description}"), console=console, transient=True,
                          disable=as_json) as progress:
                task = progress.add_task("", total=None)

                def on_progress(event):
                    progress.update(task, completed=event.done, total=event.total,
                                    description=escape(Path(event.source).name))
                return await kb.ingest(collection, paths, tags=tag or [], create=create, clearance=clearance,
                                       pii=pii, on_progress=on_progress)

    report = _run(work())
    if as_json:
        print(json.dumps(report.to_dict()))
    else:
        console.print(f"[green]{len(report.added)} added[/green], {len(report.updated)} updated, "
                      f"{len(report.skipped)} unchanged, [red]{len(report.failed)} failed[/red]; "
                      f"{report.chunks} chunks in {report.seconds:.1f} s")
        for source, reason in report.failed:
            console.print(f"  [red]failed[/red] {escape(source)}: {escape(reason)}", soft_wrap=True)
        for source, warning in report.warnings:
            console.print(f"  [yellow]warning[/yellow] {escape(source)}: {escape(warning)}", soft_wrap=True)
    if report.failed and not (report.added or report.updated or report.skipped):
        raise typer.Exit(1)


@handle_errors
def ask(ctx: typer.Context,
        question: str = typer.Argument(..., help="The question."),
        collection: str = typer.Option(..., "--collection", "-c", help="Collection to answer from."),
        model: str = typer.Option("default", help="Chat model that writes the answer."),
        mode: str = typer.Option("hybrid", help="Retrieval: hybrid, dense or bm25."),
        limit: int = typer.Option(5, min=1, max=20, help="Passages given to the model."),
        filter_: list[str] = typer.Option(None, "--filter", help="Metadata filter field=value (repeatable)."),
        rerank: bool = typer.Option(False, "--rerank", help="Re-rank passages with the configured reranker."),
        no_cache: bool = typer.Option(False, "--no-cache", help="Answer afresh even if a cached answer exists."),
        as_json: bool = typer.Option(False, "--json", help="Print the answer and citations as JSON.")):
    """Answer a question from a collection, citing the sources."""
    from genfoundry.apps.answer import GroundedAnswerer

    context = get_context(ctx)
    options = RetrievalOptions(mode=mode, limit=limit, where=_parse_filter(filter_), rerank=rerank)

    async def work():
        async with open_kb(context) as kb:
            answerer = GroundedAnswerer(kb=kb, hub=kb.hub, settings=context.settings)
            return await answerer.answer(collection, question, model=model, options=options,
                                         use_cache=not no_cache)

    answer = _run(work())
    if as_json:
        print(json.dumps(answer.to_dict(), default=str))
        return
    console.print(escape(answer.text), soft_wrap=True)
    for c in answer.citations:
        page = f", page {c.page}" if c.page else ""
        where = c.heading or c.title  # a heading path starts with the document's title
        console.print(f"  [cyan][{c.index}][/cyan] {escape(where)} ({escape(c.source)}{page})"
                      f"{' [dim]inferred[/dim]' if c.inferred else ''}", soft_wrap=True)
    console.print(f"[dim]{answer.model} · {answer.usage.total_tokens} tokens · {answer.latency_ms:.0f} ms"
                  f"{' · cached' if answer.cached else ''}[/dim]")


@handle_errors
def search(ctx: typer.Context,
           query: str = typer.Argument(..., help="What to look for."),
           collection: str = typer.Option(..., "--collection", "-c", help="Collection to search."),
           mode: str = typer.Option("hybrid", help="hybrid, dense or bm25."),
           limit: int = typer.Option(5, min=1, max=100, help="How many passages."),
           mmr: float = typer.Option(None, help="Diversify with MMR (lambda in (0, 1]; 0.7 is a good start)."),
           filter_: list[str] = typer.Option(None, "--filter", help="Metadata filter field=value (repeatable)."),
           rerank: bool = typer.Option(False, "--rerank", help="Re-rank passages with the configured reranker."),
           as_json: bool = typer.Option(False, "--json", help="Print JSON lines.")):
    """Show the passages a question retrieves, without asking a model."""
    context = get_context(ctx)
    options = RetrievalOptions(mode=mode, limit=limit, mmr=mmr, where=_parse_filter(filter_), rerank=rerank)

    async def work():
        async with open_kb(context) as kb:
            return await kb.retrieve(collection, query, options)

    passages = _run(work())
    if as_json:
        for p in passages:
            c = p.chunk
            print(json.dumps({"score": p.score, "similarity": p.similarity, "ranks": p.ranks, "chunk_id": c.id,
                              "document_id": c.document_id, "source": c.source, "title": c.title,
                              "heading": c.heading, "page": c.page, "text": c.text}))
        return
    table = Table("#", "similarity", "source", "heading", "text")
    for n, p in enumerate(passages, start=1):
        table.add_row(str(n), f"{p.similarity:.3f}", escape(Path(p.chunk.source).name), escape(p.chunk.heading),
                      escape(p.chunk.text[:160].replace("\n", " ")))
    console.print(table)


@handle_errors
def forget(ctx: typer.Context,
           document: str = typer.Option(None, "--document", help="Id of a document to forget."),
           match: str = typer.Option(None, "--match", help="Forget every document holding this text (any case)."),
           collection: list[str] = typer.Option(None, "--collection", "-c",
                                                help="With --match: only these collections (default all)."),
           keep_call_logs: bool = typer.Option(False, help="With --match: leave call-log content as it is."),
           as_json: bool = typer.Option(False, "--json", help="Print the report as JSON.")):
    """Forget a document, or everything that mentions a text: chunks, vectors, index entries, cached answers."""
    if bool(document) == bool(match):
        raise InvalidRequest("give exactly one of --document ID or --match TEXT")
    context = get_context(ctx)

    async def work():
        async with open_kb(context) as kb:
            if document:
                return await kb.forget_document(document)
            runs = 0
            if not collection and not keep_call_logs:  # agent runs hold conversations as the call log does
                from genfoundry.apps.agent_run import forget_runs

                runs = await asyncio.to_thread(forget_runs, kb.store, match)
            report = await kb.forget_match(match, collections=collection or None, erase_calls=not keep_call_logs)
            report.agent_runs = runs
            if not collection:  # everywhere: datasets too
                from genfoundry.data.datasets import Datasets

                report.dataset_rows = await asyncio.to_thread(Datasets(context.settings, kb.store).forget_match, match)
            return report

    report = _run(work())
    if as_json:
        print(json.dumps(report.to_dict()))
        return
    console.print(f"forgot {len(report.documents)} documents ({report.chunks} chunks), "
                  f"{report.answers} cached answers; erased content of {report.calls} logged calls; removed "
                  f"{sum(report.dataset_rows.values())} dataset rows; erased {report.agent_runs} agent runs")


@handle_errors
def summarise(ctx: typer.Context,
              collection: str = typer.Option(None, "--collection", "-c", help="Summarise a whole collection."),
              document: str = typer.Option(None, "--document", help="Summarise one document (its id)."),
              model: str = typer.Option("default", help="Chat model that writes the summary."),
              as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Summarise a document or a collection (map-reduce over long text)."""
    from genfoundry.apps.summarise import Summariser

    if bool(collection) == bool(document):
        raise InvalidRequest("give exactly one of --collection NAME or --document ID")
    context = get_context(ctx)

    async def work():
        async with open_kb(context) as kb:
            summariser = Summariser(kb=kb, hub=kb.hub, model=model)
            if document:
                return await summariser.summarise_document(document)
            return await summariser.summarise_collection(collection)

    summary = _run(work())
    if as_json:
        print(json.dumps(summary.to_dict()))
        return
    console.print(escape(summary.text), soft_wrap=True)
    console.print(f"[dim]{summary.model} · {len(summary.documents)} documents · {summary.windows} windows · "
                  f"{summary.rounds} reduce rounds[/dim]")
