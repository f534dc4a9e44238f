"""`genfoundry agent`: run agents, follow their runs, decide pending actions; `genfoundry extract`.

Runs started here go through the gateway's runtime in this process (guard, call log, traces, cost), as
the machine's own user: write tools are permitted, approval rules still apply.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from genfoundry.apps.agent_run import decide, get_action, get_run, list_actions, list_runs
from genfoundry.apps.agents import AGENT_PREFIX, find_agent, list_agents
from genfoundry.cli.common import Context, console, get_context, handle_errors
from genfoundry.core.errors import ConfigError, InvalidRequest
from genfoundry.core.types import Message

__all__ = ["app", "approvals", "approve", "extract_command", "list_", "reject", "resume", "run", "runs", "show"]

app = typer.Typer(help="Agents: run them, follow their runs, approve or reject their pending actions.",
                  no_args_is_help=True)
_JSON = typer.Option(False, "--json", help="Print JSON.")


@asynccontextmanager
async def _runtime(context: Context):
    from genfoundry.gateway.app import open_runtime

    async with open_runtime(context.settings) as rt:
        yield rt


def _ctx(name: str):
    from genfoundry.gateway.generation import CallContext

    return CallContext(id=f"agentrun-{uuid.uuid4().hex}", endpoint="agent", key=None,
                       requested_model=f"{AGENT_PREFIX}{name}", stream=False)


async def _run(context: Context, name: str, messages=None, resume_id: str | None = None):
    from genfoundry.gateway.agents.serving import run_agent

    spec = find_agent(context.settings, name)
    async with _runtime(context) as rt:
        return await run_agent(rt, _ctx(spec.name), spec, messages, resume=resume_id)


def _print_outcome(outcome, as_json: bool) -> None:
    if as_json:
        print(json.dumps({**outcome.to_dict(), "reply": outcome.reply()}, default=str))
        return
    _print_steps(outcome.steps)
    colour = {"succeeded": "green", "waiting": "yellow"}.get(outcome.status, "red")
    console.print(f"[{colour}]{outcome.status}[/{colour}] · run {outcome.id} · {len(outcome.steps)} steps · "
                  f"{outcome.usage.total_tokens} tokens · ${outcome.cost_usd:.6f} · {outcome.seconds:.1f} s")
    console.print(escape(outcome.reply()), soft_wrap=True)
    if outcome.status == "waiting":
        console.print(f"Decide it: genfoundry agent approve {outcome.pending['action']}  "
                      f"(or: genfoundry agent reject {outcome.pending['action']})", highlight=False)


def _print_steps(steps: list[dict]) -> None:
    for s in steps:
        arguments = json.dumps(s.get("arguments"), ensure_ascii=False)
        console.print(f"  [cyan]{s['n']}[/cyan] {s['kind']:<9} {escape(str(s.get('tool')))} {escape(arguments)}",
                      soft_wrap=True, highlight=False)
        if s.get("observation"):
            console.print(f"      [dim]→ {escape(str(s['observation'])[:300])}[/dim]", soft_wrap=True)


@app.command("list")
@handle_errors
def list_(ctx: typer.Context, as_json: bool = _JSON):
    """List the agents (YAML files in GENFOUNDRY_HOME/agents, and the sample support desk)."""
    found = list_agents(get_context(ctx).settings)
    if as_json:
        print(json.dumps({name: {"error": str(s)} if isinstance(s, ConfigError) else s.model_dump()
                          for name, s in found.items()}, default=str))
        return
    table = Table("agent", "model", "tools", "collections", "file")
    for name, spec in sorted(found.items()):
        if isinstance(spec, ConfigError):
            table.add_row(name, "[red]error[/red]", escape(str(spec)), "", "")
            continue
        tools = [t.name or (t.python or "").rpartition(":")[2] for t in spec.tools] + [f"mcp:{m.name}" for m in spec.mcp]
        table.add_row(f"{AGENT_PREFIX}{name}", spec.model, ", ".join(tools), ", ".join(spec.collections),
                      escape(spec.source or ""))
    console.print(table)


@app.command("run")
@handle_errors
def run(ctx: typer.Context, name: str = typer.Argument(..., help="The agent (support, or agent:support)."),
        message: str = typer.Argument(..., help="What the user says."), as_json: bool = _JSON):
    """Run an agent on a message and show its steps."""
    context = get_context(ctx)
    outcome = asyncio.run(_run(context, name, [Message(role="user", content=message)]))
    _print_outcome(outcome, as_json)


@app.command("runs")
@handle_errors
def runs(ctx: typer.Context, agent: str = typer.Option(None, help="Only this agent's runs."),
         status: str = typer.Option(None, help="running, waiting, succeeded, failed or stopped."),
         limit: int = typer.Option(20, min=1, max=500, help="How many, newest first."), as_json: bool = _JSON):
    """Recent agent runs."""
    found = list_runs(get_context(ctx).store, agent=agent, status=status, limit=limit)
    if as_json:
        for r in found:
            print(json.dumps(r, default=str))
        return
    table = Table("run", "agent", "status", "steps", "tokens", "cost $", "s", "when")
    for r in found:
        table.add_row(r["id"], r["agent"], r["status"], str(len(r["steps"])),
                      str(r["prompt_tokens"] + r["completion_tokens"]), f"{r['cost_usd']:.6f}", f"{r['seconds']:.1f}",
                      f"{r['created_at']:%Y-%m-%d %H:%M}")
    console.print(table)


@app.command("show")
@handle_errors
def show(ctx: typer.Context, run_id: str = typer.Argument(..., help="A run id."), as_json: bool = _JSON):
    """One run: its conversation, steps, actions and answer."""
    store = get_context(ctx).store
    found = get_run(store, run_id)
    actions = list_actions(store, status=None, run_id=run_id)
    if as_json:
        print(json.dumps({**found, "actions": actions}, default=str))
        return
    for m in found["input"]:
        console.print(f"[bold]{m['role']}[/bold]: {escape(m['content'] or '')}", soft_wrap=True)
    _print_steps(found["steps"])
    for a in actions:
        console.print(f"  action {a['id']}: {a['tool']} {escape(json.dumps(a['arguments']))} → {a['status']}"
                      f"{' by ' + a['decided_by'] if a['decided_by'] else ''}", soft_wrap=True, highlight=False)
    console.print(f"{found['status']}: {escape(found['answer'] or found['error'] or '')}", soft_wrap=True)


@app.command("approvals")
@handle_errors
def approvals(ctx: typer.Context, all_: bool = typer.Option(False, "--all", help="Decided actions too."),
              limit: int = typer.Option(50, min=1, max=500, help="How many, newest first."), as_json: bool = _JSON):
    """Actions waiting for a person's decision."""
    found = list_actions(get_context(ctx).store, status=None if all_ else "pending", limit=limit)
    if as_json:
        for a in found:
            print(json.dumps(a, default=str))
        return
    if not found:
        console.print("Nothing is waiting for a decision.")
    for a in found:
        console.print(f"[bold]{a['id']}[/bold] {a['tool']} {escape(json.dumps(a['arguments']))} · {a['status']} · "
                      f"{escape(a['reason'] or '')}", soft_wrap=True, highlight=False)


