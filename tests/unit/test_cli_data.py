"""`genfoundry data | label` on fake models, and `forget --match` reaching datasets."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from genfoundry.cli import app
from tests.conftest import fails, isolate_cli, ok


@pytest.fixture()
def cli(tmp_path, monkeypatch):
    isolate_cli(monkeypatch)
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, ["--home", str(tmp_path / "home"), *args])

    ok(run("models", "add", "fake-chat", "memory", "--provider", "fake", "--alias", "default"))
    ok(run("models", "add", "fake-embed", "memory", "--provider", "fake", "--capability", "embedding",
           "--alias", "default-embedding"))
    return run


def comments(tmp_path, n=120):
    path = tmp_path / "comments.jsonl"
    spam, ham = ["subscribe to my channel", "check out my page"], ["great song", "love this tune"]
    path.write_text("".join(json.dumps({"text": f"{(spam if i % 2 else ham)[i % 4 // 2]} {i}",
                                        "gold": "spam" if i % 2 else "ham"}) + "\n" for i in range(n)))
    return path


def test_data_import_list_show_head_export_diff_delete(cli, tmp_path):
    path = comments(tmp_path)
    v = json.loads(ok(cli("data", "import", str(path), "--name", "c", "--require", "text", "--json")))
    assert v["rows"] == 120 and v["ref"] == "c@1"
    path.write_text(path.read_text() + json.dumps({"text": "new one", "gold": "ham"}) + "\n")
    ok(cli("data", "import", str(path), "--name", "c"))
    assert "c" in ok(cli("data", "list"))
    shown = json.loads(ok(cli("data", "show", "c", "--verify", "--json")))
    assert [x["verified"] for x in shown["versions"]] == [True, True]
    head = ok(cli("data", "head", "c", "-n", "3")).strip().splitlines()
    assert len(head) == 3 and "_id" in json.loads(head[0])
    diff = json.loads(ok(cli("data", "diff", "c", "1", "2", "--json")))
    assert (diff["added"], diff["removed"]) == (1, 0)
    out = tmp_path / "out.csv"
    assert "wrote 121 rows" in ok(cli("data", "export", "c", str(out)))
    ok(cli("data", "delete", "c", "--yes"))
    assert "no dataset named" in fails(cli("data", "show", "c"))


def test_data_import_bad_row_is_reported_by_line(cli, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n{"text": \n')
    assert "line 2: not valid JSON" in fails(cli("data", "import", str(path), "--name", "b"))
    assert "--split" in fails(cli("data", "import", str(path), "--name", "b", "--split", "0.5"))


def test_label_create_run_show_queue_review(cli, tmp_path):
    ok(cli("data", "import", str(comments(tmp_path)), "--name", "c"))
    spec = tmp_path / "spam.yaml"
    spec.write_text("""
name: spam
dataset: c
labels: [ham, spam]
gold_field: gold
lfs:
  - {name: subscribe, type: keyword, label: spam, keywords: [subscribe, check out]}
  - {name: music, type: keyword, label: ham, keywords: [song]}
""")
    assert "2 labeling functions on c@1" in ok(cli("label", "create", str(spec)))
    report = json.loads(ok(cli("label", "run", "spam", "--json")))
    assert report["output"] == "spam-labels@1" and report["coverage"] > 0.7
    assert {lf["name"] for lf in report["lfs"]} == {"subscribe", "music"}
    assert "subscribe" in ok(cli("label", "show", "spam"))
    queue = json.loads(ok(cli("label", "queue", "spam", "--limit", "3", "--json")))
    assert len(queue) == 3
    assert "is spam" in ok(cli("label", "review", "spam", queue[0]["row_id"], "spam", "--reviewer", "ann"))
    assert "by ann" in fails(cli("label", "review", "spam", queue[0]["row_id"], "ham"))
    assert "not in the label space" in fails(cli("label", "review", "spam", queue[1]["row_id"], "eggs"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndataset: c\nlabels: [a, b]\nlfs: [{name: k, type: keyword, label: z, keywords: [q]}]\n")
    assert "not in the label space" in fails(cli("label", "create", str(bad)))


def test_forget_match_reaches_datasets(cli, tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"text": "mail jane.doe@example.com"}\n{"text": "other"}\n')
    ok(cli("data", "import", str(path), "--name", "p"))
    out = ok(cli("forget", "--match", "jane.doe@example.com", "--json"))
    assert json.loads(out)["dataset_rows_removed"] == {"p@1": 1}
    assert "jane" not in ok(cli("data", "head", "p"))


def test_data_from_collection_takes_current_chunks_and_the_clearance(cli, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Refunds\n\nRefunds take five days.\n")
    (docs / "b.md").write_text("# Hours\n\nWe open at nine.\n")
    ok(cli("ingest", str(docs), "--collection", "kb", "--clearance", "confidential"))
    v = json.loads(ok(cli("data", "from-collection", "-c", "kb", "--name", "kb-chunks", "--json")))
    assert v["lineage"] == {"source": "collection", "collection": "kb", "chunks": 2} and v["rows"] == 2
    rows = [json.loads(line) for line in ok(cli("data", "head", "kb-chunks")).strip().splitlines()]
    assert {r["source"].rsplit("/", 1)[-1] for r in rows} == {"a.md", "b.md"}
    assert all(r["collection"] == "kb" and r["chunk_id"] and r["text"] for r in rows)
    assert json.loads(ok(cli("data", "show", "kb-chunks", "--json")))["sensitivity"] == "confidential"
    assert "collection 'nope' does not exist" in fails(cli("data", "from-collection", "-c", "nope", "--name", "x"))
