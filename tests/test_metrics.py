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
        return QueryOutcome(query, {}, 30, 0.0, top_p, 0.0, 0.0, (), (), {}, (), ())

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
