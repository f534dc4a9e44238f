"""The guard on the request path: input rails, routing by sensitivity, context and output rails.

For one request the gateway calls, in order::

    screen = await guard.screen_input(call_id=..., key=key, app=app, label=label,
                                      model="gpt-4o", messages=messages, collections=[...])
    kept = await guard.screen_passages(screen, passages)        # grounded answers only
    out = guard.output(screen, key)                             # restores vault tokens, checks output
    text = out.feed(chunk_text) ... + out.finish()
    await guard.finish(screen, out)                             # the audit entry with every decision

``screen_input`` raises :class:`GuardBlocked` (HTTP 400, naming the rule) or
:class:`SensitivityRefused` (403); otherwise ``screen.messages`` are what the
model may see and ``screen.model`` the model cleared to see them.

The sensitivity of a request is the highest of: an explicit label, the
clearance of the collections it retrieved from, and PII left in it. A request
above the model's clearance is re-routed or refused per policy; every decision
goes into the hash-chained audit log with its evidence, which is what
``genfoundry audit prove`` reads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import dataclasses
import functools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from genfoundry.core import audit
from genfoundry.core.caller import Caller
from genfoundry.core.errors import ConfigError, GenfoundryError, PermissionDenied
from genfoundry.core.tracing import span
from genfoundry.core.types import Message
from genfoundry.guard.policy import Policy, PolicySet
from genfoundry.guard.rails import Rails
from genfoundry.guard.types import SENSITIVITY_LEVELS, Finding

__all__ = [
    "Decision",
    "Guard",
    "GuardBlocked",
    "OutputScreen",
    "Screen",
    "SensitivityRefused",
    "hub_embedder",
    "level_index",
    "open_guard",
    "record_policy",
]

log = logging.getLogger(__name__)
PII_WORKERS = 2  # threads that run PII detection for requests (spaCy itself runs one text at a time)
AUDIT_REQUEST = "guard.request"
AUDIT_OUTPUT = "guard.output"
AUDIT_POLICY = "guard.policy"
_TOKEN = re.compile(r"<[A-Z_]+_\d+>")
_HOLD = 40  # characters held back in a stream while a vault token may be arriving


class GuardBlocked(GenfoundryError):
    status_code = 400
    error_type = "invalid_request_error"

    def __init__(self, message: str, *, rule: str):
        super().__init__(message, code="guard_blocked", param=rule)
        self.rule = rule


class SensitivityRefused(PermissionDenied):
    def __init__(self, message: str):
        super().__init__(message, code="sensitivity_exceeds_clearance", param="model")


def level_index(level: str) -> int:
    return SENSITIVITY_LEVELS.index(level)


def _max_level(levels) -> str:
    return max(levels, key=level_index, default="public")


@dataclass
class Decision:
    stage: str  # input, context, output, route
    rail: str
    action: str  # block, redact, flag, reroute, refuse, skip
    dry_run: bool = False
    findings: list[dict] = field(default_factory=list)
    note: str = ""

    def to_dict(self) -> dict:
        data = {"stage": self.stage, "rail": self.rail, "action": self.action}
        if self.dry_run:
            data["dry_run"] = True
        if self.findings:
            data["findings"] = self.findings
        if self.note:
            data["note"] = self.note
        return data


def _finding_json(f: Finding, where: int | None = None) -> dict:
    data = {"kind": f.kind, "score": round(float(f.score), 3)}
    if where is not None:
        data["message"] = where
    if f.detail:
        data.update({k: v for k, v in f.detail.items() if isinstance(v, (str, int, float, bool))})
    return data


@dataclass
class Screen:
    """What the input rails decided for one request."""

    call_id: str
    policy_name: str
    policy: Policy
    requested_model: str
    model: str
    clearance: str
    messages: list[Message]
    sensitivity: str = "public"
    evidence: list[str] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    restore: dict[str, str] = field(default_factory=dict)  # vault token -> value, this request only
    key_id: str | None = None
    pii_found: list[tuple[int, Finding]] = field(default_factory=list)
    pii_redacted: bool = False
    recorded: asyncio.Task | None = None
    recorded_decisions: int = 0  # how many of ``decisions`` the request's audit entry holds
    pending_record: Callable[[], None] | None = None  # the audit write, not started yet (see write_record)
    pii_unchecked: bool = False  # the PII rail ran out of its budget and the policy treats the request as restricted

    def write_record(self) -> None:
        """Start the request's audit write in a worker thread, once: the gateway calls this when the model
        has sent its first token, so the write does not compete with the model's start for the CPU;
        ``Guard.finish`` starts it in any case and waits for it."""
        if self.pending_record is not None and self.recorded is None:
            self.recorded = asyncio.ensure_future(asyncio.to_thread(self.pending_record))
            self.pending_record = None
    tools: list[dict] | None = None  # the request's tool definitions, as the model may see them

    def admits(self, spec) -> bool:
        """Whether a fallback model is cleared for this request."""
        return level_index(spec.clearance) >= level_index(self.sensitivity)


class Guard:
    """Runs a policy set's rails on requests (see the module docstring).

    Example::

        guard = Guard(policies=default_policies(), store=store, hub=hub, vault=vault)
        screen = await guard.screen_input(call_id="c1", key=None, model="default",
                                          messages=[Message(role="user", content="hi")])
    """

    def __init__(self, *, policies: PolicySet, store, hub, vault=None, embed=None, source: str = "built-in",
                 rails: Rails | None = None):
        self.policies = policies
        self.source = source
        self.store = store
        self.hub = hub
        self.vault = vault
        self.rails = rails or Rails(embed=embed)
        # PII detection runs here, so that a request stops waiting when the policy's budget runs out
        self.pii_pool = concurrent.futures.ThreadPoolExecutor(max_workers=PII_WORKERS, thread_name_prefix="guard-pii")
        if vault is None and _needs_vault(policies):
            raise ConfigError("the guard policy tokenizes PII into the vault, but no vault key is set; "
                              "run `genfoundry guard keygen` or set GENFOUNDRY_VAULT_KEY "
                              "(refusing to store PII in the clear)")

    def warm_up(self) -> None:
        """Build the rails before the first request. PII's spaCy model (about 2 s and 100 MB) is
        loaded only when some registered model is not cleared for restricted data."""
        generators = [spec for spec in self.hub.list() if spec.can("chat") or spec.can("completion")]
        self.rails.warm_up(self.policies, pii=any(spec.clearance != "restricted" for spec in generators))

    # -- input ---------------------------------------------------------------------------------
    async def screen_input(self, *, call_id: str, key: Caller | None, model: str, messages: list[Message],
                           app: str | None = None, label: str | None = None,
                           collections: dict[str, str] | None = None, record: bool = True,
                           tools: list[dict] | None = None) -> Screen:
        """The input rails on a request. Besides message text, the PII rail reads every other text the
        model would see: tool-call arguments in assistant turns and the text in tool definitions."""
        with span("guard.input") as item:
            screen = await self._screen_input(call_id=call_id, key=key, model=model, messages=messages, app=app,
                                              label=label, collections=collections, record=record, item=item,
                                              tools=tools)
            item.set_attributes({"genfoundry.guard.policy": screen.policy_name,
                                 "genfoundry.guard.sensitivity": screen.sensitivity,
                                 "genfoundry.guard.model": screen.model,
                                 "genfoundry.guard.decisions": len(screen.decisions)})
            return screen

    async def _screen_input(self, *, call_id, key, model, messages, app, label, collections, record,
                            item, tools=None) -> Screen:
        name, policy = self.policies.select(key=key, app=app)
        spec = self.hub.resolve(model)
        fields = _text_fields(messages, tools)
        # Other texts ride along as extra messages of their own role: the PII rail reads every message,
        # the injection and content rails only user and tool turns.
        screen = Screen(call_id=call_id, policy_name=name, policy=policy, requested_model=model,
                        model=spec.name, clearance=spec.clearance,
                        messages=[*messages, *(Message(role=FIELD_ROLE, content=text) for _, text in fields)],
                        key_id=key.id if key else None, tools=tools)
        levels = [self._label(screen, label)] if label else []
        for collection, clearance in (collections or {}).items():
            levels.append(clearance)
            screen.evidence.append(f"collection {collection}: {clearance}")
        try:
            # Route on what the request says of itself first, so the PII rail acts for the model that
            # will answer; PII left in (flag mode) can raise the level and route it again.
            screen.sensitivity = _max_level(levels)
            self._route(screen)
            await asyncio.to_thread(self._input_rails, screen)
            levels.extend(self._pii_levels(screen))
            if _max_level(levels) != screen.sensitivity:
                screen.sensitivity = _max_level(levels)
                self._route(screen)
            _put_back(screen, len(messages), fields)
        except (GuardBlocked, SensitivityRefused) as exc:
            screen.decisions.append(Decision("input", getattr(exc, "rule", "routing"), "block", note=str(exc)))
            item.set_attributes({"genfoundry.guard.policy": screen.policy_name,
                                 "genfoundry.guard.blocked": getattr(exc, "rule", "routing")})
            if record:
                await asyncio.to_thread(self._record, screen, outcome="blocked")
            raise
        if record:  # written once the model answers (write_record), or by finish() at the latest
            screen.recorded_decisions = len(screen.decisions)
            screen.pending_record = functools.partial(self._record, screen, outcome="sent")
        return screen

    async def screen_embedding(self, *, call_id: str, key: Caller | None, model: str, texts: list[str],
                               app: str | None = None,
                               label: str | None = None) -> list[str]:
        """Texts to embed as the model may see them.

        Only PII and sensitivity apply (a document that quotes an attack may be embedded). PII above the
        model's clearance is handled per the policy's PII rail; a request still above it is refused, not
        re-routed: another embedding model's vectors would not match the ones already stored.
        """
        name, policy = self.policies.select(key=key, app=app)
        spec = self.hub.resolve(model)
        screen = Screen(call_id=call_id, policy_name=name, policy=policy, requested_model=model, model=spec.name,
                        clearance=spec.clearance, messages=[Message(role="user", content=t) for t in texts],
                        key_id=key.id if key else None)
        try:
            levels = [self._label(screen, label)] if label else []
            await asyncio.to_thread(self._pii, screen)
            screen.sensitivity = _max_level(levels + self._pii_levels(screen))
            if level_index(screen.sensitivity) > level_index(screen.clearance):
                why = (f"request is {screen.sensitivity} ({'; '.join(screen.evidence)}), embedding model "
                       f"'{screen.model}' is cleared for {screen.clearance}")
                screen.decisions.append(Decision("route", "routing", "refuse", dry_run=policy.dry_run, note=why))
                if not policy.dry_run:
                    raise SensitivityRefused(f"{why}; use an embedding model cleared for it")
        except (GuardBlocked, SensitivityRefused) as exc:
            screen.decisions.append(Decision("input", getattr(exc, "rule", "routing"), "block", note=str(exc)))
            await asyncio.to_thread(self._record, screen, outcome="blocked")
            raise
        await asyncio.to_thread(self._record, screen, outcome="sent")
        return [m.content for m in screen.messages]

    def _label(self, screen: Screen, label: str) -> str:
        if label not in SENSITIVITY_LEVELS:
            raise GuardBlocked(f"unknown sensitivity label '{label}'; use one of {', '.join(SENSITIVITY_LEVELS)}",
                               rule="label")
        screen.evidence.append(f"label: {label}")
        return label

    def _input_rails(self, screen: Screen) -> None:
        policy = screen.policy
        user = [(i, m.content) for i, m in enumerate(screen.messages)
                if m.role in ("user", "tool") and m.content]
        for rail_name in ("injection", "toxicity", "topics"):
            config = getattr(policy.input, rail_name)
            if config.mode == "off":
                continue
            with span(f"guard.rail input.{rail_name}", {"genfoundry.guard.mode": config.mode}) as item:
                rail = self.rails.get(rail_name, config)
                found = [(i, f) for i, text in user for f in rail.check(text)]
                item.set_attribute("genfoundry.guard.findings", len(found))
                self._apply(screen, "input", rail_name, config, found)
        self._safety(screen, user)
        self._pii(screen)

    def _safety(self, screen: Screen, user: list[tuple[int, str]]) -> None:
        """Content safety on what the request asks (its last user or tool turn), each category with its
        own action; a refusal names the categories."""
        config = screen.policy.input.safety
        if config.mode == "off" or not user:
            return
        with span("guard.rail input.safety", {"genfoundry.guard.mode": config.mode}) as item:
            index, text = user[-1]
            found = [(index, f) for f in self.rails.get("safety", config).check(text)
                     if config.action_of(f.kind) != "off"]
            item.set_attribute("genfoundry.guard.findings", len(found))
            if found:
                action = "block" if any(config.action_of(f.kind) == "block" for _, f in found) else "flag"
                self._apply(screen, "input", "safety", config.model_copy(update={"mode": action}), found)

    def _apply(self, screen: Screen, stage: str, rail_name: str, config, found) -> bool:
        """Record a rail's findings; raise for block; return whether the mode asks to redact."""
        if not found:
            return False
        dry = config.dry_run if config.dry_run is not None else screen.policy.dry_run
        action = config.mode
        screen.decisions.append(Decision(stage, rail_name, action, dry_run=dry,
                                         findings=[_finding_json(f, i) for i, f in found][:20]))
        if action == "block" and not dry:
            kinds = ", ".join(sorted({f.kind for _, f in found}))
            raise GuardBlocked(f"blocked by guard rule '{stage}.{rail_name}' of policy '{screen.policy_name}' "
                               f"({kinds})", rule=f"{stage}.{rail_name}")
        return action == "redact" and not dry

    def _pii(self, screen: Screen) -> None:
        config = screen.policy.input.pii
        if config.mode == "off":
            return
        with span("guard.rail input.pii", {"genfoundry.guard.mode": config.mode}) as item:
            self._pii_rail(screen, config)
            item.set_attribute("genfoundry.guard.findings", len(screen.pii_found or []))

    def _pii_rail(self, screen: Screen, config) -> None:
        from genfoundry.guard.pii import detector_entities

        wanted = detector_entities(config.find, ner=config.ner)  # without loading the detector (spaCy)
        if config.apply == "uncleared":
            wanted = {e for e in wanted if level_index(config.level_of(e)) > level_index(screen.clearance)}
        if not wanted:
            screen.decisions.append(Decision("input", "pii", "skip",
                                             note=f"model '{screen.model}' is cleared for {screen.clearance}"))
            return
        detector = self.rails.pii(config)
        found = self._pii_within_budget(screen, config, detector, wanted)
        if found is None:
            return
        screen.pii_found = found
        if not self._apply(screen, "input", "pii", config, found):
            return
        from genfoundry.guard.pii import redact

        for i in sorted({i for i, _ in found}):
            message = screen.messages[i]
            mine = [f for j, f in found if j == i]
            actions = {f.kind: config.action_of(f.kind) for f in mine}
            result = redact(message.content, mine, actions=actions, vault=self.vault, scope=screen.call_id)
            screen.restore.update(result.restore)
            screen.messages[i] = Message(role=message.role, content=result.text, name=message.name,
                                         tool_call_id=message.tool_call_id, tool_calls=message.tool_calls)
        screen.pii_redacted = True

    def _pii_within_budget(self, screen: Screen, config, detector, wanted) -> list | None:
        """The PII findings of every message, or what the policy says when they take longer than its budget:
        None after 'reroute' (the request counts as restricted), GuardBlocked for 'block', the pattern and
        checksum findings for 'patterns'. The decision goes into the request's audit entry."""
        texts = [(i, m.content) for i, m in enumerate(screen.messages) if m.content]

        def detect(pattern_only: bool = False):
            return [(i, f) for i, text in texts for f in detector.check(text, wanted, ner=not pattern_only)]
        if config.budget_ms is None:
            return detect()
        detector.warm_up()  # loading spaCy (seconds, once per process) is not the request's detection time
        future = self.pii_pool.submit(detect)
        try:
            return future.result(timeout=config.budget_ms / 1000)
        except concurrent.futures.TimeoutError:
            pass  # the detection finishes in the background (its result warms the cache) but nobody waits
        note = f"PII not checked within the policy's budget of {config.budget_ms} ms: {config.on_timeout}"
        screen.decisions.append(Decision("input", "pii", "timeout", note=note))
        if config.on_timeout == "block":
            raise GuardBlocked(f"blocked by guard rule 'input.pii' of policy '{screen.policy_name}' ({note})",
                               rule="input.pii")
        if config.on_timeout == "patterns":
            return detect(pattern_only=True)
        screen.pii_unchecked = True
        return None

    def _pii_levels(self, screen: Screen) -> list[str]:
        """PII still in the request (found but not taken out) raises its sensitivity; so does a request the
        PII rail could not check within its budget (policy 'reroute')."""
        if screen.pii_unchecked:
            screen.evidence.append("pii: not checked within the budget")
            return ["restricted"]
        found = screen.pii_found
        if not found or screen.pii_redacted:
            return []
        config = screen.policy.input.pii
        kinds = sorted({f.kind for _, f in found})
        screen.evidence.append("pii: " + ", ".join(f"{k} ({config.level_of(k)})" for k in kinds))
        return [config.level_of(k) for k in kinds]

    def _route(self, screen: Screen) -> None:
        if level_index(screen.sensitivity) <= level_index(screen.clearance):
            return
        routing, dry = screen.policy.routing, screen.policy.dry_run
        target = None
        if routing.on_exceed == "reroute":
            name = routing.reroute_to or "default"
            try:
                spec = self.hub.resolve(name)
                if level_index(spec.clearance) >= level_index(screen.sensitivity):
                    target = spec
            except GenfoundryError:
                log.warning("guard: reroute_to model '%s' is not registered", name)
        why = (f"request is {screen.sensitivity} ({'; '.join(screen.evidence)}), model '{screen.model}' "
               f"is cleared for {screen.clearance}")
        if target is None:
            screen.decisions.append(Decision("route", "routing", "refuse", dry_run=dry, note=why))
            if not dry:
                raise SensitivityRefused(f"{why}; no cleared model to re-route to (policy "
                                         f"'{screen.policy_name}')")
            return
        screen.decisions.append(Decision("route", "routing", "reroute", dry_run=dry,
                                         note=f"{why}; re-routed to '{target.name}' ({target.clearance})"))
        if not dry:
            screen.model, screen.clearance = target.name, target.clearance

    # -- context -------------------------------------------------------------------------------
    async def screen_passages(self, screen: Screen, passages: list[str]) -> list[int]:
        """Indexes of the passages the model may see (poisoned ones dropped in redact mode)."""
        config = screen.policy.context.injection
        if config.mode == "off" or not passages:
            return list(range(len(passages)))
        with span("guard.rail context.injection", {"genfoundry.guard.mode": config.mode,
                                                    "genfoundry.guard.passages": len(passages)}) as item:
            rail = self.rails.get("injection", config)
            found = await asyncio.to_thread(lambda: [(i, f) for i, p in enumerate(passages) for f in rail.check(p)])
            item.set_attribute("genfoundry.guard.findings", len(found))
            drop = self._apply(screen, "context", "injection", config, found)
        bad = {i for i, _ in found} if drop else set()
        return [i for i in range(len(passages)) if i not in bad]

    # -- groundedness ---------------------------------------------------------------------------
    def groundedness(self, screen: Screen, text: str, passages: list[str], *,
                     streamed: bool = False) -> tuple[str, dict | None, list[Decision]]:
        """The groundedness rail on an answer from ``passages``: the answer (unsupported sentences taken
        out in redact mode, unless it was already streamed), its report (None when the rail is off or the
        answer empty), and the decisions to audit (unsupported sentences)."""
        config = screen.policy.output.groundedness
        if config.mode == "off" or not text.strip():
            return text, None, []
        rail = self.rails.get("groundedness", config)
        with span("guard.rail output.groundedness", {"genfoundry.guard.mode": config.mode}) as item:
            report = rail.check_answer(text, passages)
            item.set_attribute("genfoundry.guard.supported_share", report.supported_share)
        dry = config.dry_run if config.dry_run is not None else screen.policy.dry_run
        if config.mode == "redact" and not dry and not streamed:
            text = report.filtered_answer()
        data = report.to_dict()
        unsupported = [s for s in data["sentences"] if not s["supported"]]
        decisions = [Decision("output", "groundedness", config.mode, dry_run=dry,
                              findings=[{"kind": "unsupported", "score": round(s["score"], 3), "sentence": s["index"],
                                         "evidence_passage": s.get("passage")} for s in unsupported][:20],
                              note=f"{data['supported_share']:.2f} of sentences supported")] if unsupported else []
        return text, data, decisions

    # -- output --------------------------------------------------------------------------------
    def output(self, screen: Screen, key: Caller | None) -> OutputScreen:
        restore = screen.restore if (key is None or key.role in screen.policy.restore_for) else {}
        config = screen.policy.output.toxicity
        rail = self.rails.get("toxicity", config) if config.mode != "off" else None
        dry = config.dry_run if config.dry_run is not None else screen.policy.dry_run
        safety = screen.policy.output.safety
        safety_dry = safety.dry_run if safety.dry_run is not None else screen.policy.dry_run
        return OutputScreen(restore=restore, toxicity=rail, block=config.mode == "block" and not dry,
                            safety=self.rails.get("safety", safety) if safety.mode != "off" else None,
                            safety_config=safety, safety_dry=safety_dry)

    async def finish(self, screen: Screen, out: OutputScreen | None = None,
                     extra: list[Decision] | None = None) -> None:
        """Wait for the request's audit entry; add one for what the output rails found."""
        with span("guard.output") as item:
            if out is not None:
                item.set_attribute("genfoundry.guard.findings", len(out.findings))
            await self._finish(screen, out, extra)

    async def _finish(self, screen: Screen, out: OutputScreen | None, extra: list[Decision] | None) -> None:
        screen.write_record()
        if screen.recorded is not None:
            await screen.recorded
        # Decisions made after the request's entry was written (the context rail) go in this one.
        decisions = screen.decisions[screen.recorded_decisions:] + list(extra or [])
        for rail_name in ("toxicity", "safety"):
            found = [f for f in (out.findings if out is not None else []) if f.rail == rail_name]
            if not found:
                continue
            config = getattr(screen.policy.output, rail_name)
            dry = config.dry_run if config.dry_run is not None else screen.policy.dry_run
            action = config.mode if rail_name == "toxicity" else \
                "block" if any(config.action_of(f.kind) == "block" for f in found) else "flag"
            decisions.append(Decision("output", rail_name, action, dry_run=dry,
                                      findings=[_finding_json(f) for f in found][:20]))
        if decisions:
            await asyncio.to_thread(audit.record, self.store, action=AUDIT_OUTPUT, actor=_actor(screen),
                                    target=screen.call_id,
                                    details={"policy": screen.policy_name, "model": screen.model,
                                             "decisions": [d.to_dict() for d in decisions]})

    def _record(self, screen: Screen, *, outcome: str) -> None:
        audit.record(self.store, action=AUDIT_REQUEST, actor=_actor(screen), target=screen.call_id, details={
            "policy": screen.policy_name, "outcome": outcome, "requested_model": screen.requested_model,
            "model": screen.model, "clearance": screen.clearance, "sensitivity": screen.sensitivity,
            "evidence": screen.evidence, "decisions": [d.to_dict() for d in screen.decisions]})


