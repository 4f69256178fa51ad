"""The web UI in a real headless browser: Debian's chromium driven by Playwright.

.venv/bin/python -m pytest tests/test_web_ui.py -q

A real uvicorn server on the `test` sandbox (tiny settings, SQLite and Chroma in tmp), pages
clicked through like a person would: upload and delete documents, ask a question and watch the
answer stream in with its citations, then after a real training cycle promote and roll back from
the learning page. Each page is saved as artifacts/screenshots/<page>.png. Needs /usr/bin/chromium
(`make test-tools` installs it as root; Playwright's own browser download is not used).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from test_e2e import tiny_settings

from assistant.app import create_app
from assistant.auth import create_key
from assistant.server import serve_in_thread
from knowledge.db import open_database
from learner.pipeline import run_cycle
from learner.registry import BASE, Registry

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[dev]'")

REPO = Path(__file__).resolve().parent.parent
SHOTS = REPO / "artifacts" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Without the background-networking flags chromium's own connections get refused in bulk here.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 120_000  # a CPU shared with other tests: generous waits, the waits end on success

HANDBOOK = b"# Travel handbook\n\nTrain tickets are booked through the travel desk on floor 3.\n"
SALARIES = b"# Salary bands 2025\n\nBand C starts at 61,000 EUR. Only HR may read this.\n"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        how = "apt-get install -y chromium (or `make test-tools`, as root)"
        if os.geteuid() == 0:
            pytest.fail(f"Debian's chromium is missing at {CHROMIUM}: {how}")
        pytest.skip(f"Debian's chromium is not installed and installing it needs root: {how}")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def served(sandbox_test, tmp_path_factory):
    """A server that wants API keys (the default), an admin key, and the day-1 documents."""
    settings = tiny_settings(tmp_path_factory.mktemp("web"), sandbox_test)
    settings.serving.auth = "keys"
    day = sandbox_test.days[0]
    app = create_app(settings)
    key = create_key(open_database(settings.db_url), "ops", role="admin").secret
    headers = {"Authorization": f"Bearer {key}"}
    with (
        serve_in_thread(app) as url,
        httpx.Client(base_url=url, headers=headers, timeout=120) as client,
    ):
        settings.serving.reload_url = url  # the training cycle tells this server to swap
        for path in sorted(day.documents_dir.glob("*.md")):  # what chat and training use
            upload = client.post(
                "/v1/documents", files={"file": (path.name, path.read_bytes(), "text/markdown")}
            )
            assert upload.status_code == 201, upload.text
        question = json.loads(day.qa_file.read_text().splitlines()[0])["question"]
        yield SimpleNamespace(url=url, settings=settings, client=client, question=question, key=key)


def _context(browser, served):
    context = browser.new_context(base_url=served.url, viewport={"width": 1280, "height": 820})
    context.set_default_timeout(TIMEOUT_MS)
    return context


@pytest.fixture
def page(browser, served):
    """A fresh page with the admin key entered in the header field, as a person would.

    Any script error or failed request in it fails the test.
    """
    context = _context(browser, served)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"script error: {exc}"))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.goto("/")
    page.fill("#api-key", served.key)
    page.press("#api-key", "Tab")  # leaving the field saves the key (localStorage)
    assert page.inner_text("#status") == "API key saved in this browser."
    yield page
    context.close()
    assert not problems, problems


def _screenshot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SHOTS / f"{name}.png", full_page=True)


def _documents(served) -> dict[str, dict]:
    return {d["name"]: d for d in served.client.get("/v1/documents").json()["data"]}


def test_pages_without_a_key_say_one_is_needed(browser, served):
    context = _context(browser, served)
    page = context.new_page()
    page.goto("/ui/documents")  # the page itself needs no key, its data does
    page.wait_for_selector("#status.error")
    assert "API key is required" in page.inner_text("#status")
    assert page.inner_text("#served-version") == BASE
    context.close()


def test_documents_page_uploads_with_visibility_and_deletes(page, served, tmp_path):
    for name, data in (("travel.md", HANDBOOK), ("salaries.md", SALARIES)):
        (tmp_path / name).write_bytes(data)
    page.goto("/ui/documents")
    page.wait_for_selector("#documents tbody tr[data-name]")

    page.set_input_files("#file", str(tmp_path / "travel.md"))
    page.click("#upload")
    page.wait_for_selector('#documents tr[data-name="travel.md"]')

    page.select_option("#visibility", "groups")
    page.fill("#groups", "hr")
    page.set_input_files("#file", str(tmp_path / "salaries.md"))
    page.click("#upload")
    salaries = page.wait_for_selector('#documents tr[data-name="salaries.md"]')
    assert salaries.query_selector(".access").inner_text() == "groups: hr"
    assert "Uploaded: salaries.md (new, 1 chunks)" in page.inner_text("#status")
    stored = _documents(served)
    assert (stored["salaries.md"]["visibility"], stored["salaries.md"]["groups"]) == (
        "groups",
        ["hr"],
    )
    assert stored["travel.md"]["visibility"] == "company"

    # A new version with the visibility left "as before" keeps the group access (no widening).
    (tmp_path / "salaries.md").write_bytes(SALARIES + b"Band D starts at 70,000 EUR.\n")
    page.set_input_files("#file", str(tmp_path / "salaries.md"))
    assert page.input_value("#visibility") == "" and page.is_disabled("#groups")
    page.click("#upload")
    page.wait_for_selector("#status.ok >> text=new version v2")
    salaries = page.wait_for_selector('#documents tr[data-name="salaries.md"]')
    assert salaries.query_selector(".access").inner_text() == "groups: hr"
    assert _documents(served)["salaries.md"]["n_versions"] == 2
    _screenshot(page, "documents")

    dialogs: list[str] = []
    page.once("dialog", lambda d: (dialogs.append(d.message), d.accept()))
    page.click('#documents tr[data-name="travel.md"] button.delete')
    page.wait_for_selector('#documents tr[data-name="travel.md"]', state="detached")
    assert dialogs and "travel.md" in dialogs[0]
    assert "Deleted" in page.inner_text("#status")
    assert "travel.md" not in _documents(served) and "salaries.md" in _documents(served)


def test_chat_page_streams_an_answer_with_citations(page, served):
    page.goto("/")
    # Record every text the answer shows, to see it grow delta by delta rather than appear whole.
    page.evaluate(
        """() => {
        window.answerTexts = [];
        new MutationObserver((records) => {
          for (const r of records)
            if (r.target.classList?.contains("answer"))
              for (const n of r.addedNodes) window.answerTexts.push(n.textContent);
        }).observe(document.getElementById("messages"), {childList: true, subtree: true});
      }"""
    )
    page.fill("#question", served.question)
    page.click("#send")
    turn = page.wait_for_selector(".turn.assistant.done")

    answer = turn.query_selector(".answer").inner_text()
    texts = page.evaluate("window.answerTexts")
    assert answer.strip() and texts[-1] == answer
    assert len(texts) >= 2 and all(answer.startswith(t) for t in texts), texts  # grew in steps
    assert turn.query_selector(".meta").get_attribute("data-adapter-version") == BASE
    assert page.inner_text("#served-version") == BASE

    titles = {d["id"]: d["title"] for d in _documents(served).values()}
    cited = turn.query_selector_all(".sources li a")
    assert cited, "the answer lists no citations"
    for link in cited:
        doc_id = int(link.get_attribute("href").rsplit("-", 1)[1])
        assert link.inner_text() == titles[doc_id]
    _screenshot(page, "chat")


def test_learning_endpoints_refuse_unknown_versions_and_user_keys(served):
    assert (
        served.client.post("/admin/adapters/promote", json={"version": "v9999"}).status_code == 404
    )
    user = create_key(open_database(served.settings.db_url), "ann", role="user").secret
    as_user = {"Authorization": f"Bearer {user}"}
    for method, path in (
        ("GET", "/admin/runs"),
        ("GET", "/admin/adapters"),
        ("POST", "/admin/adapters/rollback"),
    ):
        assert served.client.request(method, path, headers=as_user).status_code == 403
    assert served.client.get("/admin/runs", headers={"Authorization": ""}).status_code == 401
    assert served.client.get("/ui/learning", headers={"Authorization": ""}).status_code == 200


def _cycle(served):
    result = run_cycle(served.settings, progress=False)
    assert result.status == "succeeded" and result.promoted, result.message
    return result


@pytest.mark.slow
def test_learning_page_shows_runs_and_promotes_and_rolls_back(
    page, served, sandbox_test, monkeypatch
):
    page.goto("/ui/learning")
    page.wait_for_selector("#runs tbody tr")

    monkeypatch.setenv("PROTEGE_API_KEY", served.key)  # the cycle's reload call needs an admin key
    first = _cycle(served)  # on the day-1 documents
    for path in sorted(sandbox_test.days[1].documents_dir.glob("*.md")):
        upload = served.client.post(
            "/v1/documents", files={"file": (path.name, path.read_bytes(), "text/markdown")}
        )
        assert upload.status_code == 201, upload.text
    second = _cycle(served)  # continues the first adapter on the day-2 documents
    old, new = first.version, second.version

    page.reload()
    run = page.wait_for_selector(f"#run-{second.run_id}")
    assert "succeeded" in run.inner_text() and new in run.inner_text()
    assert "midtrain" in run.query_selector("td.small").inner_text()  # stage timings
    assert page.query_selector(f"#run-{first.run_id}")
    adapter = page.wait_for_selector(f"#adapter-{new}")
    assert "promoted" in adapter.inner_text() and "(served)" in adapter.inner_text()
    assert "retired" in page.inner_text(f"#adapter-{old}")
    assert page.inner_text("#served") == new
    # base and the two adapters, one dot per metric each
    assert len(page.query_selector_all("#chart svg circle")) == 6
    _screenshot(page, "learning")

    page.on("dialog", lambda d: d.accept())
    page.click("#rollback")
    page.wait_for_function(f"document.getElementById('served').textContent === '{old}'")
    assert f"Now serving {old} (was {new})" in page.inner_text("#status")
    assert served.client.get("/healthz").json()["adapter_version"] == old
    assert Registry(served.settings).served_version() == old

    page.click(f"#adapter-{new} button.promote")
    page.wait_for_function(f"document.getElementById('served').textContent === '{new}'")
    assert f"Now serving {new} (was {old})" in page.inner_text("#status")
    assert served.client.get("/healthz").json()["adapter_version"] == new
    assert Registry(served.settings).served_version() == new
    assert page.is_disabled(f"#adapter-{new} button.promote")
    assert not page.is_disabled(f"#adapter-{old} button.promote")


def test_learning_page_lists_adds_edits_and_deletes_eval_items(page, served):
    doc = _documents(served)
    doc_id = next(iter(doc.values()))["id"]
    body = {"document_id": doc_id, "question": "Who keeps the badge list?", "answer": "Ops"}
    first = served.client.post("/admin/evals", json=body).json()
    page.goto("/ui/learning")
    row = page.wait_for_selector(f"#eval-{first['id']}")
    assert "admin" in row.inner_text() and str(doc_id) in row.inner_text()

    page.fill("#eval-doc", str(doc_id))  # add one through the form
    page.fill("#eval-question", "Where are train tickets booked?")
    page.fill("#eval-answer", "travel desk")
    page.click("#eval-add button")
    page.wait_for_function("document.getElementById('status').textContent.includes('added')")
    listed = served.client.get("/admin/evals").json()["data"]
    added = next(r for r in listed if r["question"] == "Where are train tickets booked?")

    page.fill(f"#eval-{first['id']} input.answer", "Operations")  # edit in place
    page.click(f"#eval-{first['id']} button.save")
    page.wait_for_function("document.getElementById('status').textContent.includes('saved')")
    by_id = {r["id"]: r for r in served.client.get("/admin/evals").json()["data"]}
    assert by_id[first["id"]]["answer"] == "Operations"
    _screenshot(page, "learning-evals")

    page.on("dialog", lambda d: d.accept())
    page.click(f"#eval-{added['id']} button.delete")
    page.wait_for_function("document.getElementById('status').textContent.includes('deleted')")
    page.wait_for_selector(f"#eval-{added['id']}", state="detached")
    assert added["id"] not in {r["id"] for r in served.client.get("/admin/evals").json()["data"]}
    served.client.delete(f"/admin/evals/{first['id']}")  # leave the module's server as found
