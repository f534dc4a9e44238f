"""The `genfoundry` command. One module per noun."""

from __future__ import annotations

from pathlib import Path

import typer

from genfoundry.cli import agents, audit, bench, collections, engine, guard, keys, models, observe, tune
from genfoundry.cli.chat import chat
from genfoundry.cli.data import data_app, label_app, synth_app
from genfoundry.cli.doctor import doctor
from genfoundry.cli.common import Context
from genfoundry.cli.knowledge import ask, forget, ingest, search, summarise
from genfoundry.cli.logs import logs
from genfoundry.cli.serve import serve, up

__all__ = ["app", "main"]

app = typer.Typer(name="genfoundry", no_args_is_help=True, add_completion=False,
                  help="genfoundry: your own generative-AI stack. Start with `genfoundry up`.")


@app.callback()
def _root(ctx: typer.Context,
         home: Path = typer.Option(None, "--home", envvar="GENFOUNDRY_HOME",
                                   help="Where genfoundry keeps its data (default ~/.genfoundry).")):
    ctx.obj = Context(home=home)


app.command("up")(up)
app.command("serve")(serve)
app.command("chat")(chat)
app.command("logs")(logs)
app.command("ingest")(ingest)
app.command("ask")(ask)
app.command("search")(search)
app.command("forget")(forget)
app.command("summarise")(summarise)
app.add_typer(collections.app, name="collections")
app.add_typer(audit.app, name="audit")
app.add_typer(guard.app, name="guard")
app.add_typer(models.app, name="models")
app.add_typer(keys.app, name="keys")
app.add_typer(bench.app, name="bench")
app.add_typer(engine.app, name="engine")
app.add_typer(observe.traces, name="traces")
app.command("usage")(observe.usage)
app.add_typer(observe.feedback, name="feedback")
app.command("alerts")(observe.alerts)
app.add_typer(observe.drift, name="drift")
app.add_typer(observe.evals, name="eval")
app.add_typer(data_app, name="data")
app.add_typer(label_app, name="label")
app.add_typer(synth_app, name="synth")
app.add_typer(tune.app, name="tune")
app.add_typer(agents.app, name="agent")
app.command("extract")(agents.extract_command)
app.command("doctor")(doctor)


def main() -> None:
    app()
