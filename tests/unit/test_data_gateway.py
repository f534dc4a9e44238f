"""Data routes through the gateway app: datasets (create from rows, read, page, delete) and the labeling
review queue (label, conflict, undo), with fakes (fast)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from genfoundry.core.settings import load_settings
from genfoundry.gateway.app import create_app
from genfoundry.gateway.keys import create_key
from tests.conftest import spam_task


@pytest.fixture()
def gateway(tmp_path):
    app = create_app(load_settings(home=tmp_path, environ={}), builtins=False)
    with TestClient(app) as client:
        rt = app.state.runtime
        secret, _ = create_key(rt.store, name="ann", role="admin")
        client.headers["Authorization"] = f"Bearer {secret}"
        yield client, rt


def _bearer(rt, name: str, role: str) -> dict:
    return {"Authorization": f"Bearer {create_key(rt.store, name=name, role=role)[0]}"}


ROWS = [{"text": "refund please", "label": "billing"}, {"text": "app crashes", "label": "bug"},
        {"text": "card declined", "label": "billing", "split": "test"}]


def test_create_list_get_page_and_delete_a_dataset(gateway):
    client, rt = gateway
    made = client.post("/v1/datasets", json={"name": "tickets", "rows": ROWS, "required": ["text"],
                                              "sensitivity": "confidential", "description": "support tickets"})
    assert made.status_code == 201, made.text
    v1 = made.json()
    assert (v1["ref"], v1["rows"], v1["parent"], v1["lineage"]["source"]) == ("tickets@1", 3, None, "api")
    assert v1["created_by"].startswith("key:")
    v2 = client.post("/v1/datasets", json={"name": "tickets", "rows": ROWS[:2]}).json()
    assert (v2["number"], v2["parent"]) == (2, 1)

    listed = client.get("/v1/datasets").json()
    assert listed["object"] == "list" and [d["name"] for d in listed["data"]] == ["tickets"]
    assert listed["data"][0]["latest"]["number"] == 2 and listed["data"][0]["sensitivity"] == "confidential"
    info = client.get("/v1/datasets/tickets").json()
    assert info["versions"] == [1, 2] and [v["ref"] for v in info["versions_detail"]] == ["tickets@1", "tickets@2"]
    assert info["description"] == "support tickets"

    rows = client.get("/v1/datasets/tickets/rows", params={"version": 1}).json()["data"]
    assert [r["text"] for r in rows] == ["refund please", "app crashes", "card declined"]
    assert all(r["_id"] and r["split"] in ("train", "dev", "test") for r in rows)
    page = client.get("/v1/datasets/tickets/rows", params={"version": 1, "offset": 1, "limit": 1}).json()["data"]
    assert [r["text"] for r in page] == ["app crashes"]
    tests = client.get("/v1/datasets/tickets/rows", params={"version": 1, "split": "test"}).json()["data"]
    assert [r["text"] for r in tests] == ["card declined"]
    assert client.get("/v1/datasets/tickets/rows", params={"limit": 1001}).status_code == 400
    assert client.get("/v1/datasets/tickets/rows", params={"split": "holdout"}).status_code == 400

    assert client.delete("/v1/datasets/tickets").json() == {"deleted": "tickets", "versions": 2}
    assert client.get("/v1/datasets").json()["data"] == []
    assert not (rt.settings.home / "datasets" / "tickets").exists()


def test_bad_rows_are_refused_with_their_numbers_and_nothing_is_written(gateway):
    client, _ = gateway
    rows = [{"text": "fine"}, "not an object", {"text": ""}, {"text": 5}, {"text": "ok", "split": "holdout"}]
    refused = client.post("/v1/datasets", json={"name": "bad", "rows": rows, "required": ["text"]})
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["param"] == "rows" and error["message"].startswith("4 bad rows, nothing imported")
    for fragment in ("line 2: a record must be an object", "line 3: missing 'text'",
                     "line 4: column 'text' is a number here but a string on line 1", "line 5: split 'holdout'"):
        assert fragment in error["message"]
    assert client.get("/v1/datasets").json()["data"] == []
    assert client.post("/v1/datasets", json={"name": "bad", "rows": []}).status_code == 400
    assert client.post("/v1/datasets", json={"name": "no/slash", "rows": ROWS}).json()["error"]["param"] == "name"
    assert client.post("/v1/datasets", json={"name": "x", "rows": ROWS, "colour": 1}).json()["error"]["code"] == \
        "unknown_parameter"


def test_unknown_dataset_and_version_are_404(gateway):
    client, _ = gateway
    for response in (client.get("/v1/datasets/nope"), client.get("/v1/datasets/nope/rows"),
                     client.delete("/v1/datasets/nope")):
        assert response.status_code == 404 and "no dataset named 'nope'" in response.json()["error"]["message"]
    client.post("/v1/datasets", json={"name": "tickets", "rows": ROWS})
    missing = client.get("/v1/datasets/tickets/rows", params={"version": 7})
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "version"


def test_only_admins_delete_datasets(gateway):
    client, rt = gateway
    client.post("/v1/datasets", json={"name": "tickets", "rows": ROWS})
    dev = _bearer(rt, "dev", "developer")
    assert client.delete("/v1/datasets/tickets", headers=dev).status_code == 403
    assert client.post("/v1/datasets", headers=_bearer(rt, "app", "app"),
                       json={"name": "mine", "rows": ROWS}).status_code == 403
    assert client.get("/v1/datasets/tickets", headers=dev).status_code == 200


def test_review_queue_label_conflict_and_undo(gateway):
    client, rt = gateway
    labeling = spam_task(rt.settings, rt.store)
    tasks = client.get("/v1/labeling/tasks").json()["data"]
    assert [t["name"] for t in tasks] == ["spam"] and tasks[0]["result"]["output"] == "spam-labels@1"
    task = client.get("/v1/labeling/tasks/spam").json()
    assert task["labels"] == ["ham", "spam"] and len(task["lfs"]) == 3 and task["result"]["rows"] == 60

    queue = client.get("/v1/labeling/tasks/spam/queue", params={"limit": 3}).json()
    assert queue["labels"] == ["ham", "spam"] and len(queue["data"]) == 3
    first = queue["data"][0]
    assert {"row_id", "text", "votes", "label_probs", "end_probs"} <= set(first)

    made = client.post("/v1/labeling/tasks/spam/reviews", json={"row_id": first["row_id"], "label": "spam"})
    assert made.status_code == 201, made.text
    review = made.json()
    assert (review["label"], review["reviewer"]) == ("spam", "key:ann")
    assert labeling.reviews("spam")[first["row_id"]]["id"] == review["id"]
    after = client.get("/v1/labeling/tasks/spam/queue", params={"limit": 100}).json()["data"]
    assert first["row_id"] not in [r["row_id"] for r in after]

    bob = _bearer(rt, "bob", "developer")  # bob loaded the row before ann labeled it
    stale = client.post("/v1/labeling/tasks/spam/reviews", headers=bob,
                        json={"row_id": first["row_id"], "label": "ham", "expected": None})
    assert stale.status_code == 409
    assert stale.json()["error"]["code"] == "conflict" and "by key:ann" in stale.json()["error"]["message"]
    replaced = client.post("/v1/labeling/tasks/spam/reviews", headers=bob,
                           json={"row_id": first["row_id"], "label": "ham", "expected": review["id"]})
    assert replaced.status_code == 201 and labeling.reviews("spam")[first["row_id"]]["label"] == "ham"

    undone = client.delete(f"/v1/labeling/tasks/spam/reviews/{replaced.json()['id']}", headers=bob)
    assert undone.status_code == 204 and undone.content == b""
    assert labeling.reviews("spam")[first["row_id"]]["label"] == "spam"  # ann's review stands again
    again = client.delete(f"/v1/labeling/tasks/spam/reviews/{replaced.json()['id']}")
    assert again.status_code == 404

    bad = client.post("/v1/labeling/tasks/spam/reviews", json={"row_id": first["row_id"], "label": "maybe",
                                                               "expected": review["id"]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "label"


def test_app_keys_reach_no_data_route(gateway):
    client, rt = gateway
    spam_task(rt.settings, rt.store)
    app = _bearer(rt, "widget", "app")
    row = client.get("/v1/labeling/tasks/spam/queue").json()["data"][0]["row_id"]
    for response in (client.get("/v1/datasets", headers=app), client.get("/v1/datasets/comments", headers=app),
                     client.get("/v1/datasets/comments/rows", headers=app),
                     client.get("/v1/labeling/tasks", headers=app), client.get("/v1/labeling/tasks/spam", headers=app),
                     client.get("/v1/labeling/tasks/spam/queue", headers=app),
                     client.post("/v1/labeling/tasks/spam/reviews", headers=app, json={"row_id": row, "label": "ham"}),
                     client.delete("/v1/labeling/tasks/spam/reviews/0123", headers=app)):
        assert response.status_code == 403 and response.json()["error"]["code"] == "permission_denied"


def test_confidential_datasets_and_their_tasks_are_for_admins(gateway):
    client, rt = gateway
    labeling = spam_task(rt.settings, rt.store)
    assert client.post("/v1/datasets", json={"name": "calls", "rows": ROWS, "sensitivity": "confidential"}).status_code == 201
    labeling.datasets.add_version("comments", labeling.datasets.rows("comments"), lineage={"source": "t"},
                                  sensitivity="restricted")
    dev = _bearer(rt, "dev", "developer")
    # spam-labels was written while comments was internal: it keeps the sensitivity it was made with.
    assert [d["name"] for d in client.get("/v1/datasets", headers=dev).json()["data"]] == ["spam-labels"]
    assert client.get("/v1/labeling/tasks", headers=dev).json()["data"] == []
    for response in (client.get("/v1/datasets/calls", headers=dev), client.get("/v1/datasets/calls/rows", headers=dev),
                     client.get("/v1/labeling/tasks/spam/queue", headers=dev),
                     client.post("/v1/datasets", headers=dev, json={"name": "calls", "rows": ROWS}),
                     client.post("/v1/datasets", headers=dev, json={"name": "x", "rows": ROWS,
                                                                    "sensitivity": "restricted"})):
        assert response.status_code == 403, response.text
    assert "admin keys only" in client.get("/v1/datasets/calls", headers=dev).json()["error"]["message"]
    assert {d["name"] for d in client.get("/v1/datasets").json()["data"]} == {"calls", "comments", "spam-labels"}
    assert client.get("/v1/labeling/tasks/spam/queue").status_code == 200


def test_a_review_of_a_row_the_task_does_not_have_is_404(gateway):
    client, rt = gateway
    spam_task(rt.settings, rt.store)
    made = client.post("/v1/labeling/tasks/spam/reviews", json={"row_id": "0" * 16, "label": "ham"})
    assert made.status_code == 404 and made.json()["error"]["param"] == "row_id"


def test_unknown_and_unrun_tasks(gateway):
    client, rt = gateway
    assert client.get("/v1/labeling/tasks/nope").status_code == 404
    assert client.get("/v1/labeling/tasks/nope/queue").status_code == 404
    assert client.post("/v1/labeling/tasks/nope/reviews", json={"row_id": "r", "label": "ham"}).status_code == 404
    labeling = spam_task(rt.settings, rt.store)
    spec, _ = labeling.get("spam")
    spec.name = "fresh"
    labeling.create(spec)  # made, never run
    unrun = client.get("/v1/labeling/tasks/fresh/queue")
    assert unrun.status_code == 400 and "genfoundry label run fresh" in unrun.json()["error"]["message"]
