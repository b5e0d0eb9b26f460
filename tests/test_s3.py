"""The product on object storage: an S3-compatible server (moto's, on loopback, started here) holds
the knowledge base; ingest, ask, traces, replay and the write lock run against s3://."""

from __future__ import annotations

import json

import pytest

from chatbot.cli import main
from chatbot.s3lock import s3_write_lock
from tests.helpers import SAMPLE_KB

moto_server = pytest.importorskip("moto.server")
SECRET = "test-secret-key-never-printed"


@pytest.fixture
def s3_kb(monkeypatch, tmp_path):
    import boto3

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {"AWS_ENDPOINT": endpoint, "AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1",
           "AWS_ACCESS_KEY_ID": "test-key", "AWS_SECRET_ACCESS_KEY": SECRET}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="team-kb")
    kb = tmp_path / "docs"
    kb.mkdir()
    for name in ("expense-policy.md", "h2-product-faq.html", "travel-policy.pdf"):
        (kb / name).write_bytes((SAMPLE_KB / name).read_bytes())
    yield "s3://team-kb/knowledge", kb
    server.stop()


def test_ingest_ask_traces_and_replay_on_s3(s3_kb, capsys):
    uri, kb = s3_kb
    assert main(["--db", uri, "ingest", str(kb), "--quiet"]) == 0
    assert "3 added" in capsys.readouterr().out
    assert main(["--db", uri, "ingest", str(kb), "--quiet"]) == 0
    assert "3 unchanged" in capsys.readouterr().out
    assert main(["--db", uri, "ask", "--json", "What's the heaviest load a single H2 robot can carry?"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["decision"] == "answer" and "600 kg" in record["answer"]["text"]
    assert record["trace_id"] and SECRET not in json.dumps(record)
    assert main(["--db", uri, "replay", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["replayed"] == 1


def test_the_write_lock_holds_across_writers_on_s3(s3_kb, capsys):
    uri, kb = s3_kb
    with s3_write_lock(uri, "chunks"):  # another machine's ingest holds it
        assert main(["--db", uri, "ingest", str(kb), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "another ingest (pid" in err and "chatbot unlock" in err and SECRET not in err
    assert main(["--db", uri, "ingest", str(kb), "--quiet"]) == 0  # released when the holder finished
    capsys.readouterr()
    lock = s3_write_lock(uri, "chunks")
    lock.__enter__()  # a holder killed before it could release: the lock stays behind
    assert main(["--db", uri, "ingest", str(kb), "--quiet"]) == 2
    assert main(["--db", uri, "unlock"]) == 0
    assert "removed the write lock" in capsys.readouterr().out
    assert main(["--db", uri, "ingest", str(kb), "--quiet"]) == 0


REPLICA = """
import json, sys
from chatbot.config import Config
from chatbot.pipeline import Pipeline
pipeline = Pipeline.from_config(Config(db_uri=sys.argv[1]))
ids = [pipeline.ask(q).trace_id for q in json.loads(sys.argv[2])]
print(json.dumps(ids))
"""


def test_two_replicas_on_one_store_answer_and_trace_everything(s3_kb, tmp_path):
    """Two app processes on the same s3:// knowledge base: both answer, every trace of both lands (appends
    at the same time), and a document ingested meanwhile is answered by a replica already running."""
    import subprocess
    import sys

    from chatbot.config import Config
    from chatbot.pipeline import Pipeline
    from chatbot.store import ChunkStore
    from chatbot.traces import TraceStore

    uri, kb = s3_kb
    assert main(["--db", uri, "ingest", str(kb), "--quiet"]) == 0
    questions = ["What's the heaviest load a single H2 robot can carry?", "Who signs off on an expense claim of €3,000?",
                 "What is the hotel cap in Rotterdam?", "How fast can the H2 drive?", "What is the per diem in Europe?"]
    replicas = [subprocess.Popen([sys.executable, "-c", REPLICA, uri, json.dumps(questions)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [r.communicate(timeout=600) for r in replicas]
    assert all(r.returncode == 0 for r in replicas), [err[-2000:] for _, err in outputs]
    trace_ids = [i for out, _ in outputs for i in json.loads(out.strip().splitlines()[-1])]
    assert len(trace_ids) == 10 and all(trace_ids)
    stored = {t["trace_id"] for t in TraceStore(ChunkStore(uri)).replayable()}
    assert set(trace_ids) <= stored  # none lost

    running = Pipeline.from_config(Config(db_uri=uri, traces=False))  # a replica that stays up
    question = "What is the name of the office zebra at the Porto depot?"
    assert running.ask(question).refused
    new = tmp_path / "zebra"
    new.mkdir()
    (new / "zebra.md").write_text("# Office zebra\n\nThe office zebra at the Porto depot is called Humphrey.\n")
    assert main(["--db", uri, "ingest", str(new), "--quiet"]) == 0  # through another replica
    answer = running.ask(question)  # the next question sees it: every read checks the store's latest version
    assert not answer.refused and "Humphrey" in answer.outcome.text


def test_eval_and_calibrate_on_s3(s3_kb, beir_dir, tiny_reranker_dir, tmp_path):
    uri, _ = s3_kb
    out = tmp_path / "report"
    assert main(["--db", uri, "eval", str(beir_dir), "--reranker", str(tiny_reranker_dir), "--out", str(out)]) == 0
    assert json.loads((out / "report.json").read_text())["n_queries"] == 9
    assert main(["--db", uri, "calibrate", str(beir_dir), "--reranker", str(tiny_reranker_dir),
                 "--out", str(tmp_path / "cal.json"), "--max-false-refusal-rate", "0.2"]) == 0
    assert (tmp_path / "cal.json").is_file()
