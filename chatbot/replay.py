"""Replay: the stored questions under another reranker, calibration or floor, side by side with
what they got, before that setting ships.

Each trace holds the question as it was searched (a follow-up already rewritten), the gate's verdict,
every candidate's scores and the user's rating. Replay asks that question again of the knowledge base
as it is now, through the new setting, up to the gate: no LLM is called, so what is compared is the
gate's decision (answer or refuse) and its top evidence chunk. A flip is judged by the rating of what
the user got: undoing a 👎 is a fix, undoing a 👍 a regression.

Reranker scores are reused where they can be: a pair the trace scored with the same model, precision
and length (and the same chunk text, which the cache key holds) goes into the reranker's pair cache
before the question is asked again, so replaying costs retrieval and the gate, not the cross-encoder.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from chatbot.errors import ChatbotError, ConfigError
from chatbot.record import candidate_from_record
from chatbot.rerank import Reranker
from chatbot.types import GateResult, cache_scope

ANSWER, REFUSAL = "answer", "refusal"
# What a change did, judged by the user's rating of what they got. Only "regression" fails `replay`.
FIX, REGRESSION, REVIEW, UNRATED, SAME_FOR_USER = "fix", "regression", "review", "unrated", "same for the user"


@dataclass(frozen=True)
class Replayed:
    """One stored question: what the gate decided then and decides now."""

    trace_id: str
    asked_at: float
    question: str
    was: str  # the gate's decision then: ANSWER or REFUSAL
    now: str
    was_final: str  # what the user got: an LLM may have found no answer in evidence the gate passed
    was_score: float | None  # the decision's score: P(answerable), or the best p_relevant without one
    now_score: float | None
    was_top: str | None  # chunk id of the top evidence (citation [1] of the prompt); None for a refusal
    now_top: str | None
    was_top_doc: str | None
    now_top_doc: str | None
    rating: int | None  # the user's 👍 (+1) or 👎 (-1) on the answer or refusal
    verdict: str | None  # None: nothing changed
    record: dict = field(default_factory=dict, compare=False, repr=False)  # the trace's ask record (then)
    gate: GateResult | None = field(default=None, compare=False, repr=False)  # the gate now

    @property
    def flip(self) -> str | None:
        if self.was == self.now:
            return None
        return "answered -> refused" if self.now == REFUSAL else "refused -> answered"

    @property
    def citation_changed(self) -> bool:
        return self.was == self.now == ANSWER and self.was_top != self.now_top

    @property
    def changed(self) -> bool:
        return self.flip is not None or self.citation_changed

    def to_json(self) -> dict[str, Any]:
        return {"trace_id": self.trace_id, "asked_at": self.asked_at, "question": self.question,
                "was": self.was, "now": self.now, "was_final": self.was_final, "flip": self.flip,
                "citation_changed": self.citation_changed, "was_score": self.was_score, "now_score": self.now_score,
                "was_top": self.was_top, "now_top": self.now_top, "was_top_doc": self.was_top_doc,
                "now_top_doc": self.now_top_doc, "rating": self.rating, "verdict": self.verdict}


@dataclass(frozen=True)
class Skipped:
    trace_id: str
    question: str
    reason: str  # the kind, counted in the report: "document deleted", "another embedder", ...
    detail: str


@dataclass(frozen=True)
class ReplayReport:
    setting: dict[str, Any]
    replayed: tuple[Replayed, ...]
    skipped: tuple[Skipped, ...]
    seconds: float
    reused_pairs: int  # pair scores taken from the traces: no cross-encoder work
    scored_pairs: int  # pairs the reranker read

    @property
    def changes(self) -> tuple[Replayed, ...]:
        return tuple(r for r in self.replayed if r.changed)

    @property
    def regressions(self) -> tuple[Replayed, ...]:
        return tuple(r for r in self.replayed if r.verdict == REGRESSION)

    def count(self, what: Callable[[Replayed], bool]) -> int:
        return sum(1 for r in self.replayed if what(r))

    def skip_reasons(self) -> dict[str, int]:
        return dict(Counter(s.reason for s in self.skipped))

    def summary(self) -> dict[str, Any]:
        return {
            "replayed": len(self.replayed), "skipped": len(self.skipped), "skip_reasons": self.skip_reasons(),
            "answered_to_refused": self.count(lambda r: r.flip == "answered -> refused"),
            "refused_to_answered": self.count(lambda r: r.flip == "refused -> answered"),
            "top_citation_changed": self.count(lambda r: r.citation_changed),
            "verdicts": dict(Counter(r.verdict for r in self.changes)),
            "regressions": len(self.regressions), "seconds": round(self.seconds, 3),
            "reused_pairs": self.reused_pairs, "scored_pairs": self.scored_pairs,
        }

    def to_json(self) -> dict[str, Any]:
        return {"setting": self.setting, "summary": self.summary(),
                "changes": [r.to_json() for r in self.changes],
                "unchanged": [r.to_json() for r in self.replayed if not r.changed],
                "skipped": [{"trace_id": s.trace_id, "question": s.question, "reason": s.reason, "detail": s.detail}
                            for s in self.skipped]}


def verdict(was: str, now: str, was_final: str, was_top: str | None, now_top: str | None, rating: int | None,
            chunk_ratings: dict[str, int]) -> str | None:
    """How a change reads against what the user rated. None: nothing changed."""
    if was != now:
        if rating is None:
            return UNRATED
        if was_final != was:  # the gate passed it, the LLM refused: the user saw a refusal, and sees one now
            return SAME_FOR_USER if now == REFUSAL else (FIX if rating < 0 else REGRESSION)
        return REGRESSION if rating > 0 else FIX
    if was == ANSWER and was_top != now_top:
        was_rating, now_rating = chunk_ratings.get(was_top or ""), chunk_ratings.get(now_top or "")
        if now_rating == -1 or (was_rating == 1 and now_rating != 1):
            return REGRESSION  # a chunk the user called irrelevant now leads, or one they called relevant lost the lead
        if now_rating == 1 or was_rating == -1:
            return FIX
        return REVIEW if rating is not None else UNRATED
    return None


def _decision_score(gate: GateResult) -> float | None:
    return gate.p_answerable if gate.judged_answerability else gate.best_p_relevant


def _was(record: dict[str, Any]) -> tuple[str, float | None, str | None, str | None]:
    """The gate's decision then, its score, and the top evidence chunk and document."""
    kept = record.get("kept") or []
    candidates = {d["chunk_id"]: d for d in record.get("candidates", [])}
    score = record.get("p_answerable")
    if score is None:
        score = max((d["p_relevant"] for d in candidates.values() if d.get("p_relevant") is not None), default=None)
    top = kept[0] if kept else None
    return (ANSWER if kept else REFUSAL), score, top, candidates[top]["doc_path"] if top in candidates else None


