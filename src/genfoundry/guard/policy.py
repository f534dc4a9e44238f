"""Guard policies: which rails run on a request, in what mode, for which key or app.

A policy file is YAML (see docs/guard.md and ``default_policy.yaml`` beside this
module). It names policies and assigns them to API keys (by name or id), apps
(the ``X-Genfoundry-App`` header or ``metadata.app``) and roles; everything else
gets the ``default`` policy. Every rail has a mode:

- ``block``: refuse the request with an error naming the rule;
- ``redact``: take out what was found (PII replaced, a poisoned passage dropped,
  an unsupported sentence removed) and go on;
- ``flag``: record the finding and change nothing;
- ``off``: do not run.

``dry_run`` (per policy or per rail) records what the mode would have done and
lets the request through unchanged.

Example::

    policies = load_policy_file(Path("guard.yaml"))
    name, policy = policies.select(key=api_key, app="helpdesk")
    policy.input.injection.mode  # "block"

A malformed file is a ``ConfigError`` that names the line; so is an unknown
rail, option, entity type or policy name.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from genfoundry.core.caller import Caller
from genfoundry.core.errors import ConfigError

__all__ = [
    "AppAssignment",
    "Assign",
    "ContextRails",
    "DEFAULT_PII_LEVELS",
    "GroundednessRail",
    "InjectionRail",
    "InputRails",
    "OutputRails",
    "PiiRail",
    "Policy",
    "PolicySet",
    "Routing",
    "SafetyRail",
    "TopicsRail",
    "ToxicityRail",
    "default_policies",
    "load_policies",
    "load_policy_file",
    "parse_policies",
]

Mode = Literal["block", "redact", "flag", "off"]
Level = Literal["public", "internal", "confidential", "restricted"]
PiiAction = Literal["redact", "mask", "tokenize"]
Role = Literal["admin", "developer", "app"]

# How sensitive a request is that carries each kind of PII (unredacted). Payment and identity
# numbers are restricted; what identifies, reaches or locates a person is confidential (names,
# contacts, street addresses, postal codes, coordinates, device and network identifiers).
# Names of places, organisations, dates and groups are public by themselves: "What is the capital
# of France?" goes to an external model as asked. Together with a person's name they still travel
# only to cleared models, because the name raises the request's level (docs/guard.md).
DEFAULT_PII_LEVELS: dict[str, str] = {
    "CREDIT_CARD": "restricted", "IBAN_CODE": "restricted", "US_SSN": "restricted",
    "US_BANK_NUMBER": "restricted", "US_PASSPORT": "restricted", "US_DRIVER_LICENSE": "restricted",
    "US_ITIN": "restricted", "CRYPTO": "restricted", "MEDICAL_LICENSE": "restricted", "UK_NHS": "restricted",
    "PERSON": "confidential", "EMAIL_ADDRESS": "confidential", "PHONE_NUMBER": "confidential",
    "STREET_ADDRESS": "confidential", "ZIP_CODE": "confidential", "COORDINATES": "confidential",
    "IP_ADDRESS": "confidential", "MAC_ADDRESS": "confidential",
    "LOCATION": "public", "ORGANIZATION": "public", "DATE_TIME": "public", "NRP": "public", "URL": "public",
}
DEFAULT_PII_LEVEL = "internal"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Rail(_Strict):
    mode: Mode = "flag"
    dry_run: bool | None = Field(None, description="Record only; unset: the policy's dry_run.")

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, value):
        return "off" if value is False else value  # YAML 1.1 reads a bare `off` as false


class InjectionRail(_Rail):
    mode: Mode = "block"
    threshold: float | None = Field(None, gt=0, lt=1, description="Classifier score that counts as an attack; unset: the one shipped with the classifier.")


class PiiRail(_Rail):
    mode: Mode = "redact"
    find: list[str] | None = Field(None, description="Entity types to look for; unset: every supported type.")
    entities: dict[str, PiiAction] = Field(default_factory=dict, description="Action per entity type when redacting, over default_action.")
    default_action: PiiAction = "tokenize"
    levels: dict[str, Level] = Field(default_factory=dict, description="Sensitivity of each entity type, over DEFAULT_PII_LEVELS.")
    apply: Literal["uncleared", "always"] = Field("uncleared", description="'uncleared': act only on entities above the model's clearance (a model cleared for restricted data sees them as sent); 'always': act whatever the model.")
    ner: bool = Field(True, description="Find names, places and organisations with spaCy's NER as well as the pattern and checksum recognizers.")
    budget_ms: int | None = Field(250, ge=1, le=60_000, description="The longest a request waits for the PII rail (queue included); unset: no limit.")
    on_timeout: Literal["reroute", "block", "patterns"] = Field(
        "reroute", description="When the budget runs out: 'reroute' treats the request as restricted (routing sends it to a cleared model, or refuses it), 'block' refuses it, 'patterns' goes on with the pattern and checksum findings only (names may pass).")

    @field_validator("find", "entities", "levels")
    @classmethod
    def _known_entities(cls, value: dict | list | None):
        if value:
            from genfoundry.guard.pii import PII_ENTITIES

            unknown = sorted(set(value) - set(PII_ENTITIES))
            if unknown:
                raise ValueError(f"unknown PII entity type {', '.join(unknown)}; "
                                 f"known: {', '.join(sorted(PII_ENTITIES))}")
        return value

    def level_of(self, entity: str) -> str:
        return self.levels.get(entity) or DEFAULT_PII_LEVELS.get(entity, DEFAULT_PII_LEVEL)

    def action_of(self, entity: str) -> str:
        return self.entities.get(entity, self.default_action)


class ToxicityRail(_Rail):
    mode: Mode = "flag"
    threshold: float = Field(0.5, gt=0, le=1)


class SafetyRail(_Rail):
    """Content safety: requests (or answers) that ask for harm, by category (see guard/safety.py)."""

    mode: Mode = "block"
    threshold: float | None = Field(None, gt=0, lt=1, description="Probability of 'not safe' that counts; unset: the one shipped with the classifier.")
    categories: dict[str, Mode] = Field(default_factory=dict, description="Action per category (block, flag, off), over mode.")

    @field_validator("categories", mode="before")
    @classmethod
    def _known_categories(cls, value):
        from genfoundry.guard.safety import CATEGORIES

        if not isinstance(value, dict):
            return value
        unknown = sorted(set(value) - set(CATEGORIES))
        if unknown:
            raise ValueError(f"unknown safety category {', '.join(unknown)}; known: {', '.join(CATEGORIES)}")
        return {k: ("off" if v is False else v) for k, v in value.items()}  # YAML 1.1 reads a bare off as false

    def action_of(self, category: str) -> str:
        return self.categories.get(category, self.mode)


class TopicsRail(_Rail):
    mode: Mode = "block"
    deny: dict[str, str | list[str]] = Field(default_factory=dict, description="Topic name -> a description or example phrasings; matched by embedding similarity.")
    threshold: float = Field(0.55, gt=0, lt=1)

    @model_validator(mode="after")
    def _topics_given(self):
        if self.mode != "off" and not self.deny:
            raise ValueError("the topics rail needs at least one topic under 'deny' (or mode: off)")
        for name, text in self.deny.items():
            if not text or (isinstance(text, list) and not all(t.strip() for t in text)):
                raise ValueError(f"topic '{name}' needs a description or example phrasings")
        return self


class GroundednessRail(_Rail):
    mode: Mode = "flag"
    threshold: float = Field(0.5, gt=0, lt=1, description="Support score under which a sentence counts as unsupported.")


class InputRails(_Strict):
    injection: InjectionRail = Field(default_factory=InjectionRail)
    pii: PiiRail = Field(default_factory=PiiRail)
    toxicity: ToxicityRail = Field(default_factory=ToxicityRail)
    topics: TopicsRail = Field(default_factory=lambda: TopicsRail(mode="off"))
    safety: SafetyRail = Field(default_factory=lambda: SafetyRail(mode="off"))


class ContextRails(_Strict):
    """Rails on retrieved passages before they reach the model (indirect injection)."""

    injection: InjectionRail = Field(default_factory=lambda: InjectionRail(mode="redact"))


class OutputRails(_Strict):
    toxicity: ToxicityRail = Field(default_factory=ToxicityRail)
    safety: SafetyRail = Field(default_factory=lambda: SafetyRail(mode="off"))
    groundedness: GroundednessRail = Field(default_factory=GroundednessRail)


class Routing(_Strict):
    on_exceed: Literal["reroute", "refuse"] = Field("reroute", description="What to do with a request more sensitive than the model's clearance.")
    reroute_to: str | None = Field(None, description="Model for such requests; unset: the default chat model when it is cleared.")


class Policy(_Strict):
    description: str = ""
    dry_run: bool = False
    input: InputRails = Field(default_factory=InputRails)
    context: ContextRails = Field(default_factory=ContextRails)
    output: OutputRails = Field(default_factory=OutputRails)
    routing: Routing = Field(default_factory=Routing)
    restore_for: list[Role] = Field(default_factory=lambda: ["admin", "developer", "app"], description="Roles whose answers get vault tokens replaced by the original values.")


class AppAssignment(_Strict):
    policy: str
    keys: list[str] = Field(default_factory=list, description="Key names or ids that may claim this app; with roles empty too: any key without a key or role assignment of its own.")
    roles: list[Role] = Field(default_factory=list, description="Key roles that may claim this app.")

    def admits(self, key: Caller | None) -> bool:
        if not self.keys and not self.roles:
            return True
        return key is not None and (key.name in self.keys or key.id in self.keys or key.role in self.roles)


class Assign(_Strict):
    keys: dict[str, str] = Field(default_factory=dict, description="API key name or id -> policy; binds.")
    apps: dict[str, str | AppAssignment] = Field(default_factory=dict, description="App name (the X-Genfoundry-App header or metadata.app) -> policy, or {policy, keys, roles} naming who may claim the app; honoured only for keys without a key or role assignment, and only for the keys it admits.")
    roles: dict[Role, str] = Field(default_factory=dict, description="Key role -> policy; binds.")

    def app(self, name: str) -> AppAssignment | None:
        found = self.apps.get(name)
        return AppAssignment(policy=found) if isinstance(found, str) else found


class PolicySet(_Strict):
    version: Literal[1] = 1
    policies: dict[str, Policy]
    assign: Assign = Field(default_factory=Assign)

    @model_validator(mode="after")
    def _references(self):
        if "default" not in self.policies:
            raise ValueError("a policy named 'default' is required (it applies to everything not assigned)")
        apps = {app: self.assign.app(app).policy for app in self.assign.apps}
        for where, table in (("keys", self.assign.keys), ("apps", apps), ("roles", self.assign.roles)):
            for who, name in table.items():
                if name not in self.policies:
                    raise ValueError(f"assign.{where}.{who} names policy '{name}', which is not defined; "
                                     f"defined: {', '.join(self.policies)}")
        return self

    def select(self, *, key: Caller | None = None, app: str | None = None) -> tuple[str, Policy]:
        """The policy for a request: the key's own assignment (name or id), then its role's, then the app
        it names (only when the app admits the key), then default.

        Assignments by key and role bind: a client cannot pick a laxer policy by naming an app.
        """
        name = None
        if key is not None:
            name = (self.assign.keys.get(key.name) or self.assign.keys.get(key.id)
                    or self.assign.roles.get(key.role))
        if name is None and app:
            claimed = self.assign.app(app)
            if claimed is not None and claimed.admits(key):
                name = claimed.policy
        name = name or "default"
        return name, self.policies[name]


def _line(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the YAML node at a pydantic error location (closest parent found)."""
    node, line = root, None
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == str(part)), None)
            if node is None:  # an unknown field: point at its key
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            node = None
    return node.start_mark.line + 1 if node is not None else line


