"""`genfoundry data | label | synth`: datasets, programmatic labeling and synthetic data from the shell."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

import typer
import yaml
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from genfoundry.cli.common import Context, console, get_context, handle_errors
from genfoundry.core.errors import InvalidRequest
from genfoundry.data.datasets import Datasets, SplitSpec

__all__ = ["data_app", "delete", "diff", "export", "from_calls", "from_collection", "from_feedback", "head", "import_", "label_app",
           "label_create", "label_list", "label_queue", "label_review", "label_run", "label_show", "list_", "show",
           "synth_app", "synth_instructions", "synth_qa"]

data_app = typer.Typer(help="Datasets: versioned, content-hashed tables of records with lineage.", no_args_is_help=True)
label_app = typer.Typer(help="Programmatic labeling: labeling functions, a label model, a review queue.",
                        no_args_is_help=True)
synth_app = typer.Typer(help="Synthetic data generated from your documents by a hub model.", no_args_is_help=True)


def _datasets(context: Context) -> Datasets:
    return Datasets(context.settings, context.store)


def _splits(seed: int, split: str) -> SplitSpec:
    try:
        train, dev, test = (float(x) for x in split.split(","))
    except ValueError as exc:
        raise InvalidRequest("--split is three fractions: train,dev,test (e.g. 0.8,0.1,0.1)", param="split") from exc
    return SplitSpec(seed=seed, fractions={"train": train, "dev": dev, "test": test})


def _date(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidRequest(f"not a date: {value!r} (use YYYY-MM-DD)", param="since") from exc


def _print_version(v, as_json: bool) -> None:
    if as_json:
        print(json.dumps(v.to_dict()))
        return
    counts = (v.splits or {}).get("counts", {})
    console.print(f"{v.ref}: {v.rows} rows ({', '.join(f'{k} {n}' for k, n in counts.items())}), "
                  f"hash {v.content_hash[:12]}, from {v.lineage.get('source')}")


_SEED = typer.Option(0, help="Seed of the train/dev/test split (a split column in the data wins).")
_SPLIT = typer.Option("0.8,0.1,0.1", help="Fractions train,dev,test.")
_SENSITIVITY = typer.Option(None, help="public, internal, confidential or restricted (default internal; "
                                       "confidential for call logs and feedback).")
_JSON = typer.Option(False, "--json", help="Print JSON.")


@data_app.command("import")
@handle_errors
def import_(ctx: typer.Context, file: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSONL, CSV or Parquet."),
            name: str = typer.Option(..., "--name", "-n", help="Dataset to add a version to (made if new)."),
            fmt: str = typer.Option(None, "--format", help="jsonl, csv or parquet (default: the file's suffix)."),
            require: list[str] = typer.Option(None, "--require", help="A column every row must have (repeat)."),
            seed: int = _SEED, split: str = _SPLIT, sensitivity: str = _SENSITIVITY,
            description: str = typer.Option(None, help="What the dataset holds."), as_json: bool = _JSON):
    """Import a file as a new version; a bad row stops the import and is reported by line."""
    v = _datasets(get_context(ctx)).import_file(name, file, fmt=fmt, required=require or (), splits=_splits(seed, split),
                                                sensitivity=sensitivity, description=description)
    _print_version(v, as_json)


@data_app.command("from-calls")
@handle_errors
def from_calls(ctx: typer.Context, name: str = typer.Option(..., "--name", "-n", help="Dataset to add a version to."),
               model: str = typer.Option(None, help="Only calls to this model."),
               endpoint: str = typer.Option(None, help="Only this endpoint (chat.completions, completions, ...)."),
               since: str = typer.Option(None, help="From this date (YYYY-MM-DD)."),
               until: str = typer.Option(None, help="Before this date."),
               limit: int = typer.Option(10_000, min=1, help="At most this many calls."),
               seed: int = _SEED, split: str = _SPLIT, sensitivity: str = _SENSITIVITY, as_json: bool = _JSON):
    """Rows from the call log (prompt, messages, completion) of calls whose content was logged."""
    v = _datasets(get_context(ctx)).from_calls(name, model=model, endpoint=endpoint, since=_date(since),
                                               until=_date(until), limit=limit, splits=_splits(seed, split),
                                               sensitivity=sensitivity)
    _print_version(v, as_json)


@data_app.command("from-feedback")
@handle_errors
def from_feedback(ctx: typer.Context, name: str = typer.Option(..., "--name", "-n", help="Dataset to add a version to."),
                  since: str = typer.Option(None, help="Feedback from this date (YYYY-MM-DD)."),
                  min_rating: int = typer.Option(4, help="Ratings from this one up are labeled good."),
                  seed: int = _SEED, split: str = _SPLIT, sensitivity: str = _SENSITIVITY, as_json: bool = _JSON):
    """Labeled rows from feedback: good/bad by rating, with the user's correction where there is one."""
    v = _datasets(get_context(ctx)).from_feedback(name, since=_date(since), min_rating=min_rating,
                                                  splits=_splits(seed, split), sensitivity=sensitivity)
    _print_version(v, as_json)


