"""Policy files: defaults, assignment, and errors that name the line."""

from __future__ import annotations

import pytest

from genfoundry.core.errors import ConfigError
from genfoundry.gateway.keys import ApiKey
from genfoundry.guard.policy import (
    default_policies,
    load_policies,
    load_policy_file,
    parse_policies,
)

POLICY = """\
version: 1
policies:
  default:
    input:
      injection: {mode: block}
  support:
    dry_run: true
    input:
      topics:
        mode: block
        deny: {legal: "legal advice about lawsuits"}
      pii: {mode: flag, entities: {PERSON: tokenize}}
    routing: {on_exceed: refuse}
assign:
  apps: {helpdesk: support}
  keys: {bot-key: support}
  roles: {developer: support}
"""


def _key(name="k", role="app", id_="id1"):
    return ApiKey(id=id_, name=name, prefix="gf-", role=role, rpm_limit=None, token_budget=None,
                  budget_period="month", allowed_models=None, created_at=None, revoked_at=None)


def test_default_policy_blocks_injection_and_redacts_pii_for_uncleared_models():
    policy = default_policies().policies["default"]
    assert policy.input.injection.mode == "block"
    assert policy.input.pii.mode == "redact" and policy.input.pii.apply == "uncleared"
    assert policy.input.pii.action_of("CREDIT_CARD") == "redact"
    assert policy.input.pii.action_of("PERSON") == "tokenize"
    assert policy.input.topics.mode == "off"  # YAML's bare `off` is read as the mode, not false
    assert policy.context.injection.mode == "redact"
    assert policy.input.pii.level_of("US_SSN") == "restricted"
    assert policy.input.pii.level_of("PERSON") == "confidential"


def test_select_by_key_then_role_then_app_then_default():
    policies = parse_policies(POLICY)
    assert policies.select(key=None, app="helpdesk")[0] == "support"
    assert policies.select(key=_key(name="bot-key"))[0] == "support"
    assert policies.select(key=_key(role="developer"))[0] == "support"
    assert policies.select(key=_key(role="admin"))[0] == "default"
    assert policies.select(key=None)[0] == "default"
    support = policies.policies["support"]
    assert support.dry_run and support.routing.on_exceed == "refuse"
    assert support.input.topics.deny == {"legal": "legal advice about lawsuits"}


@pytest.mark.parametrize(("text", "line", "words"), [
    ("version: 1\npolicies:\n  default:\n    input:\n      injection: {mode: blok}\n", 5, "mode"),
    ("version: 1\npolicies:\n  default:\n    input:\n      jailbreak: {mode: block}\n", 5, "unknown option or rail 'jailbreak'"),
    ("version: 1\npolicies:\n  default:\n    input:\n      pii:\n        entities: {PERSN: redact}\n", 6, "unknown PII entity type PERSN"),
    ("version: 1\npolicies:\n  default:\n    input:\n      topics: {mode: block}\n", 5, "needs at least one topic"),
    ("version: 1\npolicies:\n  default: {}\nassign:\n  apps: {x: missing}\n", None, "names policy 'missing'"),
    ("version: 1\npolicies:\n  other: {}\n", None, "a policy named 'default' is required"),
    ("version: 1\npolicies:\n  default: {input: [1,\n", 4, "not valid YAML"),
    ("- just\n- a list\n", None, "a policy file is a mapping"),
    ("version: 2\npolicies:\n  default: {}\n", 1, "version"),
])
def test_malformed_policies_are_errors_with_the_line(text, line, words):
    with pytest.raises(ConfigError) as err:
        parse_policies(text, source="guard.yaml")
    message = str(err.value)
    assert words in message
    if line is not None:
        assert f"guard.yaml, line {line}" in message


def test_policy_files_load_from_the_setting_or_home(settings, tmp_path):
    assert load_policies(settings)[1] == "built-in"
    (settings.home / "guard.yaml").write_text(POLICY)
    policies, source = load_policies(settings)
    assert source.endswith("guard.yaml") and "support" in policies.policies
    with pytest.raises(ConfigError, match="cannot read the guard policy"):
        load_policy_file(tmp_path / "missing.yaml")


def test_policy_changes_are_audited_once_per_change(store):
    from genfoundry.core import audit
    from genfoundry.guard.engine import record_policy

    assert record_policy(store, default_policies(), "built-in")
    assert not record_policy(store, default_policies(), "built-in")  # unchanged: nothing new
    assert record_policy(store, parse_policies(POLICY), "/etc/guard.yaml")
    newest, oldest = audit.entries(store, action="guard.policy")
    assert newest.target == "/etc/guard.yaml" and newest.details["previous"] == oldest.details["sha256"]
    assert newest.details["policies"] == ["default", "support"]


LAX_AND_STRICT = """\
version: 1
policies:
  default: {}
  strict:
    input:
      injection: {mode: block}
  lax:
    input:
      injection: {mode: off}
      pii: {mode: off}
assign:
  keys: {partner-key: strict}
  roles: {app: strict}
  apps:
    console: lax
    reports: {policy: lax, keys: [reporting-key]}
"""


def test_key_and_role_assignments_bind_whatever_app_the_client_names():
    policies = parse_policies(LAX_AND_STRICT)
    # Naming the console's app must not give a strictly bound key the console's lax policy.
    assert policies.select(key=_key(name="partner-key", role="developer"), app="console")[0] == "strict"
    assert policies.select(key=_key(name="any-app", role="app"), app="console")[0] == "strict"
    # A key with no assignment of its own may claim an open app...
    assert policies.select(key=_key(name="dev", role="developer"), app="console")[0] == "lax"
    # ...but only the keys an app admits may claim a restricted one.
    assert policies.select(key=_key(name="dev", role="developer"), app="reports")[0] == "default"
    assert policies.select(key=_key(name="reporting-key", role="developer"), app="reports")[0] == "lax"
    assert policies.select(key=None, app="reports")[0] == "default"
