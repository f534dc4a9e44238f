"""`genfoundry traces | usage | feedback | alerts | drift | eval`: what the platform did, what it cost,
what users thought of it, whether anything drifted, and how models score."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from genfoundry.cli.common import console, get_context, handle_errors
from genfoundry.observe import evals as evals_module
from genfoundry.observe.alerts import list_alerts
from genfoundry.observe.feedback import FORMATS, add_feedback, export_feedback, list_feedback, write_dataset
from genfoundry.observe.tracing import get_trace, list_traces
from genfoundry.observe.usage import check_range, parse_time, usage_report

traces = typer.Typer(no_args_is_help=True, help="Traces of requests through the gateway (one per request).")
feedback = typer.Typer(no_args_is_help=True, help="Ratings and corrections of responses; export them as a dataset.")
drift = typer.Typer(no_args_is_help=True, help="Drift of requests (embeddings, topics) and of models (golden prompts).")
golden = typer.Typer(no_args_is_help=True, help="Golden prompts: record a model's answers, check them again later.")
drift.add_typer(golden, name="golden")
evals = typer.Typer(no_args_is_help=True, help="Evaluation suites: run, list, show, compare.")

SINCE = typer.Option(None, help="From this time: ISO (2026-11-01, 2026-11-01T09:30) or an age (30m, 2h, 7d).")
UNTIL = typer.Option(None, help="Before this time: ISO or an age.")
JSON = typer.Option(False, "--json", help="Print JSON.")


def _range(since: str | None, until: str | None):
    return check_range(parse_time(since, param="--since"), parse_time(until, param="--until"))


def _money(value) -> str:
    return "-" if value is None else f"{value:.6f}"


# -- traces ---------------------------------------------------------------------------------------------------
@traces.command("list")
@handle_errors
def traces_list(ctx: typer.Context, since: str = SINCE, until: str = UNTIL,
                model: str = typer.Option(None, help="Only requests to this model."),
                status: str = typer.Option(None, help="ok, error or cancelled."),
                app: str = typer.Option(None, help="Only requests of this app (X-Genfoundry-App)."),
                limit: int = typer.Option(20, min=1, max=1000, help="How many, newest first."),
                as_json: bool = JSON):
    """List traces, newest first, with their call's model, tokens and cost."""
    start, end = _range(since, until)
    rows = list_traces(get_context(ctx).store, since=start, until=end, model=model, status=status, app=app,
                       limit=limit)
    if as_json:
        print(json.dumps(rows))
        return
    table = Table("started (UTC)", "trace id", "request", "model", "status", "ms", "tokens", "cost $")
    for r in rows:
        table.add_row(r["start_at"][5:19].replace("T", " "), r["trace_id"], escape(r["name"]),
                      escape(r["resolved_model"] or r["model"] or "-"), r["call_status"] or str(r["http_status"]),
                      f"{r['duration_ms']:.0f}",
                      f"{r['prompt_tokens']}/{r['completion_tokens']}" if r["prompt_tokens"] is not None else "-",
                      _money(r["cost_usd"]))
    console.print(table)


@traces.command("show")
@handle_errors
def traces_show(ctx: typer.Context, trace_id: str = typer.Argument(..., help="From `traces list`, the console, "
                                                                              "or the X-Genfoundry-Trace-Id header."),
                as_json: bool = JSON):
    """Show one trace as a tree of spans with their timings and attributes."""
    trace = get_trace(get_context(ctx).store, trace_id)
    if as_json:
        print(json.dumps(trace))
        return

    def show(node: dict, depth: int) -> None:
        attributes = {k: v for k, v in node["attributes"].items()
                      if k.startswith(("gen_ai.", "genfoundry.")) and k not in ("gen_ai.input.messages",
                                                                                 "gen_ai.output.messages")}
        mark = " [red]error[/red]" if node["status"] == "error" else ""
        console.print(f"{'  ' * depth}[bold]{escape(node['name'])}[/bold] {node['duration_ms']:.1f} ms{mark}")
        for key, value in attributes.items():
            console.print(f"{'  ' * depth}  [dim]{escape(key)}[/dim] = {escape(str(value))}", highlight=False)
        for child in node["children"]:
            show(child, depth + 1)
    for root in trace["tree"]:
        show(root, 0)


