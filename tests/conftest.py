import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("LANCE_LOG", "error")
os.environ.setdefault("LANCEDB_LOG", "error")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a test must never reach for the hub

from chatbot.embed import Embedder  # noqa: E402
from chatbot.store import ChunkStore  # noqa: E402
from ingest.run import ChunkingSettings, ingest_paths  # noqa: E402
from tests.helpers import OCR_AVAILABLE, SAMPLE_KB, SCANNED, build_tiny_cross_encoder, write_tiny_beir  # noqa: E402


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return Embedder("sentence-transformers/all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def tiny_reranker_dir(tmp_path_factory) -> Path:
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-ce"))


@pytest.fixture(scope="session")
def sample_db(tmp_path_factory, embedder) -> str:
    """The sample knowledge base ingested once; tests that write copy it first."""
    uri = str(tmp_path_factory.mktemp("sample-db") / "lancedb")
    report = ingest_paths([SAMPLE_KB], ChunkStore(uri), embedder, ChunkingSettings())
    failed = {Path(p).name: reason for p, reason in report.failed}
    assert set(failed) <= (set() if OCR_AVAILABLE else SCANNED), failed
    assert all("needs OCR" in reason for reason in failed.values()), failed
    return uri


@pytest.fixture
def writable_sample_db(sample_db, tmp_path) -> str:
    target = tmp_path / "lancedb"
    shutil.copytree(sample_db, target)
    return str(target)


@pytest.fixture
def beir_dir(tmp_path) -> Path:
    return write_tiny_beir(tmp_path / "tinyset")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Expose each phase's report on the test item, so fixtures can save evidence of a failure."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
