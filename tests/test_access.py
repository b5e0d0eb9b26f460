"""Per-document access, enforced where the data is read: a user who is not in a document's groups
never gets any of it back, in any form (answer, refusal, near misses, panel rows, JSON record, trace)."""

from __future__ import annotations

import io
import json
import shutil

import pytest

from chatbot.cli import main
from chatbot.config import Config
from chatbot.errors import ConfigError
from chatbot.pipeline import Pipeline
from chatbot.present import candidate_rows, outcome_markdown
from chatbot.record import ask_record
from chatbot.store import ChunkStore
from chatbot.users import AuthError, UserStore
from ingest.run import ingest_paths
from tests.helpers import SAMPLE_KB

SALARIES = """# Salary bands 2025

## Engineering

The salary band for an Engineer II is €58,000 to €71,000 a year. A Senior Engineer is paid
€72,000 to €90,000. Bands are reviewed every January by the People team.

## Open HR cases

Case HR-2025-014: a grievance about overtime pay in the Lisbon warehouse team, opened 3 March.
"""
SECRETS = ("salary-bands.md", "58,000", "HR-2025-014", "grievance")
QUESTIONS = ["What is the salary band for an Engineer II?", "How much does an Engineer II earn per year?",
             "Are there any open HR cases about overtime?"]


@pytest.fixture(scope="module")
def kb(tmp_path_factory, embedder):
    root = tmp_path_factory.mktemp("access")
    docs, hr = root / "docs", root / "hr"
    docs.mkdir()
    hr.mkdir()
    for name in ("employee-handbook.md", "expense-policy.md", "benefits-overview.html", "travel-policy.pdf"):
        shutil.copy(SAMPLE_KB / name, docs / name)
    (hr / "salary-bands.md").write_text(SALARIES, encoding="utf-8")
    db = str(root / "db")
    store = ChunkStore(db)
    assert not ingest_paths([docs], store, embedder).failed
    assert not ingest_paths([hr], store, embedder, access=["hr"]).failed
    users = UserStore(store)
    users.add("alice", "alice-password-1", ["hr"])
    users.add("bob", "bob-password-12", ["eng"])
    return db, hr, users


def _everything_shown(pipeline, result) -> str:
    """Every place a question's outcome reaches a person: the answer or refusal as shown, the panel's rows,
    the JSON record, and the stored trace."""
    record = ask_record(result, pipeline.fingerprints)
    trace = pipeline.traces.get(result.trace_id)
    cited = () if result.refused else result.outcome.cited
    return "\n".join([outcome_markdown(result), json.dumps(candidate_rows(result.gate, cited), ensure_ascii=False),
                      json.dumps(record, ensure_ascii=False), json.dumps(trace, ensure_ascii=False)])


@pytest.mark.parametrize("backend", ["rank_bm25", "lancedb"])
def test_a_user_outside_the_group_never_sees_the_document(kb, backend, embedder):
    db, _, users = kb
    if backend == "lancedb":
        ChunkStore(db).build_full_text_index()
    pipeline = Pipeline.from_config(Config(db_uri=db, bm25_backend=backend))
    bob, alice = users.viewer("bob"), users.viewer("alice")
    for question in QUESTIONS:
        result = pipeline.ask(question, viewer=bob)
        assert all("salary-bands" not in c.chunk.doc_path for c in result.gate.ranked)
        shown = _everything_shown(pipeline, result)
        for secret in SECRETS:
            assert secret not in shown, (question, secret)
        # the pool is still full: the filter ran before ranking, not on what was left of it
        assert len(result.gate.ranked) == pipeline.config.pool_size
    answer = pipeline.ask(QUESTIONS[0], viewer=alice)
    assert not answer.refused and "salary-bands.md" in answer.outcome.cited[0].doc_path
    assert "58,000" in answer.outcome.text
    assert pipeline.traces.get(answer.trace_id)["record"]["asked_by"] == "alice"


def test_relabeling_changes_who_reads_without_embedding_again(kb, tmp_path, embedder):
    db, hr, users = kb
    copy = tmp_path / "db"
    shutil.copytree(db, copy)
    store = ChunkStore(str(copy))
    report = ingest_paths([hr], store, embedder, access=["everyone"])
    assert report.relabeled == [str((hr / "salary-bands.md").resolve())] and report.chunks_written == 0
    pipeline = Pipeline.from_config(Config(db_uri=str(copy), traces=False))
    result = pipeline.ask(QUESTIONS[0], viewer=UserStore(store).viewer("bob"))
    assert not result.refused and "58,000" in result.outcome.text