# -- usage ----------------------------------------------------------------------------------------------------
@handle_errors
def usage(ctx: typer.Context, since: str = SINCE, until: str = UNTIL,
          by: str = typer.Option("model", help="Group by any of day, key, app, model, endpoint (comma-separated)."),
          as_json: bool = JSON):
    """Requests, tokens, cost and latency by model, key, app or day."""
    start, end = _range(since, until)
    report = usage_report(get_context(ctx).store, since=start, until=end,
                          group_by=[g.strip() for g in by.split(",") if g.strip()])
    if as_json:
        print(json.dumps(report))
        return
    table = Table(*report["group_by"], "requests", "errors", "tokens in/out", "cost $", "$/M tokens", "p50 ms",
                  "p95 ms")
    for r in [*report["data"], {**{g: "[bold]total[/bold]" for g in report["group_by"][:1]},
                                **{g: "" for g in report["group_by"][1:]}, **report["total"]}]:
        table.add_row(*[escape(str(r[g])) if "[bold]" not in str(r[g]) else r[g] for g in report["group_by"]],
                      str(r["requests"]), str(r["errors"]), f"{r['prompt_tokens']}/{r['completion_tokens']}",
                      _money(r["cost_usd"]), str(r["usd_per_million_tokens"] or "-"),
                      str(r["latency_ms_p50"] or "-"), str(r["latency_ms_p95"] or "-"))
    console.print(table)


# -- feedback -------------------------------------------------------------------------------------------------
@feedback.command("add")
@handle_errors
def feedback_add(ctx: typer.Context, response_id: str = typer.Argument(..., help="The id of a response."),
                 rating: int = typer.Option(..., help="1 (bad) to 5 (good)."),
                 correction: str = typer.Option(None, help="What the answer should have been."),
                 comment: str = typer.Option(None, help="Anything else.")):
    """Rate a response (by its id) and optionally correct it."""
    row = add_feedback(get_context(ctx).store, response_id=response_id, rating=rating, correction=correction,
                       comment=comment, key_id=None)
    console.print(f"Recorded feedback {row['id']} on {escape(response_id)}.")


@feedback.command("list")
@handle_errors
def feedback_list(ctx: typer.Context, since: str = SINCE, until: str = UNTIL,
                  rating: int = typer.Option(None, help="Only this rating."),
                  model: str = typer.Option(None, help="Only responses of this model."),
                  limit: int = typer.Option(20, min=1, help="How many, newest first."), as_json: bool = JSON):
    """List feedback with the responses it is about."""
    start, end = _range(since, until)
    rows = list_feedback(get_context(ctx).store, since=start, until=end, rating=rating, model=model, limit=limit)
    if as_json:
        print(json.dumps(rows))
        return
    table = Table("at (UTC)", "response", "model", "rating", "answer", "correction")
    for r in rows:
        table.add_row(r["created_at"][5:19].replace("T", " "), r["call_id"][-12:], escape(r["model"] or "-"),
                      str(r["rating"]), escape(((r["response"] or {}).get("text") or "")[:60]),
                      escape((r["correction"] or "")[:60]))
    console.print(table)


@feedback.command("export")
@handle_errors
def feedback_export(ctx: typer.Context, out: Path = typer.Argument(..., help="JSON-lines file to write."),
                    fmt: str = typer.Option("records", "--format",
                                            help=f"{' or '.join(FORMATS)}: every field, or chat messages "
                                                 "ready for fine-tuning."),
                    min_rating: int = typer.Option(4, help="chat format: uncorrected answers rated at least this "
                                                           "are kept as examples."),
                    since: str = SINCE, until: str = UNTIL):
    """Export feedback as a dataset (JSON lines)."""
    start, end = _range(since, until)
    rows = export_feedback(get_context(ctx).store, fmt=fmt, since=start, until=end, min_rating=min_rating)
    count = write_dataset(rows, out)
    console.print(f"Wrote {count} rows to {escape(str(out))}.")


# -- alerts ---------------------------------------------------------------------------------------------------
@handle_errors
def alerts(ctx: typer.Context, kind: str = typer.Option(None, help="drift.embedding, drift.topic, drift.golden, "
                                                                   "budget.warning, budget.exceeded, or a family "
                                                                   "such as drift."),
           since: str = SINCE, limit: int = typer.Option(20, min=1, help="How many, newest first."),
           as_json: bool = JSON):
    """Drift and budget alerts, newest first."""
    rows = list_alerts(get_context(ctx).store, kind=kind, since=parse_time(since), limit=limit)
    if as_json:
        print(json.dumps(rows))
        return
    table = Table("at (UTC)", "kind", "severity", "subject", "message")
    for r in rows:
        table.add_row(r["at"][5:19].replace("T", " "), r["kind"], r["severity"], escape(r["subject"]),
                      escape(r["message"]))
    console.print(table)


