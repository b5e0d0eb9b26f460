"""The real `chatbot` command in a subprocess: what a user types and sees."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from chatbot.calibration import Calibration
from tests.helpers import SAMPLE_KB, FakeOpenAIServer


def run(*args, env_extra=None, cwd=None):
    env = dict(os.environ, LANCE_LOG="error", LANCEDB_LOG="error", **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "chatbot.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


@pytest.fixture
def kb(tmp_path):
    target = tmp_path / "kb"
    target.mkdir()
    for name in ("office-guide.html", "travel-policy.pdf", "glossary.txt"):
        shutil.copy(SAMPLE_KB / name, target / name)
    return target


@pytest.fixture
def calibration_file(tmp_path):
    path = tmp_path / "open.json"
    Calibration(floor=0.0).save(path)  # keep everything: the tiny reranker's scores mean nothing
    return path


def test_ingest_summary_and_incremental(tmp_path, kb):
    db = str(tmp_path / "db")
    first = run("--db", db, "ingest", str(kb))
    assert first.returncode == 0, first.stderr
    assert "3 added, 0 updated, 0 unchanged, 0 removed, 0 failed" in first.stdout
    (kb / "glossary.txt").unlink()
    (kb / "broken.pdf").write_bytes(b"%PDF-1.7 nothing else")
    second = run("--db", db, "ingest", str(kb), "--quiet")
    assert "0 added, 0 updated, 2 unchanged, 1 removed, 1 failed" in second.stdout
    assert "removed (no longer on disk): " in second.stdout and "glossary.txt" in second.stdout
    assert "failed: " in second.stderr and "broken.pdf" in second.stderr


def test_ask_json_and_text(tmp_path, kb, tiny_reranker_dir, calibration_file):
    db = str(tmp_path / "db")
    assert run("--db", db, "ingest", str(kb), "--quiet").returncode == 0
    args = ["--db", db, "ask", "--reranker", str(tiny_reranker_dir), "--calibration", str(calibration_file)]
    out = run(*args, "--json", "Which", "Wi-Fi", "network", "in", "Austin?")
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert record["question"] == "Which Wi-Fi network in Austin?" and record["decision"] == "answer"
    assert record["answer"]["mode"] == "extractive" and record["cited"] and record["trace_id"]
    assert record["config"]["llm_api_key"] == ""
    text = run(*args, "--timings", "Which Wi-Fi network in Austin?")
    assert "Sources:" in text.stdout and "[1]" in text.stdout and "Timings (ms):" in text.stdout
    assert "No LLM is configured" in text.stdout


def test_refusal_and_dead_llm_exit_codes(tmp_path, kb, tiny_reranker_dir):
    db = str(tmp_path / "db")
    assert run("--db", db, "ingest", str(kb), "--quiet").returncode == 0
    closed = tmp_path / "closed.json"
    Calibration(floor=1.0).save(closed)
    refused = run("--db", db, "ask", "--reranker", str(tiny_reranker_dir), "--calibration", str(closed), "Anything?")
    assert refused.returncode == 0 and refused.stdout.startswith("I don't have evidence for that.")
    assert "Closest passages, below the evidence floor:" in refused.stdout

    with FakeOpenAIServer() as server:
        url = server.base_url
    open_cal = tmp_path / "open.json"
    Calibration(floor=0.0).save(open_cal)
    dead = run("--db", db, "ask", "--reranker", str(tiny_reranker_dir), "--calibration", str(open_cal),
               "Hotel cap?", env_extra={"OPENAI_BASE_URL": url, "CHATBOT_LLM_MODEL": "m",
                                        "OPENAI_API_KEY": "sk-do-not-print", "CHATBOT_LLM_TIMEOUT_S": "5"})
    assert dead.returncode == 3
    assert url in dead.stderr and "cannot connect" in dead.stderr
    assert "Sources:" in dead.stdout  # the evidence is still shown
    assert "sk-do-not-print" not in dead.stdout + dead.stderr


def test_config_errors_are_messages_not_tracebacks(tmp_path):
    bad = tmp_path / "chatbot.toml"
    bad.write_text("[chatbot]\npool_sise = 10\n")
    out = run("ask", "hello", cwd=tmp_path)
    assert out.returncode == 2
    assert "unknown key(s) 'pool_sise'" in out.stderr and "Traceback" not in out.stderr
    empty = run("--db", str(tmp_path / "none"), "ask", "--reranker", str(tmp_path), "hello")
    assert empty.returncode == 2 and "Traceback" not in empty.stderr
