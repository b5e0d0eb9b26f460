import dataclasses

import numpy as np
import pytest

from chatbot.calibration import Calibration
from chatbot.errors import CalibrationError, ModelLoadError
from chatbot.gate import apply_gate
from chatbot.rerank import Reranker, _length_batches
from chatbot.types import Candidate, Chunk


def _cand(i: int, logit: float | None = None) -> Candidate:
    chunk = Chunk(f"id{i}", "/kb/d.md", "Doc", ("H",), i, f"text {i}", 2, "h")
    return Candidate(chunk, 0.5, i + 1, 1.0, i + 1, 1 / (60 + i), rerank_logit=logit)


def test_tiny_cross_encoder_gives_raw_logits_in_input_order(tiny_reranker_dir):
    reranker = Reranker(str(tiny_reranker_dir))
    passages = ["short", "a much longer passage about robots and batteries " * 5, "medium length text here"]
    logits = reranker.logits("battery life?", passages)
    assert logits.shape == (3,) and logits.dtype == np.float32
    # Same scores one at a time: the length-sorted batching must not reorder results.
    one_by_one = [reranker.logits("battery life?", [p])[0] for p in passages]
    assert np.allclose(logits, one_by_one, atol=1e-4)
    # Raw logits, not probabilities: an explicit Identity activation each call.
    ranked = reranker.rerank("battery life?", [_cand(i) for i in range(3)])
    assert [c.rerank_logit for c in ranked] == sorted((c.rerank_logit for c in ranked), reverse=True)


def test_pairs_are_batched_longest_first_in_even_shares_per_worker():
    lengths = [5, 50, 20, 40, 10, 30, 60, 15, 25, 35, 45, 55, 1, 2, 3, 4, 6]
    for workers in (1, 2, 3):
        batches = _length_batches(lengths, most=4, workers=workers)
        flat = [i for batch in batches for i in batch]
        assert sorted(flat) == list(range(len(lengths)))
        assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)
        assert len(batches) % workers == 0 and max(map(len, batches)) <= 4
        assert max(map(len, batches)) - min(map(len, batches)) <= 1
    assert _length_batches([7], most=8, workers=2) == [[0]] and _length_batches([], most=8, workers=2) == []


