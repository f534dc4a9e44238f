"""PII in documents at ingestion, per collection: label it, redact it, or tokenize it into the vault.

The knowledge base calls this through its ``PiiScreen`` hook for collections
whose ``pii`` is not ``off``:

- ``label``: chunks keep their text and get tags ``pii:PERSON`` etc.;
- ``redact``: each value becomes ``<PERSON>`` before anything is embedded or stored;
- ``tokenize``: each value becomes a vault token, numbered across the
  collection (``collection:NAME`` scope), so grounded answers can be restored
  for callers allowed to see the originals. Forgetting a document drops the
  vaulted values no other document of the collection refers to.

Example::

    kb = KnowledgeBase(settings=settings, store=store, hub=hub, pii=CollectionPii(settings, store))
"""

from __future__ import annotations

from collections.abc import Callable

from genfoundry.guard.keys import open_vault
from genfoundry.guard.pii import PiiDetector, redact

__all__ = ["CollectionPii", "DOC_TOKEN_PREFIX", "collection_scope", "neutralise_tokens"]


DOC_TOKEN_PREFIX = "DOC_"


def collection_scope(collection: str) -> str:
    return f"collection:{collection}"


def neutralise_tokens(text: str) -> str:
    """Literal token text (``<PERSON_1>``) as ``‹PERSON_1›``: readable, never taken for a vault token."""
    from genfoundry.guard.vault import TOKEN_PATTERN

    return TOKEN_PATTERN.sub(lambda m: f"\u2039{m.group(0)[1:-1]}\u203a", text)


class CollectionPii:
    def __init__(self, settings, store):
        self.settings = settings
        self.store = store
        self._detector: PiiDetector | None = None
        self._vault = None

    def vault(self):
        if self._vault is None:
            self._vault = open_vault(self.settings, self.store, required=True)
        return self._vault

    def for_collection(self, collection) -> Callable[[str], tuple[str, list[str]]]:
        mode = collection.pii
        vault = self.vault() if mode == "tokenize" else None  # no key: refuse now, before ingesting
        self._detector = self._detector or PiiDetector()
        detector, scope = self._detector, collection_scope(collection.name)

        def screen(text: str) -> tuple[str, list[str]]:
            # Text that looks like a vault token (<PERSON_1>) is not one: written into a document, it
            # could otherwise be "restored" to a value the vault holds for someone else's document.
            text = neutralise_tokens(text)
            findings = detector.check(text)
            kinds = sorted({f.kind for f in findings})
            if findings and mode in ("redact", "tokenize"):
                # Documents' tokens are <DOC_PERSON_1>: a rag: question's own <PERSON_1> never shares a name.
                text = redact(text, findings, actions=dict.fromkeys(kinds, mode), vault=vault, scope=scope,
                              token_prefix=DOC_TOKEN_PREFIX if mode == "tokenize" else "").text
            return text, kinds
        return screen

    def forget(self, collection: str, tokens: list[str]) -> None:
        self.vault().forget(collection_scope(collection), tokens)

    def drop(self, collection: str) -> int:
        """Delete every vaulted value of a collection (it is being deleted); returns how many went."""
        from genfoundry.guard.keys import load_vault_key

        if load_vault_key(self.settings) is None:
            return 0  # no key, no vault: nothing was ever tokenized
        return self.vault().forget(collection_scope(collection))

    def find(self, collection: str, needle: str) -> list[str]:
        """The tokens whose vaulted value contains ``needle`` (any case): forgetting a value must reach the
        documents that hold it only as a token."""
        from genfoundry.guard.keys import load_vault_key

        if load_vault_key(self.settings) is None:
            return []
        needle = needle.lower()
        return sorted(t for t, v in self.vault().values(collection_scope(collection)).items() if needle in v.lower())

    def restore_map(self, collection: str, texts: list[str]) -> dict[str, str]:
        """Token -> value for the tokens of a collection that appear in ``texts``."""
        from genfoundry.guard.vault import TOKEN_PATTERN

        wanted = {m.group(0) for t in texts for m in TOKEN_PATTERN.finditer(t)}
        if not wanted:
            return {}
        return {t: v for t, v in self.vault().values(collection_scope(collection)).items() if t in wanted}
