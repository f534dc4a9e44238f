"""Agents: tools and their schemas, the run loop, permissions, approvals, idempotency, MCP, extraction."""

from __future__ import annotations

import asyncio
import json
import sys
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import sqlalchemy as sa

from genfoundry.apps import support_desk
from genfoundry.apps.agent_run import WITHHELD, AgentRun, decide, get_action, get_run, step_schema
from genfoundry.apps.agents import AgentSpec, build_tools, find_agent, list_agents, load_agent_file
from genfoundry.apps.extract import extract, find_spans
from genfoundry.apps.mcp import McpServerConfig, McpTools
from genfoundry.apps.tools import Tool, ToolBox, ToolContext, ToolError, as_tool, tool, validate_arguments
from genfoundry.core import audit
from genfoundry.core.errors import ConfigError, Conflict, InvalidRequest, NotFound, PermissionDenied
from genfoundry.core.settings import load_settings
from genfoundry.core.store import Store
from genfoundry.core.types import Generation, Message, Usage

MCP_SERVER = Path(__file__).parents[1] / "fixtures" / "mcp_server.py"
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def step(tool_name: str, **arguments) -> str:
    return json.dumps({"tool": tool_name, "arguments": arguments})


def scripted(*replies: str):
    """A generate function that answers with the given steps in order, and records its requests."""
    queue = list(replies)
    seen = []

    async def generate(model, request):
        seen.append(request)
        return Generation(text=queue.pop(0), usage=Usage(100, 10))
    generate.requests = seen
    return generate


@pytest.fixture
def world(tmp_path):
    settings = load_settings(home=tmp_path, environ={})
    settings.ensure_home()
    store = Store.open(settings.resolved_database_url)
    support_desk.database_path(tmp_path)  # the sample orders
    spec = find_agent(settings, "support")
    return {"settings": settings, "store": store, "spec": spec, "home": tmp_path}


async def run_support(world, *replies, caller=None, screen=None, spec=None, messages=None):
    spec = spec or world["spec"]
    async with AsyncExitStack() as stack:
        box = await build_tools(spec, stack)
        run = AgentRun(spec, box, generate=scripted(*replies), store=world["store"], caller=caller,
                       screen_observation=screen, home=world["home"])
        outcome = await run.start(messages or [Message(role="user", content="My order A1002 is torn.")])
        return run, outcome


async def resume_support(world, run_id, *replies):
    async with AsyncExitStack() as stack:
        box = await build_tools(world["spec"], stack)
        run = AgentRun(world["spec"], box, generate=scripted(*replies), store=world["store"], home=world["home"])
        return await run.resume(run_id)


# -- tools ------------------------------------------------------------------------------------------

def test_python_tool_schema_comes_from_the_signature():
    made = as_tool(support_desk.issue_refund)
    assert made.risk == "write" and made.permission == "refunds"
    assert made.parameters["required"] == ["order_id", "amount"]
    assert set(made.parameters["properties"]) == {"order_id", "amount", "reason"}  # idempotency_key is ours
    assert made.parameters["properties"]["amount"]["exclusiveMinimum"] == 0
    validate_arguments(made, {"order_id": "A1", "amount": 5})
    with pytest.raises(ToolError, match="amount"):
        validate_arguments(made, {"order_id": "A1", "amount": -5})
    with pytest.raises(ToolError, match="required"):
        validate_arguments(made, {"amount": 5})
    with pytest.raises(ToolError, match="JSON object"):
        validate_arguments(made, ["A1", 5])


def test_a_tool_whose_schema_is_not_json_schema_is_refused():
    async def call(arguments, context):
        return None
    with pytest.raises(ConfigError, match="not valid JSON schema"):
        Tool(name="bad", description="", parameters={"type": "object", "properties": {"x": {"type": 5}}}, call=call)
    with pytest.raises(ConfigError, match="must describe an object"):
        Tool(name="bad", description="", parameters={"type": "string"}, call=call)
    with pytest.raises(ConfigError, match="risk"):
        Tool(name="bad", description="", parameters={"type": "object"}, call=call, risk="dangerous")