def test_two_workers_score_like_one_and_leave_torch_threads_as_they_were(tiny_reranker_dir):
    import threading

    import torch

    before = torch.get_num_threads()
    one, two = Reranker(str(tiny_reranker_dir), workers=1), Reranker(str(tiny_reranker_dir), workers=2)
    passages = [f"passage {i} about " + "robots and batteries " * (i % 7) for i in range(21)]
    np.testing.assert_allclose(two.logits("battery life?", passages), one.logits("battery life?", passages), atol=1e-5)
    team = two._team.get()
    assert team.count == 2
    assert team.map(lambda _: torch.get_num_threads(), range(2)) == [max(1, before // 2)] * 2
    seen = []
    later = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    later.start()
    later.join()
    assert torch.get_num_threads() == before and seen == [before]  # a thread started later keeps the default
    with pytest.raises(ValueError, match="workers"):
        Reranker(str(tiny_reranker_dir), workers=0)


def test_missing_reranker_path_names_the_fix(tmp_path):
    with pytest.raises(ModelLoadError, match="cannot load reranker"):
        Reranker(str(tmp_path / "absent")).logits("q", ["p"])


def test_sigmoid_is_not_saturated_by_low_precision():
    cal = Calibration(floor=0.5)
    p = cal.p_relevant([9.0, 10.0, 12.0])
    assert p[0] < p[1] < p[2] < 1.0  # in fp16 all three round to 1.0 and tie
    assert np.float16(1 / (1 + np.exp(np.float16(-9)))) == np.float16(1 / (1 + np.exp(np.float16(-12))))


def test_platt_and_isotonic_mappings():
    platt = Calibration(floor=0.5, platt_a=2.0, platt_b=-1.0)
    assert platt.p_relevant([0.5])[0] == pytest.approx(0.5)
    iso = Calibration(floor=0.3, method="isotonic", isotonic_x=(-2.0, 0.0, 2.0), isotonic_y=(0.0, 0.2, 0.9))
    assert list(iso.p_relevant([-5.0, 1.0, 5.0])) == pytest.approx([0.0, 0.55, 0.9])


def test_logistic_mapping_reads_named_features():
    cal = Calibration(floor=0.5, method="logistic",
                      weights={"rerank_logit": 0.5, "cosine_similarity": 4.0, "term_coverage": 2.0, "intercept": -4.0})
    # 0.5 * 2 + 4 * 0.5 + 2 * 0.5 - 4 = 0 -> 0.5; the same logit with a lower cosine is less likely relevant.
    p = cal.p_relevant([2.0, 2.0], cosine_similarity=[0.5, 0.25], term_coverage=[0.5, 0.5])
    assert list(p) == pytest.approx([0.5, 1 / (1 + np.exp(1.0))])
    with pytest.raises(CalibrationError, match="term_coverage"):
        cal.p_relevant([2.0], cosine_similarity=[0.5])
    # Platt ignores the other features when they are given.
    assert Calibration(floor=0.5).p_relevant([0.0], cosine_similarity=[0.9])[0] == pytest.approx(0.5)
    with pytest.raises(CalibrationError, match="unknown feature"):
        Calibration(floor=0.5, method="logistic", weights={"bm25": 1.0})
    with pytest.raises(CalibrationError, match="needs weights"):
        Calibration(floor=0.5, method="logistic", weights={"intercept": 1.0})


def test_gate_uses_the_cosine_and_coverage_of_each_candidate():
    cal = Calibration(floor=0.5, method="logistic",
                      weights={"rerank_logit": 1.0, "cosine_similarity": 10.0, "term_coverage": 4.0, "intercept": -7.0})
    near = dataclasses.replace(_cand(0, 0.0), term_coverage=0.5)  # cosine 0.5: 5 + 2 - 7 = 0 -> p 0.5
    far = dataclasses.replace(_cand(1, 0.0), vector_distance=0.9, term_coverage=0.5)
    unshared = dataclasses.replace(_cand(2, 0.0), term_coverage=0.0)
    gate = apply_gate([far, unshared, near], cal, top_n=5)  # one logit for all: only the features differ
    assert near.cosine_similarity == pytest.approx(1.0 - near.vector_distance)
    assert [c.chunk.id for c in gate.kept] == ["id0"]


@pytest.mark.parametrize("cal, running, wrong, message", [
    (Calibration(floor=0.42, platt_a=1.3, platt_b=-0.7, reranker_fingerprint="m:abc", notes={"fit": "x"}),
     {"reranker": "m:abc", "embedder": "any"}, {"reranker": "other:1", "embedder": "any"},
     "fitted for reranker 'm:abc'.*'other:1'"),
    # A mapping that reads cosine similarity is tied to the embedder that defines it.
    (Calibration(floor=0.3, method="logistic", weights={"cosine_similarity": 2.0, "intercept": -1.0},
                 reranker_fingerprint="m:abc", embedder_fingerprint="emb-a"),
     {"reranker": "m:abc", "embedder": "emb-a"}, {"reranker": "m:abc", "embedder": "emb-b"},
     "fitted for embedder 'emb-a'.*'emb-b'"),
    # Chunk size shapes every score: a calibration is for the chunking it was fitted on.
    (Calibration(floor=0.3, reranker_fingerprint="m:abc", chunking_fingerprint="max=200,overlap=30,cl100k_base"),
     {"reranker": "m:abc", "chunking": "max=200,overlap=30,cl100k_base"},
     {"reranker": "m:abc", "chunking": "max=400,overlap=30,cl100k_base"}, "fitted for chunking 'max=200"),
], ids=["platt", "logistic", "chunking"])
def test_calibration_round_trips_and_checks_models(tmp_path, cal, running, wrong, message):
    path = tmp_path / "cal.json"
    cal.save(path)
    loaded = Calibration.load(path)
    assert loaded == cal
    loaded.check_fits(running, str(path))
    with pytest.raises(CalibrationError, match=message):
        loaded.check_fits(wrong, str(path))


def test_ranking_weights_round_trip_and_are_checked(tmp_path):
    cal = Calibration(floor=0.2, ranking_weights={"rerank_logit": 1.0, "semantic_logit": 0.5})
    cal.save(tmp_path / "cal.json")
    assert Calibration.load(tmp_path / "cal.json") == cal
    with pytest.raises(CalibrationError, match="ranking_weights name unknown feature"):
        Calibration(floor=0.2, ranking_weights={"bm25": 1.0})
    (tmp_path / "bad.json").write_text('{"floor": 0.2, "ranking_weights": [1, 2]}')
    with pytest.raises(CalibrationError, match="'ranking_weights' must map"):
        Calibration.load(tmp_path / "bad.json")


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"platt_a": 1}', "no 'floor'"),
    ('{"floor": 1.5}', r"\[0, 1\]"),
    ('{"floor": 0.5, "flor": 1}', "unknown key"),
])
def test_malformed_calibration_files(tmp_path, content, message):
    path = tmp_path / "cal.json"
    path.write_text(content)
    with pytest.raises(CalibrationError, match=message):
        Calibration.load(path)


