"""The console in a real browser (Debian's chromium, driven by Playwright) against a real gateway on the
built-in models: sign in, chat, rate, open the trace, upload and forget a document, grounded chat with
citations, the cost page, and bad input. Screenshots go to ``test-screenshots/`` (or
``GENFOUNDRY_SCREENSHOTS``) for a person to look at.

CI sets ``GENFOUNDRY_REQUIRE_BROWSER=1``, so a missing browser fails there instead of skipping."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import httpx
import pytest

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
    for name, selector in (("traces", "#trace-list table"), ("guard", "#guard-list table"),
                           ("feedback", "#fb-list table"), ("drift", "#alert-list"), ("evals", "#eval-list")):
        page.goto(f"http://127.0.0.1:{gateway.port}/console#/{name}")
        page.wait_for_selector(selector)
        page.screenshot(path=str(SHOTS / f"console-{name}.png"), full_page=True)
    page.goto(f"http://127.0.0.1:{gateway.port}/console#/traces/{'0' * 32}")
    assert "no trace" in page.wait_for_selector("[data-testid=error]", timeout=15_000).text_content()
