"""The vault's key: where it comes from, and when the gateway must refuse to start without it.

The key is 32 random bytes, from ``GENFOUNDRY_VAULT_KEY`` (base64 or hex) or a
key file (``vault_key_file``, default ``home/vault.key``, mode 600). ``genfoundry
up`` makes the default file on a fresh home, as it makes the first admin key.
Without a key the vault does not open: a policy that tokenizes PII then stops
the gateway at start-up instead of storing values in the clear.

Example::

    vault = open_vault(settings, store, required=True)
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from pathlib import Path

from genfoundry.core.errors import ConfigError

__all__ = ["KEY_ENV", "ensure_vault_key", "generate_key_file", "key_file_path", "load_vault_key", "open_vault",
           "vault_holds_values"]

KEY_ENV = "GENFOUNDRY_VAULT_KEY"
KEY_BYTES = 32


def key_file_path(settings) -> Path:
    return Path(settings.vault_key_file) if settings.vault_key_file else settings.home / "vault.key"


def generate_key_file(path: Path) -> Path:
    """Write a new random key, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode() + "\n")
    os.replace(tmp, path)
    return path


def ensure_vault_key(settings) -> Path | None:
    """Make the default key file when no key is set (what `genfoundry up` does); the path when it made one."""
    if load_vault_key(settings) is not None:
        return None
    return generate_key_file(key_file_path(settings))


def _decode(text: str, where: str) -> bytes:
    text = text.strip()
    for decode in (bytes.fromhex, base64.b64decode):
        try:
            key = decode(text)
        except (ValueError, binascii.Error):
            continue
        if len(key) == KEY_BYTES:
            return key
    raise ConfigError(f"{where} is not a {KEY_BYTES}-byte key in base64 or hex; make one with "
                      "`genfoundry guard keygen`")


def load_vault_key(settings, environ=None) -> bytes | None:
    """The key from the environment, else the key file; None when neither is there.

    A key file named by the ``vault_key_file`` setting must exist: a missing one is an error.
    """
    environ = os.environ if environ is None else environ
    if environ.get(KEY_ENV):
        return _decode(environ[KEY_ENV], KEY_ENV)
    path = key_file_path(settings)
    if not path.exists():
        if settings.vault_key_file:
            raise ConfigError(f"the vault key file {path} (vault_key_file) does not exist; refusing to start "
                              "rather than store PII in the clear")
        return None
    return _decode(path.read_text(encoding="utf-8"), f"the vault key file {path}")


def open_vault(settings, store, *, required: bool = False, environ=None):
    """The vault with its key; None (or ConfigError when ``required``) when there is no key."""
    from genfoundry.guard.vault import Vault

    key = load_vault_key(settings, environ)
    if key is None:
        held = _held(store)
        if held:
            raise ConfigError(f"the vault holds {held} values but no vault key is set ({KEY_ENV} or "
                              f"{key_file_path(settings)}); restore the key, or nothing can be revealed")
        if required:
            raise ConfigError(f"no vault key: set {KEY_ENV} or run `genfoundry guard keygen` "
                              f"(it writes {key_file_path(settings)})")
        return None
    return Vault(store, key)


def _held(store) -> int:
    import sqlalchemy as sa

    with store.begin() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(store.tables.vault)).scalar_one()


def vault_holds_values(store) -> bool:
    """Whether the vault has values (then only their own key may open it)."""
    return _held(store) > 0
