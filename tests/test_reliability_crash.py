"""Crashes and concurrent writers: an ingest killed with SIGKILL at random points leaves a
knowledge base that opens, answers, shows no duplicate or half-written document, and finishes
when ingest runs again; two ingests at once never interleave.

CI runs a short loop; set RELIABILITY_KILLS=40 (say) for the long one.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from chatbot.errors import StoreBusy
from chatbot.store import ChunkStore
from ingest.chunk import chunk_document
from ingest.parse import parse_file
from ingest.run import ChunkingSettings, content_hash, ingest_paths
from tests.helpers import REPO, make_pipeline

KILLS = int(os.environ.get("RELIABILITY_KILLS", "4"))
TOPICS = ["forklift", "invoice", "glacier", "violin", "harbour", "compiler", "orchard", "satellite", "bakery",
          "tramway", "lighthouse", "quarry"]


def _corpus(root: Path, n_files: int = 120) -> dict[str, tuple[str, int]]:
    """Files of a few chunks each; returns doc_path -> (content hash, number of chunks)."""
    rng = random.Random(3)
    root.mkdir(parents=True)
    expected = {}
    settings = ChunkingSettings()
    for i in range(n_files):
        topic = TOPICS[i % len(TOPICS)]
        paragraphs = [" ".join(rng.choice(TOPICS) + f" fact {i}-{p}-{w}" for w in range(40)) for p in range(5)]
        path = root / f"doc-{i:03d}-{topic}.md"
        path.write_text(f"# Notes on {topic} {i}\n\n" + "\n\n".join(paragraphs) + "\n", encoding="utf-8")
        digest = content_hash(path.read_bytes(), settings)
        chunks = chunk_document(parse_file(path), str(path), digest, settings.max_tokens, settings.overlap_tokens,
                                settings.encoding)
        expected[str(path)] = (digest, len(chunks))
    return expected


def _ingest_command(db: str, corpus: Path) -> list[str]:
    return [sys.executable, "-m", "chatbot.cli", "--db", db, "ingest", str(corpus), "--quiet"]


def _env() -> dict[str, str]:
    return {**os.environ, "CHATBOT_INGEST_BATCH_CHUNKS": "48", "PYTHONPATH": str(REPO)}


def _check_consistent(db: str, expected: dict[str, tuple[str, int]]) -> int:
    """Every visible document is whole and current; returns how many are stored."""
    store = ChunkStore(db)
    if not store.exists():
        return 0
    rows = store._scan(["id", "doc_path", "position", "content_hash"]).to_pylist()
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "duplicate chunk ids"
    by_doc = defaultdict(list)
    for r in rows:
        by_doc[r["doc_path"]].append(r)
    for doc, doc_rows in by_doc.items():
        digest, n_chunks = expected[doc]
        assert sorted(r["position"] for r in doc_rows) == list(range(n_chunks)), f"{doc} is half-written"
        assert {r["content_hash"] for r in doc_rows} == {digest}
    return len(by_doc)


def _wait_for_lock(db: str, process: subprocess.Popen, timeout_s: float = 120.0) -> None:
    lock = Path(db) / ".chunks.write.lock"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        if lock.exists() and lock.read_text() == f"pid {process.pid}":
            return
        time.sleep(0.05)


def test_ingest_survives_sigkill_at_random_points(tmp_path, tiny_reranker_dir):
    expected = _corpus(tmp_path / "corpus")
    db = str(tmp_path / "db")
    rng = random.Random(11)
    survived = []
    for _ in range(KILLS):
        process = subprocess.Popen(_ingest_command(db, tmp_path / "corpus"), env=_env(), cwd=tmp_path,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for_lock(db, process)  # the clock starts when ingest starts, not when Python does
        time.sleep(rng.uniform(0.5, 12.0))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait()
        stored = _check_consistent(db, expected)
        if stored:
            result = make_pipeline(db, tiny_reranker_dir, floor=0.0).evidence("forklift notes")
            assert len(result.gate.ranked) > 0
        survived.append(stored)

    finished = subprocess.run(_ingest_command(db, tmp_path / "corpus"), env=_env(), cwd=tmp_path,
                              capture_output=True, text=True, timeout=900)
    assert finished.returncode == 0, finished.stderr
    assert _check_consistent(db, expected) == len(expected)
    assert ChunkStore(db).count() == sum(n for _, n in expected.values())
    print(f"\nkills survived: {len(survived)}; documents visible after each kill: {survived}")


def test_a_second_concurrent_ingest_fails_clearly_and_stores_nothing(tmp_path, embedder):
    expected = _corpus(tmp_path / "corpus", n_files=60)
    other = tmp_path / "other"
    other.mkdir()
    (other / "late.md").write_text("# Late\n\nThis file arrives while another ingest runs.\n")
    db = str(tmp_path / "db")
    first = subprocess.Popen(_ingest_command(db, tmp_path / "corpus"), env=_env(), cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_lock(db, first)
        assert first.poll() is None, "the first ingest ended before the second could start"
        with pytest.raises(StoreBusy, match=f"pid {first.pid}.*wait for it to finish"):
            ingest_paths([other], ChunkStore(db), embedder, ChunkingSettings())
        second = subprocess.run(_ingest_command(db, other), env=_env(), cwd=tmp_path, capture_output=True, text=True)
        assert second.returncode == 2 and "another ingest" in second.stderr and "Traceback" not in second.stderr
    finally:
        first.wait(timeout=900)
    assert first.returncode == 0, first.stderr.read()
    assert _check_consistent(db, expected) == len(expected)  # the late file was not half-added either
    ingest_paths([other], ChunkStore(db), embedder, ChunkingSettings())  # and goes in once the lock is free
    assert str(other / "late.md") in ChunkStore(db).document_hashes()