def _actor(screen: Screen) -> str:
    return f"key:{screen.key_id}" if screen.key_id else "local"


def _needs_vault(policies: PolicySet) -> bool:
    for policy in policies.policies.values():
        pii = policy.input.pii
        if pii.mode == "redact" and not (policy.dry_run or pii.dry_run):
            if "tokenize" in {pii.default_action, *pii.entities.values()}:
                return True
    return False


class OutputScreen:
    """Model output on its way to the caller: vault tokens restored, toxicity checked.

    ``feed`` returns the text that may go out now; a token split across chunks
    is held back until it is complete. ``stopped`` turns true when a blocking
    output rail fired (the caller ends the response with finish_reason
    ``content_filter``).
    """

    def __init__(self, *, restore: dict[str, str], toxicity=None, block: bool = False, safety=None,
                 safety_config=None, safety_dry: bool = False):
        self.restore = restore
        self.toxicity = toxicity
        self.block = block
        self.safety = safety  # content safety, on the whole answer when it is complete
        self.safety_config = safety_config
        self.safety_dry = safety_dry
        self.findings: list[Finding] = []
        self.stopped = False
        self._held = ""
        self._window = ""
        self._answer: list[str] = []

    @property
    def idle(self) -> bool:
        return not self.restore and self.toxicity is None and self.safety is None

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        if self.restore:
            text = self._held + text
            cut = text.rfind("<")
            if cut != -1 and ">" not in text[cut:] and len(text) - cut < _HOLD:
                text, self._held = text[:cut], text[cut:]
            else:
                self._held = ""
            text = _TOKEN.sub(lambda m: self.restore.get(m.group(0), m.group(0)), text)
        return self._check(text)

    def screen_chunk(self, text: str, final: bool) -> str:
        """What of one streamed chunk may go out; ``final`` (the last chunk) flushes held-back text."""
        out = self.feed(text) if text else ""
        return out + self.finish() if final else out

    def finish(self) -> str:
        text, self._held = self._held, ""
        if self.restore and text:
            text = _TOKEN.sub(lambda m: self.restore.get(m.group(0), m.group(0)), text)
        return self._check(text, final=True)

    def _check(self, text: str, final: bool = False) -> str:
        if self.safety is not None:
            self._answer.append(text)
            if final and self._unsafe():
                self.stopped = True
                return ""
        if self.toxicity is None or not text and not final:
            return text
        self._window += text
        # Check at sentence ends (and at the end) on the recent text: cheap, and a phrase split
        # across chunks is still seen whole.
        if final or any(c in text for c in ".!?\n"):
            found = self.toxicity.check(self._window[-600:])
            self._window = self._window[-200:]
            new = [f for f in found if (f.kind, f.detail.get("term")) not in
                   {(g.kind, g.detail.get("term")) for g in self.findings}]
            self.findings.extend(new)
            if new and self.block:
                self.stopped = True
                return ""
        return text


    def _unsafe(self) -> bool:
        """Content safety on the finished answer: findings are recorded; True when one blocks. A streamed
        answer is already out, so its end is cut (finish reason content_filter) and the call is on record."""
        config = self.safety_config
        found = [f for f in self.safety.check("".join(self._answer)) if config.action_of(f.kind) != "off"]
        self.findings.extend(found)
        return any(config.action_of(f.kind) == "block" for f in found) and not self.safety_dry


