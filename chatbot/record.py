"""The full, JSON-ready record of one question: every candidate with every score.

Used by `chatbot ask --json` and the inspection panel. It never contains API keys.
"""

from __future__ import annotations

from typing import Any

from chatbot.types import Answer, AskResult, Candidate


def candidate_record(c: Candidate, status: str, cited_as: int | None) -> dict[str, Any]:
    return {
        "chunk_id": c.chunk.id,
        "doc_path": c.chunk.doc_path,
        "title": c.chunk.title,
        "heading_path": list(c.chunk.heading_path),
        "position": c.chunk.position,
        "text": c.chunk.text,
        "vector_distance": c.vector_distance,
        "vector_rank": c.vector_rank,
        "bm25_score": c.bm25_score,
        "bm25_rank": c.bm25_rank,
        "rrf_score": c.rrf_score,
        "term_coverage": c.term_coverage,
        "rerank_logit": c.rerank_logit,
        "semantic_logit": c.semantic_logit,
        "span_score": c.span_score,
        "null_score": c.null_score,
        "answer_margin": c.answer_margin,
        "answer_span": list(c.answer_span) if c.answer_span else None,
        "answer_text": c.answer_text,
        "p_relevant": c.p_relevant,
        "ranking_score": c.ranking_score,
        "status": status,
        "cited_as": cited_as,
    }


def ask_record(result: AskResult, fingerprints: dict[str, str] | None = None) -> dict[str, Any]:
    outcome = result.outcome
    cited_ids = [c.id for c in outcome.cited] if isinstance(outcome, Answer) else []
    candidates = [
        candidate_record(c, result.gate.status(c.chunk.id),
                         cited_ids.index(c.chunk.id) + 1 if c.chunk.id in cited_ids else None)
        for c in result.gate.ranked
    ]
    record: dict[str, Any] = {
        "question": result.question,
        "decision": "refusal" if result.refused else "answer",
        "floor": result.gate.floor,
        "p_answerable": result.gate.p_answerable,
        "answerability_floor": result.gate.answerability_floor,
        "top_n": result.gate.top_n,
        "kept": [c.chunk.id for c in result.gate.kept],
        "cited": cited_ids,
        "candidates": candidates,
        "timings_ms": result.timings_ms,
        "llm_error": result.llm_error,
        "fingerprints": fingerprints or {},
    }
    if isinstance(outcome, Answer):
        record["answer"] = {"text": outcome.text, "mode": outcome.mode, "note": outcome.note,
                            "dropped_citations": list(outcome.dropped_citations)}
    else:
        record["refusal"] = {"reason": outcome.reason, "best_p_relevant": outcome.best_p_relevant,
                             "near_misses": [c.chunk.id for c in outcome.near_misses]}
    return record