def _decide(context: Context, action_id: str, approve_it: bool, arguments: str | None, note: str | None,
            wait: bool, as_json: bool) -> None:
    store = context.store
    run_row = get_run(store, get_action(store, action_id)["run_id"])
    spec = find_agent(context.settings, run_row["agent"])
    edited = None
    if arguments is not None:
        try:
            edited = json.loads(arguments)
        except ValueError as exc:
            raise InvalidRequest(f"--arguments is not JSON: {exc}", param="arguments") from exc
    action = decide(store, action_id, spec, approve=approve_it, actor="local", role=None, arguments=edited,
                    note=note, home=context.settings.home)
    if not as_json:
        console.print(f"{action['status']}: {action['tool']} {escape(json.dumps(action['arguments']))}",
                      highlight=False)
    if wait:
        _print_outcome(asyncio.run(_run(context, spec.name, resume_id=run_row["id"])), as_json)
    elif as_json:
        print(json.dumps(action, default=str))


@app.command("approve")
@handle_errors
def approve(ctx: typer.Context, action_id: str = typer.Argument(..., help="The pending action (RUN:STEP)."),
            arguments: str = typer.Option(None, help="Edited arguments as JSON (checked against the tool's schema)."),
            note: str = typer.Option(None, help="A note kept with the decision."),
            no_resume: bool = typer.Option(False, "--no-resume", help="Only record the decision; a gateway or "
                                                                      "`agent resume` continues the run."),
            as_json: bool = _JSON):
    """Approve a pending action (optionally with edited arguments) and continue its run."""
    _decide(get_context(ctx), action_id, True, arguments, note, not no_resume, as_json)


