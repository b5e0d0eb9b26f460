"""Fit the scores -> p_relevant mapping and choose the floor from labelled outcomes.

Candidate mappings: Platt scaling and isotonic regression on `rerank_logit`; a logistic regression
on `rerank_logit`, `cosine_similarity` and `term_coverage`; and, for a reranker whose score has a
separate semantic part, logistic regressions on `semantic_logit` (alone, and with
`cosine_similarity`). Each is fitted on one part of the questions and judged on the other (split by
question, never by pair, so one question's pairs do not leak across); the winner is refitted on all
of them. When the judged part has unanswerable questions, the winner is the mapping whose best
p_relevant per question separates answerable from unanswerable ones best (AUROC, to 0.01), since
that is the decision the floor acts on; ties, and data without unanswerable questions, go to the
lowest log loss over pairs. The semantic part matters here: an unanswerable question written from
a passage repeats the passage's words, which is exactly what the exact-match term rewards.

The floor is then chosen on question-level decisions (a question is refused when its best
p_relevant is below the floor) for a stated target.

The order of the evidence is fitted apart: a logistic regression on every feature there is, over
the pairs of questions that have an answer, kept as the calibration's `ranking_weights` only when it
puts the relevant chunk higher (MRR) than the reranker's own order on the held-out questions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from chatbot import metrics
from chatbot.calibration import FEATURES, Calibration, question_features
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


@dataclass(frozen=True)
class LabelledQuestion:
    """What calibration needs of one evaluated question."""

    id: str
    answerable: bool | None  # None: unknown (its pairs still count for the mapping, not for the floor)
    pair_logits: tuple[float, ...]
    pair_labels: tuple[int, ...]  # 1 relevant, 0 not, -1 unknown (used for the question's top score only)
    pair_cosines: tuple[float, ...]  # cosine similarity of the question to each pair's chunk
    pair_coverages: tuple[float, ...]  # share of the question's content words in each pair's chunk
    # the reranker's semantic logit of each pair; empty, or None for a pair, when it has none
    pair_semantic_logits: tuple[float | None, ...] = ()
    # the reader's answer margin of each pair (best span score minus no-answer score); empty without a reader
    pair_answer_margins: tuple[float | None, ...] = ()
    source: str = ""  # its article or source: held-out parts keep one source's questions together
    # the reader's best span for it (highest margin) and whether that span was right (F1 >= 0.5 against
    # the gold answers); None where there is no reader or no gold answer
    span_margin: float | None = None
    span_correct: bool | None = None
    # the kind of input it is (its dataset, asked as a question or as keywords): the floor must meet its
    # target for every kind, not only on average, or one kind (claims, keyword queries) pays for the rest
    group: str = ""
    # the located stage's closest-sentence cosine of each pair (None past the best-ranked); empty without it
    pair_sentence_cosines: tuple[float | None, ...] = ()

    @property
    def has_reader(self) -> bool:
        # a layered reader reads only the best-ranked pairs: one margin is enough
        return len(self.pair_answer_margins) == len(self.pair_logits) and any(
            m is not None and not math.isnan(m) for m in self.pair_answer_margins)

    def question_features(self, calibration: Calibration) -> dict:
        return question_features(self.pair_logits, self.pair_semantic_logits if self.has_semantic else None,
                                 self.pair_cosines, self.pair_answer_margins if self.has_reader else None,
                                 self.p_relevant(calibration) if self.pair_logits else None,
                                 self.pair_sentence_cosines if len(self.pair_sentence_cosines) == len(self.pair_logits)
                                 else None)

    @property
    def has_semantic(self) -> bool:
        return len(self.pair_semantic_logits) == len(self.pair_logits) and None not in self.pair_semantic_logits

    def _features(self) -> dict:
        return dict(cosine_similarity=self.pair_cosines, term_coverage=self.pair_coverages,
                    semantic_logit=self.pair_semantic_logits if self.has_semantic else None)

    def p_relevant(self, calibration: Calibration) -> np.ndarray:
        return calibration.p_relevant(self.pair_logits, **self._features())

    def reciprocal_rank(self, calibration: Calibration) -> float | None:
        """1 / rank of the first relevant pair in the calibration's order (the reranker's, without a
        ranking); None when no pair is known relevant."""
        labels = np.asarray(self.pair_labels)
        if not (labels == 1).any():
            return None
        ranking = calibration.ranking_score(self.pair_logits, **self._features())
        scores = np.asarray(self.pair_logits if ranking is None else ranking, dtype=np.float64)
        order = np.argsort(-scores, kind="stable")
        return 1.0 / (1 + int(np.flatnonzero(labels[order] == 1)[0]))


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


def choose_floor_per_group(top_p: np.ndarray, answerable: np.ndarray, groups: Sequence[str],
                           target_refusal_precision: float | None, max_false_refusal_rate: float | None) -> float:
    """The highest floor that meets the target within every group that has answerable questions (the
    lowest of their floors): a 5% false-refusal budget spent on one kind of input alone would refuse
    far more of that kind. One group: `choose_floor`."""
    groups = np.asarray(groups)
    floors = [choose_floor(top_p[groups == g], answerable[groups == g], target_refusal_precision,
                           max_false_refusal_rate) for g in np.unique(groups) if answerable[groups == g].any()]
    return min(floors) if floors else choose_floor(top_p, answerable, target_refusal_precision, max_false_refusal_rate)


# The candidate mappings: name -> the FEATURES a logistic regression reads (platt and isotonic read
# rerank_logit alone). The "semantic" ones need every pair's semantic_logit.
LOGISTIC_FEATURES = {
    "logistic": ("rerank_logit", "cosine_similarity", "term_coverage"),
    "semantic": ("semantic_logit",),
    "semantic+cosine": ("semantic_logit", "cosine_similarity"),
}
METHODS_TRIED = ("platt", "isotonic", *LOGISTIC_FEATURES)


def _fit(method: str, pairs: dict[str, np.ndarray], labels: np.ndarray) -> Calibration:
    """An unfloored calibration of `method` fitted to these pairs (`pairs`: feature name -> values)."""
    if method == "platt":
        a, b = fit_platt(pairs["rerank_logit"], labels)
        return Calibration(floor=0.0, method="platt", platt_a=a, platt_b=b)
    if method == "isotonic":
        xs, ys = fit_isotonic(pairs["rerank_logit"], labels)
        return Calibration(floor=0.0, method="isotonic", isotonic_x=xs, isotonic_y=ys)
    names = LOGISTIC_FEATURES[method]
    *w, intercept = fit_logistic(np.column_stack([pairs[n] for n in names]), labels)
    weights = dict(zip(names, (float(v) for v in w)))
    return Calibration(floor=0.0, method="logistic", weights={**weights, "intercept": float(intercept)})


def _p(calibration: Calibration, pairs: dict[str, np.ndarray], mask=slice(None)) -> np.ndarray:
    """p_relevant of the pairs under `mask`; `pairs` is keyed by feature name, as p_relevant reads them."""
    return calibration.p_relevant(pairs["rerank_logit"][mask],
                                  **{name: values[mask] for name, values in pairs.items() if name != "rerank_logit"})


def _separation(calibration: Calibration, questions: Sequence[LabelledQuestion]) -> float | None:
    """AUROC of each judged question's best p_relevant, answerable vs not; None without both kinds."""
    judged = [q for q in questions if q.answerable is not None]
    top = [q.p_relevant(calibration).max() if q.pair_logits else 0.0 for q in judged]
    pos = [t for t, q in zip(top, judged) if q.answerable]
    neg = [t for t, q in zip(top, judged) if not q.answerable]
    return metrics.auroc(pos, neg) if pos and neg else None


