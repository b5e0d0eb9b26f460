"""The full, JSON-ready record of one question: every candidate with every score.

Used by `chatbot ask --json` and the inspection panel. It never contains API keys.
"""

from __future__ import annotations

from typing import Any

from chatbot.types import Answer, AskResult, Candidate, Chunk, GateResult


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
        "sentence_cosine": c.sentence_cosine,
        "closest_sentence": c.closest_sentence,
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


def candidate_from_record(d: dict[str, Any]) -> Candidate:
    """A candidate as `candidate_record` stored it. The chunk's token count and content hash are not
    stored, so they read 0 and "": enough to show it and to key its scores, not to re-ingest it."""
    chunk = Chunk(id=d["chunk_id"], doc_path=d["doc_path"], title=d.get("title") or "",
                  heading_path=tuple(d.get("heading_path") or ()), position=int(d.get("position") or 0),
                  text=d.get("text") or "", token_count=0, content_hash="")
    span = d.get("answer_span")
    return Candidate(chunk=chunk, vector_distance=d["vector_distance"], vector_rank=d.get("vector_rank"),
                     bm25_score=d["bm25_score"], bm25_rank=d.get("bm25_rank"), rrf_score=d["rrf_score"],
                     term_coverage=d.get("term_coverage") or 0.0, rerank_logit=d.get("rerank_logit"),
                     semantic_logit=d.get("semantic_logit"), p_relevant=d.get("p_relevant"),
                     ranking_score=d.get("ranking_score"), span_score=d.get("span_score"),
                     null_score=d.get("null_score"), answer_span=tuple(span) if span else None,
                     sentence_cosine=d.get("sentence_cosine"), closest_sentence=d.get("closest_sentence"))


def gate_from_record(record: dict[str, Any]) -> GateResult:
    """The gate's verdict as an `ask_record` stored it: what a past question's inspection panel showed."""
    ranked = tuple(candidate_from_record(d) for d in record.get("candidates", []))
    by_id = {c.chunk.id: c for c in ranked}
    return GateResult(floor=float(record["floor"]), top_n=int(record.get("top_n") or len(record.get("kept", ()))),
                      ranked=ranked, kept=tuple(by_id[i] for i in record.get("kept", []) if i in by_id),
                      p_answerable=record.get("p_answerable"), answerability_floor=record.get("answerability_floor"))


def cited_chunks(record: dict[str, Any]) -> tuple[Chunk, ...]:
    """The chunks a stored answer cited, in citation order."""
    by_id = {d["chunk_id"]: candidate_from_record(d).chunk for d in record.get("candidates", [])}
    return tuple(by_id[i] for i in record.get("cited", []) if i in by_id)