def test_gate_keeps_top_n_above_floor():
    cal = Calibration(floor=0.5)  # p = sigmoid(logit): logit 0 is exactly the floor
    pool = [_cand(i, logit) for i, logit in enumerate([3.0, 2.0, 1.0, 0.0, -1.0])]  # the reranker's order
    gate = apply_gate(pool, cal, top_n=2)
    assert [c.chunk.id for c in gate.kept] == ["id0", "id1"]
    assert [c.chunk.id for c in gate.ranked] == ["id0", "id1", "id2", "id3", "id4"]
    assert gate.status("id2") == "cut_by_top_n" and gate.status("id3") == "cut_by_top_n"
    assert gate.status("id4") == "below_floor"
    assert all(c.p_relevant is not None for c in gate.ranked)


def test_gate_decides_on_the_semantic_part_and_keeps_the_rerankers_order():
    # A calibration on semantic_logit: the chunk the reranker put first on shared words alone (its
    # semantic part is low) is no evidence, and the order of what is kept stays the reranker's.
    cal = Calibration(floor=0.5, method="logistic", weights={"semantic_logit": 1.0, "intercept": 0.0})
    pool = [dataclasses.replace(_cand(i, logit), semantic_logit=semantic)
            for i, (logit, semantic) in enumerate([(5.0, -2.0), (4.0, 1.0), (3.0, 2.0), (2.0, -1.0)])]
    gate = apply_gate(pool, cal, top_n=5)
    assert [c.chunk.id for c in gate.ranked] == ["id0", "id1", "id2", "id3"]
    assert [c.chunk.id for c in gate.kept] == ["id1", "id2"]
    assert gate.best_p_relevant == pytest.approx(1 / (1 + np.exp(-2.0)))
    assert [c.chunk.id for c in gate.nearest(2)] == ["id2", "id1"]
    assert gate.status("id0") == "below_floor"
    # A reranker without a semantic part cannot serve such a calibration: said, not guessed.
    with pytest.raises(CalibrationError, match="semantic_logit.*chatbot calibrate"):
        apply_gate([_cand(0, 1.0)], cal, top_n=5)


def test_gate_orders_by_the_calibrations_ranking_and_floors_on_p_relevant():
    # The ranking reads cosine; the floor reads the logit. Each decides only its own question.
    cal = Calibration(floor=0.5, ranking_weights={"rerank_logit": 1.0, "cosine_similarity": 10.0})
    pool = [dataclasses.replace(_cand(i, logit), vector_distance=distance)
            for i, (logit, distance) in enumerate([(3.0, 0.9), (2.0, 0.1), (-1.0, 0.0), (1.0, 0.5)])]
    gate = apply_gate(pool + [_cand(4)], cal, top_n=2)
    # ranking scores: id0 3 + 1 = 4, id1 2 + 9 = 11, id2 -1 + 10 = 9, id3 1 + 5 = 6
    assert [c.chunk.id for c in gate.ranked] == ["id1", "id2", "id3", "id0", "id4"]
    assert [c.ranking_score for c in gate.ranked[:4]] == pytest.approx([11.0, 9.0, 6.0, 4.0])
    assert [c.chunk.id for c in gate.kept] == ["id1", "id3"]  # id2 is ranked second, and below the floor
    assert gate.status("id2") == "below_floor" and gate.status("id0") == "cut_by_top_n"
    assert gate.ranked[4].ranking_score is None and gate.status("id4") == "not_reranked"


