"""Streaming answers: the panel's evidence comes first, the LLM's words as they arrive, and the
final result is the same value `ask` returns. An LLM answer that is not grounded in what it
cites is set aside for quoted evidence."""

import pytest

from chatbot.answer import grounding_problem, may_become_no_answer
from chatbot.pipeline import AnswerDelta, Evidence
from chatbot.types import Answer, AskResult, Chunk, Refusal
from tests.helpers import FakeOpenAIServer, make_pipeline


def _events(pipeline, question):
    events = list(pipeline.ask_stream(question))
    assert isinstance(events[0], Evidence) and isinstance(events[-1], AskResult)
    assert all(isinstance(e, AnswerDelta) for e in events[1:-1])
    return events[0], [e.text for e in events[1:-1]], events[-1]


def test_streamed_words_arrive_before_the_final_cited_answer(sample_db, tiny_reranker_dir):
    reply = "Per the sources the payload is in the table [2] and the FAQ says so [1]."
    with FakeOpenAIServer(lambda req: reply) as server:
        evidence, deltas, result = _events(make_pipeline(sample_db, tiny_reranker_dir, 0.0, server, top_n=3),
                                           "What is the maximum payload of the H2?")
    assert server.requests[0]["body"]["stream"] is True
    assert len(deltas) > 5 and "".join(deltas) == reply  # word by word, nothing lost
    assert evidence.gate == result.gate
    assert isinstance(result.outcome, Answer) and result.outcome.mode == "llm"
    assert result.outcome.text == "Per the sources the payload is in the table [1] and the FAQ says so [2]."
    assert result.timings_ms["first_token_ms"] <= result.timings_ms["answer_ms"]
    assert result.trace_id is not None


def test_streamed_no_answer_is_held_back_and_becomes_a_refusal(sample_db, tiny_reranker_dir):
    with FakeOpenAIServer(lambda req: "NO_ANSWER.") as server:
        _, deltas, result = _events(make_pipeline(sample_db, tiny_reranker_dir, 0.0, server), "Dress code?")
    assert deltas == []  # the user never sees "NO_ANS..." flash before the refusal
    assert isinstance(result.outcome, Refusal) and "LLM found no answer" in result.outcome.reason


def test_refusal_streams_nothing_and_calls_no_llm(sample_db, tiny_reranker_dir):
    with FakeOpenAIServer() as server:
        _, deltas, result = _events(make_pipeline(sample_db, tiny_reranker_dir, 1.0, server), "Boiled eggs?")
    assert deltas == [] and server.requests == [] and isinstance(result.outcome, Refusal)


def test_garbage_stream_is_a_clear_error_with_evidence_still_shown(sample_db, tiny_reranker_dir):
    with FakeOpenAIServer(raw_body=b"data: {not json\n\n") as server:
        _, _, result = _events(make_pipeline(sample_db, tiny_reranker_dir, 0.0, server), "Hotel cap?")
    assert result.llm_error and server.base_url in result.llm_error and "sk-test-secret" not in result.llm_error
    assert isinstance(result.outcome, Answer) and result.outcome.mode == "extractive" and result.outcome.cited


@pytest.mark.parametrize("reply, why", [
    ("The robot carries a lot.", "cites none of the sources"),
    ("The robot carries 1,000 kg [1].", "figures its sources do not contain (1000)"),
])
def test_ungrounded_llm_answer_is_replaced_by_quoted_evidence(sample_db, tiny_reranker_dir, reply, why):
    with FakeOpenAIServer(lambda req: reply) as server:
        result = make_pipeline(sample_db, tiny_reranker_dir, 0.0, server).ask("What is the H2's maximum payload?")
    assert isinstance(result.outcome, Answer) and result.outcome.mode == "extractive"
    assert why in result.outcome.note and result.llm_error is None


def _chunk(text):
    return Chunk("c", "/kb/a.md", "A", (), 0, text, 5, "h")


def test_grounding_accepts_figures_the_cited_source_contains():
    source = _chunk("Maximum payload: 600 kg. Claims over €3,000 need approval; 2.5 hours max.")
    ok = Answer("It carries 600 kg [1]; above 3000 euros needs approval, within 2.5 hours [1].", (source,), "llm")
    assert grounding_problem(ok) is None
    bad = Answer("It carries 650 kg [1].", (source,), "llm")
    assert grounding_problem(bad) == "it states figures its sources do not contain (650)"


@pytest.mark.parametrize("text, held", [("", True), ("NO", True), ("NO_ANS", True), (" no_answer.", True),
                                        ("Nope", False), ("No, the policy says", False), ("The", False)])
def test_no_answer_prefix_is_held_back(text, held):
    assert may_become_no_answer(text) is held
