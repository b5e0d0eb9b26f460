"""`chatbot replay`: stored questions re-asked under another floor, calibration or reranker, with the real
shipped reranker and calibration over the sample knowledge base, and `eval --baseline`."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from chatbot import present
from chatbot.calibration import Calibration
from chatbot.cli import main
from chatbot.config import Config, SHIPPED_RERANKER_DIR
from chatbot.errors import ConfigError
from chatbot.evaluate import BaselineMismatch, compare_with_baseline
from chatbot.pipeline import Pipeline
from chatbot.record import ask_record, cited_chunks, gate_from_record
from chatbot.replay import (FIX, REGRESSION, REVIEW, SAME_FOR_USER, UNRATED, changes_first, parse_since, replay,
                            verdict)
from chatbot.traces import TraceStore
from tests.helpers import asked_copy

ANSWERED = {  # answerable sample questions the shipped models answer, and how their user rated them
    "What's the heaviest load a single H2 robot can carry?": 1,
    "What's the shortest password I'm allowed to use for work accounts?": -1,
    "Who has to sign off on an expense claim of €3,000?": None,
    "How long did the Harbor outage in November 2024 go on before robots got missions again?": 1,
    "I'd like to work from Spain for a few weeks next year. How many days per year am I allowed to work from another country?": None,
}
REFUSED = {  # off-topic: refused
    "What is the capital of Australia?": 1,
    "Who won the 2018 FIFA World Cup?": -1,
    "How long should I boil an egg to get a runny yolk?": None,
}


@pytest.fixture(scope="module")
def asked(sample_db, tmp_path_factory):
    """A copy of the sample knowledge base whose traces hold the questions above, rated."""
    db = tmp_path_factory.mktemp("replay") / "lancedb"
    pipeline, results = asked_copy(sample_db, db, {**ANSWERED, **REFUSED})
    assert [q for q, r in results.items() if not r.refused] == list(ANSWERED)
    return str(db), pipeline, results


def _replay(pipeline, calibration=None, **kwargs):
    traces = TraceStore(pipeline.store).replayable()
    return replay(pipeline.with_calibration(calibration or pipeline.calibration), traces, **kwargs)


def _by_question(report):
    return {r.question: r for r in report.replayed}


def test_the_same_setting_changes_nothing_and_reads_no_pair_again(asked):
    _, pipeline, results = asked
    report = _replay(pipeline)
    assert len(report.replayed) == len(results) and not report.skipped
    assert report.changes == () and report.regressions == ()
    for question, r in _by_question(report).items():
        assert r.was == r.now and r.was_top == r.now_top
        assert r.now_score == pytest.approx(results[question].gate.p_answerable, abs=1e-9)
    # Every pair the reranker read was scored before by the same model: taken from the traces.
    depth = pipeline.config.rerank_depth
    assert report.reused_pairs == depth * len(results) and report.scored_pairs == 0


def test_a_higher_floor_refuses_exactly_the_answers_below_it_judged_by_their_ratings(asked):
    _, pipeline, results = asked
    answered_p = sorted(results[q].gate.p_answerable for q in ANSWERED)
    floor = (answered_p[2] + answered_p[3]) / 2  # between the 3rd and 4th: three answers fall below it
    report = _replay(pipeline, pipeline.calibration.with_decision_floor(floor))
    expected = {q for q in ANSWERED if results[q].gate.p_answerable < floor}
    assert len(expected) == 3
    flipped = {r.question for r in report.replayed if r.flip}
    assert flipped == expected
    for r in report.replayed:
        if r.question in expected:
            assert (r.was, r.now, r.flip, r.now_top) == ("answer", "refusal", "answered -> refused", None)
            assert r.verdict == {1: REGRESSION, -1: FIX, None: UNRATED}[ANSWERED[r.question]]
        else:
            assert r.verdict is None
    assert {r.question for r in report.regressions} == {q for q in expected if ANSWERED[q] == 1}
    summary = report.summary()
    assert summary["answered_to_refused"] == 3 and summary["refused_to_answered"] == 0
    # Regressions come first in the table.
    ordered = changes_first(report.replayed)
    assert [r.verdict for r in ordered] == sorted((r.verdict for r in ordered), key=[REGRESSION, FIX, UNRATED].index)


def test_floor_zero_answers_every_refusal(asked):
    _, pipeline, _ = asked
    report = _replay(pipeline, pipeline.calibration.with_decision_floor(0.0))
    got = _by_question(report)
    assert {q for q, r in got.items() if r.flip == "refused -> answered"} == set(REFUSED)
    assert got["What is the capital of Australia?"].verdict == REGRESSION  # its refusal was rated 👍
    assert got["Who won the 2018 FIFA World Cup?"].verdict == FIX  # its refusal was rated 👎
    assert got["How long should I boil an egg to get a runny yolk?"].verdict == UNRATED
    assert all(got[q].now == "answer" and got[q].now_top for q in REFUSED)


def test_another_calibration_flips_what_its_probability_says(asked, tmp_path):
    """A calibration file whose P(answerable) intercept is 2 higher: each question's new probability is
    sigmoid(logit(P) + 2), computed here by hand from the probabilities the traces stored."""
    _, pipeline, results = asked
    data = json.loads((SHIPPED_RERANKER_DIR / "calibration.json").read_text())
    data["answerability_weights"]["intercept"] += 2.0
    path = tmp_path / "shifted.json"
    path.write_text(json.dumps(data))
    calibration = Calibration.load(path)
    report = _replay(pipeline, calibration)
    for question, r in _by_question(report).items():
        p = results[question].gate.p_answerable
        expected = 1 / (1 + math.exp(-(math.log(p / (1 - p)) + 2.0)))
        assert r.now_score == pytest.approx(expected, rel=1e-6)
        assert r.now == ("answer" if expected >= calibration.answerability_floor else "refusal")
    assert {r.question for r in report.replayed if r.flip} == {
        q for q in REFUSED if 1 / (1 + math.exp(-(math.log(results[q].gate.p_answerable / (1 - results[q].gate.p_answerable)) + 2)))
        >= calibration.answerability_floor}


def test_traces_of_deleted_documents_and_of_another_embedder_are_skipped_with_their_reason(asked, tmp_path):
    db, _, results = asked
    copy = tmp_path / "lancedb"
    shutil.copytree(db, copy)
    pipeline = Pipeline.from_config(Config(db_uri=str(copy), traces=False))
    traces = TraceStore(pipeline.store)
    h2 = results["What's the heaviest load a single H2 robot can carry?"]
    pipeline.store.remove_documents([h2.outcome.cited[0].doc_path])
    egg = results["How long should I boil an egg to get a runny yolk?"]
    fingerprints = dict(traces.get(egg.trace_id)["fingerprints"], embedder="another-embedder")
    traces.table.update(where=f"trace_id = '{egg.trace_id}'", values={"fingerprints_json": json.dumps(fingerprints)})
    report = replay(pipeline, traces.replayable())
    assert report.skip_reasons() == {"document deleted": 1, "another embedder": 1}
    skipped = {s.trace_id: s for s in report.skipped}
    assert "h2-product-faq.html" in skipped[h2.trace_id].detail
    assert "another-embedder" in skipped[egg.trace_id].detail
    assert len(report.replayed) == len(results) - 2
    assert "2 skipped" not in present.replay_summary(report)
    assert "skipped 2 (1 another embedder, 1 document deleted)" in present.replay_summary(report)


def test_replay_across_a_reranker_change_reads_every_pair_again(asked, tiny_reranker_dir):
    db, _, results = asked
    other = Pipeline.from_config(Config(db_uri=db, reranker=str(tiny_reranker_dir), traces=False),
                                 calibration=Calibration(floor=0.5))
    report = replay(other, TraceStore(other.store).replayable())
    assert len(report.replayed) == len(results)
    assert report.reused_pairs == 0 and report.scored_pairs == other.config.rerank_depth * len(results)
    for r in report.replayed:  # the decision now is the tiny model's, through its own hand-set floor
        assert r.now == ("answer" if r.gate.kept else "refusal")
        assert r.now_score == pytest.approx(r.gate.best_p_relevant)


def test_cli_replay_exit_code_json_and_errors(asked, tmp_path, capsys):
    db, _, results = asked
    assert main(["--db", db, "replay"]) == 0
    assert "no outcome a user rated 👍 would change" in capsys.readouterr().out

    answered_p = sorted(results[q].gate.p_answerable for q in ANSWERED)
    out = tmp_path / "diff.json"
    code = main(["--db", db, "replay", "--floor", str(answered_p[-1] + 1e-6), "--json", str(out)])
    assert code == 1  # every answer now refused, two of them rated 👍
    printed = capsys.readouterr().out
    assert "answered -> refused 5" in printed and "2 regression(s)" in printed and str(out) in printed
    diff = json.loads(out.read_text())
    assert diff["summary"]["regressions"] == 2 and diff["summary"]["answered_to_refused"] == 5
    assert {c["question"] for c in diff["changes"]} == set(ANSWERED)
    assert {c["question"] for c in diff["changes"] if c["verdict"] == REGRESSION} == {
        q for q, rating in ANSWERED.items() if rating == 1}
    assert diff["setting"]["floor"] == pytest.approx(answered_p[-1] + 1e-6)

    assert main(["--db", db, "replay", "--limit", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["replayed"] == 2

    assert main(["--db", db, "replay", "--since", "2999-01-01"]) == 2
    assert "no stored questions to replay" in capsys.readouterr().err
    assert main(["--db", db, "replay", "--since", "last tuesday"]) == 2
    assert "give a date" in capsys.readouterr().err
    assert main(["--db", db, "replay", "--floor", "1.5"]) == 2
    assert "probability" in capsys.readouterr().err


def test_a_stored_record_rebuilds_the_panel_it_showed(asked):
    _, _, results = asked
    for result in results.values():
        record = json.loads(json.dumps(ask_record(result)))  # as stored: through JSON
        gate = gate_from_record(record)
        assert present.candidate_rows(gate, cited_chunks(record)) == present.result_rows(result)
        assert present.floor_markdown(gate, "q", "q") == present.floor_markdown(result.gate, "q", "q")


@pytest.mark.parametrize("was, now, was_final, was_top, now_top, rating, chunks, expected", [
    ("answer", "answer", "answer", "a", "a", 1, {}, None),
    ("refusal", "refusal", "refusal", None, None, -1, {}, None),
    ("answer", "refusal", "answer", "a", None, 1, {}, REGRESSION),
    ("answer", "refusal", "answer", "a", None, -1, {}, FIX),
    ("answer", "refusal", "answer", "a", None, None, {}, UNRATED),
    ("refusal", "answer", "refusal", None, "b", 1, {}, REGRESSION),
    ("refusal", "answer", "refusal", None, "b", -1, {}, FIX),
    # the gate passed it and the LLM found no answer: the user saw a refusal
    ("answer", "refusal", "refusal", "a", None, 1, {}, SAME_FOR_USER),
    ("answer", "refusal", "refusal", "a", None, -1, {}, SAME_FOR_USER),
    # top evidence changed: judged by the chunks' own ratings first
    ("answer", "answer", "answer", "a", "b", 1, {"a": 1}, REGRESSION),
    ("answer", "answer", "answer", "a", "b", None, {"b": -1}, REGRESSION),
    ("answer", "answer", "answer", "a", "b", -1, {"b": 1}, FIX),
    ("answer", "answer", "answer", "a", "b", None, {"a": -1}, FIX),
    ("answer", "answer", "answer", "a", "b", 1, {"a": 1, "b": 1}, FIX),
    ("answer", "answer", "answer", "a", "b", 1, {}, REVIEW),
    ("answer", "answer", "answer", "a", "b", None, {}, UNRATED),
])
def test_verdicts(was, now, was_final, was_top, now_top, rating, chunks, expected):
    assert verdict(was, now, was_final, was_top, now_top, rating, chunks) == expected


def test_parse_since():
    assert parse_since(None) is None and parse_since("  ") is None
    assert parse_since("2026-11-01T00:00:00+00:00") == 1793491200.0
    with pytest.raises(ConfigError):
        parse_since("yesterday")


# --- eval --baseline -----------------------------------------------------------------------------------

def _report(ndcg=0.8, auroc=0.7, false_refusals=0.05, n=100, kinds=None):
    return {"dataset": ["set"], "n_queries": n, "ranking": {"reranked": {"ndcg@10": ndcg, "hit@1": 0.6, "mrr@10": 0.7}},
            "refusal": {"n_answerable": 60, "n_unanswerable": n - 60, "auroc_decision_score": auroc,
                        "at_floor": {"false_refusal_rate": false_refusals, "refusal_recall": 0.4},
                        "by_unanswerable_kind": kinds or {}}}


def test_baseline_comparison_flags_guarded_metrics_beyond_the_tolerance():
    rows = {r["metric"]: r for r in compare_with_baseline(
        _report(ndcg=0.785, auroc=0.72, false_refusals=0.07, kinds={"in_domain": {"auroc_decision_score": 0.6}}),
        _report(kinds={"in_domain": {"auroc_decision_score": 0.65}}), tolerance=0.01)}
    assert rows["nDCG@10"]["change"] == pytest.approx(-0.015) and rows["nDCG@10"]["regressed"]
    assert not rows["refusal AUROC"]["regressed"]  # it rose
    assert rows["false refusals at the floor"]["regressed"]  # rose by 0.02
    assert rows["refusal AUROC, in domain"]["regressed"]
    assert not rows["hit@1"]["regressed"] and not rows["hit@1"]["guarded"]
    lead = {r["metric"]: r for r in compare_with_baseline(
        {**_report(), "answers": {"lead_contains_answer_of_answered": 0.70}},
        {**_report(), "answers": {"lead_contains_answer_of_answered": 0.68}}, tolerance=0.01)}
    row = lead["first sentence holds an answer"]
    assert row["change"] == pytest.approx(0.02) and not row["guarded"] and not row["regressed"]
    within = compare_with_baseline(_report(ndcg=0.795, false_refusals=0.058), _report(), tolerance=0.01)
    assert not any(r["regressed"] for r in within)
    with pytest.raises(BaselineMismatch, match="other questions"):
        compare_with_baseline(_report(n=90), _report(n=100), tolerance=0.01)


def test_cli_eval_against_a_baseline(beir_dir, tmp_path, tiny_reranker_dir, capsys):
    db, first, second = str(tmp_path / "db"), tmp_path / "first", tmp_path / "second"
    args = ["--db", db, "eval", str(beir_dir), "--reranker", str(tiny_reranker_dir)]
    assert main(args + ["--out", str(first)]) == 0
    assert main(args + ["--out", str(second), "--baseline", str(first / "report.json")]) == 0
    assert "no guarded metric regressed" in capsys.readouterr().out
    better = json.loads((first / "report.json").read_text())
    better["ranking"]["reranked"]["ndcg@10"] += 0.05
    (tmp_path / "better.json").write_text(json.dumps(better))
    assert main(args + ["--out", str(second), "--baseline", str(tmp_path / "better.json")]) == 1
    assert "REGRESSED" in capsys.readouterr().out
    assert main(args + ["--out", str(second), "--baseline", str(first / "report.json"), "--limit", "4"]) == 2
    assert "other questions" in capsys.readouterr().err
    assert main(args + ["--out", str(second), "--baseline", str(tmp_path / "missing.json")]) == 2
    assert "no such file" in capsys.readouterr().err