async def test_tool_timeouts_and_exceptions_become_tool_errors():
    @tool(timeout=0.2)
    async def slow() -> str:
        await asyncio.sleep(5)
        return "late"

    def broken(x: int) -> int:
        raise RuntimeError("database is down")
    box = ToolBox([as_tool(slow), as_tool(broken)])
    with pytest.raises(ToolError, match="did not answer within 0.2 s"):
        await box.call("slow", {}, ToolContext("r", 1))
    with pytest.raises(ToolError, match="database is down"):
        await box.call("broken", {"x": 1}, ToolContext("r", 1))
    with pytest.raises(ToolError, match="no tool named 'nope'"):
        await box.call("nope", {}, ToolContext("r", 1))


def test_step_schema_accepts_each_tool_and_the_final_answer(world):
    import jsonschema

    box = ToolBox([as_tool(support_desk.lookup_order)])
    schema = step_schema(box)
    jsonschema.validate({"tool": "lookup_order", "arguments": {"order_id": "A1"}}, schema)
    jsonschema.validate({"tool": "final_answer", "arguments": {"answer": "Done."}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"tool": "lookup_order", "arguments": {}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"tool": "drop_tables", "arguments": {}}, schema)


# -- agent files ------------------------------------------------------------------------------------

def test_agent_files_are_checked_and_the_home_wins(tmp_path):
    settings = load_settings(home=tmp_path, environ={})
    folder = tmp_path / "agents"
    folder.mkdir()
    (folder / "broken.yaml").write_text("name: broken\nlimits: {max_steps: 0}\n")
    (folder / "support.yaml").write_text("name: support\nmodel: other\n")
    found = list_agents(settings)
    assert isinstance(found["broken"], ConfigError) and "max_steps" in str(found["broken"])
    assert found["support"].model == "other"
    with pytest.raises(ConfigError, match="broken.yaml"):
        find_agent(settings, "agent:broken")
    with pytest.raises(NotFound, match="genfoundry agent list"):
        find_agent(settings, "nobody")
    (folder / "x.yaml").write_text("name: x\ntools: [{http: {url: 'http://127.0.0.1:1/x'}}]\n")
    with pytest.raises(ConfigError, match="http tool needs name"):
        load_agent_file(folder / "x.yaml")


# -- the run loop -----------------------------------------------------------------------------------

async def test_a_read_step_then_the_final_answer(world):
    run, outcome = await run_support(world, step("lookup_order", order_id="A1002"),
                                     step("final_answer", answer="It was delivered 6 days ago."))
    assert outcome.status == "succeeded" and outcome.answer == "It was delivered 6 days ago."
    assert [s["kind"] for s in outcome.steps] == ["tool", "final"]
    assert '"product": "Ridgeline 2 Footprint"' in outcome.steps[0]["observation"]
    assert outcome.usage.total_tokens == 220
    stored = get_run(world["store"], outcome.id)
    assert stored["status"] == "succeeded" and len(stored["steps"]) == 2 and stored["prompt_tokens"] == 200


async def test_a_refund_under_the_limit_runs_once_and_is_audited(world):
    run, outcome = await run_support(world, step("lookup_order", order_id="A1002"),
                                     step("issue_refund", order_id="A1002", amount=49.0, reason="torn"),
                                     step("final_answer", answer="Refunded."))
    assert outcome.status == "succeeded"
    refunds = [r for r in support_desk.refunds(world["home"]) if r["order_id"] == "A1002"]
    assert len(refunds) == 1 and refunds[0]["idempotency_key"] == f"{outcome.id}:2"
    assert get_action(world["store"], f"{outcome.id}:2")["status"] == "done"
    assert audit.entries(world["store"], action="agent.tool_executed")[0].target == f"{outcome.id}:2"


