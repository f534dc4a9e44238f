"""The console in a real browser (Debian's chromium, driven by Playwright) against a real gateway on the
built-in models: sign in, chat, rate, open the trace, upload and forget a document, grounded chat with
citations, the cost page, and bad input; and the Review page of a labeling task and the Datasets page, on
gateways that load no model. Screenshots go to ``test-screenshots/`` (or
``GENFOUNDRY_SCREENSHOTS``) for a person to look at.

CI sets ``GENFOUNDRY_REQUIRE_BROWSER=1``, so a missing browser fails there instead of skipping."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from genfoundry.core.settings import load_settings
from genfoundry.core.store import Store
from genfoundry.data.datasets import Datasets
from genfoundry.data.tasks import Labeling
from genfoundry.gateway.keys import create_key
from genfoundry.testing.servers import start_gateway, stop_gateway
from tests.conftest import spam_task

CHROMIUM = os.environ.get("GENFOUNDRY_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(os.environ.get("GENFOUNDRY_SCREENSHOTS", "test-screenshots"))
pytestmark = pytest.mark.integration
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def _require_browser():
    missing = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = "the playwright package is not installed"
    if missing is None and not shutil.which(CHROMIUM):
        missing = f"no chromium at {CHROMIUM} (apt-get install chromium)"
    if missing:
        if os.environ.get("GENFOUNDRY_REQUIRE_BROWSER") == "1":
            pytest.fail(missing)
        pytest.skip(missing)


@pytest.fixture(scope="module")
def browser():
    _require_browser()
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=shutil.which(CHROMIUM), args=ARGS)
        yield instance
        instance.close()


@pytest.fixture()
def page(browser, gateway):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(90_000)
    errors: list[str] = []
    tab.on("pageerror", lambda e: errors.append(str(e)))
    tab.goto(f"http://127.0.0.1:{gateway.port}/")
    tab.fill("#api-key", gateway.key)
    tab.click("#login-form button")
    tab.wait_for_selector("#chat-model option", state="attached")
    yield tab
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def _api(gateway, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, f"http://127.0.0.1:{gateway.port}{path}",
                         headers={"Authorization": f"Bearer {gateway.key}"}, timeout=120, **kwargs)


def test_a_wrong_key_is_refused_with_the_gateways_message(browser, gateway):
    _require_browser()
    tab = browser.new_page()
    tab.goto(f"http://127.0.0.1:{gateway.port}/console")
    tab.fill("#api-key", "gf-not-a-key")
    tab.click("#login-form button")
    tab.wait_for_selector("#login-error:not(:empty)")
    assert "invalid" in tab.text_content("#login-error").lower() or "key" in tab.text_content("#login-error")
    assert tab.is_hidden("#nav")
    tab.close()


def test_chat_feedback_and_the_trace_of_the_answer(page, gateway):
    page.fill("#chat-max", "24")
    page.fill("#chat-input", "Name three primary colours.")
    page.click("#chat-send")
    page.wait_for_selector("[data-testid=trace-link]")
    answer = page.text_content("[data-testid=assistant]")
    assert answer.strip()
    page.screenshot(path=str(SHOTS / "console-chat.png"), full_page=True)

    page.click("[data-rating='4']")
    page.wait_for_selector("text=rated 4/5")
    feedback = _api(gateway, "GET", "/admin/feedback?rating=4").json()["data"]
    assert feedback and feedback[0]["rating"] == 4 and feedback[0]["model"] == "gemma-3-270m"

    page.click("[data-testid=trace-link]")
    page.wait_for_selector("[data-testid=span-tree] .span-row")
    names = page.locator("[data-testid=span-tree] .span-row > span:first-child").all_text_contents()
    names = [n.strip() for n in names]
    assert names[0] == "POST /v1/chat/completions"
    for expected in ("gateway.auth", "guard.input", "guard.rail input.injection", "chat gemma-3-270m",
                     "guard.output"):
        assert expected in names, names
    page.locator(".span-row", has_text="chat gemma-3-270m").click()
    attributes = page.text_content("#span-attrs")
    assert '"gen_ai.usage.output_tokens"' in attributes and '"gen_ai.request.model": "gemma-3-270m"' in attributes
    page.screenshot(path=str(SHOTS / "console-trace.png"), full_page=True)


def test_upload_ask_with_citations_and_forget(page, gateway, tmp_path):
    name = f"handbook-{uuid.uuid4().hex[:6]}"
    page.goto(f"http://127.0.0.1:{gateway.port}/console#/collections")
    page.fill("#col-name", name)
    page.click("#col-create button")
    page.wait_for_selector("#upload-files")
    doc = tmp_path / "leave.md"
    doc.write_text("# Holiday policy\n\nStaff get 25 days of paid leave per year. Up to 5 unused days carry "
                   "over to the next year.\n")
    page.set_input_files("#upload-files", str(doc))
    page.click("#upload-button")
    report = page.wait_for_selector("[data-testid=ingest-report]").text_content()
    assert "added 1" in report
    page.wait_for_selector("#doc-list td:has-text('leave.md')")
    page.screenshot(path=str(SHOTS / "console-collections.png"), full_page=True)

    page.goto(f"http://127.0.0.1:{gateway.port}/console#/chat")
    page.wait_for_selector(f"#chat-model option[value='rag:{name}']", state="attached")
    page.select_option("#chat-model", f"rag:{name}")
    page.fill("#chat-input", "How many days of paid leave do staff get?")
    page.click("#chat-send")
    page.wait_for_selector("[data-testid=citations]")
    assert "Holiday policy" in page.text_content("[data-testid=citations]")
    page.screenshot(path=str(SHOTS / "console-grounded-chat.png"), full_page=True)

    page.goto(f"http://127.0.0.1:{gateway.port}/console#/collections/{name}")
    page.wait_for_selector("[data-forget]")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("[data-forget]")
    page.wait_for_selector("#doc-list >> text=No documents yet.")
    assert _api(gateway, "GET", f"/v1/collections/{name}/documents").json()["data"] == []


def test_cost_page_charts_and_a_bad_date_range(page, gateway):
    _api(gateway, "POST", "/v1/chat/completions",
         json={"model": "default", "max_tokens": 8, "messages": [{"role": "user", "content": "Hello"}]})
    page.goto(f"http://127.0.0.1:{gateway.port}/console#/cost")
    page.wait_for_selector("svg.chart")
    assert int(page.text_content("[data-testid=kpi-requests]").replace(",", "")) >= 1
    assert page.text_content("[data-testid=kpi-cost]").startswith("$")
    assert page.locator("svg.chart").count() == 4
    assert page.locator("#cost-table td:has-text('gemma-3-270m')").count() >= 1
    page.screenshot(path=str(SHOTS / "console-cost.png"), full_page=True)

    page.fill("#cost-filter input[name=since]", "2026-02-01")
    page.fill("#cost-filter input[name=until]", "2026-01-01")
    page.click("#cost-filter button")
    assert "invalid date range" in page.wait_for_selector("[data-testid=error]").text_content()


def test_the_other_pages_render(page, gateway):
    from genfoundry.core import audit

    store = gateway.store()  # a content-safety refusal, as the guard writes it: the page names the category
    audit.record(store, action="guard.request", target="chatcmpl-safety", details={
        "policy": "default", "outcome": "blocked", "model": "gemma-3-270m", "decisions": [
            {"stage": "input", "rail": "safety", "action": "block", "dry_run": False,
             "findings": [{"kind": "weapons", "score": 0.97}]}]})
    store.close()
    page.goto(f"http://127.0.0.1:{gateway.port}/console#/guard")
    page.wait_for_selector("#guard-list td:has-text('input.safety: block (weapons)')")
    for name, selector in (("traces", "#trace-list table"), ("guard", "#guard-list table"),
                           ("feedback", "#fb-list table"), ("drift", "#alert-list"), ("evals", "#eval-list")):
        page.goto(f"http://127.0.0.1:{gateway.port}/console#/{name}")
        page.wait_for_selector(selector)
        page.screenshot(path=str(SHOTS / f"console-{name}.png"), full_page=True)
    page.goto(f"http://127.0.0.1:{gateway.port}/console#/traces/{'0' * 32}")
    assert "no trace" in page.wait_for_selector("[data-testid=error]", timeout=15_000).text_content()


@pytest.fixture(scope="module")
def review_gateway(tmp_path_factory):
    """A gateway whose home holds a labeling task, made and run before it starts: the page needs no model."""
    _require_browser()
    home = tmp_path_factory.mktemp("gf-review")

    def make_task():
        settings = load_settings(home=home, environ={})
        settings.ensure_home()
        store = Store.open(settings.resolved_database_url)
        try:
            spam_task(settings, store, task="spam")
        finally:
            store.close()

    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API may hold an event loop in this thread
        pool.submit(make_task).result()
    gw = start_gateway(home, preload=())
    yield gw
    stop_gateway(gw)


def _reviews(gw) -> dict[str, dict]:
    """The standing review of each row of the task, as the store holds them."""
    store = gw.store()
    try:
        return Labeling(Datasets(load_settings(home=gw.home, environ={}), store), store).reviews("spam")
    finally:
        store.close()


def _shown(tab) -> str:
    return tab.get_attribute("#review-row .review", "data-row-id")


def _wait_for_row(tab, *, other_than: str | None = None, row: str | None = None) -> str:
    if row is not None:
        tab.wait_for_selector(f"#review-row .review[data-row-id='{row}']")
    else:
        tab.wait_for_function("old => { const el = document.querySelector('#review-row .review');"
                              " return el && el.dataset.rowId !== old; }", arg=other_than)
    return _shown(tab)


def test_review_page_labels_skips_undoes_and_reports_a_conflict(browser, review_gateway):
    gw = review_gateway
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    errors: list[str] = []
    tab.on("pageerror", lambda e: errors.append(str(e)))
    tab.goto(f"http://127.0.0.1:{gw.port}/console#/review")
    tab.fill("#api-key", gw.key)
    tab.click("#login-form button")
    tab.wait_for_selector("#task-list td:has-text('spam')")
    tab.click("#task-list tr[data-row]")
    first = _wait_for_row(tab)
    assert tab.text_content("[data-testid=review-text]").strip()
    assert "abstain" in tab.text_content("[data-testid=review-votes]")
    assert [b.text_content().split() for b in tab.query_selector_all("[data-label]")] == [["1", "ham"], ["2", "spam"]]
    tab.screenshot(path=str(SHOTS / "console-review.png"), full_page=True)

    tab.keyboard.press("2")  # spam
    second = _wait_for_row(tab, other_than=first)
    assert tab.text_content("[data-testid=review-count]") == "1"
    reviews = _reviews(gw)
    assert list(reviews) == [first] and reviews[first]["label"] == "spam"
    assert reviews[first]["reviewer"] == "key:tests"

    tab.keyboard.press("s")  # skip: the next row, nothing recorded
    third = _wait_for_row(tab, other_than=second)
    assert third != first and tab.text_content("[data-testid=review-count]") == "1"
    assert list(_reviews(gw)) == [first]

    tab.keyboard.press("u")  # undo the review of the first row: it is shown again
    _wait_for_row(tab, row=first)
    assert tab.text_content("[data-testid=review-count]") == "0"
    assert _reviews(gw) == {}

    # Another reviewer labels the row on the screen meanwhile: the page says so and moves on.
    store = gw.store()
    try:
        bob, _ = create_key(store, name="bob", role="developer")
    finally:
        store.close()
    made = httpx.post(f"http://127.0.0.1:{gw.port}/v1/labeling/tasks/spam/reviews", timeout=30,
                      headers={"Authorization": f"Bearer {bob}"}, json={"row_id": first, "label": "ham"})
    assert made.status_code == 201, made.text
    tab.keyboard.press("1")
    toast = tab.wait_for_selector("#toast:not([hidden])").text_content()
    assert f"row {first} was labeled 'ham' by key:bob" in toast
    tab.screenshot(path=str(SHOTS / "console-review-conflict.png"), full_page=True)
    _wait_for_row(tab, other_than=first)
    assert tab.text_content("[data-testid=review-count]") == "0"
    assert _reviews(gw)[first]["reviewer"] == "key:bob"
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


LONG_TEXT = "a comment that goes on " * 20


@pytest.fixture(scope="module")
def datasets_gateway(tmp_path_factory):
    """A gateway whose home holds ``comments`` in two versions (60 rows, then 300 with a nested field and a long
    text), a ``confidential`` dataset, and a developer key, all made before it starts. Yields the gateway, the
    developer key and the versions of ``comments``."""
    _require_browser()
    home = tmp_path_factory.mktemp("gf-datasets")

    def make_data():
        settings = load_settings(home=home, environ={})
        settings.ensure_home()
        store = Store.open(settings.resolved_database_url)
        splits = ("train", "train", "train", "dev", "test")
        try:
            datasets = Datasets(settings, store)
            first = datasets.add_version("comments", [{"text": f"comment {i}", "gold": "ham", "split": splits[i % 5]}
                                                      for i in range(60)],
                                         lineage={"source": "file", "file": "comments.jsonl", "sha256": "ab" * 32})
            second = datasets.add_version("comments", [
                {"text": LONG_TEXT if i == 0 else f"comment {i}", "gold": "spam" if i % 2 else "ham",
                 "meta": {"i": i, "tags": ["x", "y"]}, "split": splits[i % 5]} for i in range(300)],
                lineage={"source": "api", "rows": 300, "sha256": "cd" * 32}, parent=first.number)
            datasets.add_version("call-log", [{"prompt": "hello", "answer": "hi"}], lineage={"source": "calls"},
                                 sensitivity="confidential")
            developer, _ = create_key(store, name="dev", role="developer")
            return developer, [first, second]
        finally:
            store.close()

    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API may hold an event loop in this thread
        developer, versions = pool.submit(make_data).result()
    gw = start_gateway(home, preload=())
    yield gw, developer, versions
    stop_gateway(gw)


def _signed_in(browser, gw, secret: str, route: str):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    errors: list[str] = []
    tab.on("pageerror", lambda e: errors.append(str(e)))
    tab.goto(f"http://127.0.0.1:{gw.port}/console{route}")
    tab.fill("#api-key", secret)
    tab.click("#login-form button")
    return context, tab, errors


def _cells(tab, selector: str) -> list[list[str]]:
    return [[td.text_content().strip() for td in tr.query_selector_all("td")] for tr in tab.query_selector_all(selector)]


def _column(tab, name: str) -> list[str]:
    heads = [th.text_content() for th in tab.query_selector_all("[data-testid=dataset-rows] th")]
    return [row[heads.index(name)] for row in _cells(tab, "[data-testid=dataset-rows] tbody tr")]


def _wait_for_range(tab, text: str) -> None:
    tab.wait_for_selector(f"[data-testid=rows-range]:text-is('{text}')")


def test_datasets_page_lists_versions_and_pages_rows_by_split(browser, datasets_gateway):
    gw, _, (first, second) = datasets_gateway
    context, tab, errors = _signed_in(browser, gw, gw.key, "#/datasets")
    tab.wait_for_selector("#dataset-list td:has-text('comments')")
    listed = {row[0]: row for row in _cells(tab, "#dataset-list tr[data-row]")}
    assert listed["comments"][1:5] == ["internal", "2", "300", "api"]
    assert listed["call-log"][1] == "confidential"
    tab.screenshot(path=str(SHOTS / "console-datasets.png"), full_page=True)

    tab.locator("#dataset-list tr[data-row]", has_text="comments").click()
    tab.wait_for_selector("[data-testid=dataset-versions] tbody tr[data-row='1']")
    newest, oldest = _cells(tab, "[data-testid=dataset-versions] tbody tr")
    assert newest[:4] == ["2", "300", second.content_hash[:12], "train 180 · dev 60 · test 60"]
    assert newest[4] == "api rows 300, sha256 cdcdcdcdcdcd" and newest[5:7] == ["1", "0"]
    assert oldest[:3] == ["1", "60", first.content_hash[:12]] and oldest[4].startswith("file")
    assert "comments.jsonl" in oldest[4] and oldest[5] == ""
    _wait_for_range(tab, "rows 1–50 of 300")
    assert len(_column(tab, "_id")) == 50
    assert [th.text_content() for th in tab.query_selector_all("[data-testid=dataset-rows] th")] == [
        "_id", "split", "text", "gold", "meta"]
    long_cell = tab.query_selector("[data-testid=dataset-rows] tbody tr td:nth-child(3)")
    assert long_cell.get_attribute("title") == LONG_TEXT and long_cell.text_content().endswith("…")
    assert len(long_cell.text_content()) < len(LONG_TEXT)
    assert _column(tab, "meta")[1] == json.dumps({"i": 1, "tags": ["x", "y"]}, separators=(",", ":"))
    tab.screenshot(path=str(SHOTS / "console-dataset.png"), full_page=True)

    tab.select_option("#dataset-split", "test")
    _wait_for_range(tab, "rows 1–50 of 60")
    assert _column(tab, "split") == ["test"] * 50
    assert tab.is_disabled("#rows-prev")
    tab.click("#rows-next")
    _wait_for_range(tab, "rows 51–60 of 60")
    assert _column(tab, "split") == ["test"] * 10
    assert tab.is_disabled("#rows-next") and not tab.is_disabled("#rows-prev")
    tab.click("#rows-prev")
    _wait_for_range(tab, "rows 1–50 of 60")

    tab.select_option("#dataset-version", "1")  # the older version keeps the split filter
    _wait_for_range(tab, "rows 1–12 of 12")
    assert _column(tab, "split") == ["test"] * 12
    assert "meta" not in [th.text_content() for th in tab.query_selector_all("[data-testid=dataset-rows] th")]
    assert tab.text_content("[data-testid=dataset-versions] tr.selected td") == "1"
    tab.screenshot(path=str(SHOTS / "console-dataset-split.png"), full_page=True)
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def test_a_developer_key_is_told_a_confidential_dataset_is_for_admins(browser, datasets_gateway):
    gw, developer, _ = datasets_gateway
    context, tab, errors = _signed_in(browser, gw, developer, "#/datasets")
    tab.wait_for_selector("#dataset-list td:has-text('comments')")
    assert "call-log" not in tab.text_content("#dataset-list")
    tab.goto(f"http://127.0.0.1:{gw.port}/console#/datasets/call-log")
    error = tab.wait_for_selector("[data-testid=error]").text_content()
    assert error == "dataset 'call-log' is confidential: admin keys only"
    assert tab.is_hidden("#dataset-rows-card")
    tab.screenshot(path=str(SHOTS / "console-dataset-forbidden.png"), full_page=True)
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


# -- the Tune page ----------------------------------------------------------------------------------------------
TUNE_TRAIN = {"a": [2.9, 2.4, 2.0, 1.7, 1.5, 1.4], "b": [3.1, 2.6, 2.2, 1.9, 1.6, 1.45, 1.3, 1.25]}
TUNE_DEV = {"a": [2.5, 1.9, 1.6], "b": [2.4, 1.5]}
TUNE_LORA_R = {"a": 8, "b": 16}
INJECTED = "<i id='injected'>not markup</i>"


def _tune_spec(name: str, description: str) -> dict:
    from genfoundry.models.spec import ModelSpec
    return ModelSpec(name=name, provider="fake", location="memory", description=description).model_dump(mode="json")


def _tune_gate(target: str) -> dict:
    """A gate report as promote() keeps it with a job (per-item rows included; the API leaves them out)."""
    def side(score: float) -> dict:
        return {"score": score, "metrics": {"f1": score, "exact_match": 0.1, "items": 2},
                "items": [{"prompt": "p", "reference": "r", "output": "o", "f1": score, "exact": False}]}

    return {"candidate": f"ft:{target}", "incumbent": "base", "margin": 0.01, "passed": True, "reasons": [],
            "seconds": 3.2, "job_id": "", "target": target, "forced": False, "at": "2026-01-02T03:04:05",
            "suites": {"test": {"candidate": side(0.61), "incumbent": side(0.42), "gain": 0.19, "passed": True},
                       "safety": {"candidate": 0, "incumbent": 1, "outputs": 2, "passed": True}}}


def _tune_events(jobs, job_id: str, train: list[float], dev: list[float], eval_every: int) -> None:
    jobs.event(job_id, "status", "running", {"status": "running", "pid": 1})
    for step, loss in enumerate(train, start=1):
        jobs.event(job_id, "metrics", f"step {step}/{len(train)}",
                   {"step": step, "max_steps": len(train), "loss": loss, "learning_rate": 2e-4 / step,
                    "tokens_per_second": 900.0 + step})
        if step % eval_every == 0 and step // eval_every <= len(dev):
            jobs.event(job_id, "eval", f"step {step}/{len(train)}", {"step": step, "eval_loss": dev[step // eval_every - 1]})
            jobs.event(job_id, "checkpoint", f"checkpoint at step {step}", {"step": step, "best_metric": None})
    jobs.event(job_id, "status", "succeeded", {"status": "succeeded"})


@pytest.fixture(scope="module")
def tune_gateway(tmp_path_factory):
    """A gateway (with no training queue) whose store holds fine-tuning jobs written straight into its tables:
    ``a`` and ``b`` succeeded (lora_r 8 and 16, metrics and eval events), ``c`` queued; promotions of ``a`` to
    ``support`` and of ``b`` to ``helpdesk`` (both models in the hub, their previous specs kept), and a developer
    key. Yields the gateway, the developer key and the job ids by letter."""
    _require_browser()
    home = tmp_path_factory.mktemp("gf-tune")

    def make_jobs():
        import datetime as dt

        from genfoundry.core.store import utcnow
        from genfoundry.models.hub import ModelHub
        from genfoundry.models.spec import ModelSpec
        from genfoundry.tune.jobs import TuneJobs
        from genfoundry.tune.train import TrainConfig

        settings = load_settings(home=home, environ={})
        settings.ensure_home()
        store = Store.open(settings.resolved_database_url)
        try:
            hub = ModelHub(store, settings)
            jobs = TuneJobs(settings, store, hub)
            t = store.tables
            now = utcnow()
            ids = {letter: f"ftjob-{letter * 4}{uuid.uuid4().hex[:16]}" for letter in "abc"}
            for n, letter in enumerate("ab"):
                job_id = ids[letter]
                train, dev = TUNE_TRAIN[letter], TUNE_DEV[letter]
                model = f"ft:gemma-3-270m:{letter}:{job_id[6:14]}"
                result = {"fine_tuned_model": model, "adapter_dir": "/nowhere", "adapter_sha256": f"{letter}1" * 32,
                          "metrics": {"steps": len(train), "train_loss": train[-1], "best_dev_loss": min(dev),
                                      "first_dev_loss": dev[0], "tokens_per_second": 1000.0 + n, "tokens": 4096,
                                      "peak_rss_mib": 2048.5 + n},
                          "wall_s": 61.5 + n, "cost_usd": 0.0123 + n / 100,
                          "hardware": {"cpu": "Test CPU " + INJECTED, "cores": 2, "torch": "2.0", "device": "cpu"},
                          "dataset": {"name": "support-qa", "version": 1, "content_hash": f"{letter}2" * 32},
                          "gates": [_tune_gate("support" if letter == "a" else "helpdesk")]}
                config = TrainConfig(lora_r=TUNE_LORA_R[letter], max_steps=len(train)).model_dump(mode="json")
                created = now - dt.timedelta(hours=3 - n)
                with store.begin() as conn:
                    conn.execute(t.tune_jobs.insert().values(
                        id=job_id, status="succeeded", base_model="gemma-3-270m", dataset="support-qa", dataset_version=1,
                        suffix=letter, config=config, result=result, error=None, created_by="key:tests",
                        created_at=created, started_at=created, finished_at=created + dt.timedelta(minutes=1),
                        cancel_requested=False, worker_pid=None))
                _tune_events(jobs, job_id, train, dev, eval_every=len(train) // len(dev))
            with store.begin() as conn:
                conn.execute(t.tune_jobs.insert().values(
                    id=ids["c"], status="queued", base_model="gemma-3-270m", dataset="support-qa", dataset_version=1,
                    suffix="c", config=TrainConfig().model_dump(mode="json"), result=None, error=None,
                    created_by="key:tests", created_at=now - dt.timedelta(hours=1), cancel_requested=False))
            jobs.event(ids["c"], "status", "queued: gemma-3-270m on support-qa@v1", {"status": "queued"})
            for letter, model in (("a", "support"), ("b", "helpdesk")):
                previous, promoted = _tune_spec(model, "before"), _tune_spec(model, f"tuned by {letter}")
                hub.add(ModelSpec.model_validate(promoted))
                gate = _tune_gate(model)
                report = {k: v for k, v in gate.items() if k != "suites"} | {"job_id": ids[letter]}
                with store.begin() as conn:
                    conn.execute(t.tune_promotions.insert().values(
                        id=uuid.uuid4().hex, model=model, job_id=ids[letter], previous_spec=previous, spec=promoted,
                        report=report, forced=False, actor="key:tests", at=now, rolled_back_at=None))
            developer, _ = create_key(store, name="dev", role="developer")
            return developer, ids
        finally:
            store.close()

    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API may hold an event loop in this thread
        developer, ids = pool.submit(make_jobs).result()
    gw = start_gateway(home, {"GENFOUNDRY_TUNE_QUEUE": "false"}, preload=())
    yield gw, developer, ids
    stop_gateway(gw)


def _tune_row(gw, table: str, key: str) -> dict:
    import sqlalchemy as sa
    store = gw.store()
    try:
        t = getattr(store.tables, table)
        column = t.c.id if table == "tune_jobs" else t.c.model
        with store.begin() as conn:
            return dict(conn.execute(sa.select(t).where(column == key)).mappings().one())
    finally:
        store.close()


def _points(tab, selector: str) -> list[int]:
    """How many points each polyline the selector finds has."""
    return tab.eval_on_selector_all(selector, "lines => lines.map(l => l.points.numberOfItems)")


def test_tune_page_as_a_developer_lists_jobs_but_rollback_is_refused(browser, tune_gateway):
    gw, developer, ids = tune_gateway
    context, tab, errors = _signed_in(browser, gw, developer, "#/tune")
    tab.wait_for_selector(f"#tune-jobs tr[data-job='{ids['a']}']")
    assert {ids["a"], ids["b"], ids["c"]} <= set(tab.eval_on_selector_all(
        "#tune-jobs tr[data-job]", "rows => rows.map(r => r.dataset.job)"))
    tab.wait_for_selector("button[data-rollback='helpdesk']")
    tab.once("dialog", lambda dialog: dialog.accept())
    tab.click("button[data-rollback='helpdesk']")
    message = tab.wait_for_selector("[data-testid=rollback-error]:not(:empty)").text_content()
    assert message == "this needs a key with role admin; 'dev' is developer"
    assert tab.is_enabled("button[data-rollback='helpdesk']")
    assert _tune_row(gw, "tune_promotions", "helpdesk")["rolled_back_at"] is None
    tab.screenshot(path=str(SHOTS / "console-tune-developer.png"), full_page=True)
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def test_tune_page_shows_curves_compares_cancels_and_rolls_back(browser, tune_gateway):
    gw, _, ids = tune_gateway
    a, b, c = ids["a"], ids["b"], ids["c"]
    context, tab, errors = _signed_in(browser, gw, gw.key, "#/tune")
    tab.wait_for_selector(f"#tune-jobs tr[data-job='{a}']")
    rows = {row[1]: row for row in _cells(tab, "#tune-jobs tbody tr")}
    assert [r for r in tab.eval_on_selector_all("#tune-jobs tr[data-job]", "rows => rows.map(r => r.dataset.job)")
            if r in ids.values()] == [c, b, a]  # newest first
    assert rows[a][2:10] == ["succeeded", "gemma-3-270m", "support-qa@v1", "6", "1.6", "1000", "$0.0123",
                             f"ft:gemma-3-270m:a:{a[6:14]}"]
    assert rows[c][2] == "queued" and rows[c][5] == "–" and rows[c][-1] == "Cancel"
    assert rows[a][-1] == ""  # no Cancel on a finished job
    tab.screenshot(path=str(SHOTS / "console-tune.png"), full_page=True)

    # One job: its train and dev curves, one point per metrics and per eval event.
    tab.click(f"#tune-jobs tr[data-job='{a}'] td:nth-child(2)")
    tab.wait_for_selector(f"[data-testid=loss-chart] polyline[data-job='{a}']")
    assert _points(tab, "[data-testid=loss-chart] polyline") == [len(TUNE_TRAIN["a"]), len(TUNE_DEV["a"])]
    assert tab.eval_on_selector_all("[data-testid=loss-chart] polyline", "ls => ls.map(l => l.dataset.series)") == [
        "train", "dev"]
    assert tab.text_content("[data-testid=loss-chart] [data-axis=y-max]") == "2.9"
    assert tab.text_content("[data-testid=loss-chart] [data-axis=y-min]") == "1.4"
    assert tab.text_content("[data-testid=loss-chart] [data-axis=x-max]") == "6"
    assert "train loss (6 steps)" in tab.text_content("[data-testid=loss-chart]")
    assert "null" not in tab.text_content("#tune-detail")  # no empty value written out
    assert "selected" in tab.get_attribute(f"#tune-jobs tr[data-job='{a}']", "class")
    assert tab.evaluate("location.hash") == f"#/tune/{a}"
    config = dict(row[:2] for row in _cells(tab, "[data-testid=job-config] tbody tr"))
    assert config["lora_r"] == "8" and config["max_steps"] == "6"
    hashes = dict(row[:2] for row in _cells(tab, "[data-testid=job-hashes] tbody tr"))
    assert hashes["adapter (safetensors) sha256"] == "a1" * 32 and hashes["dataset content hash"] == "a2" * 32
    hardware = dict(row[:2] for row in _cells(tab, "[data-testid=job-hardware] tbody tr"))
    assert hardware["cpu"] == "Test CPU " + INJECTED and tab.query_selector("#injected") is None
    gates = _cells(tab, "[data-testid=job-gates] tbody tr")
    assert gates[0][0] == "test" and gates[0][2:6] == ["0.61", "0.42", "+0.19", "passed"]
    assert gates[1][0] == "safety" and gates[1][1] == "flagged outputs (of 2)" and gates[1][2:4] == ["0", "1"]
    tab.screenshot(path=str(SHOTS / "console-tune-job.png"), full_page=True)

    # Compare: both jobs' curves in one chart, and only the config keys that differ (learning_rate etc. do not).
    tab.check(f"input[data-compare='{a}']")
    assert tab.is_hidden("#tune-compare")
    tab.check(f"input[data-compare='{b}']")
    tab.wait_for_selector(f"[data-testid=compare-chart] polyline[data-job='{a}']")
    assert _points(tab, "[data-testid=compare-chart] polyline") == [
        len(TUNE_TRAIN["b"]), len(TUNE_DEV["b"]), len(TUNE_TRAIN["a"]), len(TUNE_DEV["a"])]
    assert [th.text_content() for th in tab.query_selector_all("[data-testid=compare-config] th")] == ["key", b, a]
    assert _cells(tab, "[data-testid=compare-config] tbody tr") == [["lora_r", "16", "8"], ["max_steps", "8", "6"]]
    metrics = {row[0]: row[1:] for row in _cells(tab, "[data-testid=compare-metrics] tbody tr")}
    assert metrics["steps"] == ["8", "6"] and metrics["best dev loss"] == ["1.5", "1.6"]
    tab.screenshot(path=str(SHOTS / "console-tune-compare.png"), full_page=True)
    tab.uncheck(f"input[data-compare='{b}']")
    tab.wait_for_selector("#tune-compare", state="hidden")

    # Cancel the queued job: the page and the store say cancelled.
    tab.click(f"button[data-cancel='{c}']")
    tab.wait_for_selector(f"#tune-jobs tr[data-job='{c}'][data-status='cancelled']")
    assert tab.query_selector(f"button[data-cancel='{c}']") is None
    assert _tune_row(gw, "tune_jobs", c)["status"] == "cancelled"

    # Roll back 'support': the API is called, the promotion is marked and the model serves its old spec again.
    tab.once("dialog", lambda dialog: dialog.accept())
    tab.click("button[data-rollback='support']")
    tab.wait_for_selector("[data-testid=tune-promotions] tr[data-model='support'] td:nth-child(6):not(:empty)")
    assert tab.query_selector("button[data-rollback='support']") is None
    assert tab.query_selector("button[data-rollback='helpdesk']") is not None
    assert tab.text_content("[data-testid=rollback-error]") == ""
    assert _tune_row(gw, "tune_promotions", "support")["rolled_back_at"] is not None
    models = {m["id"]: m for m in _api(gw, "GET", "/v1/models").json()["data"]}
    assert "support" in models
    store = gw.store()
    try:
        from genfoundry.models.hub import ModelHub
        assert ModelHub(store, load_settings(home=gw.home, environ={})).resolve("support").description == "before"
    finally:
        store.close()
    tab.screenshot(path=str(SHOTS / "console-tune-rollback.png"), full_page=True)
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def test_tune_page_follows_a_running_job(browser, tune_gateway):
    import datetime as dt

    from genfoundry.core.store import utcnow
    from genfoundry.tune.jobs import TuneJobs
    from genfoundry.tune.train import TrainConfig

    gw, _, _ = tune_gateway
    job_id = f"ftjob-dddd{uuid.uuid4().hex[:16]}"
    store = gw.store()
    settings = load_settings(home=gw.home, environ={})
    jobs = TuneJobs(settings, store)
    try:
        with store.begin() as conn:  # 'running' in this process: its worker is alive as long as the test runs
            conn.execute(store.tables.tune_jobs.insert().values(
                id=job_id, status="running", base_model="gemma-3-270m", dataset="support-qa", dataset_version=1,
                suffix="d", config=TrainConfig().model_dump(mode="json"), created_by="key:tests",
                created_at=utcnow() - dt.timedelta(minutes=1), started_at=utcnow(), cancel_requested=False,
                worker_pid=os.getpid()))
        for step in (1, 2):
            jobs.event(job_id, "metrics", f"step {step}/4", {"step": step, "loss": 3.0 - step / 4})
        context, tab, errors = _signed_in(browser, gw, gw.key, f"#/tune/{job_id}")
        tab.wait_for_selector(f"[data-testid=loss-chart] polyline[data-job='{job_id}']")
        assert _points(tab, "[data-testid=loss-chart] polyline") == [2, 0]
        assert tab.text_content("[data-testid=job-status]") == "running"
        for step in (3, 4):
            jobs.event(job_id, "metrics", f"step {step}/4", {"step": step, "loss": 3.0 - step / 4})
        jobs.event(job_id, "eval", "step 4/4", {"step": 4, "eval_loss": 2.5})
        tab.wait_for_function("() => [...document.querySelectorAll('[data-testid=loss-chart] polyline')]"
                              ".map(l => l.points.numberOfItems).join() === '4,1'", timeout=15_000)
        with store.begin() as conn:
            t = store.tables.tune_jobs
            conn.execute(t.update().where(t.c.id == job_id).values(
                status="succeeded", finished_at=utcnow(), result={"metrics": {"steps": 4, "best_dev_loss": 2.5}}))
        tab.wait_for_selector(f"#tune-jobs tr[data-job='{job_id}'][data-status='succeeded']", timeout=15_000)
        assert tab.text_content("[data-testid=job-status]") == "succeeded"
        context.close()
    finally:
        store.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


# -- the Agents page --------------------------------------------------------------------------------------------
AGENT_ACTION = "run_test1:1"
AGENT_ARGUMENTS = {"order_id": "A1003", "amount": 429.0}


def _waiting_run(store, run_id: str) -> None:
    """A ``support`` run waiting for the approval of a refund of 429: its pending action is ``RUN:1``."""
    from genfoundry.core.store import utcnow

    t, now, action = store.tables, utcnow(), f"{run_id}:1"
    with store.begin() as conn:
        conn.execute(t.agent_runs.insert().values(
            id=run_id, agent="support", status="waiting", caller=None,
            input=[{"role": "user", "content": "Refund order A1003 please"}],
            steps=[{"n": 1, "kind": "approval", "tool": "issue_refund", "arguments": AGENT_ARGUMENTS,
                    "action": action, "reason": "amount 429 is above 100", "observation": None}],
            prompt_tokens=0, completion_tokens=0, cost_usd=0.0, seconds=0.0, created_at=now, updated_at=now))
        conn.execute(t.agent_actions.insert().values(
            id=action, run_id=run_id, step=1, tool="issue_refund", arguments=AGENT_ARGUMENTS,
            proposed={"arguments": AGENT_ARGUMENTS, "parameters": {
                "type": "object", "properties": {"order_id": {"type": "string"}, "amount": {"type": "number"}},
                "required": ["order_id", "amount"]}},
            status="pending", needs_approval=True, reason="amount 429 is above 100", created_at=now))


@pytest.fixture(scope="module")
def agents_gateway(tmp_path_factory):
    """A gateway (no model loaded) whose store holds, written straight into its tables, a ``support`` run waiting
    for the approval of a refund of 429 (its pending action ``run_test1:1``) and a succeeded run whose answer
    carries markup. Yields the gateway."""
    _require_browser()
    home = tmp_path_factory.mktemp("gf-agents")

    def make_runs():
        import datetime as dt

        from genfoundry.core.store import utcnow

        settings = load_settings(home=home, environ={})
        settings.ensure_home()
        store = Store.open(settings.resolved_database_url)
        try:
            t = store.tables
            _waiting_run(store, "run_test1")
            with store.begin() as conn:
                earlier = utcnow() - dt.timedelta(minutes=5)
                conn.execute(t.agent_runs.insert().values(
                    id="run_test2", agent="support", status="succeeded", caller=None,
                    input=[{"role": "user", "content": "Has order B2002 shipped?"}],
                    steps=[{"n": 1, "kind": "tool", "tool": "lookup_order", "arguments": {"order_id": "B2002"},
                            "observation": {"order_id": "B2002", "status": "processing", "note": INJECTED}},
                           {"n": 2, "kind": "answer", "tool": "final_answer", "arguments": {"answer": "Not yet."},
                            "observation": None}],
                    answer="Not yet. " + INJECTED, prompt_tokens=120, completion_tokens=30, cost_usd=0.0,
                    seconds=1.5, created_at=earlier, updated_at=earlier))
        finally:
            store.close()

    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API may hold an event loop in this thread
        pool.submit(make_runs).result()
    gw = start_gateway(home, {"GENFOUNDRY_TUNE_QUEUE": "false"}, preload=())
    yield gw
    stop_gateway(gw)


def _agent_action(gw, action_id: str) -> dict:
    import sqlalchemy as sa
    store = gw.store()
    try:
        t = store.tables.agent_actions
        with store.begin() as conn:
            return dict(conn.execute(sa.select(t).where(t.c.id == action_id)).mappings().one())
    finally:
        store.close()


def test_agents_page_shows_a_pending_approval_refuses_bad_json_and_rejects_with_a_note(browser, agents_gateway):
    gw = agents_gateway
    context, tab, errors = _signed_in(browser, gw, gw.key, "#/agents")
    decisions: list[str] = []
    tab.on("request", lambda r: decisions.append(r.url) if r.method == "POST" and "/admin/agents/approvals/" in r.url
           else None)
    card = f"#agents-approvals [data-action='{AGENT_ACTION}']"
    tab.wait_for_selector(card)
    assert tab.text_content(f"{card} [data-testid=approval-agent]") == "support"
    assert tab.text_content(f"{card} [data-testid=approval-tool]") == "issue_refund"
    assert tab.text_content(f"{card} [data-testid=approval-reason]") == "amount 429 is above 100"
    assert json.loads(tab.input_value(f"{card} [data-testid=approval-arguments]")) == AGENT_ARGUMENTS
    assert "Refund order A1003 please" in tab.text_content(f"{card} [data-testid=approval-conversation]")
    assert _cells(tab, f"{card} [data-testid=approval-steps] tbody tr")[0][:3] == ["1", "approval", "issue_refund"]
    assert [b.text_content() for b in tab.query_selector_all(f"{card} button[data-decide]")] == [
        "Approve", "Approve with edits", "Reject"]
    # The runs and the agents (the sample support desk's, with its refund tool).
    tab.wait_for_selector("#agents-runs tr[data-run='run_test2']")
    assert tab.get_attribute("#agents-runs tr[data-run='run_test1']", "data-status") == "waiting"
    tab.wait_for_selector("[data-testid=agents-list] tr[data-agent='support']")
    assert "issue_refund · approval when amount > 100" in tab.text_content(
        "[data-testid=agents-list] tr[data-agent='support']")
    assert "Not yet. " + INJECTED in tab.text_content("#agents-runs") and tab.query_selector("#injected") is None
    tab.screenshot(path=str(SHOTS / "console-agents.png"), full_page=True)

    # Edited arguments that are not JSON: the page says so and sends nothing.
    tab.fill(f"{card} [data-testid=approval-arguments]", '{"order_id": "A1003", "amount": ')
    tab.click(f"{card} button[data-decide='edit']")
    message = tab.wait_for_selector(f"{card} [data-testid=approval-error]:not(:empty)").text_content()
    assert "not valid JSON" in message and "nothing was sent" in message
    tab.fill(f"{card} [data-testid=approval-arguments]", "[1, 2]")
    tab.click(f"{card} button[data-decide='edit']")
    tab.wait_for_selector(f"{card} [data-testid=approval-error]:has-text('must be a JSON object')")
    tab.click(f"{card} button[data-decide='approve']")  # plain Approve of edited arguments: refused too
    tab.wait_for_selector(f"{card} [data-testid=approval-error]:has-text('Approve with edits')")
    assert decisions == []
    assert _agent_action(gw, AGENT_ACTION)["status"] == "pending"
    tab.screenshot(path=str(SHOTS / "console-agents-bad-json.png"), full_page=True)

    # Reject with a note: the action is decided (by this key, with the note) and the list is read again.
    tab.click(f"{card} [data-reset]")
    assert json.loads(tab.input_value(f"{card} [data-testid=approval-arguments]")) == AGENT_ARGUMENTS
    tab.fill(f"{card} [data-testid=approval-note]", "Refunds over 400 go through the shop manager.")
    tab.click(f"{card} button[data-decide='reject']")
    tab.wait_for_selector("#agents-approvals [data-testid=no-approvals]")
    assert len(decisions) == 1 and decisions[0].endswith("/admin/agents/approvals/run_test1%3A1"), decisions
    action = _agent_action(gw, AGENT_ACTION)
    assert action["status"] == "rejected" and action["decided_by"] and action["decided_by"].startswith("key:")
    assert action["note"] == "Refunds over 400 go through the shop manager."
    assert action["decided_at"] is not None and action["arguments"] == AGENT_ARGUMENTS
    assert "rejected" in tab.text_content("#toast")
    tab.screenshot(path=str(SHOTS / "console-agents-rejected.png"), full_page=True)

    # A run's steps: its tool call with the observation as text, its answer.
    tab.click("#agents-runs tr[data-run='run_test2'] td:nth-child(1)")
    tab.wait_for_selector("[data-testid=run-steps] tr[data-step='2']")
    steps = _cells(tab, "[data-testid=run-steps] tbody tr")
    assert steps[0][:4] == ["1", "tool", "lookup_order", '{"order_id":"B2002"}'] and INJECTED in steps[0][4]
    assert tab.text_content("[data-testid=run-status]") == "succeeded"
    assert tab.text_content("[data-testid=run-answer]") == "Not yet. " + INJECTED
    assert tab.query_selector("#injected") is None and tab.evaluate("location.hash") == "#/agents/run_test2"
    tab.screenshot(path=str(SHOTS / "console-agents-run.png"), full_page=True)
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def test_agents_page_reports_an_action_decided_elsewhere_and_reads_the_list_again(browser, agents_gateway):
    gw = agents_gateway
    store = gw.store()
    try:
        _waiting_run(store, "run_test3")
    finally:
        store.close()
    context, tab, errors = _signed_in(browser, gw, gw.key, "#/agents")
    card = "#agents-approvals [data-action='run_test3:1']"
    tab.wait_for_selector(card)
    # Another approver approves it meanwhile; this page still shows it as pending.
    made = _api(gw, "POST", "/admin/agents/approvals/run_test3%3A1", json={"decision": "approve"})
    assert made.status_code == 200, made.text
    tab.fill(f"{card} [data-testid=approval-arguments]", json.dumps({"order_id": "A1003", "amount": 99.0}))
    tab.click(f"{card} button[data-decide='edit']")
    toast = tab.wait_for_selector("#toast:not([hidden])").text_content()
    assert "action run_test3:1 was already decided" in toast, toast
    tab.wait_for_selector(card, state="detached")
    action = _agent_action(gw, "run_test3:1")  # approved, and maybe carried out already by the resumed run
    assert action["status"] in ("approved", "running", "done", "failed") and action["decided_by"].startswith("key:")
    assert action["arguments"] == AGENT_ARGUMENTS and action["note"] is None  # this page's edit was not applied
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


# -- the Deployment page ---------------------------------------------------------------------------------------

def test_deployment_page_shows_the_doctors_checks_and_a_pool_with_a_backend_left_out(browser, tmp_path):
    from genfoundry.models.hub import ModelHub
    from genfoundry.models.spec import ModelSpec
    from genfoundry.testing.servers import free_port, start_upstream, stop_process

    upstream, url = start_upstream("alive")
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nobody listens there
    home = tmp_path / "gf-deploy"
    home.mkdir()
    store = Store.open(f"sqlite:///{home / 'genfoundry.db'}")
    ModelHub(store, load_settings(home=home, environ={})).add(ModelSpec(
        name="pooled", provider="openai_compat", location=dead, capabilities=["chat"],
        pool={"backends": [url], "eject_after": 1, "eject_seconds": 120}))
    developer, _ = create_key(store, name="dev", role="developer")
    store.close()
    gw = start_gateway(home, preload=())
    try:
        answer = httpx.post(f"{gw.base_url}/chat/completions", headers={"Authorization": f"Bearer {gw.key}"},
                            json={"model": "pooled", "messages": [{"role": "user", "content": "hello"}]}, timeout=60)
        assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"].startswith("alive:")
        context, tab, errors = _signed_in(browser, gw, gw.key, "#/deployment")
        tab.wait_for_selector("[data-testid=deploy-checks] tr[data-check='database'][data-status='ok']")
        assert tab.get_attribute("tr[data-check='audit chain']", "data-status") == "ok"
        models = tab.wait_for_selector("tr[data-check='models']")
        assert models.get_attribute("data-status") == "fail" and dead in models.text_content()
        left_out = tab.wait_for_selector(f"[data-testid=deploy-pools] tr[data-backend='{dead}']")
        assert left_out.get_attribute("data-ejected") == "true"
        assert "left out" in left_out.text_content() and "Connect" in left_out.text_content()
        replicas = tab.query_selector_all("[data-testid=deploy-replicas] tbody tr")
        assert len(replicas) == 1 and replicas[0].get_attribute("data-alive") == "true"
        assert "(this one)" in replicas[0].text_content()
        alive = tab.query_selector(f"[data-testid=deploy-pools] tr[data-backend='{url}']")
        assert alive.get_attribute("data-ejected") == "false"
        assert _cells(tab, f"[data-testid=deploy-pools] tr[data-backend='{url}']")[0][4] == "1"  # served one
        tab.wait_for_timeout(5500)  # a refresh (without probing models) keeps the probed models row
        assert tab.get_attribute("tr[data-check='models']", "data-status") == "fail"
        assert not errors, errors
        context.close()
        # Not for developers: the page says so instead of showing the checks.
        context, tab, errors = _signed_in(browser, gw, developer, "#/deployment")
        refusal = tab.wait_for_selector("#deploy-checks [data-testid=error]")
        assert "admin" in refusal.text_content()
        assert not tab.query_selector("[data-testid=deploy-checks]")
        context.close()
    finally:
        stop_gateway(gw)
        stop_process(upstream)
