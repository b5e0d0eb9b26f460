"""Hybrid retrieval: LanceDB vector search + BM25 (rank-bm25), fused by reciprocal rank.

RRF is rank-only and carries no confidence, so it only chooses the pool; the floor is
applied later to the reranker's calibrated probability. Every candidate keeps both
lists' scores (its cosine distance and BM25 score are filled in even when it came from
the other list) so the inspection panel can show them all.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

import numpy as np
from rank_bm25 import BM25Okapi

from chatbot.embed import Embedder
from chatbot.store import ChunkStore, CorpusSnapshot, access_filter
from chatbot.types import Candidate, Chunk, Viewer

_WORD = re.compile(r"\w+", re.UNICODE)
# A short English stop list: BM25's idf already discounts common words; these add only noise.
STOP_WORDS = frozenset("""a an and are as at be but by for from has have how i if in into is it its
of on or so than that the their them then there these they this to was we were what when where which
who whom why will with you your do does did can could should would""".split())


def bm25_tokens(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in STOP_WORDS]


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") else word  # "batteries"/"battery" stay apart; fine


_HYPHENATED = re.compile(r"\b\w+(?:-\w+)+\b", re.UNICODE)


def content_terms(text: str) -> frozenset[str]:
    """Stop words out, plurals folded; a hyphenated word also counts joined ("Wi-Fi" -> "wifi")."""
    joined = [m.group().replace("-", "") for m in _HYPHENATED.finditer(text.lower())]
    return frozenset(_stem(w) for w in bm25_tokens(text) + joined)


def term_coverage(question_terms: frozenset[str], chunk_text: str) -> float:
    """Share of the question's content words that the chunk contains. A question from another domain
    shares words with no chunk even when the embedder and the cross-encoder find something "close"."""
    if not question_terms:
        return 0.0
    return len(question_terms & content_terms(chunk_text)) / len(question_terms)


# bench/results/scale.md: in-memory rank_bm25 costs ~30 ms and little memory at 5k chunks but ~500 ms
# and +1.7 GB at 100k, where LanceDB's full-text index answers in ~10 ms; switch well before that.
AUTO_FULL_TEXT_MIN_CHUNKS = 20_000


def full_text_index_threshold(choice: str, remote_store: bool) -> int | None:
    """From how many chunks ingest should (re)build LanceDB's full-text index: 0 = always, None = never."""
    if choice == "lancedb" or (choice == "auto" and remote_store):
        return 0
    return AUTO_FULL_TEXT_MIN_CHUNKS if choice == "auto" else None


