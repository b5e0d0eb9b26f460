"""`chatbot eval` and `chatbot calibrate` end to end, through the real CLI, on a tiny BEIR set."""

import json
import shutil

from chatbot.calibration import Calibration
from chatbot.cli import main
from chatbot.config import Config
from chatbot.sentences import sentencing_fingerprint
from chatbot.store import ChunkStore

EMBEDDER = Config().embedder

def test_eval_writes_report_plots_and_summary(beir_dir, tmp_path, tiny_reranker_dir, capsys):
    out = tmp_path / "report"
    db = str(tmp_path / "db")
    code = main(["--db", db, "eval", str(beir_dir), "--reranker", str(tiny_reranker_dir), "--out", str(out)])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["n_queries"] == 9
    ranking = report["ranking"]
    assert ranking["n_answerable"] == 6
    assert ranking["bm25"]["hit@5"] == 1.0 and ranking["fused"]["recall@pool"] == 1.0
    assert set(ranking) >= {"vector", "bm25", "fused", "reranked"}
    assert report["refusal"]["n_unanswerable"] == 3 and 0.0 <= report["refusal"]["auroc_top_p_relevant"] <= 1.0
    # eval always locates: the closest sentence's separation is reported whatever the calibration reads
    assert 0.0 <= report["refusal"]["auroc_top_sentence_cosine"] <= 1.0
    assert report["latency_ms"]["locate_ms"]["median"] >= 0.0
    assert report["calibration"]["n_pairs"] == 9 * 6
    assert (out / "reliability.png").stat().st_size > 1000 and (out / "risk_coverage.png").stat().st_size > 1000
    assert "reranked" in capsys.readouterr().out
    # Its sentence vectors are stored with it, so that questions read them (test_locate says how).
    store = ChunkStore(db, "eval_tinyset")
    assert store.count() == 6 and store.chunks_lacking_sentence_vectors(sentencing_fingerprint(EMBEDDER)) == []
    # The corpus table is reused when unchanged.
    capsys.readouterr()
    assert main(["--db", db, "eval", str(beir_dir), "--reranker", str(tiny_reranker_dir), "--out", str(out),
                 "--limit", "4"]) == 0
    assert "unchanged, reused" in capsys.readouterr().err
    assert json.loads((out / "report.json").read_text())["n_queries"] == 4


def test_eval_stores_sentence_vectors_where_they_save_work_or_the_calibration_reads_them(beir_dir, tmp_path):
    db = str(tmp_path / "db")
    lacking = lambda: ChunkStore(db, "eval_tinyset").chunks_lacking_sentence_vectors(  # noqa: E731
        sentencing_fingerprint(EMBEDDER))
    # One question reads at most top_n (5) chunks' sentences: fewer than the corpus's 6 passages would cost.
    assert main(["--db", db, "eval", str(beir_dir), "--limit", "1", "--out", str(tmp_path / "r")]) == 0
    assert len(lacking()) == 6
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["latency_ms"]["locate_ms"]["median"] > 0.0  # located all the same, embedding per question
    # Under a calibration that reads them, stored as `chatbot ingest` would, however few the questions.
    assert main(["--db", db, "eval", str(beir_dir), "--limit", "1", "--calibration", "located",
                 "--out", str(tmp_path / "r")]) == 0
    assert lacking() == []


def test_eval_builds_the_full_text_index_its_bm25_backend_searches(beir_dir, tmp_path, tiny_reranker_dir,
                                                                    monkeypatch):
    # As `chatbot ingest` would for this configuration: otherwise LanceDB's full-text search has no index to read.
    monkeypatch.setenv("CHATBOT_BM25_BACKEND", "lancedb")
    out, db = tmp_path / "report", str(tmp_path / "db")
    assert main(["--db", db, "eval", str(beir_dir), "--reranker", str(tiny_reranker_dir), "--out", str(out)]) == 0
    assert ChunkStore(db, "eval_tinyset").has_full_text_index()
    assert json.loads((out / "report.json").read_text())["ranking"]["bm25"]["hit@5"] == 1.0