@data_app.command("from-collection")
@handle_errors
def from_collection(ctx: typer.Context, collection: str = typer.Option(..., "--collection", "-c", help="Collection."),
                    name: str = typer.Option(..., "--name", "-n", help="Dataset to add a version to."),
                    seed: int = _SEED, split: str = _SPLIT, as_json: bool = _JSON):
    """Rows from a collection's chunks (current versions): text, ids, source, heading, page; the dataset
    takes the collection's clearance as its sensitivity."""
    from genfoundry.cli.knowledge import open_kb

    context = get_context(ctx)

    async def work():
        async with open_kb(context) as kb:
            chunks = await asyncio.to_thread(kb.chunks, collection)
            return _datasets(context).from_chunks(name, collection, chunks, clearance=kb.collection(collection).clearance,
                                                  splits=_splits(seed, split))

    _print_version(asyncio.run(work()), as_json)


@data_app.command("list")
@handle_errors
def list_(ctx: typer.Context, as_json: bool = _JSON):
    """Datasets, with their latest version."""
    infos = _datasets(get_context(ctx)).list()
    if as_json:
        print(json.dumps([i.to_dict() for i in infos], default=str))
        return
    table = Table("dataset", "versions", "rows", "sensitivity", "source", "created")
    for i in infos:
        v = i.latest
        table.add_row(escape(i.name), str(len(i.versions)), str(v.rows if v else 0), i.sensitivity,
                      escape(str(v.lineage.get("source"))) if v else "", f"{v.created_at:%Y-%m-%d %H:%M}" if v else "")
    console.print(table)


@data_app.command("show")
@handle_errors
def show(ctx: typer.Context, name: str = typer.Argument(..., help="Dataset name."),
         verify: bool = typer.Option(False, help="Re-hash each version's rows and compare."), as_json: bool = _JSON):
    """Versions of a dataset: hash, rows, splits, lineage."""
    ds = _datasets(get_context(ctx))
    info = ds.get(name)
    data = info.to_dict()
    data["versions"] = [v.to_dict() for v in info.versions]
    if verify:
        for v in data["versions"]:
            v["verified"] = ds.verify(name, v["number"])
    if as_json:
        print(json.dumps(data, default=str))
        return
    console.print(f"[bold]{escape(name)}[/] ({info.sensitivity}) {escape(info.description)}")
    table = Table("version", "rows", "hash", "splits", "lineage", "parent", "forgotten", *(["verified"] if verify else []))
    for v in data["versions"]:
        counts = (v["splits"] or {}).get("counts", {})
        table.add_row(str(v["number"]), str(v["rows"]), v["content_hash"][:12],
                      " ".join(f"{k}:{n}" for k, n in counts.items()), escape(json.dumps(v["lineage"])[:80]),
                      str(v["parent"] or ""), str(v["forgotten_rows"]), *([str(v["verified"])] if verify else []))
    console.print(table)


