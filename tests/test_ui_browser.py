"""The chat UI in a real browser (Debian's Chromium driven by Playwright): the real app, the real
pipeline with the shipped reranker, and the local SmolLM2 server through llama.cpp where it is
installed (otherwise the extractive mode). Screenshots go to $TEST_ARTIFACTS_DIR (CI sets it)."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

from chatbot.answer import OpenAIChat
from chatbot.cli import make_ingest
from chatbot.config import Config
from chatbot.local_llm import LOCAL_MODEL_ALIAS, LocalLLMServer, local_llm_available
from chatbot.pipeline import Pipeline
from chatbot.present import REFUSAL_TEXT
from chatbot.ui import ChatApp, launch
from tests.helpers import asked_copy, free_port

CHROMIUM = "/usr/bin/chromium"
LOOPBACK = ("http://127.0.0.1", "http://localhost", "data:", "blob:", "about:")

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium for the browser tests")
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium chromium-driver)", allow_module_level=True)
sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright


class CountingChat(OpenAIChat):
    """The real client, counting the calls that reach the LLM."""

    calls = 0

    def complete(self, messages, max_tokens):
        type(self).calls += 1
        return super().complete(messages, max_tokens)

    def stream(self, messages, max_tokens):
        type(self).calls += 1
        yield from super().stream(messages, max_tokens)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("TEST_ARTIFACTS_DIR") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def app_url(sample_db, tmp_path_factory):
    root = tmp_path_factory.mktemp("ui")
    db = root / "lancedb"
    shutil.copytree(sample_db, db)
    local = LocalLLMServer(log_path=root / "llm.log").start() if local_llm_available() else None
    try:
        config = Config(db_uri=str(db), upload_dir=str(root / "uploads"), upload_max_mb=1,
                        llm_base_url=local.base_url if local else "", llm_model=LOCAL_MODEL_ALIAS if local else "",
                        llm_timeout_s=120.0)
        llm = CountingChat(config.llm_base_url, config.llm_model, timeout_s=config.llm_timeout_s) if local else None
        pipeline = Pipeline.from_config(config, llm=llm)
        pipeline.warm()
        ingest = make_ingest(config, pipeline.store, pipeline.embedder, pipeline.locates_sentences)
        app = ChatApp(pipeline, ingest=ingest,
                      upload_dir=Path(config.upload_dir), upload_max_bytes=config.upload_max_mb * 2**20)
        port = free_port()
        demo = launch(app, port=port, block=False)
        yield f"http://127.0.0.1:{port}", pipeline
        demo.close()
    finally:
        if local is not None:
            local.stop()


@contextmanager
def browser_page(url: str, artifacts: Path, request):
    """A fresh Chromium page on `url` that records every request leaving loopback, and leaves a
    screenshot when the test failed."""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1400, "height": 1300})
        page.outside_requests = []
        page.on("request", lambda r: None if r.url.startswith(LOOPBACK) else page.outside_requests.append(r.url))
        page.goto(url)
        page.wait_for_selector("#question textarea")
        yield page
        if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
            page.screenshot(path=str(artifacts / f"FAILED-{request.node.name}.png"), full_page=True)
        browser.close()


@pytest.fixture
def page(app_url, artifacts, request):
    with browser_page(app_url[0], artifacts, request) as page:
        yield page


ANSWER_TIMEOUT_MS = 240_000


def ask(page, question: str):
    """Ask and wait for the final message (answers end with their sources; refusals say so)."""
    before = page.locator("#chat [data-testid='bot']").count()
    page.fill("#question textarea", question)
    page.click("#ask")
    page.wait_for_function(
        """([before, refusal]) => {
            const bots = document.querySelectorAll("#chat [data-testid='bot']");
            if (bots.length <= before) return false;
            const last = bots[bots.length - 1].innerText;
            return last.includes("Sources") || last.includes(refusal) || last.includes("⚠️");
        }""", arg=[before, REFUSAL_TEXT], timeout=ANSWER_TIMEOUT_MS)
    page.wait_for_function("() => !document.querySelector('#inspection-table .pending, #chat .pending')",
                           timeout=ANSWER_TIMEOUT_MS)
    return page.locator("#chat [data-testid='bot']").last


def test_answerable_question_shows_cited_answer_panel_and_takes_feedback(page, app_url, artifacts):
    _, pipeline = app_url
    message = ask(page, "What's the heaviest load a single H2 robot can carry?")
    text = message.inner_text()
    assert "Sources" in text and "h2-product-faq.html" in text and "[1]" in text
    # The table renders rows virtually: the grid's row count (with its header row) tells the size.
    grid = page.locator("#inspection-table [role=grid]")
    assert int(grid.get_attribute("aria-rowcount")) - 1 == pipeline.config.pool_size
    first_row = page.locator("#inspection-table [role=row][aria-rowindex='2']")
    assert "kept" in first_row.inner_text()
    assert "Floor:" in page.locator("#panel-floor").inner_text()
    assert "rerank" in page.locator("#panel-timings").inner_text()
    assert page.locator("#panel-chart img, #panel-chart canvas, #panel-chart svg").count() >= 1
    page.screenshot(path=str(artifacts / "answer.png"), full_page=True)

    page.locator("#inspection-table [data-testid='cell-0-1']").click()
    page.wait_for_function("() => document.querySelector('#panel-chunk').innerText.includes('p_relevant')")
    page.click("#chunk-up")
    page.wait_for_function("() => document.querySelector('#feedback-status').innerText.includes('this chunk')")
    message.hover()
    page.locator("#chat button[aria-label='Like']").last.click()
    page.wait_for_function("() => document.querySelector('#feedback-status').innerText.includes('the answer')")
    trace = pipeline.traces.recent(1)[0]
    feedback = pipeline.traces.get(trace["trace_id"])["feedback"]
    assert feedback["answer"] == 1 and list(feedback["chunks"].values()) == [1]
    assert page.outside_requests == []


def test_unanswerable_question_is_refused_without_calling_the_llm(page, app_url, artifacts):
    calls = CountingChat.calls
    message = ask(page, "What is the capital of Australia?")
    assert REFUSAL_TEXT in message.inner_text()
    assert "Closest passages" in message.inner_text()
    assert CountingChat.calls == calls
    assert "kept 0 of" in page.locator("#panel-floor").inner_text()
    page.screenshot(path=str(artifacts / "refusal.png"), full_page=True)


def test_follow_up_is_rewritten_with_the_conversation(page, artifacts):
    ask(page, "I'm going to a customer in Rotterdam. How much can I spend per night on a hotel?")
    ask(page, "and what about in Lisbon?")
    panel = page.locator("#panel-floor").inner_text()
    assert "rewritten from the follow-up" in panel
    searched = panel.split("Searched:")[1].split("\n")[0].lower()
    assert "lisbon" in searched and ("hotel" in searched or "night" in searched or "rotterdam" in searched)
    page.screenshot(path=str(artifacts / "follow-up.png"), full_page=True)


def test_uploaded_document_is_ingested_and_answers_questions(page, app_url, tmp_path, artifacts):
    doc = tmp_path / "zebra care.md"
    doc.write_text("# Office zebra\n\nThe office zebra at the Porto depot is called Humphrey. "
                   "Humphrey eats hay every morning and sleeps in the courtyard.\n", encoding="utf-8")
    page.get_by_role("tab", name="Knowledge base").click()
    page.locator("#upload input[type=file]").set_input_files(str(doc))
    page.wait_for_function("() => document.querySelector('#upload').innerText.includes('zebra')")
    page.click("#ingest")
    page.wait_for_function("() => document.querySelector('#ingest-status').innerText.includes('Ingested')",
                           timeout=120_000)
    assert "1 added" in page.locator("#ingest-status").inner_text()
    assert "zebra care.md" in page.locator("#documents").inner_text()
    page.screenshot(path=str(artifacts / "upload.png"), full_page=True)
    page.get_by_role("tab", name="Chat").click()
    message = ask(page, "What is the name of the office zebra at the Porto depot?")
    assert "zebra care.md" in message.inner_text() and "Humphrey" in message.inner_text()


@pytest.fixture(scope="module")
def replay_app(sample_db, tmp_path_factory):
    """The app with the Replay tab, over a knowledge base whose traces hold rated questions."""
    pipeline, results = asked_copy(sample_db, tmp_path_factory.mktemp("replay-ui") / "lancedb",
                                   {"What's the heaviest load a single H2 robot can carry?": 1,
                                    "What is the capital of Australia?": 1, "Who won the 2018 FIFA World Cup?": -1})
    port = free_port()
    demo = launch(ChatApp(pipeline, replay_tab=True), port=port, block=False)
    yield f"http://127.0.0.1:{port}", results
    demo.close()


def test_replay_tab_shows_the_flips_of_a_new_floor_and_both_panels(replay_app, artifacts, request):
    url, results = replay_app
    with browser_page(url, artifacts, request) as page:
        page.get_by_role("tab", name="Replay").click()
        page.fill("#replay-floor input", "0")  # every refusal would now be answered
        page.click("#replay-run")
        page.wait_for_function("() => document.querySelector('#replay-summary').innerText.includes('replayed')",
                               timeout=120_000)
        summary = page.locator("#replay-summary").inner_text()
        assert "replayed 3 stored questions" in summary and "refused -> answered 2" in summary
        assert "1 regression(s)" in summary
        grid = page.locator("#replay-table [role=grid]")
        assert int(grid.get_attribute("aria-rowcount")) - 1 == 2
        first = page.locator("#replay-table [role=row][aria-rowindex='2']").inner_text()
        second = page.locator("#replay-table [role=row][aria-rowindex='3']").inner_text()
        # The refusal a user rated 👍 would now be answered: a regression, listed first.
        assert "regression" in first and "capital of Australia" in first and "👍" in first
        assert "fix" in second and "World Cup" in second and "👎" in second
        page.locator("#replay-table [data-testid='cell-0-0']").click()
        page.wait_for_function("() => document.querySelector('#replay-now-floor').innerText.includes('Floor')")
        assert "refused" in page.locator("#replay-then-floor").inner_text()
        assert "answered" in page.locator("#replay-now-floor").inner_text()
        assert "kept" in page.locator("#replay-now-table").inner_text()
        page.screenshot(path=str(artifacts / "replay.png"), full_page=True)
        assert page.outside_requests == []


HR_DOC = ("# Salary bands 2025\n\n## Engineering\n\nThe salary band for an Engineer II is €58,000 to €71,000 a year, "
          "reviewed every January by the People team.\n")


@pytest.fixture(scope="module")
def users_app(sample_db, tmp_path_factory, embedder):
    """The app for a knowledge base with two users and a document only HR may read."""
    from chatbot.store import ChunkStore
    from chatbot.users import UserStore
    from ingest.run import ingest_paths

    root = tmp_path_factory.mktemp("users-ui")
    shutil.copytree(sample_db, root / "lancedb")
    (root / "hr").mkdir()
    (root / "hr" / "salary-bands.md").write_text(HR_DOC, encoding="utf-8")
    store = ChunkStore(str(root / "lancedb"))
    assert not ingest_paths([root / "hr"], store, embedder, access=["hr"]).failed
    users = UserStore(store)
    users.add("alice", "alice-password-1", ["hr"])
    users.add("bob", "bob-password-12", ["eng"])
    config = Config(db_uri=str(root / "lancedb"), upload_dir=str(root / "uploads"))
    pipeline = Pipeline.from_config(config)
    ingest = make_ingest(config, pipeline.store, pipeline.embedder, pipeline.locates_sentences)
    app = ChatApp(pipeline, users=users, ingest=ingest,
                  upload_dir=Path(config.upload_dir))
    port = free_port()
    demo = launch(app, port=port, block=False)
    yield f"http://127.0.0.1:{port}", len(store.document_hashes()) - 1  # and how many everyone may read
    demo.close()


@contextmanager
def signed_in(url: str, name: str, password: str, artifacts: Path, request):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1300})
        page.goto(url)
        page.fill("input[type=text]", name)
        page.fill("input[type=password]", password)
        page.keyboard.press("Enter")
        yield page
        if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
            page.screenshot(path=str(artifacts / f"FAILED-{request.node.name}-{name}.png"), full_page=True)
        browser.close()


def test_each_user_sees_only_their_groups_documents(users_app, artifacts, request):
    url, public_docs = users_app
    question = "What is the salary band for an Engineer II?"
    with signed_in(url, "bob", "bob-password-12", artifacts, request) as page:
        page.wait_for_selector("#question textarea", timeout=60_000)
        message = ask(page, question).inner_text()
        panel = page.locator("#inspection-table").inner_text()
        assert "58,000" not in message and "salary-bands" not in message and "salary-bands" not in panel
        page.get_by_role("tab", name="Knowledge base").click()
        page.wait_for_function("() => document.querySelector('#documents').innerText.includes('all-hands')")
        # the table renders rows virtually: its row count (with the header row) says how many are listed
        grid = page.locator("#documents [role=grid]")
        assert int(grid.get_attribute("aria-rowcount")) - 1 == public_docs
        page.screenshot(path=str(artifacts / "signed-in-bob.png"), full_page=True)
    with signed_in(url, "alice", "alice-password-1", artifacts, request) as page:
        page.wait_for_selector("#question textarea", timeout=60_000)
        message = ask(page, question).inner_text()
        assert "58,000" in message and "salary-bands.md" in message
        page.get_by_role("tab", name="Knowledge base").click()
        page.wait_for_function("() => document.querySelector('#documents').innerText.includes('all-hands')")
        grid = page.locator("#documents [role=grid]")
        assert int(grid.get_attribute("aria-rowcount")) - 1 == public_docs + 1  # and the HR document
        page.screenshot(path=str(artifacts / "signed-in-alice.png"), full_page=True)
    with signed_in(url, "alice", "not-her-password", artifacts, request) as page:
        page.wait_for_function("() => document.body.innerText.toLowerCase().includes('incorrect credentials')",
                               timeout=30_000)
        assert page.locator("#question").count() == 0
