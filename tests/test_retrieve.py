import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from chatbot.retrieve import HybridRetriever, bm25_tokens, reciprocal_rank_fusion
from chatbot.store import ChunkStore


def test_rrf_matches_hand_computation():
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["c", "a"]], k=60)
    assert fused["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert fused["b"] == pytest.approx(1 / 62)
    assert fused["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert sorted(fused, key=lambda x: -fused[x]) == ["a", "c", "b"]


def test_bm25_tokens_lowercase_and_drop_stop_words():
    assert bm25_tokens("What is the H2's PAYLOAD, in kg?") == ["h2", "s", "payload", "kg"]


@pytest.fixture(scope="module")
def retriever(sample_db, embedder):
    return HybridRetriever(ChunkStore(sample_db), embedder, pool_size=20, rrf_k=60)


def test_pool_carries_both_lists_scores(retriever):
    pool = retriever.retrieve("How many parking spaces does the Lisbon office have?").pool
    assert 0 < len(pool) <= 20
    rrf = [c.rrf_score for c in pool]
    assert rrf == sorted(rrf, reverse=True)
    assert all(0.0 <= c.vector_distance <= 2.0 and c.bm25_score >= 0.0 for c in pool)
    assert any(c.vector_rank is not None for c in pool) and any(c.bm25_rank is not None for c in pool)
    assert any("12 parking spaces" in c.chunk.text for c in pool[:5])


def test_scores_agree_with_reference_implementations(retriever, embedder):
    question = "expense claim approval limits"
    retrieval = retriever.retrieve(question)
    pool = retrieval.pool
    assert set(retrieval.vector_ids[:3]) <= {c.chunk.id for c in pool}
    assert set(retrieval.bm25_ids[:3]) <= {c.chunk.id for c in pool}
    index = retriever.index()
    reference = BM25Okapi([bm25_tokens(c.context_text) for c in index.snapshot.chunks])
    ref_scores = reference.get_scores(bm25_tokens(question))
    q = embedder.embed_query(question)
    for cand in pool:
        row = index.row_of[cand.chunk.id]
        assert cand.bm25_score == pytest.approx(ref_scores[row])
        exact = 1.0 - float(np.dot(embedder.embed_documents([cand.chunk.context_text])[0], q))
        assert cand.vector_distance == pytest.approx(exact, abs=1e-4)
    # LanceDB's own distances agree with the ones we compute for the whole pool.
    for cid, dist in retriever.store.vector_search(q, 5):
        cand = next((c for c in pool if c.chunk.id == cid), None)
        if cand is not None:
            assert cand.vector_distance == pytest.approx(dist, abs=1e-4)


def test_index_is_rebuilt_only_when_table_changes(retriever):
    first = retriever.index()
    assert retriever.index() is first


def test_lancedb_full_text_backend_finds_the_same_evidence(tmp_path, embedder):
    from ingest.run import ingest_paths
    from tests.helpers import SAMPLE_KB

    store = ChunkStore(str(tmp_path / "db"))
    ingest_paths([SAMPLE_KB / "office-guide.html", SAMPLE_KB / "expense-policy.md"], store, embedder,
                 full_text_index_from=0)
    question = "How many parking spaces does the Lisbon office have?"
    indexed = HybridRetriever(store, embedder, pool_size=10, bm25_backend="lancedb").retrieve(question)
    in_memory = HybridRetriever(store, embedder, pool_size=10).retrieve(question)
    assert indexed.vector_ids == in_memory.vector_ids
    assert indexed.bm25_ids[0] == in_memory.bm25_ids[0]
    assert any("12 parking spaces" in c.chunk.text for c in indexed.pool[:3])
    by_id = {c.chunk.id: c for c in in_memory.pool}
    for cand in indexed.pool:
        if cand.chunk.id in by_id:
            assert cand.chunk == by_id[cand.chunk.id].chunk  # rows taken from the searches, not fetched
            assert cand.vector_distance == pytest.approx(by_id[cand.chunk.id].vector_distance, abs=1e-5)
        assert (cand.bm25_rank is None) == (cand.bm25_score == 0.0)

    # The searches that bring their rows agree with the id-only ones and with the stored vectors.
    snapshot = store.snapshot()
    stored = {c.id: (c, v) for c, v in zip(snapshot.chunks, snapshot.vectors)}
    query_vector = embedder.embed_query(question)
    nearest = store.nearest_chunks(query_vector, 5)
    assert [(c.id, pytest.approx(d, abs=1e-6)) for c, _, d in nearest] == store.vector_search(query_vector, 5)
    matches = store.full_text_chunks(question, 5)
    assert [(c.id, pytest.approx(b, abs=1e-6)) for c, _, b in matches] == store.full_text_search(question, 5)
    for chunk, vector, _ in nearest + matches:
        assert chunk == stored[chunk.id][0]
        np.testing.assert_array_equal(vector, stored[chunk.id][1])


def test_auto_backend_switches_to_the_full_text_index_for_large_tables(tmp_path, embedder, monkeypatch):
    """"auto": rank-bm25 in memory for small tables; LanceDB's index, built by ingest, for large ones."""
    import chatbot.retrieve as retrieve
    from ingest.run import ingest_paths
    from tests.helpers import SAMPLE_KB

    store = ChunkStore(str(tmp_path / "db"))
    ingest_paths([SAMPLE_KB / "office-guide.html"], store, embedder,
                 full_text_index_from=retrieve.full_text_index_threshold("auto", False))
    small = store.count()
    assert not store.has_full_text_index()
    retriever = HybridRetriever(store, embedder, pool_size=10, bm25_backend="auto")
    assert retriever.backend() == "rank_bm25"

    # A "large" table: the threshold lowered below what the next ingest brings it to.
    monkeypatch.setattr(retrieve, "AUTO_FULL_TEXT_MIN_CHUNKS", small + 1)
    assert retriever.backend() == "rank_bm25"  # decided per table version: unchanged table, same answer
    ingest_paths([SAMPLE_KB / "expense-policy.md"], store, embedder,
                 full_text_index_from=retrieve.full_text_index_threshold("auto", False))
    assert store.count() > small and store.has_full_text_index()
    assert retriever.backend() == "lancedb"
    question = "How many parking spaces does the Lisbon office have?"
    assert any("12 parking spaces" in c.chunk.text for c in retriever.retrieve(question).pool[:3])

    # Large but never indexed (ingested with bm25_backend rank_bm25): stays correct, in memory.
    plain = ChunkStore(str(tmp_path / "plain"))
    ingest_paths([SAMPLE_KB / "office-guide.html", SAMPLE_KB / "expense-policy.md"], plain, embedder,
                 full_text_index_from=retrieve.full_text_index_threshold("rank_bm25", False))
    assert not plain.has_full_text_index()
    assert HybridRetriever(plain, embedder, bm25_backend="auto").backend() == "rank_bm25"
    # Switched to the index afterwards: the next ingest, with nothing to re-read, builds it (the search's error
    # says to run one).
    report = ingest_paths([SAMPLE_KB / "office-guide.html", SAMPLE_KB / "expense-policy.md"], plain, embedder,
                          full_text_index_from=retrieve.full_text_index_threshold("lancedb", False))
    assert report.chunks_written == 0 and plain.has_full_text_index()
    assert any("12 parking spaces" in c.chunk.text for c in
               HybridRetriever(plain, embedder, pool_size=10, bm25_backend="lancedb").retrieve(question).pool[:3])


def test_term_coverage_counts_the_questions_content_words_in_the_chunk(retriever):
    from chatbot.retrieve import content_terms, term_coverage

    terms = content_terms("How many parking spaces does the Lisbon office have?")
    assert terms == {"many", "parking", "space", "lisbon", "office"}  # stop words out, plurals folded
    assert term_coverage(terms, "The Lisbon office has 12 parking spaces.") == pytest.approx(0.8)  # not "many"
    assert term_coverage(terms, "Parking in Porto is free.") == pytest.approx(0.2)
    assert term_coverage(frozenset(), "anything") == 0.0
    pool = retriever.retrieve("How many parking spaces does the Lisbon office have?").pool
    best = max(pool, key=lambda c: c.term_coverage)
    assert "12 parking spaces" in best.chunk.text and best.term_coverage >= 0.8


def test_vector_search_through_an_ivf_pq_index_returns_the_exact_neighbours(tmp_path):
    """Compressed (PQ) distances blur near neighbours; the store re-scores with the full vectors."""
    from chatbot.types import Chunk

    rng = np.random.default_rng(7)
    # Clusters of near-duplicates, the hard case for PQ: what replicated or versioned documents look like.
    centres = rng.normal(size=(40, 64))
    vectors = np.repeat(centres, 20, axis=0) + rng.normal(scale=0.05, size=(800, 64))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    store = ChunkStore(str(tmp_path / "lancedb"))
    store.ensure_table("test-embedder", lambda: 64)
    chunks = [Chunk(f"c{i}", f"/kb/d{i // 100}.md", "Doc", (), i, f"text {i}", 2, "h") for i in range(800)]
    for d in range(8):
        store.replace_documents([f"/kb/d{d}.md"], chunks[d * 100:(d + 1) * 100], vectors[d * 100:(d + 1) * 100])
    store.table.create_index(metric="cosine", vector_column_name="vector", index_type="IVF_PQ",
                             num_partitions=4, num_sub_vectors=8, replace=True)
    recalls, recalls_pq_only = [], []
    for q in vectors[rng.choice(800, 20, replace=False)] + rng.normal(scale=0.02, size=(20, 64)).astype(np.float32):
        exact = {f"c{i}" for i in np.argsort(-(vectors @ q))[:10]}
        recalls.append(len(exact & {i for i, _ in store.vector_search(q, 10)}) / 10)
        pq_only = (store.table.search(q, vector_column_name="vector").metric("cosine")
                   .select(["id", "_distance"]).limit(10).to_arrow().column("id").to_pylist())
        recalls_pq_only.append(len(exact & set(pq_only)) / 10)
    assert np.mean(recalls) >= 0.98
    assert np.mean(recalls_pq_only) < np.mean(recalls)  # the index alone does lose neighbours here


def test_a_large_table_gets_a_vector_index_from_ingest_and_questions_still_find_their_chunk(
        writable_sample_db, embedder, monkeypatch):
    """From `VECTOR_INDEX_MIN_CHUNKS` chunks an ingest builds an IVF_PQ index (lowered here to the sample's size):
    the next ingest builds it though no document changed, and the search, refined with full vectors, still
    finds each question's chunk."""
    import ingest.run as run
    from ingest.run import ingest_paths
    from tests.helpers import SAMPLE_KB

    store = ChunkStore(writable_sample_db)
    assert not store.has_vector_index()
    monkeypatch.setattr(run, "VECTOR_INDEX_MIN_CHUNKS", store.count() + 1)
    assert ingest_paths([SAMPLE_KB], store, embedder).chunks_written == 0 and not store.has_vector_index()
    monkeypatch.setattr(run, "VECTOR_INDEX_MIN_CHUNKS", store.count())
    assert ingest_paths([SAMPLE_KB], store, embedder).chunks_written == 0 and store.has_vector_index()
    retriever = HybridRetriever(store, embedder, pool_size=10)
    for question, fact in (("How many parking spaces does the Lisbon office have?", "12 parking spaces"),
                           ("What is the nightly hotel cap in Rotterdam?", "€160")):
        assert any(fact in c.chunk.text for c in retriever.retrieve(question).pool[:5])
        nearest = store.nearest_chunks(embedder.embed_query(question), 5)
        assert any(fact in chunk.text for chunk, _, _ in nearest)