@data_app.command("head")
@handle_errors
def head(ctx: typer.Context, name: str = typer.Argument(..., help="Dataset name."),
         version: int = typer.Option(None, help="Version number (default the latest)."),
         split: str = typer.Option(None, help="Only train, dev or test rows."),
         n: int = typer.Option(10, "-n", min=1, help="Rows to show.")):
    """The first rows of a dataset version, as JSON lines."""
    for row in _datasets(get_context(ctx)).rows(name, version, split=split, limit=n):
        print(json.dumps(row, ensure_ascii=False, default=str))


@data_app.command("export")
@handle_errors
def export(ctx: typer.Context, name: str = typer.Argument(..., help="Dataset name."),
           out: Path = typer.Argument(..., help="File to write (.jsonl, .csv or .parquet)."),
           version: int = typer.Option(None, help="Version number (default the latest)."),
           split: str = typer.Option(None, help="Only train, dev or test rows."),
           fmt: str = typer.Option(None, "--format", help="jsonl, csv or parquet (default: the suffix).")):
    """Write a dataset version to a file."""
    count = _datasets(get_context(ctx)).export(name, out, number=version, fmt=fmt, split=split)
    console.print(f"wrote {count} rows to {out}")


@data_app.command("diff")
@handle_errors
def diff(ctx: typer.Context, name: str = typer.Argument(..., help="Dataset name."),
         a: int = typer.Argument(..., help="Older version."), b: int = typer.Argument(..., help="Newer version."),
         as_json: bool = _JSON):
    """Rows added and removed between two versions (rows are matched by content hash)."""
    report = _datasets(get_context(ctx)).diff(name, a, b)
    if as_json:
        print(json.dumps(report.to_dict(), default=str))
        return
    console.print(f"{name}@{a} -> @{b}: +{report.added} -{report.removed} ={report.unchanged}")
    for r in report.added_rows:
        console.print(f"[green]+ {escape(json.dumps(r, default=str)[:160])}[/]")
    for r in report.removed_rows:
        console.print(f"[red]- {escape(json.dumps(r, default=str)[:160])}[/]")


@data_app.command("delete")
@handle_errors
def delete(ctx: typer.Context, name: str = typer.Argument(..., help="Dataset name."),
           yes: bool = typer.Option(False, "--yes", help="Do not ask.")):
    """Delete a dataset: every version and its files."""
    if not yes and not typer.confirm(f"delete dataset {name} and all its versions?"):
        raise typer.Exit(1)
    count = _datasets(get_context(ctx)).delete(name)
    console.print(f"deleted {name} ({count} versions)")


# -- labeling -----------------------------------------------------------------------------------------
@asynccontextmanager
async def _labeling(context: Context, dataset_for_calls: str | None = None):
    """Labeling whose prompt LFs call models down the gateway's path (guard, call log, trace, cost)."""
    from genfoundry.data.tasks import Labeling
    from genfoundry.gateway.app import open_runtime
    from genfoundry.gateway.generation import CallContext
    from genfoundry.gateway.knowledge.serving import gateway_generate
    from genfoundry.guard.engine import hub_embedder

    async with open_runtime(context.settings) as rt:
        datasets = Datasets(context.settings, rt.store)
        sensitivity = datasets.get(dataset_for_calls).sensitivity if dataset_for_calls else "internal"
        # The dataset's sensitivity is the context label the guard sees: a model not cleared for it is refused.
        call = CallContext(id=f"label-{uuid.uuid4().hex}", endpoint="labeling", key=None, requested_model="",
                           stream=False, collections={f"dataset:{dataset_for_calls}": sensitivity}
                           if dataset_for_calls else None)
        labeling = Labeling(datasets, rt.store, generate=gateway_generate(rt, call, rag_model=False),
                            embed=hub_embedder(rt.hub, asyncio.get_running_loop()),
                            clearance=lambda model: rt.hub.resolve(model).clearance,
                            vote_workers=_ray_votes(context.settings))
        yield labeling


