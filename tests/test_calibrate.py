"""Fitting a calibration: the fitters recover known mappings, the method is chosen on held-out
questions, and the floor meets its stated target."""

import dataclasses

import numpy as np
import pytest

from chatbot.calibrate import LabelledQuestion, choose_floor, fit_calibration, fit_logistic, fit_platt
from chatbot.calibration import Calibration
from chatbot.errors import CalibrationError


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def test_logistic_fit_recovers_the_generating_weights():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20000, 2))
    y = (rng.random(20000) < _sigmoid(1.5 * x[:, 0] - 2.0 * x[:, 1] + 0.5)).astype(float)
    w = fit_logistic(x, y)
    assert w == pytest.approx([1.5, -2.0, 0.5], abs=0.1)
    a, b = fit_platt(x[:, 0], (rng.random(20000) < _sigmoid(0.8 * x[:, 0] - 1.0)).astype(float))
    assert (a, b) == pytest.approx((0.8, -1.0), abs=0.1)


def _questions(rng, n: int, off_domain: bool) -> list[LabelledQuestion]:
    """Answerable questions have one relevant chunk among ten; off-domain ones have none. The
    cross-encoder's logit is equally confused by both, but off-domain questions sit far from
    every chunk in embedding space: only the cosine tells them apart."""
    out = []
    for i in range(n):
        logits = rng.normal(-2.0, 1.0, size=10)
        cosines = rng.uniform(0.05, 0.25, size=10) if off_domain else rng.uniform(0.3, 0.5, size=10)
        labels = np.zeros(10, dtype=int)
        if not off_domain:
            labels[0] = 1
            logits[0] = rng.normal(1.0, 1.5)
            cosines[0] = rng.uniform(0.45, 0.7)
        else:
            logits[0] = rng.normal(1.0, 1.5)  # a fluent passage the cross-encoder likes anyway
        coverages = rng.uniform(0.0, 0.6, size=10)  # uninformative here
        out.append(LabelledQuestion(f"{'ood' if off_domain else 'q'}{i}", not off_domain, tuple(logits),
                                    tuple(int(v) for v in labels), tuple(cosines), tuple(coverages)))
    return out


def test_fit_prefers_cosine_when_it_separates_off_domain_questions():
    rng = np.random.default_rng(1)
    questions = _questions(rng, 300, False) + _questions(rng, 150, True)
    cal, details = fit_calibration(questions, "m:1", "emb:1", target_refusal_precision=0.9)
    assert details["method"] == "logistic"
    assert cal.weights["cosine_similarity"] > 0 and cal.embedder_fingerprint == "emb:1" and cal.reranker_fingerprint == "m:1"
    platt, platt_details = fit_calibration(questions, "m:1", "emb:1", methods=("platt",), fit_ranking=False,
                                           fit_answerability=False)
    assert platt.embedder_fingerprint == ""  # a logit-only mapping does not depend on the embedder
    assert not platt.ranking_weights
    assert details["auroc_top_p"] > 0.99 > platt_details["auroc_top_p"]
    # The floor meets the target on these questions.
    top_p = np.array([q.p_relevant(cal).max() for q in questions])
    refused = top_p < cal.floor
    answerable = np.array([q.answerable for q in questions])
    assert refused.any() and (~answerable[refused]).mean() >= 0.9


def test_choose_floor_is_the_highest_meeting_the_target():
    top_p = np.array([0.9, 0.8, 0.35, 0.3, 0.2, 0.1])
    answerable = np.array([True, True, True, False, False, False])
    # Refusing below 0.3 + eps catches all three unanswerable ones at precision 1; refusing 0.35 too drops it to 0.75.
    floor = choose_floor(top_p, answerable, target_refusal_precision=0.9, max_false_refusal_rate=None)
    assert 0.3 < floor <= 0.35
    floor = choose_floor(top_p, answerable, target_refusal_precision=None, max_false_refusal_rate=0.34)
    assert 0.35 < floor <= 0.8


def test_fit_needs_both_kinds_of_pair():
    q = LabelledQuestion("q", True, (1.0, 2.0), (0, 0), (0.1, 0.2), (0.5, 0.5))
    with pytest.raises(CalibrationError, match="both relevant and irrelevant"):
        fit_calibration([q], "m:1")


def _trace(tid, decision, feedback, reranker="m:1", candidates=None):
    candidates = candidates or [
        {"chunk_id": "a", "rerank_logit": 2.0, "vector_distance": 0.4, "term_coverage": 0.8, "text": "x", "cited_as": 1},
        {"chunk_id": "b", "rerank_logit": -1.0, "vector_distance": 0.7, "text": "lisbon office", "cited_as": None},
    ]
    return {"trace_id": tid, "fingerprints": {"reranker": reranker, "embedder": "e:1"}, "feedback": feedback,
            "record": {"question": "Where is the Lisbon office?", "decision": decision, "candidates": candidates}}