async def test_a_refund_over_the_limit_waits_and_approval_resumes_it_once(world):
    _, outcome = await run_support(world, step("lookup_order", order_id="A1003"),
                                   step("issue_refund", order_id="A1003", amount=429.0, reason="leaks"))
    assert outcome.status == "waiting" and outcome.pending["reason"] == "amount 429 is above 100"
    assert not [r for r in support_desk.refunds(world["home"]) if r["order_id"] == "A1003"]
    action_id = outcome.pending["action"]
    with pytest.raises(PermissionDenied, match="admin"):
        decide(world["store"], action_id, world["spec"], approve=True, actor="key:dev", role="developer")
    with pytest.raises(Conflict, match="still waiting"):
        await resume_support(world, outcome.id)
    with pytest.raises(InvalidRequest, match="amount"):
        decide(world["store"], action_id, world["spec"], approve=True, actor="key:a", role="admin",
               arguments={"order_id": "A1003", "amount": "lots"})
    decide(world["store"], action_id, world["spec"], approve=True, actor="key:a", role="admin",
           arguments={"order_id": "A1003", "amount": 400.0, "reason": "leaks"}, note="keep 29 for the pole")
    with pytest.raises(Conflict, match="already decided"):
        decide(world["store"], action_id, world["spec"], approve=False, actor="key:b", role="admin")
    resumed = await resume_support(world, outcome.id, step("final_answer", answer="Refunded 400 EUR."))
    assert resumed.status == "succeeded"
    refunds = [r for r in support_desk.refunds(world["home"]) if r["order_id"] == "A1003"]
    assert [r["amount_eur"] for r in refunds] == [400.0]  # the edited amount, once
    with pytest.raises(Conflict):
        await resume_support(world, outcome.id, step("final_answer", answer="again"))
    actions = [e.action for e in audit.entries(world["store"], action="agent.")]
    assert {"agent.approval_requested", "agent.action_edited", "agent.tool_executed"} <= set(actions)


async def test_a_rejection_goes_back_to_the_model(world):
    _, outcome = await run_support(world, step("issue_refund", order_id="A1003", amount=429.0))
    decide(world["store"], outcome.pending["action"], world["spec"], approve=False, actor="key:a", role="admin",
           note="needs photos")
    resumed = await resume_support(world, outcome.id, step("final_answer", answer="Please send photos."))
    assert resumed.status == "succeeded"
    assert resumed.steps[0]["kind"] == "rejected" and "needs photos" in resumed.steps[0]["observation"]
    assert not [r for r in support_desk.refunds(world["home"]) if r["order_id"] == "A1003"]


async def test_a_side_effect_interrupted_mid_call_is_not_done_twice(world):
    """The process died after the refund but before it was recorded: the retry carries the same
    idempotency key, and the tool answers with the refund it already made."""
    _, outcome = await run_support(world, step("issue_refund", order_id="A1003", amount=429.0))
    action_id = outcome.pending["action"]
    decide(world["store"], action_id, world["spec"], approve=True, actor="key:a", role="admin")
    support_desk.issue_refund("A1003", 429.0, idempotency_key=action_id,
                              context=ToolContext(outcome.id, 1, world["home"]))
    table = world["store"].tables.agent_actions
    with world["store"].begin() as conn:
        conn.execute(table.update().where(table.c.id == action_id).values(status="running"))
    resumed = await resume_support(world, outcome.id, step("final_answer", answer="Done."))
    assert resumed.status == "succeeded"
    assert len([r for r in support_desk.refunds(world["home"]) if r["order_id"] == "A1003"]) == 1


