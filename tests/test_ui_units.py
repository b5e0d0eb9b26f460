"""The UI's pieces without a browser: upload names and limits, and what the panel shows."""

import os

import pytest

from chatbot import present
from chatbot.pipeline import Pipeline
from chatbot.types import Answer
from chatbot.ui import UploadRejected, safe_upload_name, store_upload
from tests.helpers import make_pipeline


@pytest.mark.parametrize("name, stored", [
    ("../../etc/passwd.md", "passwd.md"), ("..\\..\\windows\\evil.txt", "evil.txt"), ("/abs/path/x.pdf", "x.pdf"),
    ("....md", "md"), ("notes with spaces.md", "notes with spaces.md"), ("résumé-ünïcode.docx", "résumé-ünïcode.docx"),
    ("a\x00b\x1f.txt", "ab.txt"), (".hidden.md", "hidden.md"),
])
def test_upload_names_cannot_leave_the_upload_folder(name, stored):
    if not stored.lower().endswith((".md", ".txt", ".pdf", ".docx")):
        with pytest.raises(UploadRejected):
            safe_upload_name(name)
        return
    assert safe_upload_name(name) == stored


@pytest.mark.parametrize("name", ["", "..", "../", "evil.exe", "archive.zip", "noext"])
def test_bad_upload_names_are_rejected(name):
    with pytest.raises(UploadRejected):
        safe_upload_name(name)


def test_store_upload_keeps_files_inside_and_enforces_the_size_limit(tmp_path):
    upload_dir = tmp_path / "uploads"
    src = tmp_path / "incoming.bin"
    src.write_bytes(b"x" * 2048)
    target = store_upload(src, "../../../outside.md", upload_dir, max_bytes=4096)
    assert target == (upload_dir / "outside.md").resolve() and target.read_bytes() == b"x" * 2048
    assert not (tmp_path / "outside.md").exists()
    with pytest.raises(UploadRejected, match="upload limit"):
        store_upload(src, "big.md", upload_dir, max_bytes=1024)


def test_panel_rows_show_every_candidate_with_scores_and_fate(sample_db, tiny_reranker_dir):
    pipeline: Pipeline = make_pipeline(sample_db, tiny_reranker_dir, floor=0.0, top_n=2)
    result = pipeline.ask("What is the H2's maximum payload?")
    rows = present.result_rows(result)
    assert len(rows) == len(result.gate.ranked) == pipeline.config.pool_size
    assert [r[1] for r in rows[:3]] == ["kept", "kept", "cut by top-n"]
    assert isinstance(result.outcome, Answer)
    cited_rows = [r for r in rows if r[2]]
    # citations are numbered as the answer first quotes them (its closest sentence leads)
    assert sorted(r[2] for r in cited_rows) == [f"[{i}]" for i in range(1, len(result.outcome.cited) + 1)]
    first = result.gate.ranked[0]
    assert rows[0][3] == f"{first.p_relevant:.4f}" and rows[0][5] == f"{first.rerank_logit:.3f}"
    assert rows[0][4] == rows[0][6] == ""  # a platt calibration orders by nothing else; no semantic part
    col = present.TABLE_HEADERS.index
    assert rows[0][col("bm25_score")] == f"{first.bm25_score:.3f}"
    assert rows[0][col("vector_distance")] == f"{first.vector_distance:.3f}"
    assert rows[0][col("span_score")] == rows[0][col("null_score")] == rows[0][col("answer")] == ""  # no reader
    markdown = present.outcome_markdown(result)
    assert "**Sources**" in markdown and os.path.basename(result.outcome.cited[0].doc_path) in markdown
    fig = present.score_chart(result.gate)
    assert [line.get_ydata()[0] for line in fig.axes[0].get_lines()] == [result.gate.floor]
    # The fused tail past the rerank depth is listed, unscored, and left out of the chart.
    depth = pipeline.config.rerank_depth
    assert depth < pipeline.config.pool_size
    assert {r[1] for r in rows[depth:]} == {"past rerank depth"} and {r[3] for r in rows[depth:]} == {""}
    assert "past rerank depth" not in {r[1] for r in rows[:depth]}
    assert len(fig.axes[0].patches) == depth
    floor = present.floor_markdown(result.gate, "q", "q")
    assert f"**kept** 2 of {len(rows)}" in floor and f"reranked the fused top {depth}" in floor


def test_refusal_markdown_names_the_floor_and_near_misses(sample_db, tiny_reranker_dir):
    result = make_pipeline(sample_db, tiny_reranker_dir, floor=1.0).ask("How do I boil an egg?")
    text = present.outcome_markdown(result)
    assert present.REFUSAL_TEXT in text and "floor 1.000" in text
    assert text.count("\n- ") == len(result.outcome.near_misses) == 3


def test_local_llm_server_dies_with_its_parent(tmp_path):
    """Killing `chatbot serve --local-llm` by any signal must not orphan the model server."""
    import signal
    import subprocess
    import sys
    import time

    from chatbot.local_llm import local_llm_available

    if not local_llm_available():
        pytest.skip("the local LLM is not installed")
    script = ("from chatbot.local_llm import LocalLLMServer; import time, sys\n"
              "s = LocalLLMServer().start(); print(s.process.pid, flush=True); time.sleep(600)")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                return
            with open(f"/proc/{child}/stat") as f:
                if f.read().split()[2] == "Z":  # exited, waiting to be reaped
                    return
            time.sleep(0.2)
        os.kill(child, signal.SIGKILL)
        pytest.fail("the model server outlived its parent")
    finally:
        parent.kill()


def test_panel_shows_p_answerable_the_reader_columns_and_the_highlighted_span():
    import dataclasses

    from chatbot.calibration import Calibration
    from chatbot.gate import apply_gate
    from chatbot.types import Candidate, Chunk

    chunk = Chunk("c1", "/kb/travel.md", "Travel", ("Hotels",), 0, "City: Rotterdam; Nightly hotel cap: €160.", 12, "h")
    at = chunk.context_text.index("€160")
    cand = dataclasses.replace(Candidate(chunk, 0.2, 1, 3.0, 1, 0.03, 0.5, rerank_logit=2.0), semantic_logit=1.5,
                               span_score=6.25, null_score=-1.5, answer_span=(at, at + 4))
    cal = Calibration(floor=0.2, answerability_floor=0.4,
                      answerability_weights={"best_answer_margin": 1.0, "intercept": -5.0})
    gate = apply_gate([cand], cal, top_n=3)
    floor = present.floor_markdown(gate, "q", "q")
    assert "**Floor:** P(answerable) ≥ 0.400; this question **0.940**, answered" in floor
    row = present.candidate_rows(gate)[0]
    col = present.TABLE_HEADERS.index
    assert (row[col("span_score")], row[col("null_score")], row[col("answer")]) == ("6.25", "-1.50", "€160")
    text = present.chunk_markdown(gate.ranked[0], "kept")
    assert "span 6.25 · no answer -1.50" in text and "Nightly hotel cap: <mark>€160</mark>." in text
    refused = apply_gate([dataclasses.replace(cand, span_score=-3.0)], cal, top_n=3)
    assert "refused" in present.floor_markdown(refused, "q", "q") and refused.kept == ()
