"""The gate: which candidates count as evidence. Decided before any LLM is called."""

from __future__ import annotations

import dataclasses
from typing import Sequence

from chatbot.calibration import Calibration
from chatbot.types import Candidate, GateResult


def apply_gate(reranked: Sequence[Candidate], calibration: Calibration, top_n: int) -> GateResult:
    """Attach `p_relevant` to every reranked candidate, keep the best `top_n` that clear the floor.
    Candidates the reranker did not read (past its depth) get no probability and are never kept:
    evidence has to have been read."""
    read = [c for c in reranked if c.rerank_logit is not None]
    unread = tuple(c for c in reranked if c.rerank_logit is None)
    probs = calibration.p_relevant([c.rerank_logit for c in read],
                                   cosine_similarity=[c.cosine_similarity for c in read],
                                   term_coverage=[c.term_coverage for c in read])
    scored = sorted(
        (dataclasses.replace(c, p_relevant=float(p)) for c, p in zip(read, probs)),
        key=lambda c: -c.p_relevant,
    )
    kept = tuple(c for c in scored if c.p_relevant >= calibration.floor)[:top_n]
    return GateResult(floor=calibration.floor, top_n=top_n, ranked=tuple(scored) + unread, kept=kept)