# -- drift ----------------------------------------------------------------------------------------------------
def _run_with_hub(ctx: typer.Context, work):
    c = get_context(ctx)
    hub = c.hub()

    async def run():
        try:
            return await work(c.store, hub)
        finally:
            await hub.close()
    return asyncio.run(run())


@drift.command("requests")
@handle_errors
def drift_requests(ctx: typer.Context,
                   recent_hours: float = typer.Option(24, min=0.01, help="The recent window: this many hours "
                                                                          "back from now."),
                   baseline_days: float = typer.Option(7, min=0.01, help="The baseline: this many days before "
                                                                          "the recent window."),
                   model: str = typer.Option(None, help="Only requests to this model."),
                   alpha: float = typer.Option(0.01, min=1e-6, max=0.5, help="Significance level of the test."),
                   as_json: bool = JSON):
    """Compare recent requests with a baseline window: embedding shift (MMD test) and new topics."""
    from genfoundry.observe.monitor import default_windows, run_request_drift

    recent, baseline = default_windows(recent_hours=recent_hours, baseline_days=baseline_days)
    result = _run_with_hub(ctx, lambda store, hub: run_request_drift(store, hub, recent=recent, baseline=baseline,
                                                                      model=model, alpha=alpha))
    if as_json:
        print(json.dumps(result))
        return
    mmd = result["mmd"]
    verdict = "[red]drift[/red]" if mmd["p_value"] < alpha else "no shift"
    console.print(f"{result['n_recent']} recent vs {result['n_baseline']} baseline requests: MMD p = "
                  f"{mmd['p_value']:.4f} ({verdict} at {alpha})")
    for topic in result["topics"]:
        if topic["status"] in ("new", "grown"):
            console.print(f"  topic [bold]{escape(' / '.join(topic['terms']))}[/bold] {topic['status']}: "
                          f"{topic['baseline_share']:.0%} → {topic['recent_share']:.0%}")


@golden.command("record")
@handle_errors
def golden_record(ctx: typer.Context, model: str = typer.Option("default", help="The model to record."),
                  prompts: Path = typer.Option(None, help="JSON lines with id and prompt (default: the built-in "
                                                          "set of 10)."),
                  suite: str = typer.Option("default", help="A name for this set of prompts.")):
    """Ask a model the golden prompts at temperature 0 and store its answers as the reference."""
    from genfoundry.observe.monitor import record_golden

    result = _run_with_hub(ctx, lambda store, hub: record_golden(store, hub, model=model, prompts=prompts,
                                                                 suite=suite))
    console.print(f"Recorded {result['prompts']} answers of {escape(result['model'])} (suite {escape(suite)}).")


@golden.command("check")
@handle_errors
def golden_check(ctx: typer.Context, model: str = typer.Option("default", help="The model to check."),
                 suite: str = typer.Option("default", help="The set of prompts recorded."),
                 threshold: float = typer.Option(0.9, min=0, max=1, help="Cosine similarity below which an "
                                                                        "answer counts as changed."),
                 as_json: bool = JSON):
    """Ask the golden prompts again and compare with the stored answers; exits 1 when any changed."""
    from genfoundry.observe.monitor import check_golden

    result = _run_with_hub(ctx, lambda store, hub: check_golden(store, hub, model=model, suite=suite,
                                                                threshold=threshold))
    if as_json:
        print(json.dumps(result))
    else:
        for item in result["items"]:
            mark = "[green]same[/green]" if item["verdict"] == "same" else "[red]changed[/red]"
            console.print(f"{mark} {item['similarity']:.3f} {escape(item['id'])}")
        console.print(f"{result['changed']} of {result['prompts']} answers changed.")
    if result["drifted"]:
        raise typer.Exit(1)