def fit_calibration(questions: Sequence[LabelledQuestion], reranker_fingerprint: str, embedder_fingerprint: str = "",
                    chunking_fingerprint: str = "", *, target_refusal_precision: float | None = 0.9,
                    max_false_refusal_rate: float | None = None, holdout_fraction: float = 0.3,
                    methods: Sequence[str] = METHODS_TRIED, fit_ranking: bool = True,
                    fit_answerability: bool = True, located: bool = True,
                    notes: dict | None = None) -> tuple[Calibration, dict]:
    """`located`: P(answerable) may read the closest sentence's cosine (where the questions carry it), which makes
    the pipeline run the located stage and ingest store sentence vectors: a deployment's choice, so the CLI
    fits it only when asked."""
    if not questions:
        raise CalibrationError("no labelled questions to calibrate on")
    unknown = set(methods) - set(METHODS_TRIED)
    if unknown:
        raise CalibrationError(f"unknown calibration method(s) {sorted(unknown)}; known: {', '.join(METHODS_TRIED)}")
    semantic = all(q.has_semantic for q in questions)
    methods = [m for m in methods if semantic or "semantic_logit" not in LOGISTIC_FEATURES.get(m, ())]
    if not methods:
        raise CalibrationError("the methods asked for need semantic logits, and the reranker gives none")
    pairs = {
        "rerank_logit": np.array([x for q in questions for x in q.pair_logits], dtype=np.float64),
        "cosine_similarity": np.array([x for q in questions for x in q.pair_cosines], dtype=np.float64),
        "term_coverage": np.array([x for q in questions for x in q.pair_coverages], dtype=np.float64),
    }
    if semantic:
        pairs["semantic_logit"] = np.array([x for q in questions for x in q.pair_semantic_logits], dtype=np.float64)
    labels = np.array([y for q in questions for y in q.pair_labels], dtype=np.float64)
    answering = np.array([q.answerable is not False for q in questions for _ in q.pair_logits], dtype=bool)
    if any(len(v) != len(labels) for v in pairs.values()):
        raise CalibrationError("every labelled pair needs its rerank logit, cosine similarity and term coverage")
    held_question = _held_questions(questions, holdout_fraction)
    held = np.array([held_question[q.id] for q in questions for _ in q.pair_logits])
    known = labels >= 0
    pairs, labels, held, answering = {k: v[known] for k, v in pairs.items()}, labels[known], held[known], answering[known]
    if labels.min(initial=1) == labels.max(initial=0):
        raise CalibrationError("calibration needs both relevant and irrelevant pairs in the labelled data")
    if held.all() or not held.any():
        held = np.arange(len(labels)) % 3 == 0
    judged_part = [q for q in questions if held_question[q.id]]

    val, separation = {}, {}
    for m in methods:
        trial = _fit(m, {k: v[~held] for k, v in pairs.items()}, labels[~held])
        val[m] = metrics.log_loss(_p(trial, pairs, held), labels[held])
        separation[m] = _separation(trial, judged_part)
    # Differences in AUROC under 0.01 are noise on a few hundred questions; then the better-calibrated wins.
    method = min(methods, key=lambda m: (-round(separation[m] or 0.0, 2), val[m]))
    draft = _fit(method, pairs, labels)
    ranking, ranking_check = {}, {"held_out_mrr": {"reranker": None, "ranking": None}, "kept": False}
    if fit_ranking:
        ranking, ranking_check = _fit_ranking(pairs, labels, held, answering,
                                              [q for q in judged_part if q.answerable is not False])
    draft = dataclasses.replace(draft, ranking_weights=ranking)

    judged = [q for q in questions if q.answerable is not None]
    top_p = np.array([q.p_relevant(draft).max() if q.pair_logits else 0.0 for q in judged])
    answerable = np.array([q.answerable for q in judged], dtype=bool)
    if (~answerable).any():
        floor = choose_floor_per_group(top_p, answerable, [q.group for q in judged], target_refusal_precision,
                                       max_false_refusal_rate)
    elif len(top_p):
        # No unanswerable questions: the floor can only be set by the false-refusal budget.
        floor = float(np.quantile(top_p, max_false_refusal_rate if max_false_refusal_rate is not None else 0.05))
    else:
        raise CalibrationError("no question says whether it was answerable, so no floor can be chosen")
    trade_off = [metrics.refusal_at_floor(top_p, answerable, f)
                 for f in sorted({0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, round(floor, 4)})]
    details = {
        "method": method, "validation_log_loss": val, "validation_auroc_top_p": separation,
        "ranking": ranking_check,
        "n_pairs": int(len(labels)), "n_questions": len(questions), "n_judged_questions": len(judged),
        "target": {"refusal_precision": target_refusal_precision, "max_false_refusal_rate": max_false_refusal_rate},
        "trade_off": trade_off,
        "ece": metrics.reliability(_p(draft, pairs), labels)["ece"],
        "auroc_top_p": metrics.auroc(top_p[answerable], top_p[~answerable]) if (~answerable).any() else None,
    }
    answerability, answerability_check = {}, None
    if fit_answerability and (~answerable).any() and answerable.any():
        answerability, answerability_check = _fit_answerability(judged, draft, holdout_fraction, located)
    answerability_floor = 0.0
    if answerability:
        draft = dataclasses.replace(draft, answerability_weights=answerability)
        p_answerable = np.array([draft.p_answerable(q.question_features(draft)) for q in judged])
        answerability_floor = choose_floor_per_group(p_answerable, answerable, [q.group for q in judged],
                                                     target_refusal_precision, max_false_refusal_rate)
        details["answerability"] = {
            **answerability_check, "floor": answerability_floor,
            "auroc": metrics.auroc(p_answerable[answerable], p_answerable[~answerable]),
            "trade_off": [metrics.refusal_at_floor(p_answerable, answerable, f)
                          for f in sorted({0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, round(answerability_floor, 4)})]}
    span_floor, span_check = fit_span_floor([(q.span_margin, q.span_correct) for q in questions
                                             if q.span_margin is not None and q.span_correct is not None])
    details["answer_span"] = span_check
    calibration = dataclasses.replace(
        # rounded down: a floor rounded up past a question's score would refuse it against the target
        draft, answer_span_floor=span_floor, floor=math.floor(floor * 1e6) / 1e6,
        answerability_floor=math.floor(answerability_floor * 1e6) / 1e6,
        reranker_fingerprint=reranker_fingerprint,
        embedder_fingerprint=embedder_fingerprint if draft.reads_cosine else "",
        chunking_fingerprint=chunking_fingerprint,
        notes={**(notes or {}), "fit": {k: v for k, v in details.items() if k not in ("trade_off", "answerability")},
               **({"answerability": {k: v for k, v in details["answerability"].items() if k != "trade_off"}}
                  if answerability else {})},
    )
    return calibration, details


