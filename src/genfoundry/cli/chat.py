"""`genfoundry chat`: talk to a model, streaming, in this process or through a gateway."""

from __future__ import annotations

import asyncio
import sys

import typer

from genfoundry.cli.common import console, get_context, handle_errors
from genfoundry.core.types import GenerationRequest, Message


async def _local_reply(model, history: list[Message], max_tokens: int, temperature: float) -> str:
    pieces = []
    async for chunk in model.stream(GenerationRequest(messages=history, max_tokens=max_tokens,
                                                      temperature=temperature)):
        if chunk.text:
            pieces.append(chunk.text)
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
    print()
    return "".join(pieces)


def _remote_reply(client, model_name: str, history: list[Message], max_tokens: int, temperature: float) -> str:
    pieces = []
    stream = client.chat.completions.create(
        model=model_name, messages=[{"role": m.role, "content": m.content} for m in history],
        max_tokens=max_tokens, temperature=temperature, stream=True)
    for event in stream:
        text = event.choices[0].delta.content if event.choices else None
        if text:
            pieces.append(text)
            sys.stdout.write(text)
            sys.stdout.flush()
    print()
    return "".join(pieces)


@handle_errors
def chat(ctx: typer.Context,
         model: str = typer.Option("default", help="Model name or alias."),
         system: str = typer.Option(None, help="System prompt."),
         message: list[str] = typer.Option(None, "--message", "-m", help="Send this and exit instead of asking (repeatable)."),
         max_tokens: int = typer.Option(256, min=1, help="Most tokens per reply."),
         temperature: float = typer.Option(0.7, min=0, max=2, help="Sampling temperature (0: greedy)."),
         url: str = typer.Option(None, help="Chat through this gateway (e.g. http://127.0.0.1:8000/v1) instead of in-process."),
         api_key: str = typer.Option(None, envvar="GENFOUNDRY_API_KEY", help="Key for --url (or GENFOUNDRY_API_KEY).")):
    """Chat with a model; the conversation is kept until you type /exit."""
    history: list[Message] = [Message(role="system", content=system)] if system else []
    if url:
        from openai import OpenAI
        client = OpenAI(base_url=url, api_key=api_key or "missing")
        reply = lambda: _remote_reply(client, model, history, max_tokens, temperature)  # noqa: E731
        loop = None
    else:
        loop = asyncio.new_event_loop()
        hub = get_context(ctx).hub()
        loaded = loop.run_until_complete(hub.load_chat(model))
        reply = lambda: loop.run_until_complete(_local_reply(loaded, history, max_tokens, temperature))  # noqa: E731
    try:
        _converse(history, reply, message)
    finally:
        if loop is not None:
            loop.run_until_complete(hub.close())
            loop.close()


def _converse(history: list[Message], reply, messages: list[str] | None) -> None:
    scripted = list(messages or [])
    if not scripted:
        console.print("Type a message; /exit to leave, /reset to start over.", style="dim")
    while True:
        if scripted:
            text = scripted.pop(0)
        elif messages:
            return
        else:
            try:
                text = console.input("[bold cyan]you>[/bold cyan] ")
            except (EOFError, KeyboardInterrupt):
                return
        if text.strip() in ("/exit", "/quit"):
            return
        if text.strip() == "/reset":
            del history[1 if history and history[0].role == "system" else 0:]
            continue
        history.append(Message(role="user", content=text))
        console.print("[bold green]model>[/bold green] ", end="")
        history.append(Message(role="assistant", content=reply()))
