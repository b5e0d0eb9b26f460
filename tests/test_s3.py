"""The product on object storage: an S3-compatible server (moto's, on loopback, started here) holds
the knowledge base; ingest, ask, traces, replay and the write lock run against s3://."""

from __future__ import annotations

import json
import uuid

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
    # moto keeps its buckets in this process across server instances: a bucket of its own per test.
    bucket = f"team-kb-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    kb = tmp_path / "docs"
    kb.mkdir()
    for name in ("expense-policy.md", "h2-product-faq.html", "travel-policy.pdf"):
        (kb / name).write_bytes((SAMPLE_KB / name).read_bytes())
    yield f"s3://{bucket}/knowledge", kb
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


def test_credentials_and_endpoint_from_the_config_are_used_and_never_shown(s3_kb, tmp_path, monkeypatch, capsys,
                                                                          caplog):
    """No AWS variables at all: the endpoint and keys come from chatbot.toml's [chatbot.storage], reach both
    LanceDB and the lock, and appear in no output, trace or log."""
    import logging

    uri, kb = s3_kb
    endpoint = __import__("os").environ["AWS_ENDPOINT"]
    for var in ("AWS_ENDPOINT", "AWS_ENDPOINT_URL", "AWS_ALLOW_HTTP", "AWS_REGION", "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))  # nor a profile of the machine's
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    config = tmp_path / "chatbot.toml"
    config.write_text(f'[chatbot]\ndb_uri = "{uri}"\n\n[chatbot.storage]\naws_endpoint = "{endpoint}"\n'
                      f'allow_http = true\naws_region = "us-east-1"\naws_access_key_id = "test-key"\n'
                      f'aws_secret_access_key = "{SECRET}"\n')
    caplog.set_level(logging.DEBUG)
    assert main(["--config", str(config), "ingest", str(kb), "--quiet"]) == 0
    assert main(["--config", str(config), "ask", "--json", "What's the heaviest load a single H2 robot can carry?"]) == 0
    out = capsys.readouterr().out
    record = json.loads(out[out.index("{"):])
    assert "600 kg" in record["answer"]["text"]
    assert record["config"]["storage"]["aws_secret_access_key"] == "***"
    assert record["config"]["storage"]["aws_endpoint"] == endpoint
    from chatbot.config import load_config
    from chatbot.store import ChunkStore
    from chatbot.traces import TraceStore

    loaded = load_config(config)
    traces = TraceStore(ChunkStore(loaded.db_uri, loaded.table, loaded.storage)).table.to_arrow().to_pylist()
    assert len(traces) == 1
    assert SECRET not in json.dumps(traces, default=str) + out + capsys.readouterr().err + caplog.text
    assert SECRET not in repr(loaded)


def test_a_malformed_storage_table_names_the_key_but_not_the_value(tmp_path):
    from chatbot.config import load_config
    from chatbot.errors import ConfigError

    config = tmp_path / "chatbot.toml"
    config.write_text(f'[chatbot.storage]\naws_secret_key = "{SECRET}"\n')
    with pytest.raises(ConfigError) as e:
        load_config(config)
    assert "aws_secret_key" in str(e.value) and "aws_secret_access_key" in str(e.value) and SECRET not in str(e.value)


def _serve(uri: str, cwd) -> tuple[object, str]:
    import os
    import subprocess
    import sys

    from tests.helpers import REPO, free_port

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "chatbot.cli", "--db", uri, "serve", "--port", str(port)], cwd=cwd,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    return server, f"http://127.0.0.1:{port}/"


def _wait_until_up(server, url: str) -> None:
    import time
    import urllib.request

    deadline = time.monotonic() + 300
    while True:
        assert server.poll() is None, server.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "the replica did not start"
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)


def _ask(url: str, question: str) -> str:
    from gradio_client import Client

    content = Client(url, verbose=False).predict(question, [], api_name="/ask")[1][-1]["content"]
    return "".join(part.get("text", "") for part in content) if isinstance(content, list) else content


def test_two_served_replicas_on_one_store_answer_and_trace_everything(s3_kb, tmp_path):
    """Two `chatbot serve` processes on the same s3:// knowledge base, asked at the same time through their
    public API: both answer, every question's trace lands (appends from both at once), and a document
    ingested meanwhile (through the CLI, a third process) is answered by a replica already running."""
    from concurrent.futures import ThreadPoolExecutor

    from chatbot.store import ChunkStore
    from chatbot.traces import TraceStore

    uri, kb = s3_kb
    assert main(["--db", uri, "ingest", str(kb), "--quiet"]) == 0
    replicas = [_serve(uri, tmp_path) for _ in range(2)]
    try:
        for server, url in replicas:
            _wait_until_up(server, url)
        questions = {"What's the heaviest load a single H2 robot can carry?": "600 kg",
                     "What is the hotel cap in Rotterdam?": "Rotterdam",
                     "Who signs off on an expense claim of €3,000?": "expense-policy.md"}
        asks = [(url, q) for _, url in replicas for q in questions for _ in range(2)]  # 6 per replica
        with ThreadPoolExecutor(len(asks)) as pool:
            replies = list(pool.map(lambda a: _ask(*a), asks, timeout=600))
        for (_, question), reply in zip(asks, replies):
            assert questions[question] in reply, (question, reply[:300])
        traces = TraceStore(ChunkStore(uri)).replayable()
        lost = len(asks) - len({t["trace_id"] for t in traces})
        if lost or len(traces) != len(asks):  # a replica logs why a trace write failed: show it
            logs = []
            for server, _ in replicas:
                server.terminate()
                logs.append(server.communicate(timeout=60)[1][-3000:])
            pytest.fail(f"{len(traces)} traces for {len(asks)} questions; the replicas said:\n" + "\n---\n".join(logs))

        question = "What is the name of the office zebra at the Porto depot?"
        assert "Humphrey" not in _ask(replicas[1][1], question)
        new = tmp_path / "zebra"
        new.mkdir()
        (new / "zebra.md").write_text("# Office zebra\n\nThe office zebra at the Porto depot is called Humphrey.\n")
        assert main(["--db", uri, "ingest", str(new), "--quiet"]) == 0
        # The next question sees it: every read checks the store's latest version, so the delay is one read.
        assert "Humphrey" in _ask(replicas[1][1], question) and "Humphrey" in _ask(replicas[0][1], question)
    finally:
        for server, _ in replicas:
            server.terminate()
            server.wait(timeout=60)


def test_eval_and_calibrate_on_s3(s3_kb, beir_dir, tiny_reranker_dir, tmp_path):
    uri, _ = s3_kb
    out = tmp_path / "report"
    assert main(["--db", uri, "eval", str(beir_dir), "--reranker", str(tiny_reranker_dir), "--out", str(out)]) == 0
    assert json.loads((out / "report.json").read_text())["n_queries"] == 9
    assert main(["--db", uri, "calibrate", str(beir_dir), "--reranker", str(tiny_reranker_dir),
                 "--out", str(tmp_path / "cal.json"), "--max-false-refusal-rate", "0.2"]) == 0
    assert (tmp_path / "cal.json").is_file()
