"""The PII vault: values replaced by tokens such as ``<PERSON_1>``, kept encrypted at rest.

Each value is encrypted with AES-256-GCM under the vault key (see
``guard.keys``), with a fresh 96-bit nonce, and the scope and token bound in
as associated data, so a ciphertext copied to another row does not decrypt.
Equal values get the same token within a scope through a keyed fingerprint
(HMAC-SHA256 under a key derived from the vault key): the vault can find a
value again without storing it in the clear.

Example::

    vault = Vault(store, key)
    token = vault.tokenize("PERSON", "Ada Lovelace", scope="chatcmpl-1")   # '<PERSON_1>'
    vault.restore(f"Dear {token}", scope="chatcmpl-1")                     # 'Dear Ada Lovelace'
    vault.reveal(token, scope="chatcmpl-1", actor="key:k1")                # audited
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from genfoundry.core import audit
from genfoundry.core.errors import ConfigError, NotFound
from genfoundry.core.store import Store, utcnow

__all__ = ["TOKEN_PATTERN", "Vault"]

TOKEN_PATTERN = re.compile(r"<([A-Z][A-Z_]*)_(\d+)>")


class Vault:
    """Tokens and their encrypted values, per scope (a call id, or ``collection:NAME``)."""

    def __init__(self, store: Store, key: bytes):
        if len(key) != 32:
            raise ConfigError("the vault key must be 32 bytes")
        self.store = store
        self.table = store.tables.vault
        self._aead = AESGCM(key)
        self._mac_key = hashlib.sha256(b"genfoundry-vault-fingerprint" + key).digest()

    def _fingerprint(self, entity: str, value: str, scope: str) -> str:
        return hmac.new(self._mac_key, f"{scope}\0{entity}\0{value}".encode(), hashlib.sha256).hexdigest()

    def tokenize(self, entity: str, value: str, *, scope: str) -> str:
        """The token for ``value`` in ``scope``: the existing one, or a new ``<ENTITY_n>``."""
        fingerprint = self._fingerprint(entity, value, scope)
        t = self.table
        with self.store.begin() as conn:
            self.store.lock(conn, f"vault:{scope}")  # numbering is read-then-write, on every replica
            found = conn.execute(sa.select(t.c.token).where(t.c.scope == scope, t.c.fingerprint == fingerprint)).first()
            if found:
                return found[0]
            taken = conn.execute(sa.select(sa.func.count()).select_from(t)
                                 .where(t.c.scope == scope, t.c.entity == entity)).scalar_one()
            token = f"<{entity}_{taken + 1}>"
            nonce = os.urandom(12)
            ciphertext = self._aead.encrypt(nonce, value.encode(), f"{scope}\0{token}".encode())
            conn.execute(t.insert().values(scope=scope, token=token, entity=entity, fingerprint=fingerprint,
                                           nonce=nonce, ciphertext=ciphertext, created_at=utcnow()))
        return token

    def values(self, scope: str) -> dict[str, str]:
        """Every token of a scope with its value (for restoring answers; not audited, see ``reveal``)."""
        t = self.table
        with self.store.begin() as conn:
            rows = conn.execute(sa.select(t.c.token, t.c.nonce, t.c.ciphertext).where(t.c.scope == scope)).all()
        return {token: self._decrypt(scope, token, nonce, ct) for token, nonce, ct in rows}

    def _decrypt(self, scope: str, token: str, nonce: bytes, ciphertext: bytes) -> str:
        try:
            return self._aead.decrypt(nonce, ciphertext, f"{scope}\0{token}".encode()).decode()
        except InvalidTag:
            raise ConfigError(f"vault entry {token} of {scope} does not decrypt: the vault key is not the one "
                              "it was stored with, or the entry was altered") from None

    def check_key(self) -> int:
        """Decrypt one stored value of each scope family (at most 20 values): the number checked, or a
        ConfigError when the key is not the one they were stored with."""
        t = self.table
        with self.store.begin() as conn:
            rows = conn.execute(sa.select(t.c.scope, t.c.token, t.c.nonce, t.c.ciphertext).limit(20)).all()
        for scope, token, nonce, ciphertext in rows:
            self._decrypt(scope, token, nonce, ciphertext)
        return len(rows)

    def restore(self, text: str, *, scope: str) -> str:
        """``text`` with every token of ``scope`` replaced by its value (unknown tokens stay)."""
        if not TOKEN_PATTERN.search(text):
            return text
        values = self.values(scope)
        return TOKEN_PATTERN.sub(lambda m: values.get(m.group(0), m.group(0)), text)

    def reveal(self, token: str, *, scope: str, actor: str) -> str:
        """One value, for a person who may see it; every reveal is written to the audit log."""
        t = self.table
        with self.store.begin() as conn:
            row = conn.execute(sa.select(t.c.entity, t.c.nonce, t.c.ciphertext)
                               .where(t.c.scope == scope, t.c.token == token)).first()
        if row is None:
            raise NotFound(f"no vault token {token} in scope {scope!r}")
        value = self._decrypt(scope, token, row.nonce, row.ciphertext)
        audit.record(self.store, action="vault.reveal", actor=actor, target=f"{scope} {token}",
                     details={"entity": row.entity})
        return value

    def tokens(self, scope: str) -> list[str]:
        t = self.table
        with self.store.begin() as conn:
            return [r[0] for r in conn.execute(sa.select(t.c.token).where(t.c.scope == scope).order_by(t.c.token))]

    def forget(self, scope: str, tokens: list[str] | None = None) -> int:
        """Delete a scope's entries (or only ``tokens`` of it); returns how many went."""
        t = self.table
        query = t.delete().where(t.c.scope == scope)
        if tokens is not None:
            query = query.where(t.c.token.in_(tokens))
        with self.store.begin() as conn:
            return conn.execute(query).rowcount
