"""API keys: shown once, stored as hashes, revocable, with roles and limits."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from genfoundry.core.errors import AuthenticationError, InvalidRequest, NotFound
from genfoundry.gateway.keys import (
    KEY_PREFIX,
    ApiKey,
    create_key,
    ensure_admin_key,
    list_keys,
    revoke_key,
    verify_key,
)


def test_create_and_verify(store):
    secret, key = create_key(store, name="support-bot", role="app", rpm_limit=60,
                             token_budget=1000, budget_period="day", allowed_models=["fake-chat"])
    assert secret.startswith(KEY_PREFIX) and len(secret) > 30
    assert secret.startswith(key.prefix)
    verified = verify_key(store, secret)
    assert verified == key
    assert (verified.role, verified.rpm_limit, verified.token_budget, verified.budget_period) == \
        ("app", 60, 1000, "day")
    assert verified.allowed_models == ["fake-chat"] and verified.active


def test_each_key_gets_its_own_secret(store):
    first, a = create_key(store, name="same")
    second, b = create_key(store, name="same")
    assert first != second and a.id != b.id
    assert verify_key(store, second).id == b.id


def test_secret_is_stored_nowhere(store):
    secret, _ = create_key(store, name="k")
    random_part = secret.split("-", 2)[2]  # after "gf-" and the hex id
    with store.begin() as conn:
        rows = conn.execute(sa.select(store.tables.api_keys)).all()
    assert len(rows) == 1
    for value in rows[0]:
        assert secret not in str(value)
        assert random_part not in str(value)


def test_wrong_or_missing_secret(store):
    secret, _ = create_key(store, name="k")
    with pytest.raises(AuthenticationError, match="invalid API key"):
        verify_key(store, secret + "x")
    for missing in (None, ""):
        with pytest.raises(AuthenticationError, match="missing API key") as info:
            verify_key(store, missing)
        assert info.value.status_code == 401


def test_revoke_by_name(store):
    secret, key = create_key(store, name="leaked")
    revoked = revoke_key(store, "leaked")
    assert revoked.id == key.id and not revoked.active and revoked.revoked_at is not None
    with pytest.raises(AuthenticationError, match="revoked"):
        verify_key(store, secret)
    assert list_keys(store) == []
    assert [k.id for k in list_keys(store, include_revoked=True)] == [key.id]


def test_revoke_by_id_and_twice(store):
    _, key = create_key(store, name="k")
    assert revoke_key(store, key.id).id == key.id
    with pytest.raises(NotFound, match="keys list"):
        revoke_key(store, key.id)


def test_revoke_ambiguous_name_needs_id(store):
    create_key(store, name="twin")
    create_key(store, name="twin")
    with pytest.raises(InvalidRequest, match="by id"):
        revoke_key(store, "twin")
    assert len(list_keys(store)) == 2


@pytest.mark.parametrize("kwargs, message", [
    ({"role": "root"}, "role"),
    ({"budget_period": "week"}, "budget period"),
    ({"rpm_limit": 0}, "rpm limit"),
    ({"token_budget": -5}, "token budget"),
])
def test_invalid_key_settings(store, kwargs, message):
    with pytest.raises(InvalidRequest, match=message):
        create_key(store, name="bad", **kwargs)
    assert list_keys(store, include_revoked=True) == []


def test_ensure_admin_key_creates_once(store):
    secret = ensure_admin_key(store)
    assert secret.startswith("gf-") and verify_key(store, secret).role == "admin"
    assert ensure_admin_key(store) is None
    assert [k.role for k in list_keys(store)] == ["admin"]


def test_ensure_admin_key_replaces_a_revoked_admin(store):
    create_key(store, name="old-admin", role="admin")
    revoke_key(store, "old-admin")
    secret = ensure_admin_key(store)
    assert verify_key(store, secret).name == "admin"  # a working admin key again
    assert [k.role for k in list_keys(store)] == ["admin"]


def key_with(role: str, allowed: list[str] | None) -> ApiKey:
    return ApiKey(id="id", name="n", prefix="gf-", role=role, rpm_limit=None, token_budget=None,
                  budget_period="month", allowed_models=allowed, created_at=None, revoked_at=None)


def test_may_use():
    limited = key_with("app", ["fake-chat"])
    assert limited.may_use("fake-chat")
    assert not limited.may_use("fake-embed")
    assert key_with("app", None).may_use("anything")
    assert key_with("app", []).may_use("anything")
    # Only app keys are limited to models.
    assert key_with("developer", ["fake-chat"]).may_use("fake-embed")
    assert key_with("admin", ["fake-chat"]).may_use("fake-embed")