def test_users_are_stored_hashed_and_verified(kb):
    _, _, users = kb
    assert users.verify("alice", "alice-password-1").groups == frozenset({"hr"})
    for name, password in (("alice", "wrong-password"), ("nobody", "alice-password-1"), ("alice", "")):
        with pytest.raises(AuthError, match="unknown user or wrong password"):
            users.verify(name, password)
    stored = json.dumps(users._rows(), default=str)
    assert "alice-password-1" not in stored and "$argon2id$" in stored
    with pytest.raises(ConfigError, match="at least 10"):
        users.add("carol", "short", ["eng"])
    with pytest.raises(ConfigError, match="group name"):
        users.add("carol", "long-enough-pw", ["HR'; drop"])


def test_cli_users_and_ask_as(kb, tmp_path, capsys, monkeypatch):
    db, _, _ = kb
    copy = str(tmp_path / "db")
    shutil.copytree(db, copy)
    monkeypatch.setattr("sys.stdin", io.StringIO("dana-password-1\n"))
    assert main(["--db", copy, "users", "add", "dana", "--groups", "hr,legal", "--admin", "--password-stdin"]) == 0
    assert main(["--db", copy, "users", "list"]) == 0
    listing = capsys.readouterr().out
    assert "dana\tgroups: hr, legal\tadmin" in listing and "bob\tgroups: eng" in listing and "argon2" not in listing
    assert main(["--db", copy, "ask", "--as", "bob", "--json", QUESTIONS[0]]) == 0
    record = capsys.readouterr().out
    assert all(secret not in record for secret in SECRETS)
    assert len(json.loads(record)["candidates"]) == 30  # a full pool, of what bob may read
    assert main(["--db", copy, "ask", "--as", "dana", QUESTIONS[0]]) == 0
    assert "58,000" in capsys.readouterr().out
    assert main(["--db", copy, "ask", "--as", "nobody", QUESTIONS[0]]) == 2
    assert "no user 'nobody'" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("a-new-password\n"))
    assert main(["--db", copy, "users", "passwd", "dana", "--password-stdin"]) == 0
    assert UserStore(ChunkStore(copy)).verify("dana", "a-new-password").admin
    assert main(["--db", copy, "users", "remove", "dana"]) == 0
    assert main(["--db", copy, "users", "remove", "dana"]) == 2


def test_the_trusted_header_counts_only_from_the_proxy(kb, capsys, caplog):
    from types import SimpleNamespace

    from chatbot.ui import ChatApp

    db, _, users = kb
    pipeline = Pipeline.from_config(Config(db_uri=db, traces=False))

    def request(host, name):  # what the web server hands the app: the client's address and the headers
        return SimpleNamespace(client=SimpleNamespace(host=host), headers={"x-forwarded-user": name}, username=None)

    behind_loopback = ChatApp(pipeline, users=users, trusted_header="X-Forwarded-User")
    assert behind_loopback.viewer_of(request("127.0.0.1", "alice")).groups == frozenset({"hr"})
    with pytest.raises(AuthError, match="trusted proxy"):
        behind_loopback.viewer_of(request("10.0.0.9", "alice"))  # a forged header from elsewhere
    with pytest.raises(AuthError, match="not signed in"):
        behind_loopback.viewer_of(request("127.0.0.1", "mallory"))
    behind_proxy = ChatApp(pipeline, users=users, trusted_header="X-Forwarded-User", trusted_proxy="10.0.0.2")
    assert behind_proxy.viewer_of(request("10.0.0.2", "bob")).name == "bob"
    with pytest.raises(AuthError):
        behind_proxy.viewer_of(request("127.0.0.1", "bob"))
    # a signed-in session whose user has since been removed is refused, not served as anyone
    signed_in = ChatApp(pipeline, users=users)
    assert signed_in.viewer_of(SimpleNamespace(username="bob")).name == "bob"
    with pytest.raises(AuthError):
        signed_in.viewer_of(SimpleNamespace(username="removed-user"))
    assert signed_in.check_login("bob", "bob-password-12") and not signed_in.check_login("bob", "guess-password")
    assert "sign-in refused for 'bob'" in caplog.text and "guess-password" not in caplog.text
    assert main(["--db", db, "serve", "--host", "0.0.0.0", "--trusted-header", "X-Forwarded-User"]) == 2
    assert "--trusted-proxy" in capsys.readouterr().err


