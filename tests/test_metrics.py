import math

import pytest

from chatbot.metrics import auroc, hit_at, mrr_at, ndcg_at, recall_at, refusal_at_floor, reliability, risk_coverage


def test_ranking_metrics_by_hand():
    ranking = ["d3", "d1", "d7", "d2"]
    rel = {"d1": 1, "d2": 1}
    assert hit_at(ranking, rel, 1) == 0.0 and hit_at(ranking, rel, 2) == 1.0
    assert mrr_at(ranking, rel) == 0.5
    # DCG = 1/log2(3) + 1/log2(5); IDCG = 1 + 1/log2(3)
    expected = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert ndcg_at(ranking, rel) == pytest.approx(expected)
    assert recall_at(ranking, rel, 2) == 0.5 and recall_at(ranking, rel, 4) == 1.0
    assert ndcg_at(ranking, {}) == 0.0


def test_graded_ndcg():
    assert ndcg_at(["a", "b"], {"a": 1, "b": 2}) == pytest.approx((1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3)))


def test_auroc_by_hand_with_ties():
    # pairs: (3>1),(3>2),(2 vs 2 tie=.5),(2>1) over 2x2 = 4 pairs -> 3.5/4
    assert auroc([3, 2], [1, 2]) == pytest.approx(0.875)
    assert auroc([1], [2]) == 0.0 and auroc([2], [1]) == 1.0
    assert math.isnan(auroc([], [1]))


def test_reliability_and_ece_by_hand():
    r = reliability([0.1, 0.1, 0.9, 0.9], [0, 1, 1, 1], n_bins=2)
    # bin [0,.5): conf .1 acc .5; bin [.5,1]: conf .9 acc 1 -> ECE = .5*.4 + .5*.1
    assert r["ece"] == pytest.approx(0.25)
    assert [b["count"] for b in r["bins"]] == [2, 2]
    assert reliability([1.0], [1], n_bins=10)["bins"][-1]["count"] == 1


def test_refusal_at_floor_by_hand():
    top_p = [0.9, 0.2, 0.6, 0.1, 0.4]
    answerable = [True, False, True, False, True]
    m = refusal_at_floor(top_p, answerable, 0.5)
    # refused: 0.2 (unans), 0.1 (unans), 0.4 (ans) -> precision 2/3, recall 2/2, false refusals 1/3
    assert m["refusal_precision"] == pytest.approx(2 / 3)
    assert m["refusal_recall"] == 1.0
    assert m["false_refusal_rate"] == pytest.approx(1 / 3)
    assert m["coverage"] == pytest.approx(0.4)


def test_risk_coverage_by_hand():
    curve = risk_coverage([0.9, 0.8, 0.3], [True, False, True])
    assert [(c["coverage"], c["risk"]) for c in curve] == [
        (pytest.approx(1 / 3), 0.0), (pytest.approx(2 / 3), 0.5), (1.0, pytest.approx(1 / 3))]


def test_refusal_report_separates_in_domain_from_out_of_domain_unanswerable():
    from chatbot.evaluate import EXTRA_PREFIX, LabelledQuery, QueryOutcome, refusal_report

    def outcome(qid, answerable, top_p):
        query = LabelledQuery(qid, "q", {"d": 1} if answerable else {}, answerable=answerable)
        # the product refuses below the floor (0.65 here)
        return QueryOutcome(query, {}, 30, 0.0, top_p, 0.0, 0.0, (), (), {}, (), (), refused=top_p < 0.65)

    outcomes = [outcome("a1", True, 0.9), outcome("a2", True, 0.6), outcome("u1", False, 0.7),
                outcome(f"{EXTRA_PREFIX}x1", False, 0.1), outcome(f"{EXTRA_PREFIX}x2", False, 0.2)]
    report = refusal_report(outcomes, floor=0.65)
    assert report["auroc_top_p_relevant"] == pytest.approx(5 / 6)
    kinds = report["by_unanswerable_kind"]
    assert kinds["in_domain"]["auroc_top_p_relevant"] == pytest.approx(0.5)
    assert kinds["out_of_domain"]["auroc_top_p_relevant"] == pytest.approx(1.0)
    # at floor 0.65: refused = a2, x1, x2; out-of-domain subset: both extras refused, a2 wrongly
    assert kinds["out_of_domain"]["at_floor"]["refusal_precision"] == pytest.approx(2 / 3)
    assert kinds["out_of_domain"]["at_floor"]["refusal_recall"] == pytest.approx(1.0)
    assert kinds["in_domain"]["at_floor"]["refusal_recall"] == pytest.approx(0.0)


def test_span_metrics_follow_squads_normalisation():
    from chatbot.metrics import contains_answer, normalize_answer, span_exact_match, span_f1

    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert span_exact_match("the Normans", ["Normans", "Norse"]) == 1.0
    assert span_exact_match("Normans of France", ["Normans"]) == 0.0
    # "in the 10th century" vs "10th and 11th centuries": normalised "in 10th century" / "10th and 11th
    # centuries" share one token: precision 1/3, recall 1/4, F1 2/7
    assert span_f1("in the 10th century", ["10th and 11th centuries"]) == pytest.approx(2 / 7)
    assert span_f1("Denmark, Iceland and Norway", ["Norway", "Denmark, Iceland and Norway"]) == 1.0
    assert span_f1("", ["France"]) == 0.0
    assert contains_answer("It lifts 600 kg [1].", ["600 kg"]) and not contains_answer("It lifts 6000 kg.", ["600 kg"])


