"""The shipped defaults on the shipped sample knowledge base: the product's promise, end to end.

Real embedder, real shipped reranker and calibration, real LanceDB. Answerable questions must
be answered with citations of the right document whose text holds the answer; questions the
knowledge base cannot answer must be refused by the floor, before any LLM is involved.
"""

import pytest

from chatbot.answer import lead_sentence
from chatbot.config import Config
from chatbot.pipeline import Pipeline
from chatbot.types import Answer, Refusal
from tests.helpers import KNOWN_MISSES, OCR_AVAILABLE, SAMPLE_QUESTIONS, SCANNED

ANSWERABLE = [q for q in SAMPLE_QUESTIONS if q["answerable"]]
OFF_TOPIC = [q for q in SAMPLE_QUESTIONS if not q["answerable"] and q["why"] == "off-topic"]
# Company topics the documents do not cover ("parental leave" beside a real "annual leave" section):
# P(answerable) reads relevance scores (the reader's margin does not yet help), so the floor lets some
# through; with an LLM configured they end as NO_ANSWER refusals. Known gap, tracked in the answerability issue.
UNCOVERED = [q for q in SAMPLE_QUESTIONS if not q["answerable"] and q["why"] != "off-topic"]


@pytest.fixture(scope="module")
def pipeline(sample_db):
    return Pipeline.from_config(Config(db_uri=sample_db, traces=False))


# The embedder, the reranker and the words all miss the link, so the floor (tuned to wrongly refuse
# at most 5% of held-out questions) refuses these. Tracked in the reranker issue; strict, so a fix shows.
_MISSED = pytest.mark.xfail(reason="Texas -> Austin is world knowledge no score here has", strict=True)


_NO_OCR = pytest.mark.skipif(not OCR_AVAILABLE, reason="a scanned page: needs Tesseract (apt-get install tesseract-ocr)")


@pytest.mark.parametrize("q", [pytest.param(q, marks=_MISSED) if q["question"] in KNOWN_MISSES
                               else pytest.param(q, marks=_NO_OCR) if q["doc"] in SCANNED else q
                               for q in ANSWERABLE],
                         ids=[q["doc"] for q in ANSWERABLE])
def test_answerable_question_is_answered_from_the_right_document(pipeline, q):
    result = pipeline.ask(q["question"])
    assert isinstance(result.outcome, Answer), f"refused: {result.outcome.reason} ({result.outcome.p_answerable})"
    kept_docs = [c.chunk.doc_path.rsplit("/", 1)[-1] for c in result.gate.kept]
    assert q["doc"] in kept_docs, kept_docs
    evidence = " ".join(c.chunk.text for c in result.gate.kept if c.chunk.doc_path.endswith(q["doc"]))
    for needle in q["answer_contains"]:
        assert needle in evidence
    assert q["doc"] in [c.doc_path.rsplit("/", 1)[-1] for c in result.outcome.cited]


# What a user reads first (the extractive answer's first sentence, at most 30 words) states the fact (the expense
# policy's EUR 3,000 is read as "Above EUR 2,500", not the closer-worded neighbouring row). One known miss: on the
# scanned notice the reader's best span is "stairway" ("leave the building by the nearest stairway" answers where
# to go, not where to gather), and "assembly point" is far from "gather" for every score. Strict, so a fix shows.
_LEAD_MISSED = pytest.mark.xfail(reason="the reader's span is 'stairway', not the assembly point", strict=True)
_LEAD_MISSES = frozenset({"fire-safety-notice-scan.pdf"})
_LEADS = [q for q in ANSWERABLE if q["question"] not in KNOWN_MISSES]


@pytest.mark.parametrize("q", [pytest.param(q, marks=[_NO_OCR] * (q["doc"] in SCANNED) + [_LEAD_MISSED] * (q["doc"] in _LEAD_MISSES))
                               for q in _LEADS], ids=[q["doc"] for q in _LEADS])
def test_the_answers_first_sentence_states_the_fact(pipeline, q):
    result = pipeline.ask(q["question"])
    assert isinstance(result.outcome, Answer), f"refused: {result.outcome.reason}"
    lead = lead_sentence(result.outcome.text)
    for needle in q["answer_contains"]:
        assert needle in lead, lead


# Of the uncovered ones the dog question is refused, and must stay so; parental leave and the dress code sit
# beside sections on annual leave and the Lisbon office, and clear the floor (non-strict: a fix shows as XPASS).
_NOT_YET_REFUSED = frozenset(q["question"] for q in UNCOVERED if "parental" in q["question"] or "dress" in q["question"])
_ON_TOPIC_MISS = pytest.mark.xfail(
    reason="on-topic questions the KB does not answer are refused only in part (in-domain AUROC 0.66 on unseen articles)",
    strict=False)


@pytest.mark.parametrize("q", OFF_TOPIC + [pytest.param(q, marks=[_ON_TOPIC_MISS] * (q["question"] in _NOT_YET_REFUSED))
                                           for q in UNCOVERED],
                         ids=[q["question"][:30] for q in OFF_TOPIC + UNCOVERED])
def test_unanswerable_question_is_refused_by_the_floor(pipeline, q):
    result = pipeline.ask(q["question"])
    gate = result.gate
    assert isinstance(result.outcome, Refusal), (
        f"answered; P(answerable) {gate.p_answerable} (floor {gate.answerability_floor}), kept p_relevant "
        f"{[round(c.p_relevant, 3) for c in gate.kept]}, floor {gate.floor}")
    if gate.judged_answerability:  # the question-level probability decided
        assert result.outcome.p_answerable == gate.p_answerable < gate.answerability_floor
    else:
        assert result.outcome.best_p_relevant < gate.floor


# The same facts asked as a search box is used: content words, an amount written with a currency code. The
# outage's length is a known miss: "outage duration" reads closest to the sentence on the 50 minutes the retries
# added, not to the one with the whole outage's 2 hours 47 minutes. Strict, so a fix shows.
_KEYWORD_LEADS = [("expense approval 3000 EUR", "Marta Quental"), ("hotel cap Rotterdam", "€160"),
                  ("minimum password length", "14 characters"), ("RMA no fault found fee", "€350"),
                  ("release freeze holidays", "20 November"),
                  pytest.param("harbor outage duration", "2 hours 47 minutes", marks=pytest.mark.xfail(
                      reason="the lead is the 50 minutes the retries added", strict=True))]


@pytest.mark.parametrize("query, fact", _KEYWORD_LEADS)
def test_a_keyword_query_is_answered_with_the_fact_first(pipeline, query, fact):
    result = pipeline.ask(query)
    assert isinstance(result.outcome, Answer), f"refused: {result.outcome.reason}"
    assert fact in lead_sentence(result.outcome.text)