def test_folder_rules_in_the_config_label_what_is_ingested(tmp_path, embedder, monkeypatch, capsys):
    root = tmp_path / "kb"
    (root / "hr" / "cases").mkdir(parents=True)
    (root / "public").mkdir()
    (root / "hr" / "salary-bands.md").write_text(SALARIES, encoding="utf-8")
    (root / "hr" / "cases" / "case.md").write_text("# Case\n\nCase HR-2025-014 is about overtime pay.\n")
    shutil.copy(SAMPLE_KB / "expense-policy.md", root / "public" / "expense-policy.md")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "chatbot.toml").write_text('[chatbot]\ndb_uri = "db"\n\n[chatbot.access]\n"kb/hr" = ["hr"]\n'
                                           '"kb/hr/cases" = ["hr-cases"]\n', encoding="utf-8")
    assert main(["ingest", "kb", "--quiet"]) == 0
    access = {p.rsplit("/", 1)[-1]: groups for p, groups in ChunkStore("db").document_access().items()}
    assert access == {"salary-bands.md": ("hr",), "case.md": ("hr-cases",), "expense-policy.md": ("everyone",)}
    (tmp_path / "chatbot.toml").write_text('[chatbot]\ndb_uri = "db"\naccess = "hr"\n', encoding="utf-8")
    assert main(["ingest", "kb", "--quiet"]) == 2
    assert "'access' must be a table" in capsys.readouterr().err


def test_replay_asks_again_as_the_user_who_asked(kb, tmp_path):
    from chatbot.replay import replay
    from chatbot.traces import TraceStore

    db, _, users = kb
    copy = tmp_path / "db"
    shutil.copytree(db, copy)
    shutil.rmtree(copy / "chunks_traces.lance", ignore_errors=True)
    pipeline = Pipeline.from_config(Config(db_uri=str(copy)))
    bob = UserStore(pipeline.store).viewer("bob")
    asked = pipeline.ask(QUESTIONS[0], viewer=bob)
    report = replay(pipeline.with_calibration(pipeline.calibration), TraceStore(pipeline.store).replayable(),
                    viewer_of=UserStore(pipeline.store).viewer)
    (again,) = report.replayed
    assert report.scored_pairs == 0  # bob's stored scores, reused under bob's groups
    assert all("salary-bands" not in c.chunk.doc_path for c in again.gate.ranked)
    assert again.now == ("refusal" if asked.refused else "answer") and not again.changed
    UserStore(pipeline.store).remove("bob")
    report = replay(pipeline.with_calibration(pipeline.calibration), TraceStore(pipeline.store).replayable(),
                    viewer_of=UserStore(pipeline.store).viewer)
    assert report.skip_reasons() == {"user removed": 1}


def test_a_table_from_before_access_labels_reads_as_everyone_and_takes_labels(tmp_path, embedder):
    kb = tmp_path / "kb"
    kb.mkdir()
    shutil.copy(SAMPLE_KB / "expense-policy.md", kb)
    store = ChunkStore(str(tmp_path / "db"))
    ingest_paths([kb], store, embedder)
    store.table.drop_columns(["access"])  # the schema a knowledge base had before this version
    old = ChunkStore(str(tmp_path / "db"))
    assert set(old.document_access().values()) == {("everyone",)}
    assert all(c.access == ("everyone",) for c in old.snapshot().chunks)
    report = ingest_paths([kb], old, embedder, access=["finance"])  # migrates, then relabels in place
    assert len(report.relabeled) == 1 and report.chunks_written == 0
    assert set(ChunkStore(str(tmp_path / "db")).document_access().values()) == {("finance",)}


def test_the_server_refuses_bad_sign_ins_and_foreign_headers(kb, caplog):
    import httpx

    from chatbot.ui import ChatApp, launch
    from tests.helpers import free_port

    db, _, users = kb
    pipeline = Pipeline.from_config(Config(db_uri=db, traces=False))

    def serve(**kwargs):
        port = free_port()
        return launch(ChatApp(pipeline, users=users, **kwargs), port=port, block=False), f"http://127.0.0.1:{port}"

    demo, url = serve()
    try:
        for name, password in (("alice", "wrong-password"), ("mallory", "alice-password-1")):
            response = httpx.post(f"{url}/login", data={"username": name, "password": password})
            # the login page shows it as "Incorrect credentials" (tests/test_ui_browser.py)
            assert response.status_code == 401 and "Incorrect credentials" in response.text
            assert response.headers["www-authenticate"].startswith("Form")
        assert httpx.get(f"{url}/gradio_api/info").status_code == 401  # nothing without signing in
        assert httpx.post(f"{url}/login", data={"username": "alice", "password": "alice-password-1"}).status_code == 200
        assert "wrong-password" not in caplog.text and "sign-in refused for 'alice'" in caplog.text
    finally:
        demo.close()
    demo, url = serve(trusted_header="X-Forwarded-User")
    try:
        assert httpx.get(url, headers={"X-Forwarded-User": "alice"}).status_code == 200
        assert httpx.get(url, headers={"X-Forwarded-User": "mallory"}).status_code == 403
        assert httpx.get(url).status_code == 401  # not signed in
    finally:
        demo.close()
    demo, url = serve(trusted_header="X-Forwarded-User", trusted_proxy="10.0.0.2")
    try:  # the proxy is elsewhere: a header sent from here is forged
        response = httpx.get(url, headers={"X-Forwarded-User": "alice"})
        assert response.status_code == 403 and "trusted proxy" in response.text
    finally:
        demo.close()