@label_app.command("create")
@handle_errors
def label_create(ctx: typer.Context, spec: Path = typer.Argument(..., exists=True, dir_okay=False,
                                                                  help="Task YAML: name, dataset, labels, lfs, ...")):
    """Create (or replace) a labeling task from a YAML file."""
    from genfoundry.data.tasks import Labeling, TaskSpec

    try:
        data = yaml.safe_load(spec.read_text())
    except yaml.YAMLError as exc:
        raise InvalidRequest(f"{spec.name} is not valid YAML: {exc}", param="task") from exc
    context = get_context(ctx)
    task = Labeling(_datasets(context), context.store).create(TaskSpec.from_dict(data))
    console.print(f"task {task.name}: {len(task.lfs)} labeling functions on {task.dataset}@{task.version}, "
                  f"labels {', '.join(task.labels)}")


@label_app.command("list")
@handle_errors
def label_list(ctx: typer.Context, as_json: bool = _JSON):
    """Labeling tasks."""
    from genfoundry.data.tasks import Labeling

    context = get_context(ctx)
    tasks = Labeling(_datasets(context), context.store).list()
    if as_json:
        print(json.dumps(tasks, default=str))
        return
    table = Table("task", "dataset", "labels", "last output")
    for t in tasks:
        table.add_row(escape(t["name"]), f"{escape(t['dataset'])}@{t['version']}", escape(", ".join(t["labels"])),
                      escape((t["result"] or {}).get("output", "not run")))
    console.print(table)


