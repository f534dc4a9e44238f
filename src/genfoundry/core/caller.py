"""Who is asking: the least a lower layer needs to know of an API key.

The guard picks policies by key and role, the audit log names the actor, the
knowledge base checks access: none of them needs the gateway's key type (budgets,
hashes, limits). They take a :class:`Caller`; the gateway's ``ApiKey`` is one.

Example::

    def actor(caller: Caller | None) -> str:
        return f"key:{caller.id}" if caller else "local"
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["Caller"]


@runtime_checkable
class Caller(Protocol):
    """An identified caller: its key id, the key's name, and its role (admin, developer or app)."""

    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def role(self) -> str: ...