def test_follow_ups_use_only_the_asking_users_conversation(kb):
    """One browser session, two people in turn (a shared kiosk, a sign-out and in): the second person's
    follow-up is not rewritten with the first person's question, and reads only their documents."""
    from types import SimpleNamespace

    from chatbot.ui import ChatApp

    db, _, users = kb
    app = ChatApp(Pipeline.from_config(Config(db_uri=db, traces=False)), users=users)
    session = None
    for *_, session, _floor, _rows, _chart, _timings, _chunk in app.respond(
            "What is the salary band for an Engineer II?", [], session, SimpleNamespace(username="alice")):
        pass
    assert session.standalone_questions == ["What is the salary band for an Engineer II?"]
    outputs = list(app.respond("and for a Senior Engineer?", [], session, SimpleNamespace(username="bob")))
    final = outputs[-1]
    session = final[2]
    assert session.viewer == "bob" and session.last_rewrite.standalone == "and for a Senior Engineer?"
    assert all("salary-bands" not in c.chunk.doc_path for c in session.last_result.gate.ranked)
    assert "90,000" not in json.dumps(final[1], ensure_ascii=False)


def test_a_session_expires_and_must_sign_in_again(kb):
    import time

    import httpx

    from chatbot.ui import ChatApp, launch
    from tests.helpers import free_port

    db, _, users = kb
    port = free_port()
    demo = launch(ChatApp(Pipeline.from_config(Config(db_uri=db, traces=False)), users=users), port=port,
                  block=False, session_hours=1.5 / 3600)  # 1.5 seconds
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client() as browser:
            assert browser.post(f"{url}/login", data={"username": "bob", "password": "bob-password-12"}).status_code == 200
            assert browser.get(f"{url}/gradio_api/info").status_code == 200  # signed in
            time.sleep(2.0)
            assert browser.get(f"{url}/gradio_api/info").status_code == 401  # expired: sign in again
            assert browser.post(f"{url}/login", data={"username": "bob", "password": "bob-password-12"}).status_code == 200
            assert browser.get(f"{url}/gradio_api/info").status_code == 200
    finally:
        demo.close()


def test_calibrate_from_traces_reads_every_users_ratings(kb, tmp_path, tiny_reranker_dir, capsys):
    from tests.helpers import SAMPLE_QUESTIONS, make_pipeline

    db, _, users = kb
    copy = tmp_path / "db"
    shutil.copytree(db, copy)
    shutil.rmtree(copy / "chunks_traces.lance", ignore_errors=True)
    pipeline = make_pipeline(str(copy), tiny_reranker_dir, floor=1.0)  # refuses everything: refusals get rated
    alice, bob = users.viewer("alice"), users.viewer("bob")
    rated = 0
    for q in SAMPLE_QUESTIONS[:4] + [q for q in SAMPLE_QUESTIONS if q.get("why") == "off-topic"]:
        viewer = alice if q["answerable"] else bob
        result = pipeline.ask(q["question"], viewer=viewer)
        if q["answerable"]:
            right = next((c for c in result.gate.ranked if q["doc"] in c.chunk.doc_path), None)
            if right is None:
                continue  # its document is not in this knowledge base
            wrong = next(c for c in result.gate.ranked if q["doc"] not in c.chunk.doc_path)
            pipeline.traces.add_feedback(result.trace_id, 1, right.chunk.id)
            pipeline.traces.add_feedback(result.trace_id, -1, wrong.chunk.id)
            pipeline.traces.add_feedback(result.trace_id, -1)  # it should have answered
        else:
            pipeline.traces.add_feedback(result.trace_id, 1)  # the refusal was right
        rated += 1
    askers = {t["record"]["asked_by"] for t in pipeline.traces.with_feedback()}
    assert askers == {"alice", "bob"}
    capsys.readouterr()
    assert main(["--db", str(copy), "calibrate", "--from-traces", "--reranker", str(tiny_reranker_dir),
                 "--out", str(tmp_path / "cal.json"), "--max-false-refusal-rate", "0.2"]) == 0
    assert f"{rated} rated, {rated} usable" in capsys.readouterr().err


def test_users_of_other_groups_do_not_share_cached_scores(kb):
    db, _, users = kb
    pipeline = Pipeline.from_config(Config(db_uri=db, traces=False))
    reranker, question = pipeline.reranker, "How are expense claims approved?"
    pipeline.ask(question, viewer=users.viewer("alice"))
    hits = reranker.cache_hits
    pipeline.ask(question, viewer=users.viewer("bob"))  # the same question, another group: scored anew
    assert reranker.cache_hits == hits
    pipeline.ask(question, viewer=users.viewer("bob"))  # bob again: his own cache
    assert reranker.cache_hits > hits
