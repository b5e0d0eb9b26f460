import shutil

import pytest

from chatbot.embed import Embedder
from chatbot.errors import EmbedderMismatch
from chatbot.store import ChunkStore
from ingest.run import ChunkingSettings, ingest_paths
from tests.helpers import OCR_AVAILABLE, SAMPLE_KB, SCANNED


class CountingEmbedder(Embedder):
    """The real embedder, counting the texts it is asked to embed."""

    def __init__(self, shared: Embedder):
        super().__init__(shared.name)
        self._model = shared._model  # reuse the loaded model
        self.embedded = 0

    def embed_documents(self, texts):
        self.embedded += len(texts)
        return super().embed_documents(texts)


def _kb_copy(tmp_path, names):
    kb = tmp_path / "kb"
    kb.mkdir()
    for n in names:
        shutil.copy(SAMPLE_KB / n, kb / n)
    return kb


def test_every_sample_document_ingests_with_full_rows(sample_db):
    store = ChunkStore(sample_db)
    hashes = store.document_hashes()
    expected = {p.name for p in SAMPLE_KB.iterdir()} - (set() if OCR_AVAILABLE else SCANNED)
    assert {p.rsplit("/", 1)[-1] for p in hashes} == expected
    snap = store.snapshot()
    assert len(snap.chunks) == store.count() > 50
    assert snap.vectors.shape == (len(snap.chunks), 384)
    assert all(c.title and c.token_count <= 200 and c.content_hash for c in snap.chunks)
    assert len({c.id for c in snap.chunks}) == len(snap.chunks)
    assert store.embedder_fingerprint() == "sentence-transformers/all-MiniLM-L6-v2"


def test_reingest_is_incremental(tmp_path, embedder):
    kb = _kb_copy(tmp_path, ["employee-handbook.md", "glossary.txt", "office-guide.html"])
    store = ChunkStore(str(tmp_path / "db"))
    counting = CountingEmbedder(embedder)

    first = ingest_paths([kb], store, counting)
    assert len(first.added) == 3 and counting.embedded == first.chunks_written > 0
    before = {c.id for c in store.snapshot().chunks}

    counting.embedded = 0
    again = ingest_paths([kb], store, counting)
    assert (len(again.unchanged), counting.embedded, again.chunks_written) == (3, 0, 0)
    assert {c.id for c in store.snapshot().chunks} == before

    # A changed file replaces its chunks; a removed file's chunks go; only the change is embedded.
    handbook = kb / "employee-handbook.md"
    handbook.write_text(handbook.read_text() + "\n\n## Sabbatical\n\nAfter five years you may take a 6-week sabbatical.\n")
    (kb / "glossary.txt").unlink()
    third = ingest_paths([kb], store, counting)
    assert [p.rsplit("/", 1)[-1] for p in third.updated] == ["employee-handbook.md"]
    assert [p.rsplit("/", 1)[-1] for p in third.removed] == ["glossary.txt"]
    assert counting.embedded == third.chunks_written
    docs = store.document_hashes()
    assert sorted(p.rsplit("/", 1)[-1] for p in docs) == ["employee-handbook.md", "office-guide.html"]
    texts = [c.text for c in store.snapshot().chunks if c.doc_path == str(handbook)]
    assert any("6-week sabbatical" in t for t in texts)
    assert len({c.content_hash for c in store.snapshot().chunks if c.doc_path == str(handbook)}) == 1


def test_changing_chunk_settings_rechunks(tmp_path, embedder):
    kb = _kb_copy(tmp_path, ["expense-policy.md"])
    store = ChunkStore(str(tmp_path / "db"))
    ingest_paths([kb], store, embedder, ChunkingSettings(max_tokens=200))
    n200 = store.count()
    report = ingest_paths([kb], store, embedder, ChunkingSettings(max_tokens=40, overlap_tokens=5))
    assert len(report.updated) == 1 and store.count() > n200


def test_bad_file_is_reported_and_stored_content_survives(tmp_path, embedder):
    kb = _kb_copy(tmp_path, ["expense-policy.md", "travel-policy.pdf"])
    store = ChunkStore(str(tmp_path / "db"))
    ingest_paths([kb], store, embedder)
    before = store.snapshot().chunks
    (kb / "travel-policy.pdf").write_bytes(b"%PDF-1.4 truncated")  # corrupt a stored document
    (kb / "new.docx").write_bytes(b"PK\x03\x04 not really a zip")
    report = ingest_paths([kb], store, embedder)
    failed = {p.rsplit("/", 1)[-1]: reason for p, reason in report.failed}
    assert set(failed) == {"travel-policy.pdf", "new.docx"}
    assert "PDF" in failed["travel-policy.pdf"] and "docx" in failed["new.docx"]
    assert {c.id for c in store.snapshot().chunks} == {c.id for c in before}  # nothing stored was lost


def test_missing_path_is_a_failure_not_a_crash(tmp_path, embedder):
    report = ingest_paths([tmp_path / "nope"], ChunkStore(str(tmp_path / "db")), embedder)
    assert report.failed == [(str(tmp_path / "nope"), "no such file or folder")]


def test_querying_with_another_embedder_is_an_error(sample_db):
    store = ChunkStore(sample_db)
    with pytest.raises(EmbedderMismatch, match="built with embedder 'sentence-transformers/all-MiniLM-L6-v2'"):
        store.check_embedder("BAAI/bge-small-en-v1.5")
