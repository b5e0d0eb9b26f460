"""Fit the scores -> p_relevant mapping and choose the floor from labelled outcomes.

Platt scaling and isotonic regression on `rerank_logit`, and a logistic regression on
`rerank_logit`, `cosine_similarity` and `term_coverage`, are fitted on one part of the questions and
compared by log loss on the other (split by question, never by pair, so one question's
pairs do not leak across); the winner is refitted on all of them. The floor is then
chosen on question-level decisions (a question is refused when its best p_relevant is
below the floor) for a stated target.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from chatbot import metrics
from chatbot.calibration import FEATURES, Calibration
from chatbot.errors import CalibrationError


def fit_logistic(features: np.ndarray, labels: np.ndarray, l2: float = 1e-4, iterations: int = 100) -> np.ndarray:
    """Logistic regression by Newton's method: p = sigmoid(features @ w[:-1] + w[-1]); returns w."""
    x = np.column_stack([np.asarray(features, dtype=np.float64).reshape(len(labels), -1), np.ones(len(labels))])
    y = labels.astype(np.float64)
    w = np.zeros(x.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        grad = x.T @ (p - y) + l2 * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + l2 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return w


def fit_platt(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """p = sigmoid(a * logit + b)."""
    a, b = fit_logistic(logits, labels)
    return float(a), float(b)


def fit_isotonic(logits: np.ndarray, labels: np.ndarray, max_knots: int = 200) -> tuple[tuple[float, ...], tuple[float, ...]]:
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(logits, labels)
    xs, ys = np.asarray(iso.X_thresholds_), np.asarray(iso.y_thresholds_)
    if len(xs) > max_knots:  # keep the file small; interpolation between knots is what we use anyway
        keep = np.unique(np.linspace(0, len(xs) - 1, max_knots).round().astype(int))
        xs, ys = xs[keep], ys[keep]
    if len(xs) < 2:
        xs, ys = np.array([xs[0] - 1.0, xs[0] + 1.0]), np.array([ys[0], ys[0]])
    return tuple(float(v) for v in xs), tuple(float(v) for v in ys)


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


@dataclass(frozen=True)
class LabelledQuestion:
    """What calibration needs of one evaluated question."""

    id: str
    answerable: bool | None  # None: unknown (its pairs still count for the mapping, not for the floor)
    pair_logits: tuple[float, ...]
    pair_labels: tuple[int, ...]  # 1 relevant, 0 not, -1 unknown (used for the question's top score only)
    pair_cosines: tuple[float, ...]  # cosine similarity of the question to each pair's chunk
    pair_coverages: tuple[float, ...]  # share of the question's content words in each pair's chunk

    def p_relevant(self, calibration: Calibration) -> np.ndarray:
        return calibration.p_relevant(self.pair_logits, cosine_similarity=self.pair_cosines,
                                      term_coverage=self.pair_coverages)


def _holdout(qid: str, fraction: float) -> bool:
    return int(hashlib.sha1(qid.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction


def choose_floor(top_p: np.ndarray, answerable: np.ndarray, target_refusal_precision: float | None,
                 max_false_refusal_rate: float | None) -> float:
    """The highest floor meeting the target: it refuses as many unanswerable questions as the target allows."""
    candidates = np.unique(np.concatenate([top_p, top_p + 1e-9, [0.0]]))
    best = 0.0
    for floor in candidates:
        m = metrics.refusal_at_floor(top_p, answerable, float(floor))
        if max_false_refusal_rate is not None:
            ok = not (m["false_refusal_rate"] > max_false_refusal_rate)
        else:
            ok = np.isnan(m["refusal_precision"]) or m["refusal_precision"] >= target_refusal_precision
        if ok:
            best = max(best, float(floor))
    return min(best, 1.0)


def _fit(method: str, logits: np.ndarray, cosines: np.ndarray, coverages: np.ndarray,
         labels: np.ndarray) -> Calibration:
    """An unfloored calibration of `method` fitted to these pairs."""
    if method == "platt":
        a, b = fit_platt(logits, labels)
        return Calibration(floor=0.0, method="platt", platt_a=a, platt_b=b)
    if method == "isotonic":
        xs, ys = fit_isotonic(logits, labels)
        return Calibration(floor=0.0, method="isotonic", isotonic_x=xs, isotonic_y=ys)
    *w, intercept = fit_logistic(np.column_stack([logits, cosines, coverages]), labels)  # in FEATURES order
    weights = dict(zip(FEATURES, (float(v) for v in w)))
    return Calibration(floor=0.0, method="logistic", weights={**weights, "intercept": float(intercept)})


def fit_calibration(questions: Sequence[LabelledQuestion], reranker_fingerprint: str, embedder_fingerprint: str = "",
                    chunking_fingerprint: str = "", *, target_refusal_precision: float | None = 0.9,
                    max_false_refusal_rate: float | None = None, holdout_fraction: float = 0.3, methods: Sequence[str] = ("platt", "isotonic", "logistic"),
                    notes: dict | None = None) -> tuple[Calibration, dict]:
    if not questions:
        raise CalibrationError("no labelled questions to calibrate on")
    logits = np.array([x for q in questions for x in q.pair_logits], dtype=np.float64)
    cosines = np.array([x for q in questions for x in q.pair_cosines], dtype=np.float64)
    coverages = np.array([x for q in questions for x in q.pair_coverages], dtype=np.float64)
    labels = np.array([y for q in questions for y in q.pair_labels], dtype=np.float64)
    if not len(cosines) == len(coverages) == len(logits) == len(labels):
        raise CalibrationError("every labelled pair needs its rerank logit, cosine similarity and term coverage")
    held = np.array([_holdout(q.id, holdout_fraction) for q in questions for _ in q.pair_logits])
    known = labels >= 0
    logits, cosines, coverages, labels, held = logits[known], cosines[known], coverages[known], labels[known], held[known]
    if labels.min(initial=1) == labels.max(initial=0):
        raise CalibrationError("calibration needs both relevant and irrelevant pairs in the labelled data")
    if held.all() or not held.any():
        held = np.arange(len(labels)) % 3 == 0

    val = {}
    for m in methods:
        trial = _fit(m, logits[~held], cosines[~held], coverages[~held], labels[~held])
        p = trial.p_relevant(logits[held], cosine_similarity=cosines[held], term_coverage=coverages[held])
        val[m] = log_loss(p, labels[held])
    method = min(val, key=val.get)
    draft = _fit(method, logits, cosines, coverages, labels)

    judged = [q for q in questions if q.answerable is not None]
    top_p = np.array([q.p_relevant(draft).max() if q.pair_logits else 0.0 for q in judged])
    answerable = np.array([q.answerable for q in judged], dtype=bool)
    if (~answerable).any():
        floor = choose_floor(top_p, answerable, target_refusal_precision, max_false_refusal_rate)
    elif len(top_p):
        # No unanswerable questions: the floor can only be set by the false-refusal budget.
        floor = float(np.quantile(top_p, max_false_refusal_rate if max_false_refusal_rate is not None else 0.05))
    else:
        raise CalibrationError("no question says whether it was answerable, so no floor can be chosen")
    trade_off = [metrics.refusal_at_floor(top_p, answerable, f)
                 for f in sorted({0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, round(floor, 4)})]
    details = {
        "method": method, "validation_log_loss": val, "n_pairs": int(len(labels)), "n_questions": len(questions),
        "n_judged_questions": len(judged),
        "target": {"refusal_precision": target_refusal_precision, "max_false_refusal_rate": max_false_refusal_rate},
        "trade_off": trade_off,
        "ece": metrics.reliability(draft.p_relevant(logits, cosine_similarity=cosines, term_coverage=coverages),
                                   labels)["ece"],
        "auroc_top_p": metrics.auroc(top_p[answerable], top_p[~answerable]) if (~answerable).any() else None,
    }
    calibration = dataclasses.replace(
        draft, floor=round(floor, 6), reranker_fingerprint=reranker_fingerprint,
        embedder_fingerprint=embedder_fingerprint if draft.reads_cosine else "",
        chunking_fingerprint=chunking_fingerprint,
        notes={**(notes or {}), "fit": {k: v for k, v in details.items() if k != "trade_off"}},
    )
    return calibration, details


def questions_from_traces(traces: Sequence[dict], reranker_fingerprint: str,
                          embedder_fingerprint: str) -> list[LabelledQuestion]:
    """Labelled questions from persisted traces that carry user feedback, for the running models only.

    A chunk rated up is relevant and one rated down is not; the sources cited by an answer rated up
    are relevant. The question is answerable when any chunk is relevant or its refusal was rated down
    ("it should have answered"), unanswerable when its refusal was rated up. An answer rated down says
    nothing certain (the wording may be at fault), so only its chunk ratings count.
    """
    from chatbot.retrieve import content_terms, term_coverage

    out = []
    for trace in traces:
        fingerprints, feedback, record = trace["fingerprints"], trace["feedback"], trace["record"]
        if fingerprints.get("reranker") != reranker_fingerprint or fingerprints.get("embedder") != embedder_fingerprint:
            continue
        chunk_ratings = {cid: r for cid, r in feedback.get("chunks", {}).items() if r in (-1, 1)}
        answer_rating = feedback.get("answer")
        refused = record["decision"] == "refusal"
        candidates = [c for c in record["candidates"] if c.get("rerank_logit") is not None]
        labels = []
        for c in candidates:
            rating = chunk_ratings.get(c["chunk_id"])
            if rating is None and answer_rating == 1 and not refused and c.get("cited_as"):
                rating = 1
            labels.append(-1 if rating is None else int(rating == 1))
        if 1 in labels or (refused and answer_rating == -1):
            answerable = True
        elif refused and answer_rating == 1:
            answerable = False
        elif 0 in labels:
            answerable = None  # chunks rated down only: their pairs count, the question gives no verdict
        else:
            continue
        terms = content_terms(record["question"])
        coverages = tuple(c["term_coverage"] if c.get("term_coverage") is not None
                          else term_coverage(terms, c["text"]) for c in candidates)  # traces older than the field
        out.append(LabelledQuestion(trace["trace_id"], answerable, tuple(float(c["rerank_logit"]) for c in candidates),
                                    tuple(labels), tuple(1.0 - float(c["vector_distance"]) for c in candidates),
                                    coverages))
    return out
