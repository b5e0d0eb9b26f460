"""The gate: which candidates count as evidence. Decided before any LLM is called."""

from __future__ import annotations

import dataclasses
from typing import Sequence

from chatbot.calibration import Calibration, question_features
from chatbot.types import Candidate, GateResult


def apply_gate(reranked: Sequence[Candidate], calibration: Calibration, top_n: int) -> GateResult:
    """Attach `p_relevant` (and the calibration's `ranking_score`, if it has one) to every reranked
    candidate, order them, and keep the first `top_n` that clear the floor.

    Two scores because two questions: which chunk answers best (the order), and whether any chunk is
    evidence at all (the floor). The calibration fits each on its own (`chatbot.calibrate`); without a
    ranking the reranker's order stands. Candidates the reranker did not read (past its depth) get
    no probability and are never kept: evidence has to have been read."""
    read = [c for c in reranked if c.rerank_logit is not None]
    unread = tuple(c for c in reranked if c.rerank_logit is None)
    logits = [c.rerank_logit for c in read]
    features = dict(cosine_similarity=[c.cosine_similarity for c in read],
                    term_coverage=[c.term_coverage for c in read],
                    semantic_logit=[c.semantic_logit for c in read])
    probs = calibration.p_relevant(logits, **features)
    ranking = calibration.ranking_score(logits, **features)
    scored = tuple(dataclasses.replace(c, p_relevant=float(p)) for c, p in zip(read, probs))
    if ranking is not None:  # sorted() is stable: ties keep the reranker's order
        scored = tuple(sorted((dataclasses.replace(c, ranking_score=float(r)) for c, r in zip(scored, ranking)),
                              key=lambda c: -c.ranking_score))
    kept = tuple(c for c in scored if c.p_relevant >= calibration.floor)[:top_n]
    if not calibration.judges_answerability:
        return GateResult(floor=calibration.floor, top_n=top_n, ranked=scored + unread, kept=kept,
                          answer_span_floor=calibration.answer_span_floor)
    p_answerable = calibration.p_answerable(question_features(
        logits, features["semantic_logit"], features["cosine_similarity"], [c.answer_margin for c in read], probs,
        [c.sentence_cosine for c in read]))
    if p_answerable < calibration.answerability_floor:
        kept = ()
    elif not kept:
        kept = scored[:1]
    return GateResult(floor=calibration.floor, top_n=top_n, ranked=scored + unread, kept=kept,
                      p_answerable=p_answerable, answerability_floor=calibration.answerability_floor,
                      answer_span_floor=calibration.answer_span_floor)