def _fit_ranking(pairs: dict[str, np.ndarray], labels: np.ndarray, held: np.ndarray, answering: np.ndarray,
                 held_questions: Sequence[LabelledQuestion]) -> tuple[dict, dict]:
    """Ranking weights over every feature, fitted on the pairs of questions that have an answer
    (`answering`), and the MRR over `held_questions` that decided whether to keep them ({} when the
    reranker's order is as good)."""
    names = tuple(n for n in FEATURES if n in pairs)

    def fit(mask) -> dict:
        y = labels[mask]
        if y.min(initial=1) == y.max(initial=0):
            return {}
        *w, _ = fit_logistic(np.column_stack([pairs[n][mask] for n in names]), y)
        return dict(zip(names, (float(v) for v in w)))

    trial = fit(answering & ~held)

    def mrr(calibration: Calibration) -> float | None:
        ranks = [r for r in (q.reciprocal_rank(calibration) for q in held_questions) if r is not None]
        return float(np.mean(ranks)) if ranks else None

    reranker_mrr = mrr(Calibration(floor=0.0))
    trial_mrr = mrr(Calibration(floor=0.0, ranking_weights=trial)) if trial else None
    keep = trial_mrr is not None and reranker_mrr is not None and trial_mrr > reranker_mrr
    check = {"held_out_mrr": {"reranker": reranker_mrr, "ranking": trial_mrr}, "kept": keep}
    return (fit(answering) if keep else {}), check