@label_app.command("run")
@handle_errors
def label_run(ctx: typer.Context, task: str = typer.Argument(..., help="Task name."), as_json: bool = _JSON):
    """Apply the labeling functions (cached; resumes after a kill), fit the label and end models, write
    the labeled version TASK-labels, and show the LF analysis."""
    from genfoundry.data.tasks import Labeling

    context = get_context(ctx)
    spec, _ = Labeling(_datasets(context), context.store).get(task)

    async def work():
        async with _labeling(context, spec.dataset) as labeling:
            with Progress(TextColumn("labeling"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=console, transient=True, disable=as_json) as bar:
                job = bar.add_task("votes", total=None)
                return await labeling.run(task, progress=lambda done, total: bar.update(job, completed=done, total=total))

    report = asyncio.run(work())
    if as_json:
        print(json.dumps(report.to_dict(), default=str))
        return
    _print_report(report.to_dict())


def _print_report(report: dict) -> None:
    table = Table("LF", "polarity", "coverage", "overlaps", "conflicts", "dev acc", "learned acc", "errors")
    for lf in report["lfs"]:
        acc = lf.get("accuracy")
        table.add_row(escape(lf["name"]), ",".join(map(str, lf["polarity"])), f"{lf['coverage']:.3f}",
                      f"{lf['overlaps']:.3f}", f"{lf['conflicts']:.3f}", "" if acc is None else f"{acc:.3f}",
                      f"{lf['learned_accuracy']:.3f}", str(lf.get("errors", 0)))
    console.print(table)
    for lf in report["lfs"]:
        if lf.get("warning"):
            console.print(f"[yellow]{escape(lf['name'])}: {escape(lf['warning'])}[/]")
        if lf.get("error"):
            console.print(f"[red]{escape(lf['name'])}: {lf['errors']} rows failed, e.g. {escape(lf['error'])}[/]")
    console.print(f"{report['rows']} rows, coverage {report['coverage']:.3f}, {report['votes_computed']} votes "
                  f"computed (the rest cached), {report['reviewed']} reviewed; wrote {report['output']}")
    for split in ("dev", "test"):
        if split in report["metrics"]:
            m = report["metrics"][split]
            console.print(f"{split} ({m['rows']} gold rows): majority vote {m['majority_vote']}, label model "
                          f"{m['label_model']}, end model {m['end_model']}")


@label_app.command("show")
@handle_errors
def label_show(ctx: typer.Context, task: str = typer.Argument(..., help="Task name."), as_json: bool = _JSON):
    """A task's spec and its last run's LF analysis and metrics."""
    from genfoundry.data.tasks import Labeling

    context = get_context(ctx)
    spec, result = Labeling(_datasets(context), context.store).get(task)
    if as_json:
        print(json.dumps({"spec": spec.to_dict(), "result": result}, default=str))
        return
    console.print(f"[bold]{escape(task)}[/]: {escape(spec.dataset)}@{spec.version}, labels {escape(', '.join(spec.labels))}")
    if result:
        _print_report(result)
    else:
        console.print(f"not run yet: genfoundry label run {escape(task)}")


@label_app.command("queue")
@handle_errors
def label_queue(ctx: typer.Context, task: str = typer.Argument(..., help="Task name."),
                limit: int = typer.Option(10, min=1, help="Rows to show."), as_json: bool = _JSON):
    """Rows to review next: where the end and label models disagree, then the least sure."""
    from genfoundry.data.tasks import Labeling

    context = get_context(ctx)
    rows = Labeling(_datasets(context), context.store).queue(task, limit=limit)
    if as_json:
        print(json.dumps(rows, default=str))
        return
    for r in rows:
        probs = ", ".join(f"{k} {v:.2f}" for k, v in r["label_probs"].items())
        console.print(f"[bold]{r['row_id']}[/] ({probs}{', disagree' if r['disagree'] else ''}): "
                      f"{escape(r['text'][:160])}")


@label_app.command("review")
@handle_errors
def label_review(ctx: typer.Context, task: str = typer.Argument(..., help="Task name."),
                 row_id: str = typer.Argument(..., help="Row id (from `label queue`)."),
                 label: str = typer.Argument(..., help="The label."),
                 reviewer: str = typer.Option("local", help="Who reviews (recorded)."),
                 replaces: str = typer.Option(None, help="Id of the review you saw on the row, if any.")):
    """Record a human label for a row; it overrides the models and counts as gold on the next run."""
    from genfoundry.data.tasks import Labeling

    context = get_context(ctx)
    review = Labeling(_datasets(context), context.store).review(task, row_id, label, reviewer=reviewer, expected=replaces)
    console.print(f"review {review['id']}: {row_id} is {label}")


# -- synthetic data ---------------------------------------------------------------------------------------
def _synthesize(context: Context, *, kind: str, collection: str, name: str, count: int, model: str, seed: int,
                lineage: dict, run, as_json: bool) -> None:
    """Generate rows down the gateway's path (guard, call log, trace, cost; the collection's clearance is the
    requests' sensitivity), filter them, save the kept rows as a dataset version, print the counts."""
    from genfoundry.gateway.app import open_runtime
    from genfoundry.gateway.generation import CallContext
    from genfoundry.gateway.knowledge.serving import gateway_generate
    from genfoundry.guard.engine import hub_embedder
    from genfoundry.guard.pii import PiiDetector

    async def work():
        async with open_runtime(context.settings) as rt:
            kb = rt.knowledge()
            clearance = kb.collection(collection).clearance
            call = CallContext(id=f"synth-{uuid.uuid4().hex}", endpoint="synth", key=None, requested_model=model,
                               stream=False, collections={collection: clearance})
            with Progress(TextColumn(f"generating {kind}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=console, transient=True, disable=as_json) as bar:
                job = bar.add_task("rows", total=count)
                result = await run(kb, generate=gateway_generate(rt, call, rag_model=False),
                                   embed=hub_embedder(rt.hub, asyncio.get_running_loop()), pii=PiiDetector(),
                                   progress=lambda done, total: bar.update(job, completed=done))
            version = None
            if result.rows:
                version = await asyncio.to_thread(lambda: Datasets(context.settings, rt.store).add_version(
                    name, result.rows, sensitivity=clearance,
                    lineage={"source": "generation", "kind": kind, "collection": collection, "model": model,
                             "seed": seed, **lineage, "generated": result.generated,
                             "filters": [s.to_dict() for s in result.steps]}))
            return result, version

    result, version = asyncio.run(work())
    if as_json:
        print(json.dumps({**result.to_dict(), "output": version.ref if version else None}, default=str))
        return
    console.print(f"generated {result.generated}")
    for step in result.steps:
        console.print(f"  {step.name}: kept {step.kept}, dropped {step.dropped}")
    if result.dcr:
        console.print(f"  distance to the closest seed: {result.dcr}")
    console.print(f"wrote {version.ref} ({version.rows} rows)" if version else "no row survived the filters")


@synth_app.command("qa")
@handle_errors
def synth_qa(ctx: typer.Context, collection: str = typer.Option(..., "--collection", "-c", help="Collection to draw from."),
             name: str = typer.Option(..., "--name", "-n", help="Dataset to write the kept rows to."),
             count: int = typer.Option(20, "--count", min=1, help="Rows to generate (before the filters)."),
             model: str = typer.Option("default", help="Hub chat model that writes the rows."),
             seeds: Path = typer.Option(None, exists=True, dir_okay=False,
                                        help="JSONL of example rows {question, answer} for the cold start."),
             seed: int = typer.Option(0, help="Seed: which chunks and attributes each row gets."),
             mode: str = typer.Option("auto", help="generative (the model writes question and answer), answer-first "
                                                   "(a sentence of the chunk is the answer, the model writes the "
                                                   "question), or auto (answer-first for base models)."),
             as_json: bool = _JSON):
    """Question/answer pairs from a collection's chunks, filtered (duplicates, groundedness, round-trip
    retrieval, PII, closeness to the seed examples), saved as a dataset with lineage."""
    from genfoundry.data.datasets import read_records
    from genfoundry.data.synth import SynthConfig, synthesize_qa

    config = SynthConfig(n=count, model=model, seed=seed, mode=mode,
                         seeds=read_records(seeds, required=["question", "answer"]) if seeds else [])
    config.check()
    _synthesize(get_context(ctx), kind="qa", collection=collection, name=name, count=count, model=model, seed=seed,
                lineage={"mode": mode}, as_json=as_json,
                run=lambda kb, **kw: synthesize_qa(kb, collection, config, **kw))


@synth_app.command("instructions")
@handle_errors
def synth_instructions(ctx: typer.Context,
                       collection: str = typer.Option(..., "--collection", "-c", help="Collection to draw from."),
                       name: str = typer.Option(..., "--name", "-n", help="Dataset to write the kept rows to."),
                       count: int = typer.Option(20, "--count", min=1, help="Rows to generate (before the filters)."),
                       model: str = typer.Option("default", help="Hub chat model that writes the responses."),
                       task: list[str] = typer.Option(None, "--task", help="summarise, key-facts, explain or reply "
                                                                           "(repeat; default all)."),
                       seed: int = typer.Option(0, help="Seed: which chunks, tasks and personas each row gets."),
                       as_json: bool = _JSON):
    """Instruction/response pairs about a collection's chunks (templated instructions, the model's responses),
    filtered (duplicates, groundedness, PII), with a chat form for fine-tuning, saved as a dataset."""
    from genfoundry.data.synth import INSTRUCTION_TASKS, SynthConfig, synthesize_instructions

    tasks = tuple(task or INSTRUCTION_TASKS)
    config = SynthConfig(n=count, model=model, seed=seed)
    _synthesize(get_context(ctx), kind="instructions", collection=collection, name=name, count=count, model=model,
                seed=seed, lineage={"tasks": list(tasks)}, as_json=as_json,
                run=lambda kb, **kw: synthesize_instructions(kb, collection, config, tasks=tasks, **kw))


def _ray_votes(settings):
    """With ray_address set, a label run applies its rule and Python LFs on Ray (docs/data.md)."""
    if not settings.ray_address:
        return None
    from genfoundry.data.ray_votes import RayVoteWorkers

    return lambda: RayVoteWorkers.start(settings)
