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