# P(answerable) candidates: name -> the QUESTION_FEATURES its logistic regression reads. Those naming a
# feature some question lacks (a semantic logit, a reader margin) are not tried.
ANSWERABILITY_FEATURES = {
    "best_p_relevant": ("best_p_relevant",),
    "logit+cosine": ("best_rerank_logit", "best_cosine_similarity"),
    "semantic+cosine": ("best_semantic_logit", "best_cosine_similarity"),
    "reader": ("best_answer_margin",),
    "semantic+reader": ("best_semantic_logit", "best_answer_margin"),
    "semantic+cosine+reader": ("best_semantic_logit", "best_cosine_similarity", "best_answer_margin"),
    "logit+cosine+reader": ("best_rerank_logit", "best_cosine_similarity", "best_answer_margin"),
    "logit+cosine+sentence": ("best_rerank_logit", "best_cosine_similarity", "best_sentence_cosine"),
    "semantic+cosine+sentence": ("best_semantic_logit", "best_cosine_similarity", "best_sentence_cosine"),
}


SPAN_PRECISION = 0.8  # a span is stated first only where the reader's spans were right this often
MIN_SPANS = 20


def fit_span_floor(spans: Sequence[tuple[float, bool]], precision: float = SPAN_PRECISION,
                   least: int = MIN_SPANS) -> tuple[float | None, dict]:
    """The lowest answer margin from which the reader's best spans were right (`spans`: margin, right?)
    at least `precision` of the time, over at least `least` spans; None when no margin manages it (then
    answers quote sentences and state no span)."""
    ranked = sorted(spans, key=lambda s: -s[0])
    right = np.cumsum([ok for _, ok in ranked])
    floor = None
    for k in range(least, len(ranked) + 1):
        if right[k - 1] / k >= precision and (k == len(ranked) or ranked[k][0] < ranked[k - 1][0]):
            floor = float(ranked[k - 1][0])
    stated = [ok for m, ok in ranked if floor is not None and m >= floor]
    return floor, {"n_spans": len(ranked), "right": int(right[-1]) if ranked else 0, "floor": floor,
                   "stated": len(stated), "precision_stated": float(np.mean(stated)) if stated else None}


