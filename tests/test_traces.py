import json

import pytest

from chatbot.calibration import Calibration
from chatbot.config import Config
from chatbot.pipeline import Pipeline
from chatbot.traces import TraceStore


@pytest.fixture
def pipeline(writable_sample_db, tiny_reranker_dir):
    p = Pipeline.from_config(Config(db_uri=writable_sample_db, reranker=str(tiny_reranker_dir),
                                    llm_api_key="sk-never-stored"))
    p.calibration = Calibration(floor=0.0)
    return p


def test_every_question_leaves_a_full_trace_without_secrets(pipeline):
    result = pipeline.ask("How many parking spaces are there in Lisbon?")
    assert result.trace_id and result.trace_error is None
    trace = pipeline.traces.get(result.trace_id)
    assert trace["question"] == result.question and trace["decision"] == "answer"
    cands = trace["record"]["candidates"]
    assert len(cands) == len(result.gate.ranked)
    for key in ("vector_distance", "bm25_score", "rrf_score", "rerank_logit", "p_relevant", "status", "cited_as"):
        assert key in cands[0]
    assert set(trace["fingerprints"]) == {"embedder", "reranker", "calibration", "chunking"}
    assert set(trace["record"]["timings_ms"]) >= {"rerank_ms", "total_ms"}
    raw = json.dumps(trace)
    assert "sk-never-stored" not in raw and trace["config"]["llm_api_key"] == "***"


def test_feedback_on_answer_and_chunks_is_stored(pipeline):
    result = pipeline.ask("What is the per diem?")
    chunk_id = result.gate.ranked[0].chunk.id
    pipeline.traces.add_feedback(result.trace_id, -1)
    pipeline.traces.add_feedback(result.trace_id, 1, chunk_id=chunk_id)
    # A fresh handle on the same database sees it: the trace is durable, not in memory.
    again = TraceStore(pipeline.store.__class__(pipeline.store.uri, pipeline.store.table_name))
    assert again.get(result.trace_id)["feedback"] == {"answer": -1, "chunks": {chunk_id: 1}}
    assert again.recent(5)[0]["trace_id"] == result.trace_id
    with pytest.raises(ValueError):
        pipeline.traces.add_feedback(result.trace_id, 5)


def test_traces_can_be_turned_off(writable_sample_db, tiny_reranker_dir):
    p = Pipeline.from_config(Config(db_uri=writable_sample_db, reranker=str(tiny_reranker_dir), traces=False),
                             calibration=Calibration(floor=0.0))
    assert p.ask("Wi-Fi in Austin?").trace_id is None


class _FailingAppends:
    """The trace table as object storage can behave under load: its first `failures` appends raise."""

    def __init__(self, table, failures: int):
        self.table, self.failures, self.attempts = table, failures, 0

    def add(self, rows):
        self.attempts += 1
        if self.attempts <= self.failures:
            raise OSError("Retryable commit conflict for version 7")
        return self.table.add(rows)

    def __getattr__(self, name):
        return getattr(self.table, name)


def test_a_trace_append_that_loses_a_race_is_tried_again(pipeline, monkeypatch):
    monkeypatch.setattr("chatbot.traces.time.sleep", lambda s: None)
    flaky = _FailingAppends(pipeline.traces.table, failures=2)
    pipeline.traces._table = flaky
    result = pipeline.ask("What's the heaviest load a single H2 robot can carry?")
    assert result.trace_error is None and flaky.attempts == 3
    stored = [t for t in pipeline.traces.replayable() if t["trace_id"] == result.trace_id]
    assert len(stored) == 1 and stored[0]["question"] == result.question


def test_a_trace_that_cannot_be_stored_costs_the_answer_nothing_and_says_why(pipeline, monkeypatch, capsys):
    from chatbot.traces import WRITE_ATTEMPTS

    monkeypatch.setattr("chatbot.traces.time.sleep", lambda s: None)
    pipeline.traces._table = flaky = _FailingAppends(pipeline.traces.table, failures=99)
    result = pipeline.ask("What's the heaviest load a single H2 robot can carry?")
    assert "600 kg" in result.outcome.text and result.trace_id is None
    assert flaky.attempts == WRITE_ATTEMPTS
    assert "could not store the trace" in result.trace_error and "commit conflict" in result.trace_error
    assert pipeline.traces.table_name in result.trace_error