def test_calibrate_writes_a_loadable_file_tied_to_the_model(beir_dir, tmp_path, tiny_reranker_dir, capsys):
    cal_path = tmp_path / "cal.json"
    code = main(["--db", str(tmp_path / "db"), "calibrate", str(beir_dir), "--reranker", str(tiny_reranker_dir),
                 "--out", str(cal_path), "--max-false-refusal-rate", "0.2"])
    assert code == 0
    cal = Calibration.load(cal_path)
    assert cal.reranker_fingerprint.startswith(tiny_reranker_dir.name + ":")
    assert 0.0 <= cal.floor <= 1.0 and cal.notes["fit"]["n_questions"] == 9
    assert "<- chosen" in capsys.readouterr().out
    # The file is accepted for this model and rejected for another.
    assert main(["--db", str(tmp_path / "db"), "eval", str(beir_dir), "--reranker", str(tiny_reranker_dir),
                 "--calibration", str(cal_path), "--out", str(tmp_path / "r")]) == 0
    other = tmp_path / "other-model"
    shutil.copytree(tiny_reranker_dir, other)
    capsys.readouterr()
    assert main(["--db", str(tmp_path / "db"), "eval", str(beir_dir), "--reranker", str(other),
                 "--calibration", str(cal_path), "--out", str(tmp_path / "r")]) == 2
    assert "was fitted for reranker" in capsys.readouterr().err


def test_calibrate_from_rated_traces(writable_sample_db, tmp_path, tiny_reranker_dir, capsys):
    """What users rated in the UI becomes labelled data: asked through the real pipeline, rated
    through the trace store as the UI rates, fitted through the CLI."""
    from tests.helpers import SAMPLE_QUESTIONS, make_pipeline

    db = writable_sample_db
    cal_path = tmp_path / "cal.json"
    assert main(["--db", db, "calibrate", "--from-traces", "--reranker", str(tiny_reranker_dir),
                 "--out", str(cal_path)]) == 2
    assert "no rated traces" in capsys.readouterr().err

    pipeline = make_pipeline(db, tiny_reranker_dir, floor=1.0)  # refuses everything: refusals get rated
    rated = 0
    for q in SAMPLE_QUESTIONS:
        result = pipeline.ask(q["question"])
        assert result.trace_id and result.refused
        if q["answerable"]:
            right = next(c for c in result.gate.ranked if q["doc"] in c.chunk.doc_path)
            wrong = next(c for c in result.gate.ranked if q["doc"] not in c.chunk.doc_path)
            pipeline.traces.add_feedback(result.trace_id, 1, right.chunk.id)
            pipeline.traces.add_feedback(result.trace_id, -1, wrong.chunk.id)
            pipeline.traces.add_feedback(result.trace_id, -1)  # "it should have answered"
            rated += 1
        elif q["why"] == "off-topic":
            pipeline.traces.add_feedback(result.trace_id, 1)  # the refusal was right
            rated += 1
    pipeline.ask("an unrated question")

    capsys.readouterr()
    assert main(["--db", db, "calibrate", "--from-traces", "--reranker", str(tiny_reranker_dir),
                 "--out", str(cal_path), "--max-false-refusal-rate", "0.2"]) == 0
    assert f"{rated} rated, {rated} usable" in capsys.readouterr().err
    cal = Calibration.load(cal_path)
    assert cal.notes["fit"]["n_questions"] == rated and cal.notes["rated_traces"] == rated
    assert cal.notes["fit"]["n_pairs"] == 2 * sum(q["answerable"] for q in SAMPLE_QUESTIONS)  # rated chunks only
    assert cal.reranker_fingerprint.startswith(tiny_reranker_dir.name + ":")
    # Traces of another reranker are not this one's labels.
    other = tmp_path / "other-model"
    shutil.copytree(tiny_reranker_dir, other)
    assert main(["--db", db, "calibrate", "--from-traces", "--reranker", str(other), "--out", str(cal_path)]) == 2


