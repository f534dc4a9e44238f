"""The knowledge base through the real gateway: the sample knowledge base uploaded over
HTTP, grounded answers from the real Gemma through the official openai client (with
citations), search, bad input, access rules and forgetting."""

from __future__ import annotations

import httpx
import openai
import pytest

from genfoundry.gateway.keys import create_key
from genfoundry.knowledge import SAMPLE_DOCS

pytestmark = pytest.mark.integration

COLLECTION = "kb-sample"


@pytest.fixture(scope="module")
def http(gateway):
    with httpx.Client(base_url=gateway.base_url.removesuffix("/v1"), timeout=600,
                      headers={"Authorization": f"Bearer {gateway.key}"}) as client:
        yield client


@pytest.fixture(scope="module")
def sample(http):
    """The sample knowledge base, uploaded once for the module."""
    assert http.post("/v1/collections", json={"name": COLLECTION, "clearance": "public"}).status_code == 201
    files = sorted(p for p in SAMPLE_DOCS.rglob("*") if p.is_file())
    response = http.post(f"/v1/collections/{COLLECTION}/documents",
                         files=[("files", (p.name, p.read_bytes())) for p in files])
    assert response.status_code == 200, response.text
    return files, response.json()


@pytest.fixture(scope="module")
def client(gateway):
    return openai.OpenAI(base_url=gateway.base_url, api_key=gateway.key, max_retries=0)


def test_upload_ingests_every_sample_file(sample, http):
    files, report = sample
    assert len(report["added"]) == len(files) and report["failed"] == []
    assert report["chunks"] > len(files)
    documents = http.get(f"/v1/collections/{COLLECTION}/documents").json()["data"]
    assert {d["source"] for d in documents} == {f"upload:{p.name}" for p in files}
    # The same files again: nothing to do.
    again = http.post(f"/v1/collections/{COLLECTION}/documents",
                      files=[("files", (p.name, p.read_bytes())) for p in files]).json()
    assert len(again["skipped"]) == len(files) and again["chunks"] == 0


def test_grounded_answer_with_citations(sample, client):
    reply = client.chat.completions.create(
        model=f"rag:{COLLECTION}", messages=[{"role": "user", "content": "How long is the warranty on backpacks?"}])
    assert "10 years" in reply.choices[0].message.content
    citations = reply.model_extra["citations"]
    assert citations and citations[0]["source"] == "upload:warranty.md"
    assert {"index", "document_id", "chunk_id", "heading", "page", "text"} <= set(citations[0])
    assert reply.usage.prompt_tokens > 0


def test_grounded_answer_streams_then_cites(sample, client):
    stream = client.chat.completions.create(
        model=f"rag:{COLLECTION}", stream=True,
        messages=[{"role": "user", "content": "What order value qualifies for free standard shipping?"}])
    text, citations = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text.append(chunk.choices[0].delta.content)
        if chunk.model_extra.get("citations") is not None:
            citations = chunk.model_extra["citations"]
    assert "".join(text).strip()
    assert citations is not None and any(c["source"] == "upload:shipping.md" for c in citations)


def test_unrelated_question_is_not_guessed(sample, client):
    reply = client.chat.completions.create(
        model=f"rag:{COLLECTION}", messages=[{"role": "user", "content": "Who painted the Mona Lisa?"}])
    assert reply.choices[0].message.content == "I could not find this in the documents."
    assert reply.model_extra["citations"] == []


def test_search_and_answer_routes(sample, http):
    hits = http.post(f"/v1/collections/{COLLECTION}/search",
                     json={"query": "returns window days", "mode": "hybrid", "limit": 3}).json()["data"]
    assert len(hits) == 3 and hits[0]["source"] == "upload:returns.md"
    answer = http.post(f"/v1/collections/{COLLECTION}/answers",
                       json={"question": "What is the hourly workshop rate for repairs?"}).json()
    assert "35" in answer["text"] and answer["citations"]


def test_bad_input_gets_clear_errors(sample, http, client):
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="rag:nope", messages=[{"role": "user", "content": "hi"}])
    long = http.post(f"/v1/collections/{COLLECTION}/search", json={"query": "x" * 100_000})
    assert long.status_code == 400 and "error" in long.json()
    bad = http.post(f"/v1/collections/{COLLECTION}/documents", files=[
        ("files", ("broken.pdf", b"%PDF-1.7 this is not really a pdf")),
        ("files", ("binary.txt", bytes(range(256)) * 8)),
        ("files", ("empty.md", b"")),
        ("files", ("fine.md", b"# Fine\nA perfectly fine note about canoes."))])
    report = bad.json()
    assert bad.status_code == 200 and report["added"] == ["upload:fine.md"]
    assert {f["source"] for f in report["failed"]} == {"upload:broken.pdf", "upload:binary.txt", "upload:empty.md"}
    assert all(f["error"] for f in report["failed"])
    assert http.get("/health").status_code == 200


def test_access_rules(sample, gateway, http):
    store = gateway.store()
    app_secret, _ = create_key(store, name="kb-app", role="app")
    store.close()
    headers = {"Authorization": f"Bearer {app_secret}"}
    assert http.post(f"/v1/collections/{COLLECTION}/search", json={"query": "tents"},
                     headers=headers).status_code == 200
    denied = http.post(f"/v1/collections/{COLLECTION}/documents", headers=headers,
                       files=[("files", ("x.md", b"# X\nsomething"))])
    assert denied.status_code == 403 and denied.json()["error"]["type"] == "permission_error"
    assert http.post("/v1/forget", json={"match": "tents"}, headers=headers).status_code == 403


def test_forget_leaves_nothing_to_find(sample, http, client):
    secret = "# Vault\nThe staff vault code is quokka-5521, known to few.\n"
    assert http.post(f"/v1/collections/{COLLECTION}/documents",
                     files=[("files", ("vault.md", secret.encode()))]).json()["added"] == ["upload:vault.md"]
    hits = http.post(f"/v1/collections/{COLLECTION}/search", json={"query": "staff vault code"}).json()["data"]
    assert "quokka-5521" in hits[0]["text"]
    report = http.post("/v1/forget", json={"match": "QUOKKA-5521"}).json()
    assert len(report["documents"]) == 1 and report["chunks"] >= 1
    for mode in ("dense", "bm25", "hybrid"):
        hits = http.post(f"/v1/collections/{COLLECTION}/search",
                         json={"query": "staff vault code quokka-5521", "mode": mode, "limit": 50}).json()["data"]
        assert all("quokka" not in h["text"].lower() for h in hits), mode
    reply = client.chat.completions.create(
        model=f"rag:{COLLECTION}", messages=[{"role": "user", "content": "What is the staff vault code?"}])
    assert "quokka" not in reply.choices[0].message.content.lower()
    assert all("quokka" not in c["text"].lower() for c in reply.model_extra["citations"])