def test_gate_refuses_everything_below_floor():
    gate = apply_gate([_cand(0, -3.0), _cand(1, -2.0)], Calibration(floor=0.5), top_n=5)
    assert gate.kept == ()


def test_repeated_pairs_are_scored_once_and_the_cache_stays_bounded(tiny_reranker_dir):
    cold = Reranker(str(tiny_reranker_dir))
    cached = Reranker(str(tiny_reranker_dir), cache_pairs=3)
    passages = ["the H2 battery lasts ten hours", "parking is free", "the office opens at nine"]
    first = cached.logits("battery life?", passages)
    assert (cached.cache_hits, cached.cache_misses) == (0, 3)
    again = cached.logits("battery life?", passages[::-1])
    assert (cached.cache_hits, cached.cache_misses) == (3, 3)
    np.testing.assert_array_equal(again, first[::-1])
    np.testing.assert_allclose(first, cold.logits("battery life?", passages), atol=1e-5)
    # Same passage, another question: a new pair, not a hit.
    cached.logits("parking?", passages[:1])
    assert cached.cache_misses == 4 and len(cached._cache) == 3  # one pair was dropped ...
    # ... the least recently used: the reversed call touched passages[2] first.
    cached.logits("battery life?", passages[:1])
    assert (cached.cache_hits, cached.cache_misses) == (4, 4)
    cached.logits("battery life?", passages[2:])
    assert (cached.cache_hits, cached.cache_misses) == (4, 5)


def test_rerank_depth_reads_only_the_fused_head_and_keeps_the_tail_in_order(tiny_reranker_dir):
    reranker = Reranker(str(tiny_reranker_dir))
    pool = [dataclasses.replace(_cand(i), chunk=dataclasses.replace(_cand(i).chunk, text=t))
            for i, t in enumerate(["robots", "the battery lasts ten hours", "parking", "battery", "canteen menu"])]
    ranked = reranker.rerank("battery life?", pool, depth=3)
    assert reranker.cache_misses == 3  # pairs the cross-encoder scored (counted with the cache off too)
    assert sorted(c.chunk.id for c in ranked[:3]) == ["id0", "id1", "id2"]
    assert [c.chunk.id for c in ranked[3:]] == ["id3", "id4"]  # fused order, untouched
    assert all(c.rerank_logit is not None for c in ranked[:3])
    assert all(c.rerank_logit is None for c in ranked[3:])
    full = {c.chunk.id: c.rerank_logit for c in reranker.rerank("battery life?", pool)}
    assert all(abs(full[c.chunk.id] - c.rerank_logit) < 1e-4 for c in ranked[:3])
    assert [c.chunk.id for c in ranked[:3]] == sorted(["id0", "id1", "id2"], key=lambda i: -full[i])
    assert len(reranker.rerank("battery life?", pool, depth=50)) == 5


def test_gate_never_keeps_what_the_reranker_did_not_read():
    # Unread candidates would otherwise look like evidence to a calibration that reads only cosine
    # and coverage: give them the best of both.
    cal = Calibration(method="logistic", floor=0.5, weights={"intercept": 0.0, "rerank_logit": 1.0})
    pool = [_cand(1, 2.0), _cand(0, -1.0), _cand(2), _cand(3)]  # the reranker's order, then the unread tail
    gate = apply_gate(pool, cal, top_n=5)
    assert [c.chunk.id for c in gate.kept] == ["id1"]
    assert [c.chunk.id for c in gate.ranked] == ["id1", "id0", "id2", "id3"]
    assert [gate.status(f"id{i}") for i in range(4)] == ["below_floor", "kept", "not_reranked", "not_reranked"]
    assert gate.ranked[2].p_relevant is None and gate.ranked[3].p_relevant is None