def _unknown_key_line(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    parent = _walk(root, loc[:-1])
    if isinstance(parent, yaml.MappingNode):
        for k, _ in parent.value:
            if k.value == str(loc[-1]):
                return k.start_mark.line + 1
    return None


def _walk(node: yaml.Node | None, loc: tuple[Any, ...]) -> yaml.Node | None:
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == str(part)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return None
    return node


def parse_policies(text: str, *, source: str = "<policy>") -> PolicySet:
    """Parse and check a policy file's text; errors name the file and line."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}, line {mark.line + 1}" if mark else source
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a policy file is a mapping with 'policies' (see docs/guard.md)")
    try:
        return PolicySet.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
            line = (_unknown_key_line(root, loc) if err["type"] == "extra_forbidden" else None) or _line(root, loc)
            path = ".".join(str(p) for p in loc) or "(top)"
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = f"unknown option or rail '{loc[-1]}'"
            problems.append(f"{source}, line {line or '?'}: {path}: {message}")
        raise ConfigError("; ".join(problems)) from None


def load_policy_file(path: Path) -> PolicySet:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the guard policy {path}: {exc.strerror or exc}") from None
    return parse_policies(text, source=str(path))


def default_policies() -> PolicySet:
    """The built-in policy (guard/default_policy.yaml)."""
    text = resources.files("genfoundry.guard").joinpath("default_policy.yaml").read_text(encoding="utf-8")
    return parse_policies(text, source="built-in default policy")


def load_policies(settings) -> tuple[PolicySet, str]:
    """The policy in force and where it came from: guard_policy, home/guard.yaml, or the built-in one."""
    path = settings.guard_policy
    if path is None and (settings.home / "guard.yaml").exists():
        path = settings.home / "guard.yaml"
    if path is None:
        return default_policies(), "built-in"
    return load_policy_file(Path(path)), str(path)