def test_answer_report_scores_the_best_span_and_the_shown_lead():
    from chatbot.evaluate import LabelledQuery, QueryOutcome, answer_report

    def outcome(qid, answers, span, lead, refused=False, answerable=True):
        query = LabelledQuery(qid, "q", {"d": 1} if answerable else {}, answerable=answerable, answers=answers)
        return QueryOutcome(query, {}, 30, 0.0, 0.5, 0.0, 0.0, (), (), {}, (), (), refused=refused,
                            predicted_span=span, shown_lead=lead)

    report = answer_report([outcome("a", ("600 kg",), "600 kg", "600 kg"),
                            outcome("b", ("Rollo",), "King Rollo the Walker", "Rollo led them"),
                            outcome("c", ("1066",), None, "", refused=True),
                            outcome("d", (), "x", "x"), outcome("u", (), None, "", answerable=False)])
    assert report["n_questions"] == 3 and report["n_answered"] == 2
    assert report["span_exact_match"] == pytest.approx(100 / 3)
    # b: "king rollo walker" vs "rollo": precision 1/3, recall 1: F1 1/2
    assert report["span_f1"] == pytest.approx(100 * (1 + 0.5 + 0) / 3)
    assert report["lead_contains_answer_of_answered"] == 1.0 and report["lead_contains_answer_of_all"] == pytest.approx(2 / 3)
    assert report["lead_words_mean"] == pytest.approx(2.5)


def test_refusal_report_uses_p_answerable_and_the_decisions_taken_per_kind():
    from chatbot.evaluate import EXTRA_PREFIX, GOLD_OUT_PREFIX, LabelledQuery, QueryOutcome, refusal_report

    def outcome(qid, answerable, p):
        query = LabelledQuery(qid, "q", {"d": 1} if answerable else {}, answerable=answerable)
        return QueryOutcome(query, {}, 30, 0.0, 0.99, 0.0, 0.0, (), (), {}, (), (), p_answerable=p, refused=p < 0.5)

    outcomes = [outcome("a1", True, 0.9), outcome("a2", True, 0.4), outcome("u1", False, 0.6),
                outcome(f"{GOLD_OUT_PREFIX}a1", False, 0.2), outcome(f"{EXTRA_PREFIX}x", False, 0.1)]
    report = refusal_report(outcomes, floor=0.5)
    assert report["decision_score"] == "p_answerable"
    assert report["auroc_decision_score"] == pytest.approx(5 / 6) and report["auroc_top_p_relevant"] == 0.5
    kinds = report["by_unanswerable_kind"]
    assert set(kinds) == {"in_domain", "gold_left_out", "out_of_domain"}
    assert kinds["in_domain"]["auroc_decision_score"] == pytest.approx(0.5)
    assert kinds["gold_left_out"]["at_floor"]["refusal_recall"] == 1.0
    # refused: a2 (wrongly), gold-out a1, x; precision 2/3, recall 2/3, one false refusal in two
    at = report["at_floor"]
    assert (at["refusal_precision"], at["refusal_recall"], at["false_refusal_rate"]) == pytest.approx((2 / 3, 2 / 3, 0.5))


def test_held_out_keys_hold_out_whole_sources_and_at_least_one():
    from chatbot.evaluate import LabelledQuery, held_out_filter, held_out_keys, in_fraction, split_key

    keys = [f"set2:article-{i}" for i in range(8)]
    assert not any(in_fraction(k, 0.2) for k in keys)  # a bare hash threshold holds out none of these...
    assert len(held_out_keys(keys, 0.2)) == 2  # ...the split tops it up to round(0.2 * 8)
    lucky = [f"set:article-{i}" for i in range(8)]
    assert held_out_keys(lucky, 0.2) == {k for k in lucky if in_fraction(k, 0.2)}  # 3 by hash: kept as they are
    assert held_out_keys(keys, 0.2) == held_out_keys(reversed(keys), 0.2)  # fixed, whatever the order
    assert held_out_keys(keys, 0.2) <= held_out_keys(keys, 0.5) and len(held_out_keys(keys[:1], 0.1)) == 1
    assert held_out_keys(keys, 0.0) == frozenset()
    many = [f"k{i}" for i in range(2000)]
    assert 0.18 < len(held_out_keys(many, 0.2)) / 2000 < 0.22
    # Questions of one article, answerable or not, share a side; a passage without an article is its own.
    queries = [LabelledQuery("q1", "a", {"p1": 1}, source="title:Rhine"),
               LabelledQuery("q2", "b", {"p2": 1}, source="title:Rhine"),
               LabelledQuery("q3", "c", {}, answerable=False, written_from="p3", source="title:Rhine"),
               LabelledQuery("q4", "d", {"p9": 1})]
    assert split_key("s", queries[0]) == split_key("s", queries[2]) == "s:title:Rhine"
    assert split_key("s", queries[3]) == "s:p9"
    held = held_out_filter("s", queries, 0.5)
    assert len({held(q) for q in queries[:3]}) == 1 and held(queries[0]) != held(queries[3])


def test_keyword_queries_keep_the_content_words_in_order_and_their_labels():
    from chatbot.evaluate import KEYWORD_PREFIX, LabelledQuery, as_keywords, unanswerable_kind

    queries = [LabelledQuery("q1", "What is the hotel cap per night in Rotterdam?", {"d5": 1}, answers=("€160",)),
               LabelledQuery("extra:x", "Who won the 2018 FIFA World Cup?", {}, answerable=False),
               LabelledQuery("q2", "Rotterdam hotel cap", {"d5": 1})]  # already keywords: not repeated
    out = as_keywords(queries)
    assert [q.text for q in out] == ["hotel cap per night Rotterdam", "won 2018 FIFA World Cup"]
    assert out[0].id == f"{KEYWORD_PREFIX}q1" and out[0].relevant == {"d5": 1} and out[0].answers == ("€160",)
    assert unanswerable_kind(out[1]) == "out_of_domain"
