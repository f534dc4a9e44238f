"""PII in documents at ingestion: label, redact, tokenize into the vault, and forget."""

from __future__ import annotations

import asyncio

import pytest

from genfoundry.core.errors import ConfigError, InvalidRequest
from genfoundry.guard.documents import CollectionPii, collection_scope
from genfoundry.guard.keys import open_vault
from genfoundry.knowledge.base import KnowledgeBase
from genfoundry.knowledge.stores.lance import LanceVectorStore

LETTER = ("# Customer letter\n\nDear support, my name is Ada Lovelace and my email is ada.lovelace@example.com. "
          "Please refund card 4111 1111 1111 1111 for order 5521.\n")
OTHER = "# Note\n\nAda Lovelace called again about the refund.\n"


@pytest.fixture()
def kb(settings, store, hub):
    kb = KnowledgeBase(settings=settings, store=store, hub=hub, vectors=LanceVectorStore(settings.vectors_dir),
                       pii=CollectionPii(settings, store))
    yield kb
    kb.close()


def _ingest(kb, tmp_path, mode, files):
    folder = tmp_path / mode
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    return asyncio.run(kb.ingest(mode, [folder], create=True, pii=mode))


def _texts(kb, collection):
    return [c for c in kb.vectors.get(collection)]


def test_label_tags_chunks_and_keeps_the_text(kb, tmp_path):
    report = _ingest(kb, tmp_path, "label", {"letter.md": LETTER})
    assert report.pii["PERSON"] >= 1 and report.pii["CREDIT_CARD"] == 1
    [chunk] = _texts(kb, "label")
    assert "Ada Lovelace" in chunk.text
    assert {"pii:PERSON", "pii:EMAIL_ADDRESS", "pii:CREDIT_CARD"} <= set(chunk.tags)


def test_redact_replaces_values_before_they_are_stored(kb, tmp_path, settings):
    _ingest(kb, tmp_path, "redact", {"letter.md": LETTER})
    [chunk] = _texts(kb, "redact")
    assert "Ada Lovelace" not in chunk.text and "<PERSON>" in chunk.text and "<CREDIT_CARD>" in chunk.text
    kb.vectors.optimize("redact")
    raw = b"".join(p.read_bytes() for p in settings.vectors_dir.rglob("*") if p.is_file())
    assert b"ada.lovelace@example.com" not in raw


def test_tokenize_vaults_values_per_collection_and_forget_drops_orphans(kb, tmp_path, settings, store):
    _ingest(kb, tmp_path, "tokenize", {"letter.md": LETTER, "note.md": OTHER})
    chunks = {c.source.rsplit("/", 1)[-1]: c.text for c in _texts(kb, "tokenize")}
    assert "<DOC_PERSON_1>" in chunks["letter.md"] and "<DOC_PERSON_1>" in chunks["note.md"]  # one numbering
    vault = open_vault(settings, store, required=True)
    scope = collection_scope("tokenize")
    assert vault.restore(chunks["letter.md"], scope=scope).count("Ada Lovelace") == 1
    assert "<DOC_EMAIL_ADDRESS_1>" in vault.tokens(scope)
    letter = next(d for d in kb.documents("tokenize") if d.source.endswith("letter.md"))
    asyncio.run(kb.forget_document(letter.id))
    left = vault.tokens(scope)
    assert "<DOC_PERSON_1>" in left  # the note still refers to Ada
    assert "<DOC_EMAIL_ADDRESS_1>" not in left  # only the letter held the email: its value is gone


def test_no_key_or_no_detector_refuses_before_storing(settings, store, hub, monkeypatch):
    monkeypatch.delenv("GENFOUNDRY_VAULT_KEY")
    kb = KnowledgeBase(settings=settings, store=store, hub=hub, vectors=LanceVectorStore(settings.vectors_dir),
                       pii=CollectionPii(settings, store))
    with pytest.raises(ConfigError, match="no vault key"):
        asyncio.run(kb.create_collection("secret", pii="tokenize"))
    bare = KnowledgeBase(settings=settings, store=store, hub=hub, vectors=LanceVectorStore(settings.vectors_dir))
    with pytest.raises(InvalidRequest, match="without a PII detector"):
        asyncio.run(bare.create_collection("labelled", pii="label"))
    with pytest.raises(InvalidRequest, match="pii 'sometimes'"):
        asyncio.run(bare.create_collection("odd", pii="sometimes"))