def test_questions_from_traces_read_what_users_rated():
    from chatbot.calibrate import questions_from_traces

    traces = [
        _trace("liked-answer", "answer", {"answer": 1}),  # cited source a: relevant
        _trace("disliked-answer", "answer", {"answer": -1}),  # says nothing certain: skipped
        _trace("chunk-down", "answer", {"chunks": {"b": -1}}),  # pairs count, no verdict on the question
        _trace("right-refusal", "refusal", {"answer": 1}),
        _trace("wrong-refusal", "refusal", {"answer": -1}),
        _trace("other-model", "answer", {"answer": 1}, reranker="m:2"),
    ]
    got = {q.id: q for q in questions_from_traces(traces, "m:1", "e:1")}
    assert set(got) == {"liked-answer", "chunk-down", "right-refusal", "wrong-refusal"}
    assert got["liked-answer"].pair_labels == (1, -1) and got["liked-answer"].answerable is True
    assert got["chunk-down"].pair_labels == (-1, 0) and got["chunk-down"].answerable is None
    assert got["right-refusal"].answerable is False and got["wrong-refusal"].answerable is True
    q = got["liked-answer"]
    assert q.pair_cosines == pytest.approx((0.6, 0.3)) and q.pair_logits == (2.0, -1.0)
    # A trace older than the term_coverage field: computed from the stored text ("lisbon", "office" of 2).
    assert q.pair_coverages == pytest.approx((0.8, 1.0))


def _written_from_passage(rng, n: int, answerable: bool) -> list[LabelledQuestion]:
    """In-domain questions with one passage each: an answerable one's passage answers it; an
    unanswerable one was written from its passage and repeats its words without being answered by
    it. The exact-match term lifts the rerank logit of both alike; only the semantic part tells them
    apart. (The term counts word pieces; `term_coverage` counts words, so it cannot simply be
    subtracted back out.) Other chunks are off-topic."""
    out = []
    for i in range(n):
        semantic = rng.normal(-3.0, 1.0, size=10)
        semantic[0] = rng.normal(2.0, 1.0) if answerable else rng.normal(-1.0, 1.0)
        pieces = rng.uniform(0.0, 0.3, size=10)
        pieces[0] = rng.uniform(0.5, 1.0)
        logits = semantic + 8.0 * pieces
        coverages = np.clip(pieces + rng.normal(0.0, 0.3, size=10), 0.0, 1.0)
        labels = np.zeros(10, dtype=int)
        labels[0] = int(answerable)
        cosines = rng.uniform(0.2, 0.4, size=10)
        cosines[0] = rng.uniform(0.5, 0.7)
        out.append(LabelledQuestion(f"{'a' if answerable else 'u'}{i}", answerable, tuple(logits),
                                    tuple(int(v) for v in labels), tuple(cosines), tuple(coverages),
                                    tuple(semantic)))
    return out


def test_fit_refuses_on_the_semantic_part_when_shared_words_mislead():
    rng = np.random.default_rng(2)
    questions = _written_from_passage(rng, 300, True) + _written_from_passage(rng, 300, False)
    cal, details = fit_calibration(questions, "m:1", "emb:1", max_false_refusal_rate=0.05,
                                   target_refusal_precision=None)
    assert details["method"].startswith("semantic") and cal.weights["semantic_logit"] > 0
    aurocs = details["validation_auroc_top_p"]
    assert aurocs[details["method"]] > max(aurocs[m] for m in ("platt", "isotonic", "logistic")) + 0.03
    assert details["auroc_top_p"] > 0.9
    # Without semantic logits (a reranker with no such part) only the other mappings are tried.
    plain = [LabelledQuestion(q.id, q.answerable, q.pair_logits, q.pair_labels, q.pair_cosines, q.pair_coverages)
             for q in questions]
    plain_cal, plain_details = fit_calibration(plain, "m:1", "emb:1", max_false_refusal_rate=0.05,
                                               target_refusal_precision=None)
    assert set(plain_details["validation_log_loss"]) == {"platt", "isotonic", "logistic"}
    assert "semantic_logit" not in plain_cal.weights
    with pytest.raises(CalibrationError, match="need semantic logits"):
        fit_calibration(plain, "m:1", methods=("semantic",))


