"""`genfoundry collections`: list, show, create, delete and set access of collections."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import typer
from rich.markup import escape
from rich.table import Table

from genfoundry.cli.common import console, get_context, handle_errors
from genfoundry.cli.knowledge import open_kb
from genfoundry.knowledge.collections import Access


app = typer.Typer(no_args_is_help=True, help="Collections of documents: list, show, create, delete, access.")


@app.command("list")
@handle_errors
def list_(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """List collections with their clearance and size."""
    context = get_context(ctx)

    async def work():
        async with open_kb(context) as kb:
            return [(c, kb.documents(c.name)) for c in kb.collections()]

    rows = asyncio.run(work())
    if as_json:
        print(json.dumps([{"name": c.name, "clearance": c.clearance, "documents": len(docs),
                           "chunks": sum(d.chunks for d in docs), "embedding_model": c.embedding_model,
                           "description": c.description} for c, docs in rows]))
        return
    table = Table("name", "clearance", "documents", "chunks", "embedding model", "description")
    for c, docs in rows:
        table.add_row(c.name, c.clearance, str(len(docs)), str(sum(d.chunks for d in docs)), c.embedding_model,
                      escape(c.description))
    console.print(table)


@app.command("show")
@handle_errors
def show(ctx: typer.Context, name: str = typer.Argument(..., help="Collection name."),
         as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Show a collection's settings, access and documents (with their ids)."""
    context = get_context(ctx)

    async def work():
        async with open_kb(context) as kb:
            return kb.collection(name), kb.documents(name)

    collection, docs = asyncio.run(work())
    if as_json:
        print(json.dumps({"name": collection.name, "clearance": collection.clearance,
                          "access": collection.access.to_dict(), "embedding_model": collection.embedding_model,
                          "chunk_tokens": collection.chunk_tokens, "chunk_overlap": collection.chunk_overlap,
                          "documents": [d.__dict__ for d in docs]}, default=str))
        return
    access = collection.access
    console.print(f"[bold]{collection.name}[/bold] · clearance {collection.clearance} · "
                  f"{collection.embedding_model} · chunks {collection.chunk_tokens} tokens, overlap "
                  f"{collection.chunk_overlap}")
    console.print(f"read: {', '.join(access.read)} · write: {', '.join(access.write)}"
                  f"{' · keys: ' + ', '.join(access.keys) if access.keys else ''}")
    table = Table("id", "title", "source", "chunks", "tags", "ingested (UTC)")
    for d in docs:
        table.add_row(d.id, escape(d.title), escape(d.source), str(d.chunks), ", ".join(d.tags), d.ingested_at)
    console.print(table)


@app.command("create")
@handle_errors
def create(ctx: typer.Context, name: str = typer.Argument(..., help="Collection name (a-z, 0-9, '-', '_')."),
           clearance: str = typer.Option("internal", help="public, internal, confidential or restricted."),
           description: str = typer.Option("", help="What the collection holds."),
           embedding_model: str = typer.Option("default-embedding", help="Embedding model for its vectors."),
           read: list[str] = typer.Option(None, "--read", help="Role that may read (repeatable; default all)."),
           write: list[str] = typer.Option(None, "--write", help="Role that may write (default admin, developer)."),
           key: list[str] = typer.Option(None, "--key", help="Only these API key ids (and admins) may use it."),
           chunk_tokens: int = typer.Option(None, help="Chunk size in tokens (default: the chunk_tokens setting)."),
           chunk_overlap: int = typer.Option(None, help="Overlap in tokens (default: the chunk_overlap setting)."),
           pii: str = typer.Option("off", help="PII in its documents: off, label (tag chunks), redact, or tokenize "
                                               "(into the vault).")):
    """Create an empty collection (ingest creates one too)."""
    context = get_context(ctx)
    access = Access(**{k: v for k, v in {"read": read, "write": write, "keys": key}.items() if v})

    async def work():
        async with open_kb(context) as kb:
            return await kb.create_collection(name, clearance=clearance, description=description,
                                              embedding_model=embedding_model, access=access,
                                              chunk_tokens=chunk_tokens, chunk_overlap=chunk_overlap, pii=pii)

    collection = asyncio.run(work())
    console.print(f"created collection {collection.name} ({collection.clearance}, {collection.dimensions}-d"
                  f"{', pii ' + collection.pii if collection.pii != 'off' else ''})")


@app.command("access")
@handle_errors
def access(ctx: typer.Context, name: str = typer.Argument(..., help="Collection name."),
           read: list[str] = typer.Option(None, "--read", help="Roles that may read (repeatable)."),
           write: list[str] = typer.Option(None, "--write", help="Roles that may write (repeatable)."),
           key: list[str] = typer.Option(None, "--key", help="Only these API key ids (repeatable)."),
           any_key: bool = typer.Option(False, "--any-key", help="Drop the key list: any key with the role."),
           clearance: str = typer.Option(None, help="Change the clearance.")):
    """Change who may read and write a collection, or its clearance."""
    from genfoundry.knowledge.collections import CollectionRegistry

    registry = CollectionRegistry(get_context(ctx).store)
    current = registry.get(name)
    rules = current.access
    new = Access(read=read or rules.read, write=write or rules.write, keys=[] if any_key else (key or rules.keys))
    updated = dataclasses.replace(current, access=new, clearance=clearance or current.clearance)
    registry.update(updated)
    console.print(f"{name}: read {', '.join(new.read)} · write {', '.join(new.write)}"
                  f"{' · keys ' + ', '.join(new.keys) if new.keys else ''} · clearance {updated.clearance}")


@app.command("delete")
@handle_errors
def delete(ctx: typer.Context, name: str = typer.Argument(..., help="Collection name."),
           yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation.")):
    """Delete a collection with all its documents, vectors and cached answers."""
    if not yes:
        typer.confirm(f"Delete collection {name} and everything in it?", abort=True)
    context = get_context(ctx)

    async def work():
        async with open_kb(context) as kb:
            await kb.delete_collection(name)

    asyncio.run(work())
    console.print(f"deleted collection {name}")