def skip_reason(trace: dict[str, Any], embedder_fingerprint: str, documents: set[str],
                chunk_ids: set[str]) -> tuple[str, str] | None:
    """Why a trace cannot be compared with a replay today, or None when it can."""
    record = trace.get("record") or {}
    if not trace.get("question") or "candidates" not in record:
        return "unreadable trace", "the trace holds no question or no candidates"
    asked_with = (trace.get("fingerprints") or {}).get("embedder")
    if asked_with and asked_with != embedder_fingerprint:
        return "another embedder", f"asked with embedder '{asked_with}', the knowledge base now uses '{embedder_fingerprint}'"
    by_id = {d["chunk_id"]: d for d in record["candidates"]}
    for chunk_id in dict.fromkeys([*record.get("kept", []), *record.get("cited", [])]):
        doc = by_id.get(chunk_id, {}).get("doc_path")
        if doc is not None and doc not in documents:
            return "document deleted", f"its evidence came from {doc}, since deleted"
        if chunk_id not in chunk_ids:
            return "document changed", f"its evidence chunk in {doc} has changed since"
    return None


def scores_reusable(trace: dict[str, Any], reranker: Reranker) -> bool:
    """Whether the trace's pair scores are what this reranker would compute: same weights, precision and length."""
    config = trace.get("config") or {}
    return ((trace.get("fingerprints") or {}).get("reranker") == reranker.fingerprint
            and config.get("reranker_precision") == reranker.precision
            and config.get("reranker_max_length") == reranker.max_length)


def remember_scores(reranker: Reranker, trace: dict[str, Any], scope: str = "") -> int:
    """Put the trace's pair scores in the reranker's cache (under the asker's `scope`); how many went in."""
    question, count = trace["question"], 0
    for d in trace["record"]["candidates"]:
        if d.get("rerank_logit") is None:
            continue  # past the rerank depth: never read
        c = candidate_from_record(d)
        start, end = c.answer_span or (-1, float("nan"))
        row = [c.rerank_logit, *(np.nan if v is None else v for v in (c.semantic_logit, c.span_score, c.null_score)),
               start, end]
        count += reranker.remember(question, c.chunk.context_text, row, scope)
    return count