def test_traces_keep_the_semantic_logit():
    from chatbot.calibrate import questions_from_traces

    candidates = [
        {"chunk_id": "a", "rerank_logit": 2.0, "semantic_logit": 0.5, "vector_distance": 0.4, "term_coverage": 0.8,
         "text": "x", "cited_as": 1},
        {"chunk_id": "b", "rerank_logit": -1.0, "semantic_logit": -1.5, "vector_distance": 0.7, "term_coverage": 0.1,
         "text": "y", "cited_as": None},
    ]
    [q] = questions_from_traces([_trace("t", "answer", {"answer": 1}, candidates=candidates)], "m:1", "e:1")
    assert q.pair_semantic_logits == (0.5, -1.5) and q.has_semantic
    [old] = questions_from_traces([_trace("t", "answer", {"answer": 1})], "m:1", "e:1")
    assert old.pair_semantic_logits == (None, None) and not old.has_semantic


def _ranked_questions(rng, n: int, logit_noise: float) -> list[LabelledQuestion]:
    """Answerable questions, one relevant chunk among ten. The rerank logit finds it up to
    `logit_noise`; the cosine always puts it a little ahead."""
    out = []
    for i in range(n):
        logits = rng.normal(0.0, 1.0, size=10)
        logits[0] += 1.0 + rng.normal(0.0, logit_noise) if logit_noise else 10.0
        cosines = rng.uniform(0.2, 0.4, size=10)
        cosines[0] = rng.uniform(0.45, 0.6)
        labels = (1,) + (0,) * 9
        out.append(LabelledQuestion(f"r{i}", True, tuple(logits), labels, tuple(cosines), tuple(rng.uniform(0, 1, 10))))
    return out


def test_the_evidence_order_is_fitted_and_kept_only_when_it_beats_the_rerankers():
    rng = np.random.default_rng(3)
    cal, details = fit_calibration(_ranked_questions(rng, 300, logit_noise=2.0), "m:1", "emb:1")
    mrr = details["ranking"]["held_out_mrr"]
    assert details["ranking"]["kept"] and mrr["ranking"] > mrr["reranker"] + 0.1
    assert cal.ranking_weights["cosine_similarity"] > 0 and cal.embedder_fingerprint == "emb:1"
    # A reranker that already puts the relevant chunk first leaves nothing to gain: its order stands.
    cal, details = fit_calibration(_ranked_questions(rng, 300, logit_noise=0.0), "m:1", "emb:1")
    assert details["ranking"]["held_out_mrr"]["reranker"] == 1.0
    assert not details["ranking"]["kept"] and cal.ranking_weights == {}


def _reader_questions(rng, n: int, kind: str) -> list[LabelledQuestion]:
    """Ten read chunks a question. Answerable ones hold the answer in chunk 0; "written" unanswerable
    ones (SQuAD 2.0's) have a chunk 0 just as on topic (same logit, semantic logit and cosine) that the
    reader finds no span in. Only the reader's margin tells them apart."""
    out = []
    for i in range(n):
        logits = rng.normal(-2.0, 1.0, size=10)
        semantic = logits - 1.0
        cosines = rng.uniform(0.3, 0.5, size=10)
        margins = rng.normal(-4.0, 1.0, size=10)
        labels = np.zeros(10, dtype=int)
        logits[0] = rng.normal(2.0, 1.0)
        semantic[0] = logits[0] - 1.0
        cosines[0] = rng.uniform(0.5, 0.7)
        if kind == "answerable":
            labels[0] = 1
            margins[0] = rng.normal(2.0, 1.0)
        out.append(LabelledQuestion(f"{kind}{i}", kind == "answerable", tuple(logits), tuple(int(v) for v in labels),
                                    tuple(cosines), tuple(rng.uniform(0, 0.6, size=10)), tuple(semantic),
                                    tuple(margins), source=f"{kind}-article-{i % 12}"))
    return out


