"""Ingest on Ray: a local Ray cluster, started here on loopback, parses, chunks and embeds; the driver
commits. It stores what a local ingest stores, a SIGKILL of the driver loses nothing, and without
--ray nothing of Ray is imported."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from chatbot.cli import main
from chatbot.store import ChunkStore
from ingest.run import ingest_paths
from tests.helpers import REPO, SAMPLE_KB, free_port, local_ray_cluster
from tests.test_reliability_crash import _check_consistent, _corpus

if os.environ.get("CI"):  # CI installs the test extra: a missing Ray is a broken set-up, not a skip
    import ray  # noqa: F401
else:
    pytest.importorskip("ray")
@pytest.fixture(scope="module")
def ray_cluster():
    """A one-node Ray cluster of 2 CPUs on 127.0.0.1, stopped (with its workers) when the tests are done."""
    with local_ray_cluster(cpus=2) as address:
        yield address


def _rows(db: str) -> dict[str, dict]:
    return {r["id"]: r for r in ChunkStore(db)._scan(None).to_pylist()}


def test_ray_ingest_stores_what_a_local_ingest_stores(ray_cluster, tmp_path, embedder, capsys):
    corpus = tmp_path / "docs"
    corpus.mkdir()
    for name in ("expense-policy.md", "h2-product-faq.html", "travel-policy.pdf", "customer-site-register.xlsx"):
        shutil.copy(SAMPLE_KB / name, corpus / name)
    on_ray, local = str(tmp_path / "on-ray"), str(tmp_path / "local")
    assert main(["--db", on_ray, "ingest", str(corpus), "--ray", ray_cluster, "--workers", "2", "--access", "ops",
                 "--quiet"]) == 0
    assert "4 added, 0 updated" in capsys.readouterr().out
    assert not ingest_paths([corpus], ChunkStore(local), embedder, access=["ops"]).failed

    ray_rows, local_rows = _rows(on_ray), _rows(local)
    assert ray_rows.keys() == local_rows.keys() and len(ray_rows) > 20
    for chunk_id, row in ray_rows.items():
        expected = local_rows[chunk_id]
        for column in ("doc_path", "title", "heading_path", "position", "text", "content_hash", "search_text", "access"):
            assert row[column] == expected[column], (chunk_id, column)
        assert row["access"] == ",ops,"
        np.testing.assert_allclose(row["vector"], expected["vector"], atol=1e-5)

    assert main(["--db", on_ray, "ask", "--json", "What's the heaviest load a single H2 robot can carry?"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["decision"] == "answer" and "600 kg" in record["answer"]["text"]

    (corpus / "expense-policy.md").write_text("# Expenses\n\nA claim above €5,000 needs the CFO's approval.\n",
                                              encoding="utf-8")
    (corpus / "h2-product-faq.html").unlink()
    assert main(["--db", on_ray, "ingest", str(corpus), "--ray", ray_cluster, "--access", "ops", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "0 added, 1 updated, 2 unchanged, 1 removed, 0 failed" in out
    texts = [r["text"] for r in _rows(on_ray).values() if r["doc_path"].endswith("expense-policy.md")]
    assert texts == ["A claim above €5,000 needs the CFO's approval."]


def test_ray_workers_embed_the_sentences_too_and_the_driver_stores_what_a_local_ingest_would(
        ray_cluster, tmp_path, embedder):
    """An ingest that stores sentence vectors (under a calibration that reads the closest sentence): the workers
    embed each chunk's sentences with its chunks, so the driver embeds nothing, and stores the same vectors."""
    from chatbot.sentences import chunk_sentences, sentencing_fingerprint
    from ingest.on_ray import RayPreparer
    from ingest.run import ChunkingSettings
    from tests.test_locate import CountingEmbedder

    corpus = tmp_path / "docs"
    corpus.mkdir()
    for name in ("employee-handbook.md", "travel-policy.pdf"):
        shutil.copy(SAMPLE_KB / name, corpus / name)
    on_ray = ChunkStore(str(tmp_path / "on-ray"))
    driver = CountingEmbedder(embedder)
    preparer = RayPreparer(embedder.name, ChunkingSettings(), address=ray_cluster, workers=2, sentence_vectors=True)
    report = ingest_paths([corpus], on_ray, driver, prepare=preparer, sentence_vectors=True)
    assert not report.failed and driver.encoded == []  # neither the chunks nor their sentences embedded here
    ids = on_ray._scan(["id"]).column("id").to_pylist()
    assert report.sentences_of_chunks == len(ids) > 10
    texts = dict(zip(ids, on_ray._scan(["text"]).column("text").to_pylist()))
    stored = on_ray.sentence_vectors(ids, sentencing_fingerprint(embedder.fingerprint))
    assert set(stored) == set(ids)
    for chunk_id in ids:
        expected = embedder.embed_documents(chunk_sentences(texts[chunk_id]))
        assert stored[chunk_id].shape == expected.shape
        assert np.abs(stored[chunk_id] - expected).max() < 2e-3  # float16, as a local ingest stores them

    # A document whose chunks went while their sentence vectors stayed (an ingest stopped before its last step
    # prunes them): its chunks come back with the same ids, and their vectors are not stored twice.
    (handbook,) = [p for p in on_ray.document_hashes() if p.endswith("employee-handbook.md")]
    on_ray.remove_documents([handbook])
    again = ingest_paths([corpus], on_ray, driver, prepare=preparer, sentence_vectors=True)
    assert driver.encoded == [] and again.added == [handbook] and again.sentences_of_chunks == 0
    rows = on_ray._sentences().to_arrow().column("chunk_id").to_pylist()
    assert sorted(rows) == sorted(ids)  # one row per chunk