def _held_questions(questions: Sequence[LabelledQuestion], fraction: float) -> dict[str, bool]:
    """Which questions judge the candidates: whole sources (articles) where there are enough of them to
    put some on each side, else single questions."""
    by_source = {q.id: _holdout(q.source or q.id, fraction) for q in questions}
    sources = {(q.source or q.id, by_source[q.id]) for q in questions}
    if sum(held for _, held in sources) >= 3 and sum(not held for _, held in sources) >= 3:
        return by_source
    return {q.id: _holdout(q.id, fraction) for q in questions}


def _fit_answerability(judged: Sequence[LabelledQuestion], pairs: Calibration,
                       holdout_fraction: float, located: bool = True) -> tuple[dict, dict]:
    """P(answerable) weights over QUESTION_FEATURES, and how the candidates fared on held-out questions
    (log loss, AUROC, ECE). The winner has the lowest held-out log loss, the measure of a probability
    as a person reads it; it is then refitted on every question."""
    judged = [q for q in judged if q.pair_logits]
    features = [q.question_features(pairs) for q in judged]
    labels = np.array([q.answerable for q in judged], dtype=np.float64)
    held_map = _held_questions(judged, holdout_fraction)
    held = np.array([held_map[q.id] for q in judged])
    if held.all() or not held.any() or labels[~held].min() == labels[~held].max():
        held = np.arange(len(judged)) % 3 == 0
    tried = {}
    for name, names in ANSWERABILITY_FEATURES.items():
        if any(f[n] is None for f in features for n in names) or (not located and "best_sentence_cosine" in names):
            continue
        x = np.array([[f[n] for n in names] for f in features], dtype=np.float64)
        *w, b = fit_logistic(x[~held], labels[~held], l2=1e-2)
        p = 1.0 / (1.0 + np.exp(-(x[held] @ np.array(w) + b)))
        y = labels[held]
        reliability = metrics.reliability(p, y)
        tried[name] = {"log_loss": metrics.log_loss(p, y), "ece": reliability["ece"],
                       "auroc": metrics.auroc(p[y == 1], p[y == 0]) if 0 < y.sum() < len(y) else None,
                       "reliability": reliability["bins"]}
    if not tried:
        return {}, {"held_out": {}}
    name = min(tried, key=lambda n: tried[n]["log_loss"])
    names = ANSWERABILITY_FEATURES[name]
    x = np.array([[f[n] for n in names] for f in features], dtype=np.float64)
    *w, b = fit_logistic(x, labels, l2=1e-2)
    weights = {**dict(zip(names, (float(v) for v in w))), "intercept": float(b)}
    return weights, {"method": name, "held_out": tried, "n_held_out": int(held.sum()),
                     "n_questions": len(judged), "n_answerable": int(labels.sum())}


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
                                    coverages, tuple(c.get("semantic_logit") for c in candidates),
                                    tuple(c.get("answer_margin") for c in candidates),
                                    pair_sentence_cosines=tuple(c.get("sentence_cosine") for c in candidates)))
    return out