def hub_embedder(hub, loop: asyncio.AbstractEventLoop, model: str = "default-embedding"):
    """A synchronous embed function for rails (they run in worker threads) over a hub embedding model."""
    import numpy as np

    async def embed_async(texts: list[str]):
        embedder = await hub.load_embedding(model)
        return (await embedder.embed(texts)).vectors

    def embed(texts: list[str]) -> np.ndarray:
        rows = np.asarray(asyncio.run_coroutine_threadsafe(embed_async(texts), loop).result(), dtype=np.float32)
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        return rows / np.maximum(norms, 1e-12)
    return embed


def record_policy(store, policies: PolicySet, source: str) -> bool:
    """Write a ``guard.policy`` audit entry when the policy in force differs from the last one recorded."""
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps(policies.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()
    last = audit.entries(store, action=AUDIT_POLICY, limit=1)
    if last and last[0].details.get("sha256") == digest:
        return False
    audit.record(store, action=AUDIT_POLICY, target=source, details={
        "sha256": digest, "policies": sorted(policies.policies),
        "previous": last[0].details.get("sha256") if last else None})
    return True


def open_guard(settings, store, hub, *, loop: asyncio.AbstractEventLoop | None = None) -> Guard | None:
    """The guard the settings ask for (None when ``guard`` is off).

    Raises ConfigError for a malformed policy, or when the policy tokenizes PII
    and no vault key is set: the gateway refuses to start rather than store PII
    in the clear.
    """
    if not settings.guard:
        return None
    from genfoundry.guard.keys import open_vault
    from genfoundry.guard.policy import load_policies

    policies, source = load_policies(settings)
    record_policy(store, policies, source)
    vault = open_vault(settings, store, required=False)
    uses_topics = any(p.input.topics.mode != "off" for p in policies.policies.values())
    embed = hub_embedder(hub, loop or asyncio.get_running_loop()) if uses_topics else None
    return Guard(policies=policies, store=store, hub=hub, vault=vault, embed=embed, source=source)


FIELD_ROLE = "x-field"  # an extra message holding another text of the request (tool arguments, tool definitions)


def _text_fields(messages: list[Message], tools: list[dict] | None) -> list[tuple[tuple, str]]:
    """(where, text) of every text a model sees besides message content."""
    found: list[tuple[tuple, str]] = []
    for i, message in enumerate(messages):
        for j, call in enumerate(message.tool_calls or []):
            if call.arguments:
                found.append((("call", i, j), call.arguments))

    def walk(value, path):
        if isinstance(value, str):
            if value.strip():
                found.append((("tool", *path), value))
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, (*path, k))
        elif isinstance(value, list):
            for k, v in enumerate(value):
                walk(v, (*path, k))
    walk(tools or [], ())
    return found


def _put_back(screen: Screen, count: int, fields: list[tuple[tuple, str]]) -> None:
    """Move the (maybe redacted) extra texts back where they came from; drop the extra messages."""
    if not fields:
        return
    texts = [m.content for m in screen.messages[count:]]
    messages = screen.messages[:count]
    tools = copy.deepcopy(screen.tools)
    for (where, original), text in zip(fields, texts):
        if text == original:
            continue
        if where[0] == "call":
            _, i, j = where
            message = messages[i]
            calls = list(message.tool_calls)
            calls[j] = dataclasses.replace(calls[j], arguments=text)
            messages[i] = dataclasses.replace(message, tool_calls=calls)
        else:
            target = tools
            for step in where[1:-1]:
                target = target[step]
            target[where[-1]] = text
    screen.messages = messages
    screen.tools = tools
