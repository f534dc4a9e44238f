"""`genfoundry tune`: LoRA fine-tuning jobs, their records, the evaluation gate, promotion and rollback."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import typer
import yaml
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from genfoundry.cli.common import Context, console, get_context, handle_errors
from genfoundry.core.errors import InvalidRequest
from genfoundry.tune.jobs import TuneJobs
from genfoundry.tune.train import TrainConfig

__all__ = ["app", "cancel", "compare", "delete", "events", "export", "history", "list_", "promote", "resume",
           "rollback", "run", "show", "work"]

app = typer.Typer(help="Fine-tuning: LoRA runs on your datasets, an evaluation gate, promotion and rollback.",
                  no_args_is_help=True)
_JSON = typer.Option(False, "--json", help="Print JSON.")


def _jobs(context: Context) -> TuneJobs:
    return TuneJobs(context.settings, context.store, context.hub())


def _config(config_file: Path | None, flags: dict) -> TrainConfig:
    values: dict = {}
    if config_file is not None:
        try:
            loaded = yaml.safe_load(config_file.read_text()) or {}
        except yaml.YAMLError as exc:
            raise InvalidRequest(f"{config_file} is not valid YAML: {exc}", param="config") from exc
        if not isinstance(loaded, dict):
            raise InvalidRequest(f"{config_file} must hold a mapping of settings", param="config")
        values.update(loaded)
    values.update({k: v for k, v in flags.items() if v is not None})
    try:
        return TrainConfig.model_validate(values)
    except ValueError as exc:
        raise InvalidRequest(f"bad training settings: {exc}", param="config") from exc


class _Bar:
    """A Rich progress bar over optimizer steps, with loss, dev loss and tokens/s."""

    def __init__(self):
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console)
        self.task = None
        self.info: dict = {}

    def __enter__(self):
        self.progress.__enter__()
        self.task = self.progress.add_task("training", total=None, info="")
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def __call__(self, kind: str, message: str, data: dict) -> None:
        if kind in ("metrics", "eval"):
            for key, label in (("loss", "loss"), ("eval_loss", "dev"), ("tokens_per_second", "tok/s")):
                if key in data:
                    self.info[label] = data[key]
            info = "  ".join(f"{k} {v:.3f}" if isinstance(v, float) and k != "tok/s" else f"{k} {v:.0f}"
                             for k, v in self.info.items())
            self.progress.update(self.task, completed=data.get("step", 0), total=data.get("max_steps"), info=info)
        elif kind in ("message", "status", "checkpoint"):
            self.progress.console.print(f"[dim]{escape(message)}[/dim]", highlight=False)


def _print_job(job: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(job, default=str))
        return
    result = job.get("result") or {}
    metrics = result.get("metrics") or {}
    console.print(f"[bold]{job['id']}[/bold] {job['status']}: {job['base_model']} on "
                  f"{job['dataset']}@v{job['dataset_version']}", highlight=False)
    if result.get("fine_tuned_model"):
        console.print(f"  model: {result['fine_tuned_model']}", highlight=False)
    if metrics:
        console.print(f"  steps {metrics.get('steps')}, train loss {metrics.get('train_loss')}, best dev loss "
                      f"{metrics.get('best_dev_loss')}, {metrics.get('tokens_per_second')} tokens/s, "
                      f"{result.get('wall_s')} s, ${result.get('cost_usd')}, peak RSS {metrics.get('peak_rss_mib')} MiB",
                      highlight=False)
    if job.get("error"):
        console.print(f"  [red]{escape(job['error'])}[/red]", highlight=False)


@app.command()
@handle_errors
def run(ctx: typer.Context,
        data: str = typer.Option(..., "--data", "-d", help="Dataset to train on (its train split; dev for early stopping)."),
        base: str = typer.Option("default", "--base", help="Hub model to adapt (a local GGUF or Hugging Face model)."),
        version: int = typer.Option(None, "--version", help="Dataset version (default: the latest)."),
        suffix: str = typer.Option(None, help="Name part of the tuned model (ft:BASE:SUFFIX:ID) and the default promotion target."),
        config_file: Path = typer.Option(None, "--config", exists=True, dir_okay=False, help="YAML file of training settings."),
        epochs: float = typer.Option(None, help="Passes over the train split (default 3)."),
        max_steps: int = typer.Option(None, help="Stop after this many optimizer steps."),
        learning_rate: float = typer.Option(None, "--lr", help="Peak learning rate (default 2e-4)."),
        rank: int = typer.Option(None, "--rank", help="LoRA rank (default 8)."),
        alpha: int = typer.Option(None, "--alpha", help="LoRA alpha (default 16)."),
        batch_size: int = typer.Option(None, help="Examples (or packed blocks) per step (default 4)."),
        grad_accum: int = typer.Option(None, help="Gradient accumulation steps (default 1)."),
        max_length: int = typer.Option(None, help="Tokens per packed block (default 512)."),
        packing: bool = typer.Option(None, "--packing/--no-packing", help="Pack several examples into each block (default off)."),
        fmt: str = typer.Option(None, "--format", help="auto, chat, completion or text."),
        eval_steps: int = typer.Option(None, help="Evaluate and checkpoint every N steps."),
        patience: int = typer.Option(None, help="Evaluations without a better dev loss before stopping (0: off)."),
        seed: int = typer.Option(None, help="Seed (default 42)."),
        gate: str = typer.Option(None, "--eval", help="After training, gate suites to compare against the base (e.g. test,safety); nothing is promoted."),
        queue: bool = typer.Option(False, "--queue", help="Only queue the job: the running gateway trains it."),
        as_json: bool = _JSON):
    """Fine-tune a LoRA adapter on a dataset and register it in the hub (one run at a time per machine)."""
    context = get_context(ctx)
    config = _config(config_file, {"epochs": epochs, "max_steps": max_steps, "learning_rate": learning_rate,
                                   "lora_r": rank, "lora_alpha": alpha, "batch_size": batch_size,
                                   "grad_accum": grad_accum, "max_length": max_length, "packing": packing,
                                   "format": fmt, "eval_steps": eval_steps, "early_stopping_patience": patience,
                                   "seed": seed})
    jobs = _jobs(context)
    job = jobs.create(base=base, dataset=data, version=version, config=config, suffix=suffix, actor="cli",
                      foreground=not queue)
    if queue:
        _print_job(job, as_json)
        return
    if not as_json:
        console.print(f"job {job['id']}: {job['base_model']} on {job['dataset']}@v{job['dataset_version']}",
                      highlight=False)
    if as_json:
        job = jobs.run(job["id"])
    else:
        with _Bar() as bar:
            job = jobs.run(job["id"], on_event=bar)
    _print_job(job, as_json)
    if gate and job["status"] == "succeeded":
        report = asyncio.run(_gate_only(context, job, [s.strip() for s in gate.split(",") if s.strip()]))
        _print_report(report, as_json)


async def _gate_only(context: Context, job: dict, suites: list[str]) -> dict:
    from genfoundry.data.datasets import Datasets
    from genfoundry.tune.promote import evaluate, gate_items

    async with _gate_context(context) as gctx:
        items = gate_items(Datasets(context.settings, gctx.store).rows(job["dataset"], job["dataset_version"], split="test"))
        return await evaluate(gctx, job["result"]["fine_tuned_model"], job["base_model"], suites=suites, items=items)


def _gate_context(context: Context):
    """The gate's model calls go through the gateway's lifecycle: guarded, logged, traced, costed."""
    from contextlib import asynccontextmanager

    from genfoundry.gateway.app import open_runtime
    from genfoundry.gateway.generation import CallContext
    from genfoundry.gateway.knowledge.serving import gateway_generate
    from genfoundry.tune.promote import GateContext

    @asynccontextmanager
    async def opened():
        async with open_runtime(context.settings) as rt:
            call = CallContext(id=f"gate-{uuid.uuid4().hex}", endpoint="tune.gate", key=None, requested_model="",
                               stream=False)
            yield GateContext(settings=context.settings, store=rt.store, hub=rt.hub,
                              generate=gateway_generate(rt, call, rag_model=False))
    return opened()


def _print_report(report: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, default=str))
        return
    table = Table("suite", "incumbent", "candidate", "gain", "passed")
    for name, suite in report["suites"].items():
        if name == "safety":
            table.add_row(name, f"{suite['incumbent']} flagged", f"{suite['candidate']} flagged", "", str(suite["passed"]))
        else:
            table.add_row(name, f"{suite['incumbent']['score']:.3f}", f"{suite['candidate']['score']:.3f}",
                          f"{suite['gain']:+.3f}", str(suite["passed"]))
    console.print(f"candidate {report['candidate']} vs {report['incumbent']} (margin {report['margin']})", highlight=False)
    console.print(table)
    verdict = "passed" if report["passed"] else "refused: " + "; ".join(report["reasons"])
    console.print(f"gate {verdict}", highlight=False)
    if "promoted" in report:
        console.print(f"promoted to '{report['target']}'" if report["promoted"] else "not promoted (report kept with the job)",
                      highlight=False)


@app.command("work", hidden=False)
@handle_errors
def work(ctx: typer.Context, job_id: str = typer.Argument(..., help="A queued job."), as_json: bool = _JSON):
    """Run one queued job in this process (the gateway's queue starts this for jobs made through the API)."""
    jobs = _jobs(get_context(ctx))
    _print_job(jobs.run(job_id, on_event=None if as_json else (lambda k, m, d: console.print(escape(m), highlight=False))),
               as_json)


@app.command("list")
@handle_errors
def list_(ctx: typer.Context, status: str = typer.Option(None, help="Only jobs with this status."),
          limit: int = typer.Option(50, help="Newest first, at most this many."), as_json: bool = _JSON):
    """The fine-tuning jobs (experiments), newest first."""
    found = _jobs(get_context(ctx)).list(status=status, limit=limit)
    if as_json:
        print(json.dumps(found, default=str))
        return
    table = Table("job", "status", "base", "dataset", "steps", "dev loss", "tok/s", "model")
    for job in found:
        m = (job.get("result") or {}).get("metrics") or {}
        table.add_row(job["id"], job["status"], job["base_model"], f"{job['dataset']}@v{job['dataset_version']}",
                      str(m.get("steps", "")), str(m.get("best_dev_loss", "")), str(m.get("tokens_per_second", "")),
                      (job.get("result") or {}).get("fine_tuned_model", ""))
    console.print(table)


@app.command()
@handle_errors
def show(ctx: typer.Context, job_id: str = typer.Argument(...), as_json: bool = _JSON):
    """A job's config, hashes, metrics, hardware, cost and gate reports."""
    job = _jobs(get_context(ctx)).get(job_id)
    if as_json:
        print(json.dumps(job, default=str))
        return
    _print_job(job, False)
    console.print(f"  config: {json.dumps(job['config'])}", highlight=False, soft_wrap=True)
    result = job.get("result") or {}
    for key in ("adapter_sha256", "adapter_gguf_sha256", "adapter_gguf", "adapter_dir"):
        if result.get(key):
            console.print(f"  {key}: {result[key]}", highlight=False)
    if result.get("dataset"):
        console.print(f"  dataset hash: {result['dataset']['content_hash']}", highlight=False)
    for report in result.get("gates", []):
        console.print(f"  gate {report.get('at', '')}: {'passed' if report['passed'] else 'refused'} "
                      f"{'; '.join(report.get('reasons', []))}", highlight=False)


@app.command()
@handle_errors
def events(ctx: typer.Context, job_id: str = typer.Argument(...), after: int = typer.Option(0, help="Only events after this number."),
           as_json: bool = _JSON):
    """A job's events: status changes, per-step metrics, evaluations, checkpoints."""
    found = _jobs(get_context(ctx)).events(job_id, after=after)
    if as_json:
        print(json.dumps(found, default=str))
        return
    for e in found:
        console.print(f"{e['seq']:>5} {e['at']:%H:%M:%S} {e['kind']:<10} {escape(e['message'])}", highlight=False)


@app.command()
@handle_errors
def cancel(ctx: typer.Context, job_id: str = typer.Argument(...)):
    """Cancel a queued job, or stop a running one after its current step (its checkpoint is kept)."""
    job = _jobs(get_context(ctx)).cancel(job_id, actor="cli")
    console.print(f"{job_id}: {job['status']}" + (" (stopping)" if job["status"] == "running" else ""), highlight=False)


@app.command()
@handle_errors
def resume(ctx: typer.Context, job_id: str = typer.Argument(...), queue: bool = typer.Option(False, "--queue", help="Queue it for the gateway instead of running it here.")):
    """Continue a failed or cancelled job from its last checkpoint."""
    jobs = _jobs(get_context(ctx))
    job = jobs.resume(job_id, actor="cli", foreground=not queue)
    if not queue:
        with _Bar() as bar:
            job = jobs.run(job_id, on_event=bar)
    _print_job(job, False)


@app.command()
@handle_errors
def compare(ctx: typer.Context, job_ids: list[str] = typer.Argument(..., help="Two or more jobs."), as_json: bool = _JSON):
    """Jobs side by side: what differs in their config, and their results."""
    jobs = _jobs(get_context(ctx))
    found = [jobs.get(j) for j in job_ids]
    keys = sorted({k for j in found for k in j["config"]})
    differs = [k for k in keys if len({json.dumps(j["config"].get(k)) for j in found}) > 1]
    rows = {"dataset": [f"{j['dataset']}@v{j['dataset_version']}" for j in found]}
    rows.update({k: [j["config"].get(k) for j in found] for k in differs})
    for metric in ("steps", "train_loss", "best_dev_loss", "tokens_per_second", "peak_rss_mib"):
        rows[metric] = [((j.get("result") or {}).get("metrics") or {}).get(metric) for j in found]
    rows["wall_s"] = [(j.get("result") or {}).get("wall_s") for j in found]
    rows["cost_usd"] = [(j.get("result") or {}).get("cost_usd") for j in found]
    if as_json:
        print(json.dumps({"jobs": job_ids, "rows": rows}, default=str))
        return
    table = Table("", *job_ids)
    for name, values in rows.items():
        table.add_row(name, *[str(v) for v in values])
    console.print(table)


@app.command()
@handle_errors
def promote(ctx: typer.Context, job_id: str = typer.Argument(...),
            target: str = typer.Option(None, "--as", help="Model name to serve it as (default: the job's suffix, else BASE-tuned)."),
            suites: str = typer.Option("test,safety", help="Gate suites: test (the dataset's test split), answers (grounded answers on a collection), safety."),
            collection: str = typer.Option("sample", help="Collection for the answers suite."),
            questions: Path = typer.Option(None, exists=True, dir_okay=False, help="Question set (JSON lines) for the answers suite."),
            margin: float = typer.Option(0.01, help="How much better the candidate must score on each quality suite."),
            force: bool = typer.Option(False, "--force", help="Promote even if the gate refuses (audited)."),
            as_json: bool = _JSON):
    """Evaluate the job's adapter against what it would replace; serve it only if it wins."""
    from genfoundry.tune.promote import promote as do_promote

    context = get_context(ctx)
    options = {"collection": collection, **({"questions": str(questions)} if questions else {})}

    async def go():
        async with _gate_context(context) as gctx:
            return await do_promote(gctx, job_id, target=target, suites=[s.strip() for s in suites.split(",") if s.strip()],
                                    margin=margin, force=force, answers_options=options, actor="cli")

    report = asyncio.run(go())
    _print_report(report, as_json)
    if not report["promoted"]:
        raise typer.Exit(2)


@app.command()
@handle_errors
def rollback(ctx: typer.Context, model: str = typer.Argument(..., help="A model a promotion changed.")):
    """Serve what the model served before its latest promotion."""
    from genfoundry.tune.promote import rollback as do_rollback

    context = get_context(ctx)
    done = do_rollback(context.store, context.hub(), model, actor="cli")
    console.print(f"'{model}' rolled back" + (" (removed: the promotion had created it)" if done["removed"] else
                                                f"; now serving {done['now_serving']}"), highlight=False)


@app.command()
@handle_errors
def history(ctx: typer.Context, model: str = typer.Argument(None, help="Only this model's promotions."), as_json: bool = _JSON):
    """Promotions and rollbacks, newest first."""
    from genfoundry.tune.promote import history as get_history

    found = get_history(get_context(ctx).store, model)
    if as_json:
        print(json.dumps(found, default=str))
        return
    table = Table("when", "model", "job", "gate", "forced", "by", "rolled back")
    for p in found:
        report = p.get("report") or {}
        table.add_row(f"{p['at']:%Y-%m-%d %H:%M}", p["model"], p["job_id"] or "", "passed" if report.get("passed") else "refused",
                      "yes" if p["forced"] else "", p["actor"], f"{p['rolled_back_at']:%Y-%m-%d %H:%M}" if p["rolled_back_at"] else "")
    console.print(table)


@app.command()
@handle_errors
def export(ctx: typer.Context, job_id: str = typer.Argument(...),
           out: Path = typer.Option(..., "--out", "-o", help="Folder to write the merged model into."),
           gguf: bool = typer.Option(False, "--gguf", help="Also write a standalone GGUF of the merged model (llama.cpp's converter)."),
           outtype: str = typer.Option("q8_0", help="GGUF weight type for --gguf: f32, f16, bf16 or q8_0.")):
    """Merged weights for other engines: a Hugging Face folder (and a GGUF with --gguf)."""
    from genfoundry.tune.export import export_gguf_model, merge

    job = _jobs(get_context(ctx)).get(job_id)
    result = job.get("result") or {}
    if job["status"] != "succeeded" or not result.get("adapter_dir"):
        raise InvalidRequest(f"job '{job_id}' is {job['status']}; only a succeeded job has an adapter to export", param="job_id")
    base_folder = Path(result["base"]["folder"])
    if not (base_folder / "config.json").is_file():  # the machine's cache was cleared: convert the base again
        from genfoundry.tune.base import resolve_base
        base_folder = resolve_base(get_context(ctx).hub().resolve(result["base"]["name"]),
                                   progress=lambda m: console.print(escape(m), highlight=False)).folder
    folder = merge(base_folder, Path(result["adapter_dir"]), out)
    console.print(f"merged model: {folder}", highlight=False)
    if gguf:
        path = export_gguf_model(folder, folder / "model.gguf", outtype=outtype)
        console.print(f"GGUF: {path}", highlight=False)


@app.command()
@handle_errors
def delete(ctx: typer.Context, job_id: str = typer.Argument(...), yes: bool = typer.Option(False, "--yes", help="Do not ask.")):
    """Delete a finished job, its events and its files (its hub model stays until `models remove`)."""
    if not yes:
        typer.confirm(f"delete job {job_id} and its checkpoints?", abort=True)
    _jobs(get_context(ctx)).delete(job_id, actor="cli")
    console.print(f"deleted {job_id}", highlight=False)
