"""Locate: how close each best-ranked chunk's closest sentence comes to the question, by the embedder.

Between rerank and gate. The vector search's cosine compares the question with a whole chunk, which reads
its topic: a chunk about the question that lacks the one sentence stating the answer keeps most of it. The
best sentence's cosine drops with that sentence. On held-out SQuAD articles, each question asked of its own
paragraph, intact against the same paragraph with the answer's sentences removed, it separates them at
AUROC 0.795 / 0.775 (the chunk cosine 0.656 / 0.637), and beside the reranker's logit and the chunk cosine
it lifts both that and SQuAD's written unanswerables (bench/README.md, "The closest sentence").
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from chatbot.sentences import quotable_sentences
from chatbot.types import Candidate


def closest_sentences(query_vector: np.ndarray, reranked: Sequence[Candidate],
                      embed: Callable[[list[str]], np.ndarray], top_n: int) -> tuple[Candidate, ...]:
    """`reranked` with `closest_sentence` and its `sentence_cosine` set on the first `top_n` read candidates
    (the reranker's best, the ones its reader reads too); the rest unchanged. The sentences are the ones an
    extractive answer may quote (a FAQ's reply read with its question), so the answer's embedding of them
    can come from the embedder's cache."""
    read = [k for k, c in enumerate(reranked) if c.rerank_logit is not None][:top_n]
    per_chunk = [quotable_sentences([reranked[k]])[1] for k in read]
    texts = [s for judged in per_chunk for s in judged]
    if not texts:
        return tuple(reranked)
    cosines = embed(texts) @ np.asarray(query_vector, dtype=np.float32)
    out = list(reranked)
    at = 0
    for k, judged in zip(read, per_chunk):
        best = at + int(np.argmax(cosines[at:at + len(judged)]))
        out[k] = dataclasses.replace(out[k], sentence_cosine=float(cosines[best]), closest_sentence=texts[best])
        at += len(judged)
    return tuple(out)