@app.command("reject")
@handle_errors
def reject(ctx: typer.Context, action_id: str = typer.Argument(..., help="The pending action (RUN:STEP)."),
           note: str = typer.Option(None, help="Why; the agent reads it."),
           no_resume: bool = typer.Option(False, "--no-resume", help="Only record the decision."),
           as_json: bool = _JSON):
    """Reject a pending action; the agent is told and finishes without it."""
    _decide(get_context(ctx), action_id, False, None, note, not no_resume, as_json)


@app.command("resume")
@handle_errors
def resume(ctx: typer.Context, run_id: str = typer.Argument(..., help="A run whose action was decided, or whose "
                                                                        "process died."), as_json: bool = _JSON):
    """Continue a stored run."""
    context = get_context(ctx)
    outcome = asyncio.run(_run(context, get_run(context.store, run_id)["agent"], resume_id=run_id))
    _print_outcome(outcome, as_json)


@handle_errors
def extract_command(ctx: typer.Context,
                    text: str = typer.Argument(None, help="The text (or give --file)."),
                    schema: Path = typer.Option(..., "--schema", exists=True, dir_okay=False,
                                                help="A JSON schema file the result must follow."),
                    file: Path = typer.Option(None, "--file", exists=True, dir_okay=False,
                                              help="A document (PDF, Word, HTML, Markdown, text) to extract from."),
                    model: str = typer.Option("default", help="The chat model."),
                    instructions: str = typer.Option(None, help="Extra instructions for the model."),
                    as_json: bool = _JSON):
    """Extract JSON that follows a schema from a text or a document, with where each value was found."""
    from genfoundry.apps.extract import extract
    from genfoundry.gateway.generation import CallContext
    from genfoundry.gateway.knowledge.serving import gateway_generate
    from genfoundry.knowledge.loaders import load_document

    context = get_context(ctx)
    if (text is None) == (file is None):
        raise InvalidRequest("give the text or --file, not both")
    try:
        shape = json.loads(schema.read_text())
    except ValueError as exc:
        raise InvalidRequest(f"{schema} is not JSON: {exc}", param="schema") from exc
    if file is not None:
        document = load_document(file)
        text = "\n\n".join(section.text for section in document.sections)

    async def work():
        async with _runtime(context) as rt:
            call = CallContext(id=f"extract-{uuid.uuid4().hex}", endpoint="extract", key=None,
                               requested_model=model, stream=False)
            return await extract(gateway_generate(rt, call, rag_model=False), model=model, text=text, schema=shape,
                                 instructions=instructions)

    result = asyncio.run(work())
    if as_json:
        print(json.dumps(result.to_dict(), default=str))
        return
    print(json.dumps(result.data, indent=2, ensure_ascii=False))
    for pointer, span in result.spans.items():
        console.print(f"  [dim]{escape(pointer)} ← characters {span['start']}–{span['end']}: "
                      f"{escape(span['text'])!r}[/dim]", soft_wrap=True)
    if not result.valid:
        console.print(f"[red]does not follow the schema:[/red] {escape('; '.join(result.errors))}")
        raise typer.Exit(1)