def test_eval_and_calibrate_judge_answerability_with_a_reader(beir_dir, tmp_path, capsys):
    """A reader model through the real CLI: calibrate fits P(answerable) on answerable, unanswerable and
    gold-left-out questions; eval then reports the refusal by kind, P(answerable)'s calibration and the
    reader's spans against the gold answers."""
    from tests.helpers import build_tiny_reader

    reader = build_tiny_reader(tmp_path / "reader")
    db, cal_path, out = str(tmp_path / "db"), tmp_path / "cal.json", tmp_path / "report"
    located_path = tmp_path / "cal_located.json"
    assert main(["--db", db, "calibrate", str(beir_dir), "--leave-gold-out", "--reranker", str(reader),
                 "--out", str(cal_path), "--located-out", str(located_path), "--max-false-refusal-rate", "0.2"]) == 0
    printed = capsys.readouterr().out
    assert "P(answerable), question level" in printed and "answerability floor" in printed
    cal = Calibration.load(cal_path)
    assert cal.judges_answerability and cal.notes["fit"]["n_questions"] == 6 + 3 + 6  # + 6 left gold out
    assert cal.notes["answerability"]["n_questions"] == 15
    # one sample, two fits: only --located-out's may read the closest sentence
    located = Calibration.load(located_path)
    assert not cal.reads_sentence_cosine
    assert not any("sentence" in name for name in cal.notes["answerability"]["held_out"])
    assert any("sentence" in name for name in located.notes["answerability"]["held_out"])
    assert located.notes["fit"] == cal.notes["fit"] and located.floor == cal.floor
    assert main(["--db", db, "eval", str(beir_dir), "--leave-gold-out", "--reranker", str(reader),
                 "--calibration", str(cal_path), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    refusal = report["refusal"]
    assert refusal["decision_score"] == "p_answerable" and report["floor"] == cal.answerability_floor
    assert set(refusal["by_unanswerable_kind"]) == {"in_domain", "gold_left_out"}
    assert refusal["by_unanswerable_kind"]["gold_left_out"]["n_unanswerable"] == 6
    assert report["answerability"]["n_questions"] == 15 and 0 <= report["answerability"]["ece"] <= 1
    answers = report["answers"]
    assert answers["n_questions"] == 6 and 0 <= answers["span_f1"] <= 100
    assert (out / "answerability_reliability.png").stat().st_size > 1000
    assert "span EM" in capsys.readouterr().out


def test_eval_runs_several_sets_each_against_its_own_corpus(beir_dir, tmp_path, tiny_reranker_dir):
    other = tmp_path / "otherset"
    shutil.copytree(beir_dir, other)
    out = tmp_path / "report"
    assert main(["--db", str(tmp_path / "db"), "eval", str(beir_dir), str(other), "--extra-unanswerable", str(other),
                 "--reranker", str(tiny_reranker_dir), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    # tinyset: its 9 questions and otherset's 9 as out of domain; otherset: its own 9 (not its own extras)
    assert report["n_queries"] == 9 + 9 + 9 and report["ranking"]["n_answerable"] == 12
    assert report["refusal"]["by_unanswerable_kind"]["out_of_domain"]["n_unanswerable"] == 9
    assert report["dataset"] == [str(beir_dir), str(other)]


def test_a_malformed_beir_folder_is_a_clear_error_naming_the_file_and_line(beir_dir, tmp_path, tiny_reranker_dir,
                                                                            capsys):
    queries = (beir_dir / "queries.jsonl").read_text().splitlines()
    qrels = (beir_dir / "qrels" / "test.tsv").read_text()
    for broken, expected in (
            (lambda: (beir_dir / "queries.jsonl").write_text("\n".join(queries + ['{"_id": "q9"}'])),
             "queries.jsonl:10: no 'text' field"),
            (lambda: (beir_dir / "qrels" / "test.tsv").write_text(qrels.split("\n", 1)[1]),
             "first line must be the header 'query-id<TAB>corpus-id<TAB>score'"),
            (lambda: (beir_dir / "qrels" / "test.tsv").write_text(qrels + "q1\td1\thigh\n"),
             "test.tsv:8: the score must be a number, got 'high'")):
        (beir_dir / "queries.jsonl").write_text("\n".join(queries))
        (beir_dir / "qrels" / "test.tsv").write_text(qrels)
        broken()
        capsys.readouterr()
        assert main(["--db", str(tmp_path / "db"), "eval", str(beir_dir), "--reranker", str(tiny_reranker_dir),
                     "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err