@drift.command("runs")
@handle_errors
def drift_runs(ctx: typer.Context, kind: str = typer.Option(None, help="requests or golden."),
               limit: int = typer.Option(20, min=1), as_json: bool = JSON):
    """Past drift checks, newest first."""
    from genfoundry.observe.monitor import list_drift_runs

    rows = list_drift_runs(get_context(ctx).store, kind=kind, limit=limit)
    if as_json:
        print(json.dumps(rows))
        return
    table = Table("at (UTC)", "check", "subject", "drifted")
    for r in rows:
        table.add_row(r["at"][5:19].replace("T", " "), r["kind"], escape(r["subject"]), "yes" if r["drifted"] else "no")
    console.print(table)


# -- eval -----------------------------------------------------------------------------------------------------
@evals.command("run")
@handle_errors
def eval_run(ctx: typer.Context,
             suite: str = typer.Argument(..., help=f"One of {', '.join(sorted(evals_module.SUITES))}."),
             model: str = typer.Option("default", help="The model answers and bias are run against."),
             collection: str = typer.Option("sample", help="retrieval and answers: the collection."),
             questions: Path = typer.Option(None, help="retrieval and answers: JSON lines with question, answer, "
                                                       "source, keywords (default: the sample set)."),
             data: Path = typer.Option(None, help="guard: JSON lines with text and label (1 attack, 0 benign)."),
             data_dir: Path = typer.Option(None, help="guard: a folder with the public sets (injection/, "
                                                      "weak_supervision/, retrieval/)."),
             limit: int = typer.Option(2, min=1, help="bias: templates per dimension."),
             as_json: bool = JSON):
    """Run an evaluation suite and store its results."""
    c = get_context(ctx)
    options = {"collection": collection, "questions": questions, "data": data, "data_dir": data_dir,
               "limit": limit}
    options = {k: v for k, v in options.items() if v is not None}

    async def run():
        context = evals_module.EvalContext(settings=c.settings, store=c.store, hub=c.hub(), target=model)
        try:
            return await evals_module.run_eval(context, suite, options)
        finally:
            context.close()
            await context.hub.close()
    result = asyncio.run(run())
    if as_json:
        print(json.dumps(result))
        return
    console.print(f"Run [bold]{result['id']}[/bold]: {suite} on {escape(result['target'])} in "
                  f"{result['duration_s']:.1f} s")
    for name, value in result["metrics"].items():
        console.print(f"  {escape(name)} = {value:g}")


@evals.command("list")
@handle_errors
def eval_list(ctx: typer.Context, suite: str = typer.Option(None, help="Only this suite."),
              limit: int = typer.Option(20, min=1), as_json: bool = JSON):
    """Evaluation runs, newest first."""
    rows = evals_module.list_runs(get_context(ctx).store, suite=suite, limit=limit)
    if as_json:
        print(json.dumps(rows))
        return
    table = Table("id", "at (UTC)", "suite", "target", "status", "s", "metrics")
    for r in rows:
        metrics = ", ".join(f"{k} {v:g}" for k, v in list(r["metrics"].items())[:4])
        table.add_row(r["id"], r["at"][5:19].replace("T", " "), r["suite"], escape(r["target"]), r["status"],
                      f"{r['duration_s']:.1f}", escape(metrics))
    console.print(table)


@evals.command("show")
@handle_errors
def eval_show(ctx: typer.Context, run_id: str = typer.Argument(..., help="From `eval list`.")):
    """One run with its per-item results, as JSON."""
    print(json.dumps(evals_module.get_run(get_context(ctx).store, run_id), indent=2))


@evals.command("compare")
@handle_errors
def eval_compare(ctx: typer.Context, a: str = typer.Argument(..., help="The first run's id."),
                 b: str = typer.Argument(..., help="The second run's id."), as_json: bool = JSON):
    """Two runs of one suite side by side: every metric with B - A, and items whose outcome changed."""
    result = evals_module.compare_runs(get_context(ctx).store, a, b)
    if as_json:
        print(json.dumps(result))
        return
    table = Table("metric", f"A {result['a']['target']}", f"B {result['b']['target']}", "B - A")
    for m in result["metrics"]:
        delta = "-" if m["delta"] is None else f"{m['delta']:+g}"
        table.add_row(escape(m["name"]), str(m["a"]), str(m["b"]), delta)
    console.print(table)
    if result["items_changed"]:
        console.print(f"{len(result['items_changed'])} items changed outcome:")
        for item in result["items_changed"][:20]:
            console.print(f"  {escape(str(item['item'])[:80])}: {escape(json.dumps(item['changes']))}")