async def test_a_caller_without_the_permission_is_refused_and_audited(world):
    app = {"id": "k1", "name": "bot", "role": "app", "permissions": []}
    _, outcome = await run_support(world, step("issue_refund", order_id="A1002", amount=10.0),
                                   step("final_answer", answer="A colleague will follow up."), caller=app)
    assert outcome.steps[0]["kind"] == "denied" and "refunds" in outcome.steps[0]["observation"]
    assert not [r for r in support_desk.refunds(world["home"]) if r["order_id"] == "A1002"]
    assert audit.entries(world["store"], action="agent.tool_denied")
    allowed = {**app, "permissions": ["refunds"]}
    _, outcome = await run_support(world, step("issue_refund", order_id="A1002", amount=10.0),
                                   step("final_answer", answer="Done."), caller=allowed)
    assert outcome.steps[0]["kind"] == "tool"


async def test_loops_invalid_steps_and_step_limits_are_bounded(world):
    same = step("lookup_order", order_id="A1002")
    _, outcome = await run_support(world, same, same, same)
    assert outcome.status == "stopped" and "same arguments" in outcome.error
    assert len([r for r in outcome.steps if r["kind"] == "tool"]) == 1  # the tool ran once
    _, outcome = await run_support(world, "not json", '{"tool": 5}')
    assert outcome.status == "stopped" and "not valid steps" in outcome.error
    _, outcome = await run_support(world, step("lookup_order", order_id="A1002"),
                                   step("issue_refund", order_id="A1002", amount=1e9), step("final_answer", answer="No."))
    assert outcome.steps[1]["kind"] == "invalid" and "amount" in outcome.steps[1]["observation"]
    orders = [step("lookup_order", order_id=f"A100{i}") for i in range(1, 10)]
    _, outcome = await run_support(world, *orders)
    assert outcome.status == "stopped" and "6 steps" in outcome.error and len(outcome.steps) == 6


async def test_a_poisoned_tool_result_is_withheld_from_the_model(world):
    async def screen(text: str) -> bool:
        return "SYSTEM OVERRIDE" not in text
    run, outcome = await run_support(world, step("lookup_order", order_id="A1009"),
                                     step("final_answer", answer="Your tent was delivered."), screen=screen)
    assert outcome.steps[0]["observation"] == WITHHELD
    assert "SYSTEM OVERRIDE" not in run.generate.requests[-1].messages[-1].content


async def test_json_steps_are_constrained_by_the_step_schema(world):
    run, _ = await run_support(world, step("final_answer", answer="Hello."))
    request = run.generate.requests[0]
    names = {option["properties"]["tool"]["const"] for option in request.json_schema["anyOf"]}
    assert names == {"lookup_customer", "lookup_order", "list_orders", "issue_refund", "final_answer"}


async def test_tools_mode_uses_native_tool_calls(world):
    from genfoundry.core.types import ToolCall

    replies = [Generation(text="", tool_calls=[ToolCall(id="c1", name="lookup_order",
                                                        arguments='{"order_id": "A1002"}')]),
               Generation(text="It arrived.")]

    async def generate(model, request):
        assert request.tools and request.tool_choice == "auto"
        return replies.pop(0)
    spec = world["spec"].model_copy(update={"mode": "tools"})
    async with AsyncExitStack() as stack:
        run = AgentRun(spec, await build_tools(spec, stack), generate=generate, store=world["store"], mode="tools",
                       home=world["home"])
        outcome = await run.start([Message(role="user", content="Where is A1002?")])
    assert outcome.status == "succeeded" and outcome.answer == "It arrived."


# -- MCP --------------------------------------------------------------------------------------------

