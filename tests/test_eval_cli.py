"""`chatbot eval` and `chatbot calibrate` end to end, through the real CLI, on a tiny BEIR set."""

import json
import shutil

from chatbot.calibration import Calibration
from chatbot.cli import main

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
    assert report["calibration"]["n_pairs"] == 9 * 6
    assert (out / "reliability.png").stat().st_size > 1000 and (out / "risk_coverage.png").stat().st_size > 1000
    assert "reranked" in capsys.readouterr().out
    # The corpus table is reused when unchanged.
    capsys.readouterr()
    assert main(["--db", db, "eval", str(beir_dir), "--reranker", str(tiny_reranker_dir), "--out", str(out),
                 "--limit", "4"]) == 0
    assert "unchanged, reused" in capsys.readouterr().err
    assert json.loads((out / "report.json").read_text())["n_queries"] == 4


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
