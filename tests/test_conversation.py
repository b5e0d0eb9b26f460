"""Follow-up questions become standalone questions before retrieval and the floor."""

import pytest

from chatbot.answer import OpenAIChat
from chatbot.config import Config
from chatbot.conversation import load_rewrite_prompt, looks_like_followup, rewrite_question
from tests.helpers import FakeOpenAIServer

PREVIOUS = ["What is the hotel cap per night in Rotterdam?"]


@pytest.mark.parametrize("question, followup", [
    ("and for Lisbon?", True), ("What about Lisbon?", True), ("How long does it last?", True),
    ("Who approves them?", True), ("Lisbon?", True),
    ("How long does the H2 battery last?", False), ("Which Wi-Fi network do guests use in Austin?", False),
])
def test_followups_are_recognised(question, followup):
    assert looks_like_followup(question) is followup


def test_standalone_question_is_left_alone_even_with_history():
    rewrite = rewrite_question(PREVIOUS, "How long must passwords be?")
    assert rewrite.method == "unchanged" and rewrite.standalone == "How long must passwords be?"


def test_first_question_is_never_rewritten():
    assert rewrite_question([], "and for adults?").method == "unchanged"


def test_rule_rewrite_without_llm_carries_the_earlier_topic():
    rewrite = rewrite_question(PREVIOUS, "and for Lisbon?")
    assert rewrite.method == "rule"
    assert rewrite.standalone == "What is the hotel cap per night in Rotterdam? and for Lisbon?"


def _llm(server):
    return OpenAIChat(server.base_url, "test-model")


def test_llm_rewrite_is_used_and_sees_the_conversation():
    prompt = load_rewrite_prompt(Config().prompts_dir)
    with FakeOpenAIServer(lambda req: "What is the hotel cap per night in Lisbon?") as server:
        rewrite = rewrite_question(PREVIOUS, "and for Lisbon?", _llm(server), prompt)
    assert rewrite.method == "llm" and rewrite.standalone == "What is the hotel cap per night in Lisbon?"
    sent = server.requests[0]["body"]["messages"]
    assert sent[0]["content"] == prompt and PREVIOUS[0] in sent[1]["content"] and "and for Lisbon?" in sent[1]["content"]


@pytest.mark.parametrize("reply", ["Paris is the capital of France.\nIt is nice.", "Cats purr loudly.", "x" * 500,
                                   PREVIOUS[0], "What is the hotel cap per night in Rotterdam for staff?"])
def test_unusable_llm_rewrite_falls_back_to_the_rule(reply):
    prompt = load_rewrite_prompt(Config().prompts_dir)
    with FakeOpenAIServer(lambda req: reply) as server:
        rewrite = rewrite_question(PREVIOUS, "and for Lisbon?", _llm(server), prompt)
    assert rewrite.method == "rule"


def test_dead_llm_falls_back_to_the_rule():
    with FakeOpenAIServer() as server:
        llm = _llm(server)
    rewrite = rewrite_question(PREVIOUS, "and for Lisbon?", llm, load_rewrite_prompt(Config().prompts_dir))
    assert rewrite.method == "rule"
