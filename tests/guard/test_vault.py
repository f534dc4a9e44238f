"""The vault: AES-GCM at rest, stable tokens, audited reveals, and the key's rules."""

from __future__ import annotations

import base64

import pytest

from genfoundry.core import audit
from genfoundry.core.errors import ConfigError, NotFound
from genfoundry.guard.keys import generate_key_file, load_vault_key, open_vault
from genfoundry.guard.vault import Vault

KEY = bytes(range(32))


def test_tokens_are_stable_per_scope_and_restore(store):
    vault = Vault(store, KEY)
    a = vault.tokenize("PERSON", "Ada Lovelace", scope="c1")
    assert a == "<PERSON_1>" and vault.tokenize("PERSON", "Ada Lovelace", scope="c1") == a
    assert vault.tokenize("PERSON", "Grace Hopper", scope="c1") == "<PERSON_2>"
    assert vault.tokenize("PERSON", "Grace Hopper", scope="c2") == "<PERSON_1>"
    assert vault.restore("Dear <PERSON_1> and <PERSON_2>, not <PERSON_9>", scope="c1") == \
        "Dear Ada Lovelace and Grace Hopper, not <PERSON_9>"


def test_values_are_encrypted_on_disk(settings, store):
    vault = Vault(store, KEY)
    vault.tokenize("EMAIL_ADDRESS", "secret.person@example.com", scope="c1")
    store.engine.dispose()
    raw = b"".join(p.read_bytes() for p in settings.home.glob("genfoundry.db*"))
    assert b"secret.person@example.com" not in raw and b"secret.person" not in raw


def test_reveal_is_audited_and_a_wrong_key_fails_clearly(store):
    Vault(store, KEY).tokenize("PERSON", "Ada Lovelace", scope="c1")
    assert Vault(store, KEY).reveal("<PERSON_1>", scope="c1", actor="key:k1") == "Ada Lovelace"
    [entry] = audit.entries(store, action="vault.reveal")
    assert entry.actor == "key:k1" and "Ada" not in str(entry.details)
    with pytest.raises(ConfigError, match="does not decrypt"):
        Vault(store, bytes(32)).reveal("<PERSON_1>", scope="c1", actor="x")
    with pytest.raises(NotFound):
        Vault(store, KEY).reveal("<PERSON_7>", scope="c1", actor="x")


def test_forget_removes_a_scope(store):
    vault = Vault(store, KEY)
    vault.tokenize("PERSON", "Ada", scope="c1")
    vault.tokenize("PERSON", "Bob", scope="c2")
    assert vault.forget("c1") == 1 and vault.tokens("c1") == [] and vault.tokens("c2") == ["<PERSON_1>"]


def test_key_from_env_file_or_nowhere(settings, store):
    assert load_vault_key(settings, environ={}) is None
    assert open_vault(settings, store, environ={}) is None
    with pytest.raises(ConfigError, match="no vault key"):
        open_vault(settings, store, required=True, environ={})
    assert load_vault_key(settings, environ={"GENFOUNDRY_VAULT_KEY": KEY.hex()}) == KEY
    assert load_vault_key(settings, environ={"GENFOUNDRY_VAULT_KEY": base64.b64encode(KEY).decode()}) == KEY
    with pytest.raises(ConfigError, match="not a 32-byte key"):
        load_vault_key(settings, environ={"GENFOUNDRY_VAULT_KEY": "short"})
    path = generate_key_file(settings.home / "vault.key")
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(load_vault_key(settings, environ={})) == 32


def test_a_named_key_file_must_exist_and_held_values_need_their_key(settings, store):
    with pytest.raises(ConfigError, match="does not exist"):
        load_vault_key(settings.model_copy(update={"vault_key_file": settings.home / "nope.key"}), environ={})
    Vault(store, KEY).tokenize("PERSON", "Ada", scope="c1")
    with pytest.raises(ConfigError, match="holds 1 values but no vault key"):
        open_vault(settings, store, environ={})
