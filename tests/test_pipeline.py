"""The wired pipeline on the sample knowledge base, with an OpenAI-compatible HTTP server
started by the test (a fake only at the true external boundary)."""

import pytest

from chatbot.errors import EmptyQuestion, StoreError
from chatbot.pipeline import QuestionTooLong
from chatbot.record import ask_record
from chatbot.types import Answer, Refusal
from tests.helpers import FakeOpenAIServer
from tests.helpers import make_pipeline as _pipeline


def test_answer_through_llm_endpoint_with_valid_citations(sample_db, tiny_reranker_dir):
    with FakeOpenAIServer(lambda req: "It is in the sources [2]. Also here [1][42].") as server:
        pipeline = _pipeline(sample_db, tiny_reranker_dir, floor=0.0, server=server, top_n=3)
        result = pipeline.ask("What is the maximum payload of the H2?")
    assert isinstance(result.outcome, Answer) and result.outcome.mode == "llm"
    assert result.outcome.text == "It is in the sources [1]. Also here [2]."
    assert result.outcome.dropped_citations == ("[42]",)
    kept = [c.chunk.id for c in result.gate.kept]
    assert [c.id for c in result.outcome.cited] == [kept[1], kept[0]]
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions" and request["body"]["model"] == "test-model"
    user_message = request["body"]["messages"][1]["content"]
    assert user_message.count("<source id=") == 3 and "maximum payload of the H2" in user_message
    record = ask_record(result)
    assert record["decision"] == "answer" and record["cited"] == [kept[1], kept[0]]
    statuses = [c["status"] for c in record["candidates"]]
    depth = pipeline.config.rerank_depth
    assert set(statuses[:depth]) == {"kept", "cut_by_top_n"} and set(statuses[depth:]) == {"not_reranked"}
    assert all(c["rerank_logit"] is None and c["p_relevant"] is None for c in record["candidates"][depth:])
    assert set(result.timings_ms) >= {"embed_query_ms", "retrieve_ms", "rerank_ms", "gate_ms", "answer_ms", "total_ms"}


def test_refusal_never_calls_the_llm(sample_db, tiny_reranker_dir):
    with FakeOpenAIServer() as server:
        pipeline = _pipeline(sample_db, tiny_reranker_dir, floor=1.0, server=server)
        result = pipeline.ask("How long should I boil an egg?")
    assert isinstance(result.outcome, Refusal)
    assert server.requests == []
    assert result.outcome.best_p_relevant < 1.0 and len(result.outcome.near_misses) == 3
    assert ask_record(result)["decision"] == "refusal"


def test_llm_saying_no_answer_becomes_a_refusal(sample_db, tiny_reranker_dir):
    with FakeOpenAIServer(lambda req: "NO_ANSWER") as server:
        result = _pipeline(sample_db, tiny_reranker_dir, floor=0.0, server=server).ask("Dress code?")
    assert isinstance(result.outcome, Refusal) and "LLM found no answer" in result.outcome.reason


def test_dead_endpoint_names_it_and_still_shows_evidence(sample_db, tiny_reranker_dir):
    with FakeOpenAIServer() as server:
        url = server.base_url
    pipeline = _pipeline(sample_db, tiny_reranker_dir, floor=0.0, base_url=url, llm_timeout_s=5.0)
    result = pipeline.ask("What is the hotel cap per night?")
    assert result.llm_error is not None and url in result.llm_error and "cannot connect" in result.llm_error
    assert isinstance(result.outcome, Answer) and result.outcome.mode == "extractive" and result.outcome.cited
    assert "sk-" not in result.llm_error


@pytest.mark.parametrize("server_kwargs, reason", [
    ({"status": 500}, "HTTP 500"),
    ({"status": 401}, "API key was rejected"),
    ({"raw_body": b'{"choices": []}'}, "no answer text"),
])
def test_broken_endpoint_responses_are_clear_errors(sample_db, tiny_reranker_dir, server_kwargs, reason):
    with FakeOpenAIServer(**server_kwargs) as server:
        result = _pipeline(sample_db, tiny_reranker_dir, floor=0.0, server=server).ask("Per diem?")
    assert reason in result.llm_error and server.base_url in result.llm_error
    assert "sk-test-secret" not in result.llm_error
    assert isinstance(result.outcome, Answer) and result.outcome.mode == "extractive"


def test_bad_questions_and_empty_store(sample_db, tiny_reranker_dir, tmp_path):
    pipeline = _pipeline(sample_db, tiny_reranker_dir, floor=0.5)
    with pytest.raises(EmptyQuestion):
        pipeline.ask(" \t\n ")
    with pytest.raises(QuestionTooLong):
        pipeline.ask("why " * 5000)
    assert pipeline.ask("naïve  café \x00\x07 résumé?\n").question == "naïve café résumé?"
    empty = _pipeline(str(tmp_path / "empty"), tiny_reranker_dir, floor=0.5)
    with pytest.raises(StoreError, match="run `chatbot ingest PATH` first"):
        empty.ask("anything")


def test_another_table_shares_the_loaded_models(sample_db, tiny_reranker_dir):
    pipeline = _pipeline(sample_db, tiny_reranker_dir, floor=0.5)
    other = pipeline.with_table("elsewhere")
    assert other.embedder is pipeline.embedder and other.reranker is pipeline.reranker
    assert other.calibration is pipeline.calibration and other.config.table == "elsewhere"
    assert other.store.table_name == "elsewhere" and pipeline.store.table_name == pipeline.config.table
    with pytest.raises(StoreError, match="run `chatbot ingest PATH` first"):
        other.ask("anything")  # its own, empty table