def describe_setting(pipeline, calibration_source: str, **more: Any) -> dict[str, Any]:
    """What a replay ran under, for its report: the reranker, the calibration's source and its floor."""
    calibration = pipeline.calibration
    return {"reranker": pipeline.config.reranker, "reranker_fingerprint": pipeline.reranker.fingerprint,
            "calibration": calibration_source, "floor": calibration.decision_floor,
            "floor_on": "P(answerable)" if calibration.judges_answerability else "p_relevant", **more}


def replay(pipeline, traces: Iterable[dict[str, Any]], setting: dict[str, Any] | None = None, *,
           reuse_scores: bool = True, on_done: Callable[[int], Any] | None = None,
           viewer_of: Callable[[str], Any] | None = None) -> ReplayReport:
    """Ask each trace's question again through `pipeline` (the new setting over the current knowledge base;
    it should store no traces of its own) up to the gate, and compare. `viewer_of(name)`: the user a
    trace's asker is now (their groups), so each question is asked again with what its asker may read."""
    started = time.perf_counter()
    reranker = pipeline.reranker
    documents, chunk_ids = set(pipeline.store.document_hashes()), pipeline.store.chunk_ids()
    hits, misses = reranker.cache_hits, reranker.cache_misses
    replayed, skipped = [], []
    for trace in traces:
        reason = skip_reason(trace, pipeline.embedder.fingerprint, documents, chunk_ids)
        viewer = None
        asker = (trace.get("record") or {}).get("asked_by")
        if reason is None and asker and viewer_of is not None:
            try:
                viewer = viewer_of(asker)
            except ChatbotError:
                reason = ("user removed", f"asked by {asker}, no longer a user")
        if reason is not None:
            skipped.append(Skipped(trace.get("trace_id", ""), trace.get("question") or "", *reason))
        else:
            if reuse_scores and scores_reusable(trace, reranker):
                remember_scores(reranker, trace, cache_scope(viewer))
            replayed.append(_replay_one(pipeline, trace, viewer))
        if on_done:
            on_done(1)
    return ReplayReport(setting=dict(setting or {}), replayed=tuple(replayed), skipped=tuple(skipped),
                        seconds=time.perf_counter() - started, reused_pairs=reranker.cache_hits - hits,
                        scored_pairs=reranker.cache_misses - misses)


def _replay_one(pipeline, trace: dict[str, Any], viewer=None) -> Replayed:
    record, feedback = trace["record"], trace.get("feedback") or {}
    was, was_score, was_top, was_top_doc = _was(record)
    gate = pipeline.evidence(trace["question"], viewer=viewer).gate
    now = ANSWER if gate.kept else REFUSAL
    now_top = gate.kept[0].chunk.id if gate.kept else None
    was_final = record.get("decision", was)
    rating = feedback.get("answer")
    return Replayed(trace_id=trace["trace_id"], asked_at=trace.get("asked_at") or 0.0, question=trace["question"],
                    was=was, now=now, was_final=was_final, was_score=was_score, now_score=_decision_score(gate),
                    was_top=was_top, now_top=now_top, was_top_doc=was_top_doc,
                    now_top_doc=gate.kept[0].chunk.doc_path if gate.kept else None, rating=rating,
                    verdict=verdict(was, now, was_final, was_top, now_top, rating, feedback.get("chunks") or {}),
                    record=record, gate=gate)


def parse_since(text: str | None) -> float | None:
    """A "since" date as unix seconds: ISO date or date and time, local time unless it names a zone."""
    if text is None or not text.strip():
        return None
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise ConfigError(f"since {text!r}: give a date or a date and time, e.g. 2026-11-01 or 2026-11-01T09:30") from None


def changes_first(replayed: Sequence[Replayed]) -> list[Replayed]:
    """Regressions, then fixes, then the rest of the changes, each newest first."""
    order = {REGRESSION: 0, FIX: 1, REVIEW: 2, SAME_FOR_USER: 3, UNRATED: 4}
    return sorted((r for r in replayed if r.changed), key=lambda r: (order.get(r.verdict, 5), -r.asked_at))