def reciprocal_rank_fusion(rankings: list[list[str]], k: int = 60) -> dict[str, float]:
    fused: dict[str, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            fused[item] = fused.get(item, 0.0) + 1.0 / (k + rank)
    return fused


@dataclass(frozen=True)
class Retrieval:
    pool: tuple[Candidate, ...]  # fused, best rrf_score first, at most pool_size
    vector_ids: tuple[str, ...]  # each list alone, best first (for measuring each stage's lift)
    bm25_ids: tuple[str, ...]


@dataclass(frozen=True)
class CorpusIndex:
    snapshot: CorpusSnapshot
    bm25: BM25Okapi | None
    row_of: dict[str, int]
    _readable: dict = field(default_factory=dict, compare=False, repr=False)  # groups -> mask, per version

    def readable(self, groups: frozenset[str]) -> np.ndarray:
        """Which rows a reader of `groups` may see (a mask kept per set of groups: the index is rebuilt, and
        the masks with it, whenever the table changes)."""
        mask = self._readable.get(groups)
        if mask is None:
            mask = np.fromiter((bool(groups & set(c.access)) for c in self.snapshot.chunks), dtype=bool,
                               count=len(self.snapshot.chunks))
            self._readable[groups] = mask
        return mask


class HybridRetriever:
    def __init__(self, store: ChunkStore, embedder: Embedder, pool_size: int = 40, rrf_k: int = 60,
                 bm25_backend: str = "rank_bm25"):
        """`bm25_backend` "rank_bm25" scores every chunk in memory (exact scores for the whole pool);
        "lancedb" uses the table's full-text index (for large or remote tables), and then a chunk
        outside the BM25 top-K has bm25_score 0 and bm25_rank None."""
        self.store = store
        self.bm25_backend = bm25_backend  # may be "auto": decided per table version by `backend()`
        self._auto_backend: tuple[int, str] | None = None
        self.embedder = embedder
        self.pool_size = pool_size
        self.rrf_k = rrf_k
        self._index: CorpusIndex | None = None
        self._lock = threading.Lock()

    def index(self) -> CorpusIndex:
        """The BM25 index of the current table version, rebuilt only when the table changed."""
        version = self.store.version()
        current = self._index
        if current is not None and current.snapshot.version == version:
            return current
        with self._lock:
            if self._index is not None and self._index.snapshot.version == version:
                return self._index
            snap = self.store.snapshot()
            corpus = [bm25_tokens(c.context_text) for c in snap.chunks]
            bm25 = BM25Okapi(corpus) if corpus else None
            self._index = CorpusIndex(snap, bm25, {c.id: i for i, c in enumerate(snap.chunks)})
            return self._index

    def backend(self) -> str:
        """The BM25 backend in use for the current table version."""
        if self.bm25_backend != "auto":
            return self.bm25_backend
        version = self.store.version()
        decided = self._auto_backend
        if decided is None or decided[0] != version:
            # LanceDB's index where ingest builds it (remote stores, large tables), once it is there;
            # rank-bm25 in memory, with exact scores for every chunk, otherwise.
            remote = self.store.is_remote
            use_index = remote or (self.store.exists()
                                   and self.store.count() >= full_text_index_threshold("auto", remote)
                                   and self.store.has_full_text_index())
            decided = (version, "lancedb" if use_index else "rank_bm25")
            self._auto_backend = decided
        return decided[1]

    def retrieve(self, question: str, query_vector: np.ndarray | None = None, viewer: Viewer | None = None) -> Retrieval:
        """The pool for `question`. With a `viewer`, every search sees only the chunks they may read, before
        it ranks (so the pool is `pool_size` permitted chunks, never what is left of a larger one)."""
        if query_vector is None:
            query_vector = self.embedder.embed_query(question)
        where = access_filter(viewer.reads, self.store.access_labels()) if viewer is not None else None
        if self.backend() == "lancedb":
            return self._retrieve_indexed(question, query_vector, where)
        index = self.index()
        chunks = index.snapshot.chunks
        if not chunks:
            return Retrieval((), (), ())
        k = self.pool_size

        vector_hits = self.store.vector_search(query_vector, k, where)
        vector_ids = [cid for cid, _ in vector_hits if cid in index.row_of]

        tokens = bm25_tokens(question)
        bm25_scores = index.bm25.get_scores(tokens) if tokens else np.zeros(len(chunks))
        if viewer is not None:  # every chunk is scored; those the viewer may not read never rank
            bm25_scores = np.where(index.readable(viewer.reads), bm25_scores, 0.0)
        top = np.argsort(-bm25_scores, kind="stable")[:k]
        bm25_ids = [chunks[i].id for i in top if bm25_scores[i] > 0]

        row_of = index.row_of

        def fetch(ids: list[str]) -> tuple[list, np.ndarray]:
            rows = [row_of[cid] for cid in ids]
            return [chunks[r] for r in rows], index.snapshot.vectors[rows]

        return self._pool(question, vector_ids, bm25_ids, fetch, lambda cid: float(bm25_scores[row_of[cid]]),
                          query_vector)

    def _retrieve_indexed(self, question: str, query_vector: np.ndarray, where: str | None = None) -> Retrieval:
        k = self.pool_size
        nearest = self.store.nearest_chunks(query_vector, k, where)
        matches = self.store.full_text_chunks(question, k, where) if bm25_tokens(question) else []
        return self.fuse_rows(question, nearest, matches, query_vector)

    def fuse_rows(self, question: str, nearest: list[tuple[Chunk, np.ndarray, float]],
                  matches: list[tuple[Chunk, np.ndarray, float]], query_vector: np.ndarray) -> Retrieval:
        """The pool from the store's two searches that bring their rows: `nearest` (chunk, vector, cosine
        distance) and `matches` (chunk, vector, BM25 score). Every pooled chunk is in one of the two
        lists, so nothing is fetched by id."""
        found = {chunk.id: (chunk, vector) for chunk, vector, _ in nearest + matches}
        bm25_score = {chunk.id: score for chunk, _, score in matches}

        def fetch(ids: list[str]) -> tuple[list, np.ndarray]:
            return [found[cid][0] for cid in ids], np.asarray([found[cid][1] for cid in ids], dtype=np.float32)

        return self._pool(question, [chunk.id for chunk, _, _ in nearest], [chunk.id for chunk, _, _ in matches],
                          fetch, lambda cid: bm25_score.get(cid, 0.0), query_vector)

    def _pool(self, question: str, vector_ids: list[str], bm25_ids: list[str], fetch, bm25_score_of,
              query_vector: np.ndarray) -> Retrieval:
        """Fuse the two lists, keep the pool, and give every pooled chunk both lists' scores.
        `fetch(ids)` returns those chunks and their vectors; `bm25_score_of(id)` a chunk's BM25 score."""
        fused = reciprocal_rank_fusion([vector_ids, bm25_ids], self.rrf_k)
        pool = sorted(fused, key=lambda cid: -fused[cid])[: self.pool_size]
        chunks, vectors = fetch(pool)
        distances = 1.0 - vectors @ np.asarray(query_vector, dtype=np.float32) if len(chunks) else []
        vector_rank = {cid: r for r, cid in enumerate(vector_ids, start=1)}
        bm25_rank = {cid: r for r, cid in enumerate(bm25_ids, start=1)}
        terms = content_terms(question)
        candidates = tuple(
            Candidate(chunk=c, vector_distance=float(dist), vector_rank=vector_rank.get(c.id),
                      bm25_score=bm25_score_of(c.id), bm25_rank=bm25_rank.get(c.id), rrf_score=fused[c.id],
                      term_coverage=term_coverage(terms, c.context_text))
            for c, dist in zip(chunks, distances)
        )
        return Retrieval(candidates, tuple(vector_ids), tuple(bm25_ids))