def _read(i: int, logit: float, semantic: float, margin: float, distance: float = 0.5) -> Candidate:
    return dataclasses.replace(_cand(i, logit), semantic_logit=semantic, span_score=margin, null_score=0.0,
                               vector_distance=distance)


ANSWERABILITY = Calibration(floor=0.5, answerability_floor=0.5,
                            answerability_weights={"best_answer_margin": 1.0, "best_semantic_logit": 0.5,
                                                   "intercept": -2.0})


def test_gate_refuses_when_the_evidence_is_on_topic_but_does_not_answer():
    # Every chunk clears the pair floor (p = sigmoid(logit) >= 0.5), but the reader finds no answer:
    # P(answerable) = sigmoid(-3 + 0.5 * 2 - 2) = sigmoid(-4), below its floor.
    pool = [_read(0, 3.0, 2.0, -3.0), _read(1, 2.0, 1.0, -5.0)]
    gate = apply_gate(pool, ANSWERABILITY, top_n=5)
    assert gate.p_answerable == pytest.approx(1 / (1 + np.exp(4.0)))
    assert gate.judged_answerability and gate.answerability_floor == 0.5
    assert gate.kept == () and gate.best_p_relevant > gate.floor
    assert gate.status("id0") == "below_floor"


def test_gate_answers_when_the_evidence_holds_an_answer_and_keeps_at_least_the_first():
    # P(answerable) = sigmoid(4 + 0.5 * -1 - 2) = sigmoid(1.5): answered, although no chunk clears the
    # pair floor; the first in order is then the evidence.
    pool = [_read(0, -1.0, -1.0, 4.0), _read(1, -2.0, -3.0, 1.0)]
    gate = apply_gate(pool, ANSWERABILITY, top_n=5)
    assert gate.p_answerable == pytest.approx(1 / (1 + np.exp(-1.5)))
    assert [c.chunk.id for c in gate.kept] == ["id0"]
    # With chunks above the pair floor, those are the evidence, in order.
    pool = [_read(0, 3.0, -1.0, 4.0), _read(1, -2.0, -3.0, 1.0), _read(2, 1.0, 0.0, 0.0)]
    assert [c.chunk.id for c in apply_gate(pool, ANSWERABILITY, top_n=5).kept] == ["id0", "id2"]


def test_gate_reads_the_margin_of_the_pairs_the_reader_read():
    # A reader with a layer of its own reads the best-ranked pairs only; the others have no span. The
    # question's margin is the best read one: sigmoid(4 + 0.5 * 3 - 2) = sigmoid(3.5).
    pool = [_read(0, 3.0, 3.0, 4.0), _read(1, 2.0, 1.0, 1.0), dataclasses.replace(_read(2, 1.0, 0.0, 0.0), span_score=None)]
    assert apply_gate(pool, ANSWERABILITY, top_n=5).p_answerable == pytest.approx(1 / (1 + np.exp(-3.5)))


def test_answerability_calibration_round_trips_and_says_what_it_needs(tmp_path):
    ANSWERABILITY.save(tmp_path / "cal.json")
    assert Calibration.load(tmp_path / "cal.json") == ANSWERABILITY
    with pytest.raises(CalibrationError, match="best_answer_margin.*no reader"):
        apply_gate([dataclasses.replace(_cand(0, 1.0), semantic_logit=1.0)], ANSWERABILITY, top_n=5)
    with pytest.raises(CalibrationError, match="unknown feature"):
        Calibration(floor=0.5, answerability_weights={"best_mood": 1.0})
    with pytest.raises(CalibrationError, match="answerability_floor"):
        Calibration(floor=0.5, answerability_floor=1.5)
    assert ANSWERABILITY.p_answerable({}) == 0.0  # nothing read: nothing answers