def test_answerability_is_fitted_per_question_and_reads_the_reader_when_it_separates():
    rng = np.random.default_rng(3)
    questions = _reader_questions(rng, 300, "answerable") + _reader_questions(rng, 300, "written")
    cal, details = fit_calibration(questions, "m:1", "emb:1", max_false_refusal_rate=0.05,
                                   target_refusal_precision=None)
    a = details["answerability"]
    assert "best_answer_margin" in cal.answerability_weights and cal.answerability_weights["best_answer_margin"] > 0
    assert "reader" in a["method"]
    # Held out by source (article): log loss, ECE and reliability of every candidate tried.
    held = a["held_out"]
    assert held["best_p_relevant"]["auroc"] < 0.7 < 0.95 < held[a["method"]]["auroc"]
    assert held[a["method"]]["log_loss"] == min(m["log_loss"] for m in held.values())
    assert {"ece", "reliability"} <= set(held[a["method"]])
    # The floor meets its target, question by question; the pair floor no longer decides refusal.
    p = np.array([cal.p_answerable(q.question_features(cal)) for q in questions])
    answerable = np.array([q.answerable for q in questions])
    assert (p[answerable] < cal.answerability_floor).mean() <= 0.05
    assert (p[~answerable] < cal.answerability_floor).mean() > 0.9
    # Without a reader the same data fits on what there is, and cannot separate these.
    plain = [dataclasses.replace(q, pair_answer_margins=()) for q in questions]
    cal_plain, details_plain = fit_calibration(plain, "m:1", "emb:1", max_false_refusal_rate=0.05,
                                               target_refusal_precision=None)
    assert "best_answer_margin" not in cal_plain.answerability_weights
    assert details_plain["answerability"]["auroc"] < 0.7


def test_a_reader_that_reads_only_the_best_ranked_pairs_still_informs_answerability():
    # A reader with a layer of its own reads the top pairs only: the others carry no margin, and the
    # question's margin is the best of those read.
    rng = np.random.default_rng(5)
    questions = [dataclasses.replace(q, pair_answer_margins=q.pair_answer_margins[:3] + (None,) * 7)
                 for q in _reader_questions(rng, 300, "answerable") + _reader_questions(rng, 300, "written")]
    assert all(q.has_reader for q in questions)
    q = questions[0]
    assert q.question_features(Calibration(floor=0.0))["best_answer_margin"] == max(q.pair_answer_margins[:3])
    cal, details = fit_calibration(questions, "m:1", "emb:1", max_false_refusal_rate=0.05,
                                   target_refusal_precision=None)
    assert cal.answerability_weights.get("best_answer_margin", 0) > 0
    assert details["answerability"]["auroc"] > 0.95
    # Read by no reader at all, a question has no margin, and the candidates that need one are not tried.
    unread = [dataclasses.replace(q, pair_answer_margins=(None,) * 10) for q in questions]
    assert not unread[0].has_reader and unread[0].question_features(Calibration(floor=0.0))["best_answer_margin"] is None
    cal, _ = fit_calibration(unread, "m:1", "emb:1", max_false_refusal_rate=0.05, target_refusal_precision=None)
    assert "best_answer_margin" not in cal.answerability_weights


def test_no_answerability_without_unanswerable_questions():
    rng = np.random.default_rng(4)
    cal, details = fit_calibration(_reader_questions(rng, 50, "answerable"), "m:1", max_false_refusal_rate=0.05,
                                   target_refusal_precision=None)
    assert not cal.judges_answerability and "answerability" not in details


def test_span_floor_is_the_lowest_margin_where_the_readers_spans_were_mostly_right():
    from chatbot.calibrate import fit_span_floor

    # margins 10..1: right at 10, 9, 8, 7, wrong at 6, right at 5, 4, wrong at 3, 2, 1
    spans = [(10.0, True), (9.0, True), (8.0, True), (7.0, True), (6.0, False), (5.0, True), (4.0, True),
             (3.0, False), (2.0, False), (1.0, False)]
    floor, check = fit_span_floor(spans, precision=0.8, least=5)
    # from 4 down: 6 of 7 right (0.857); from 3: 6 of 8 (0.75) -- so 4
    assert floor == 4.0 and check["stated"] == 7 and check["precision_stated"] == pytest.approx(6 / 7)
    assert fit_span_floor(spans, precision=0.8, least=20)[0] is None  # too few spans to trust
    assert fit_span_floor([(m, False) for m, _ in spans] * 3, precision=0.8, least=5)[0] is None


def test_the_floor_meets_the_false_refusal_budget_for_every_kind_of_input():
    from chatbot.calibrate import choose_floor_per_group

    # Questions score high, claims lower: one floor over both would spend the whole budget on claims.
    top_p = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.3, 0.25, 0.2, 0.15, 0.1, 0.05, 0.04])
    answerable = np.array([True] * 5 + [True] * 5 + [False] * 2)
    groups = ["questions"] * 5 + ["claims"] * 5 + ["questions"] * 2
    overall = choose_floor(top_p, answerable, None, max_false_refusal_rate=0.2)
    per_group = choose_floor_per_group(top_p, answerable, groups, None, max_false_refusal_rate=0.2)
    assert (top_p[5:10] < overall).mean() > 0.2  # the claims pay for the average
    assert per_group <= 0.15 and (top_p[5:10] < per_group).mean() <= 0.2 and (top_p[:5] < per_group).mean() <= 0.2