def _ray_ingest(db: str, corpus: Path, address: str) -> list[str]:
    return [sys.executable, "-m", "chatbot.cli", "--db", db, "ingest", str(corpus), "--ray", address, "--quiet"]


def test_a_killed_ray_driver_leaves_every_document_whole_and_the_next_ingest_finishes(ray_cluster, tmp_path):
    import ray

    expected = _corpus(tmp_path / "corpus", n_files=60)
    db = str(tmp_path / "db")
    env = {**os.environ, "CHATBOT_INGEST_BATCH_CHUNKS": "24", "PYTHONPATH": str(REPO)}
    driver = subprocess.Popen(_ray_ingest(db, tmp_path / "corpus", ray_cluster), env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while driver.poll() is None and time.monotonic() < deadline:  # until a first batch is committed
        store = ChunkStore(db)
        if store.exists() and store.count() > 0:
            break
        time.sleep(0.2)
    assert driver.poll() is None, f"the ingest ended before it could be killed: {driver.stderr.read()[-2000:]}"
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    stored = _check_consistent(db, expected)
    assert 0 < stored < len(expected)

    # The killed driver's job ends with it: its embedders give the cluster's CPUs back.
    ray.init(address=ray_cluster, logging_level="ERROR", log_to_driver=False)
    try:
        deadline = time.monotonic() + 120
        while ray.available_resources().get("CPU", 0) < ray.cluster_resources()["CPU"]:
            assert time.monotonic() < deadline, "the killed ingest's Ray workers still hold the cluster's CPUs"
            time.sleep(1)
    finally:
        ray.shutdown()

    finished = subprocess.run(_ray_ingest(db, tmp_path / "corpus", ray_cluster), env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=900)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert f"{len(expected) - stored} added" in finished.stdout and f"{stored} unchanged" in finished.stdout
    assert _check_consistent(db, expected) == len(expected)
    assert ChunkStore(db).count() == sum(n for _, n in expected.values())


def test_without_ray_nothing_of_ray_is_imported(tmp_path):
    corpus = tmp_path / "docs"
    corpus.mkdir()
    shutil.copy(SAMPLE_KB / "expense-policy.md", corpus)
    script = ("import sys; from chatbot.cli import main; "
              f"code = main(['--db', {str(tmp_path / 'db')!r}, 'ingest', {str(corpus)!r}, '--quiet']); "
              "print('RAY IMPORTED' if any(m == 'ray' or m.startswith('ray.') for m in sys.modules) else 'NO RAY'); "
              "sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "1 added" in done.stdout and done.stdout.strip().endswith("NO RAY")


def test_an_unreachable_cluster_is_a_clear_error(tmp_path, capsys):
    corpus = tmp_path / "docs"
    corpus.mkdir()
    shutil.copy(SAMPLE_KB / "expense-policy.md", corpus)
    assert main(["--db", str(tmp_path / "db"), "ingest", str(corpus), "--ray", f"127.0.0.1:{free_port()}",
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "Ray cluster" in err and "ray start --head" in err
    assert not ChunkStore(str(tmp_path / "db")).exists() or ChunkStore(str(tmp_path / "db")).count() == 0