async def test_mcp_tools_are_listed_called_and_a_dead_server_is_a_clear_error(tmp_path):
    ledger = tmp_path / "ledger.txt"
    config = McpServerConfig(name="shop", command=[sys.executable, str(MCP_SERVER)], env={"MCP_LEDGER": str(ledger)})
    async with McpTools(config) as server:
        tools = {t.name: t for t in server.tools}
        assert tools["stock"].risk == "read" and tools["send_email"].risk == "write"  # unknown tools may write
        box = ToolBox(server.tools)
        assert (await box.call("stock", {"sku": "BW-1"}, ToolContext("r", 1)))["in_stock"] == 7
        with pytest.raises(ToolError, match="invalid arguments"):
            await box.call("stock", {"sku": 5}, ToolContext("r", 1))
        with pytest.raises(ToolError):
            await box.call("broken", {"x": 1}, ToolContext("r", 2))
        with pytest.raises(ToolError, match="failed during crash"):
            await box.call("crash", {}, ToolContext("r", 3))
        with pytest.raises(ToolError, match="not answering"):
            await box.call("stock", {"sku": "BW-1"}, ToolContext("r", 4))


async def test_an_mcp_write_tool_waits_for_approval_in_a_run(world, tmp_path):
    ledger = tmp_path / "ledger.txt"
    spec = AgentSpec.model_validate({"name": "mailer", "mcp": [{"name": "shop", "command": [sys.executable,
                                     str(MCP_SERVER)], "env": {"MCP_LEDGER": str(ledger)}}]})
    _, outcome = await run_support(world, step("send_email", to="a@example.com", subject="Hi"), spec=spec)
    assert outcome.status == "waiting" and not ledger.exists()


async def test_an_mcp_server_that_does_not_start_is_a_config_error():
    with pytest.raises(ConfigError, match="did not start"):
        async with McpTools(McpServerConfig(name="gone", command=[sys.executable, "-c", "raise SystemExit(2)"])):
            pass


# -- extraction -------------------------------------------------------------------------------------

SCHEMA = {"type": "object", "properties": {"order_id": {"type": "string"}, "amount": {"type": "number"},
                                           "customer": {"type": "string"}},
          "required": ["order_id", "amount"], "additionalProperties": False}
TEXT = "Hello, this is Jana Novak. Order A1003 cost 429.00 EUR and the tent leaks."


async def test_extraction_validates_and_finds_source_spans():
    generate = scripted('{"order_id": "A1003", "amount": 429.0, "customer": "jana novak"}')
    result = await extract(generate, model="m", text=TEXT, schema=SCHEMA)
    assert result.valid and result.data["order_id"] == "A1003" and result.attempts == 1
    assert result.spans["/order_id"] == {"start": TEXT.index("A1003"), "end": TEXT.index("A1003") + 5,
                                         "text": "A1003"}
    assert result.spans["/amount"]["text"] == "429.00"
    assert result.spans["/customer"]["text"] == "Jana Novak"
    assert generate.requests[0].json_schema == SCHEMA


async def test_extraction_retries_once_then_reports_what_is_wrong():
    result = await extract(scripted('{"order_id": "A1003"}', '{"order_id": "A1003", "amount": 429}'),
                           model="m", text=TEXT, schema=SCHEMA)
    assert result.valid and result.attempts == 2
    result = await extract(scripted("nope", '{"order_id": 3}'), model="m", text=TEXT, schema=SCHEMA)
    assert not result.valid and result.attempts == 2 and any("amount" in e or "order_id" in e for e in result.errors)
    with pytest.raises(InvalidRequest, match="not valid JSON schema"):
        await extract(scripted(), model="m", text=TEXT, schema={"type": "object", "required": "x"})
    with pytest.raises(InvalidRequest, match="no text"):
        await extract(scripted(), model="m", text="  ", schema=SCHEMA)


def test_spans_handle_case_spacing_and_absent_values():
    spans = find_spans("Total:  1,250 EUR\nShip to  New   York", {"total": 1250, "city": "new york", "x": "absent"})
    assert spans["/total"]["text"] == "1,250" and spans["/city"]["text"] == "New   York" and "/x" not in spans


