"""`genfoundry guard`: check text against the policy, show the policy, make the vault key,
reveal a vault token, and run the bias probe."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import uuid
from pathlib import Path

import typer
import yaml
from rich.markup import escape

from genfoundry.cli.common import console, err_console, get_context, handle_errors
from genfoundry.core.errors import InvalidRequest

app = typer.Typer(no_args_is_help=True, help="Guardrails: check text, show the policy, the vault key, the bias probe.")


@app.command("check")
@handle_errors
def check(ctx: typer.Context,
          text: str = typer.Argument(None, help="Text to check; '-' or nothing reads standard input."),
          model: str = typer.Option("default", help="Check as if the text were sent to this model (its clearance counts)."),
          app_name: str = typer.Option(None, "--app", help="Use the policy assigned to this app."),
          label: str = typer.Option(None, help="Sensitivity label the request carries (public, internal, confidential, restricted)."),
          as_json: bool = typer.Option(False, "--json", help="Print the decisions as JSON.")):
    """Run the input rails on a text and show what the policy would do (nothing is sent or recorded)."""
    from genfoundry.core.store import Store
    from genfoundry.core.types import Message
    from genfoundry.guard.engine import Guard, GuardBlocked, SensitivityRefused
    from genfoundry.guard.policy import load_policies
    from genfoundry.guard.vault import Vault

    if text in (None, "-"):
        text = sys.stdin.read()
    if not text.strip():
        raise InvalidRequest("give a text to check (an argument, or on standard input)")
    c = get_context(ctx)
    policies, source = load_policies(c.settings)
    # Nothing is kept: tokens go to a throwaway vault (deleted below), and no decision is recorded.
    folder = tempfile.TemporaryDirectory(prefix="guard-check-")
    scratch = Vault(Store.open(f"sqlite:///{folder.name}/vault.db"), os.urandom(32))

    async def run():
        guard = Guard(policies=policies, store=c.store, hub=c.hub(), vault=scratch, source=source)
        try:
            screen = await guard.screen_input(call_id=f"check-{uuid.uuid4().hex[:8]}", key=None, model=model,
                                              messages=[Message(role="user", content=text)], app=app_name,
                                              label=label, record=False)
            return screen, None
        except (GuardBlocked, SensitivityRefused) as exc:
            return None, exc
    try:
        screen, blocked = asyncio.run(run())
    finally:
        scratch.store.close()
        folder.cleanup()
    result = {"blocked": str(blocked) if blocked else None}
    if screen is not None:
        result.update({"policy": screen.policy_name, "model": screen.model, "clearance": screen.clearance,
                       "sensitivity": screen.sensitivity, "evidence": screen.evidence,
                       "decisions": [d.to_dict() for d in screen.decisions],
                       "text_sent": screen.messages[0].content})
    if as_json:
        print(json.dumps(result))
    elif blocked:
        err_console.print(f"[red]blocked[/red]: {escape(str(blocked))}")
    else:
        console.print(f"policy [bold]{screen.policy_name}[/bold]; sensitivity {screen.sensitivity}; "
                      f"model '{escape(screen.model)}' (cleared for {screen.clearance})")
        for d in screen.decisions:
            kinds = ", ".join(sorted({f['kind'] for f in d.findings})) or d.note
            console.print(f"  {d.stage}.{d.rail}: {d.action}{' (dry run)' if d.dry_run else ''}: {escape(kinds)}")
        if not screen.decisions:
            console.print("  no rail found anything")
        console.print("[dim]the model would see:[/dim]")
        console.print(escape(screen.messages[0].content), soft_wrap=True)
    if blocked:
        raise typer.Exit(1)


@app.command("policy")
@handle_errors
def policy(ctx: typer.Context,
           file: Path = typer.Option(None, "--file", help="Check this policy file instead of the one in force."),
           as_json: bool = typer.Option(False, "--json", help="Print the policy as JSON.")):
    """Check the policy file (errors name the line) and print the policy in force, defaults filled in."""
    from genfoundry.guard.policy import load_policies, load_policy_file

    if file is not None:
        policies, source = load_policy_file(file), str(file)
    else:
        policies, source = load_policies(get_context(ctx).settings)
    data = policies.model_dump(mode="json")
    if as_json:
        print(json.dumps({"source": source, **data}))
        return
    err_console.print(f"[green]policy ok[/green]: {escape(source)}")
    console.print(yaml.safe_dump(data, sort_keys=False), end="", soft_wrap=True, markup=False)


@app.command("keygen")
@handle_errors
def keygen(ctx: typer.Context,
           force: bool = typer.Option(False, "--force", help="Replace an existing key (tokens stored under the old key can no longer be revealed).")):
    """Make the vault's 256-bit key file (home/vault.key, or the vault_key_file setting), readable by you only."""
    from genfoundry.guard.keys import generate_key_file, key_file_path

    settings = get_context(ctx).settings
    path = key_file_path(settings)
    if path.exists() and not force:
        console.print(f"the vault key already exists: {path} (use --force to replace it)")
        return
    generate_key_file(path)
    console.print(f"vault key written to {path} (mode 600); back it up: without it, vaulted values are lost")


@app.command("reveal")
@handle_errors
def reveal(ctx: typer.Context,
           token: str = typer.Argument(..., help="A vault token such as <PERSON_1>."),
           scope: str = typer.Option(..., help="The call id (or document id) the token belongs to.")):
    """Print the original value behind a vault token; the reveal is written to the audit log."""
    from genfoundry.guard.keys import open_vault

    c = get_context(ctx)
    vault = open_vault(c.settings, c.store, required=True)
    print(vault.reveal(token, scope=scope, actor="cli"))


@app.command("bias")
@handle_errors
def bias(ctx: typer.Context,
         model: str = typer.Option("default", help="Model to probe."),
         limit: int = typer.Option(None, min=1, help="Run only this many templates (quick check)."),
         max_tokens: int = typer.Option(80, min=1, help="Longest answer per prompt."),
         as_json: bool = typer.Option(False, "--json", help="Print the report as JSON.")):
    """Counterfactual bias probe: the same prompts with names, genders and origins swapped; how much do answers differ?"""
    from genfoundry.core.types import GenerationRequest, Message
    from genfoundry.guard.bias import run_bias_probe

    c = get_context(ctx)
    hub = c.hub()

    async def run():
        chat = await hub.load_chat(model)

        async def generate(prompt: str) -> str:
            request = GenerationRequest(messages=[Message(role="user", content=prompt)], max_tokens=max_tokens,
                                        temperature=0.0, seed=0)
            return (await chat.generate(request)).text

        report = await run_bias_probe(generate, embed=None, limit=limit)
        await hub.close()
        return report
    report = asyncio.run(run())
    data = report.to_dict()
    if as_json:
        print(json.dumps(data))
        return
    console.print_json(json.dumps(data))
