"""Locate: how close each best-ranked chunk's closest sentence comes to the question, by the embedder.

Between rerank and gate. The vector search's cosine compares the question with a whole chunk, which reads
its topic: a chunk about the question that lacks the one sentence stating the answer keeps most of it. The
best sentence's cosine drops with that sentence. On held-out SQuAD articles, each question asked of its own
paragraph, intact against the same paragraph with the answer's sentences removed, it separates them at
AUROC 0.795 / 0.775 (the chunk cosine 0.656 / 0.637), and beside the reranker's logit and the chunk cosine
it lifts both that and SQuAD's written unanswerables (bench/README.md, "The closest sentence").

Embedding the sentences costs about what reranking does, so ingest stores them when the calibration reads
them (`ChunkStore.sentence_vectors`), and a question reads 5 rows instead.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from chatbot.errors import StoreError
from chatbot.sentences import chunk_sentences, sentencing_fingerprint
from chatbot.types import Candidate, Chunk

if TYPE_CHECKING:
    from chatbot.embed import Embedder
    from chatbot.store import ChunkStore

LOG = logging.getLogger("chatbot.locate")

# Each chunk's sentences, as the located stage reads them, and their vectors, row after row.
SentencesOf = Callable[[Sequence[Chunk]], list[tuple[list[str], np.ndarray]]]


class SentenceVectors:
    """The sentences of chunks with their vectors: those stored at ingest where the knowledge base has them
    (`chatbot ingest` stores them when the calibration reads the closest sentence), else embedded now,
    through the embedder's cache. Stored ones are put in that cache too: the extractive answer embeds the
    sentences of the chunks it quotes, which are among these."""

    def __init__(self, embedder: "Embedder", store: "ChunkStore | None" = None):
        self.embedder = embedder
        self.store = store
        self._warned = False

    def __call__(self, chunks: Sequence[Chunk]) -> list[tuple[list[str], np.ndarray]]:
        per_chunk = [chunk_sentences(c.text) for c in chunks]
        stored = self._stored([c.id for c in chunks])
        vectors: list[np.ndarray | None] = []
        for chunk, sentences in zip(chunks, per_chunk):
            found = stored.get(chunk.id)
            vectors.append(found if found is not None and len(found) == len(sentences) else None)
        known = [(s, v) for sentences, found in zip(per_chunk, vectors) if found is not None
                 for s, v in zip(sentences, found)]
        if known:
            self.embedder.remember([s for s, _ in known], np.stack([v for _, v in known]))
        missing = [k for k, found in enumerate(vectors) if found is None]
        if missing:
            embedded = self.embedder.embed_sentences([s for k in missing for s in per_chunk[k]])
            at = 0
            for k in missing:
                vectors[k] = embedded[at:at + len(per_chunk[k])]
                at += len(per_chunk[k])
        return list(zip(per_chunk, vectors))

    def _stored(self, chunk_ids: list[str]) -> dict[str, np.ndarray]:
        if self.store is None:
            return {}
        try:
            return self.store.sentence_vectors(chunk_ids, sentencing_fingerprint(self.embedder.fingerprint))
        except StoreError as e:
            # They only save time: a table that cannot be read costs the question an embedding, not its answer.
            if not self._warned:
                LOG.warning("%s; embedding sentences per question instead", e)
                self._warned = True
            return {}


def closest_sentences(query_vector: np.ndarray, reranked: Sequence[Candidate], sentences_of: SentencesOf,
                      top_n: int) -> tuple[Candidate, ...]:
    """`reranked` with `closest_sentence` and its `sentence_cosine` set on the first `top_n` read candidates
    (the reranker's best, the ones its reader reads too); the rest unchanged. The sentences are the ones an
    extractive answer may quote (a FAQ's reply read with its question); `sentences_of` gives them with their
    vectors (a `SentenceVectors`)."""
    read = [k for k, c in enumerate(reranked) if c.rerank_logit is not None][:top_n]
    if not read:
        return tuple(reranked)
    query = np.asarray(query_vector, dtype=np.float32)
    out = list(reranked)
    for k, (sentences, vectors) in zip(read, sentences_of([reranked[k].chunk for k in read])):
        cosines = vectors @ query
        best = int(np.argmax(cosines))
        out[k] = dataclasses.replace(out[k], sentence_cosine=float(cosines[best]), closest_sentence=sentences[best])
    return tuple(out)