def test_the_sample_tickets_name_real_tools_and_orders():
    names = {"lookup_customer", "lookup_order", "list_orders", "issue_refund", "search_knowledge"}
    tickets = support_desk.load_tickets()
    assert len(tickets) >= 12 and sum(1 for t in tickets if t.get("attack")) >= 3
    orders = {o[0] for o in support_desk._ORDERS}
    for ticket in tickets:
        for call in ticket["calls"]:
            assert call["tool"] in names
            assert call["arguments"].get("order_id", "A1001") in orders | {"Z9999"}


def test_keys_carry_permissions(world):
    from genfoundry.gateway.keys import create_key, verify_key

    secret, key = create_key(world["store"], name="bot", role="app", permissions=["refunds"])
    assert verify_key(world["store"], secret).permissions == ("refunds",)
    table = world["store"].tables.agent_runs
    with world["store"].begin() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() == 0


async def test_mcp_tools_over_streamable_http(tmp_path):
    import subprocess

    from genfoundry.testing.servers import free_port, stop_process

    port = free_port()
    proc = subprocess.Popen([sys.executable, str(MCP_SERVER), "http", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**__import__("os").environ,
                                                            "MCP_LEDGER": str(tmp_path / "ledger.txt")})
    try:
        config = McpServerConfig(name="remote", url=f"http://127.0.0.1:{port}/mcp")
        for _ in range(100):  # until it listens
            try:
                async with McpTools(config) as server:
                    box = ToolBox(server.tools)
                    assert (await box.call("stock", {"sku": "XX"}, ToolContext("r", 1)))["in_stock"] == 0
                    assert server.tools[0].source == "mcp:remote"
                break
            except ConfigError:
                await asyncio.sleep(0.2)
        else:
            pytest.fail("the MCP server over HTTP never answered")
    finally:
        stop_process(proc)


async def test_http_tools_send_json_and_the_idempotency_key(tmp_path):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from genfoundry.apps.tools import http_tool

    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((body, self.headers["Idempotency-Key"], self.headers.get("X-Token")))
            status = 500 if body.get("fail") else 200
            payload = b'{"ok": true}' if status == 200 else b"upstream broke"
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        made = http_tool(name="notify", description="Notify.", url=f"http://127.0.0.1:{server.server_port}/n",
                         parameters={"type": "object", "properties": {"fail": {"type": "boolean"}}},
                         headers={"X-Token": "plain-value"}, risk="write")
        box = ToolBox([made])
        assert await box.call("notify", {}, ToolContext("run_1", 3)) == {"ok": True}
        assert seen[0] == ({}, "run_1:3", "plain-value")
        with pytest.raises(ToolError, match="HTTP 500: upstream broke"):
            await box.call("notify", {"fail": True}, ToolContext("run_1", 4))
        with pytest.raises(ConfigError, match="http:// or https://"):
            http_tool(name="x", description="x", url="ftp://example.com", parameters={"type": "object"})
    finally:
        server.shutdown()


async def test_forget_erases_agent_runs_and_the_audit_log_keeps_no_arguments(world):
    from genfoundry.apps.agent_run import FORGOTTEN, forget_runs

    _, outcome = await run_support(world, step("issue_refund", order_id="A1003", amount=429.0, reason="Jana Novak"),
                                   messages=[Message(role="user", content="I am Jana Novak, refund A1003")])
    _, other = await run_support(world, step("final_answer", answer="Hello."))
    for entry in audit.entries(world["store"], action="agent."):
        assert "Jana" not in json.dumps(entry.details) and "A1003" not in json.dumps(entry.details)
    with pytest.raises(InvalidRequest):
        forget_runs(world["store"], "ja")
    assert forget_runs(world["store"], "jana novak") == 1
    erased = get_run(world["store"], outcome.id)
    assert erased["input"] == [] and erased["steps"] == [] and erased["answer"] == FORGOTTEN
    assert "Jana" not in json.dumps(get_action(world["store"], outcome.pending["action"]), default=str)
    assert get_run(world["store"], other.id)["answer"] == "Hello."
