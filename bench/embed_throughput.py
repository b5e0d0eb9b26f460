"""Ingest throughput against the machine's arithmetic limit.

The embedder is a BERT encoder: nearly all its work is dense matrix products. So the fastest it can
possibly embed a chunk is the chunk's floating-point operation count divided by the rate this
machine sustains on matrix products of the model's own shapes. This script measures both in one run
and reports the ratio (1.0 = at the limit):

* the limit: fp32 GEMM throughput of torch on the model's dominant shapes (tokens x hidden times
  hidden x intermediate, and the square projections), on all cores, timed in alternation with the rest;
* FLOPs per chunk, counted from the real word-piece lengths of SciFact chunks (after the model's
  truncation): per layer 2*n*(4h^2 + 2hi) for the projections and feed-forward, plus 4*n^2*h for
  attention scores and mixing;
* embedding throughput of the project's Embedder (chunks/s) on those chunks;
* the whole ingest (parse, chunk, embed, write to LanceDB) of the same documents into a fresh table
  under a temporary folder, and the re-ingest of the unchanged corpus.

    .venv/bin/python bench/embed_throughput.py            # writes bench/results/embed_throughput.{json,md}
    .venv/bin/python bench/embed_throughput.py --docs 200 --rounds 2   # a quick look
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LANCE_LOG", "error")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def gemm_gflops(m: int, k: int, n: int, repeats: int = 5) -> float:
    """Sustained fp32 GFLOP/s of torch on an (m x k) @ (k x n) product, best of `repeats`."""
    import torch

    a, b = torch.randn(m, k), torch.randn(k, n)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * m * k * n / best / 1e9


def encoder_flops(n_tokens: int, layers: int, hidden: int, intermediate: int) -> float:
    """Forward FLOPs of one sequence through a BERT encoder (embedding lookups and norms are noise)."""
    projections = 2 * n_tokens * (4 * hidden * hidden + 2 * hidden * intermediate)
    attention = 4 * n_tokens * n_tokens * hidden
    return layers * (projections + attention)


def sample_documents(corpus: Path, n_docs: int) -> Path:
    """The first n_docs documents of a BEIR corpus, written to a temporary file."""
    out = Path(tempfile.mkdtemp(prefix="embed_bench_")) / "corpus.jsonl"
    with open(corpus, encoding="utf-8") as src, open(out, "w", encoding="utf-8") as dst:
        dst.writelines(itertools.islice(src, n_docs))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--eval-dir", default=str(ROOT.parent / "shared" / "eval"))
    parser.add_argument("--docs", type=int, default=600, help="SciFact documents to chunk and embed")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()

    import torch

    from chatbot.config import Config
    from chatbot.embed import Embedder
    from chatbot.store import ChunkStore
    from ingest.beir import corpus_documents, ingest_corpus
    from ingest.chunk import chunk_document
    from ingest.run import ChunkingSettings

    cfg = Config()
    settings = ChunkingSettings(cfg.chunk_max_tokens, cfg.chunk_overlap_tokens, cfg.tokenizer_encoding)
    corpus = sample_documents(Path(args.eval_dir) / "scifact" / "corpus.jsonl", args.docs)
    texts = [c.context_text for doc_id, parsed, raw in corpus_documents(corpus)
             for c in chunk_document(parsed, f"beir:{doc_id}", "x", settings.max_tokens, settings.overlap_tokens,
                                     settings.encoding)]

    embedder = Embedder(cfg.embedder, cfg.embed_batch_size)
    model = embedder.model
    bert = model[0].auto_model
    layers, hidden, intermediate = (bert.config.num_hidden_layers, bert.config.hidden_size,
                                    bert.config.intermediate_size)
    max_seq = model.max_seq_length
    lengths = [len(ids) for ids in model.tokenizer(texts, truncation=True, max_length=max_seq)["input_ids"]]
    flops = sum(encoder_flops(n, layers, hidden, intermediate) for n in lengths)
    tokens = sum(lengths)
    embedder.embed_documents(texts[:64])  # warm up

    gemm = {"ffn (tokens x h) @ (h x 4h)": [], "projection (tokens x h) @ (h x h)": [], "square 2048": []}
    encode_s = []
    for _ in range(args.rounds):
        # The limit and the real run alternate, so both see the same machine load.
        gemm["ffn (tokens x h) @ (h x 4h)"].append(gemm_gflops(8192, hidden, intermediate))
        gemm["projection (tokens x h) @ (h x h)"].append(gemm_gflops(8192, hidden, hidden))
        gemm["square 2048"].append(gemm_gflops(2048, 2048, 2048))
        t = time.perf_counter()
        embedder.embed_documents(texts)
        encode_s.append(time.perf_counter() - t)

    # The limit for this model is its own mix of shapes: FFN and projection FLOPs in their proportion.
    ffn_share = 2 * hidden * intermediate / (4 * hidden * hidden + 2 * hidden * intermediate)
    ffn_rate = statistics.median(gemm["ffn (tokens x h) @ (h x 4h)"])
    proj_rate = statistics.median(gemm["projection (tokens x h) @ (h x h)"])
    limit_gflops = 1 / (ffn_share / ffn_rate + (1 - ffn_share) / proj_rate)
    encode_median = statistics.median(encode_s)
    limit_s = flops / 1e9 / limit_gflops

    with tempfile.TemporaryDirectory(prefix="embed_bench_db_") as tmp:
        store = ChunkStore(str(Path(tmp) / "lancedb"), "bench")
        t = time.perf_counter()
        written = ingest_corpus(corpus, store, embedder, settings, batch_chunks=cfg.ingest_batch_chunks)
        ingest_s = time.perf_counter() - t
        reingest = []
        for _ in range(3):
            fresh_store, fresh_embedder = ChunkStore(str(Path(tmp) / "lancedb"), "bench"), Embedder(cfg.embedder)
            t = time.perf_counter()
            ingest_corpus(corpus, fresh_store, fresh_embedder, settings)
            reingest.append(time.perf_counter() - t)

    result = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
                    "torch": torch.__version__},
        "model": {"name": cfg.embedder, "layers": layers, "hidden": hidden, "intermediate": intermediate,
                  "max_seq_length": max_seq},
        "sample": {"documents": args.docs, "chunks": len(texts), "wordpieces": tokens,
                   "mean_wordpieces_per_chunk": round(tokens / len(texts), 1), "gflop": round(flops / 1e9, 1),
                   "gflop_per_chunk": round(flops / 1e9 / len(texts), 3)},
        "gemm_gflops": {k: round(statistics.median(v), 1) for k, v in gemm.items()},
        "limit_gflops_model_mix": round(limit_gflops, 1),
        "limit_chunks_per_s": round(len(texts) / limit_s, 1),
        "embed": {"runs_s": [round(s, 2) for s in encode_s], "median_s": round(encode_median, 2),
                  "chunks_per_s": round(len(texts) / encode_median, 1),
                  "achieved_gflops": round(flops / 1e9 / encode_median, 1)},
        "ratio_time_vs_limit": round(encode_median / limit_s, 2),
        "ingest": {"chunks": written, "seconds": round(ingest_s, 1), "chunks_per_s": round(written / ingest_s, 1),
                   "embedding_share": round(encode_median / ingest_s, 2),
                   "reingest_unchanged_s": [round(s, 2) for s in reingest]},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "embed_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    s, e, i = result["sample"], result["embed"], result["ingest"]
    lines = [
        f"Sample: {s['chunks']} chunks of {s['documents']} SciFact abstracts, {s['mean_wordpieces_per_chunk']} word "
        f"pieces each on average, {s['gflop_per_chunk']} GFLOP per chunk ({layers} layers, hidden {hidden}, "
        f"intermediate {intermediate}).",
        "",
        "| measure | value |",
        "|---|---|",
        *(f"| fp32 GEMM, {k} | {v} GFLOP/s |" for k, v in result["gemm_gflops"].items()),
        f"| arithmetic limit for this model's mix of shapes | {result['limit_gflops_model_mix']} GFLOP/s = "
        f"{result['limit_chunks_per_s']} chunks/s |",
        f"| embedding, measured | {e['chunks_per_s']} chunks/s ({e['achieved_gflops']} GFLOP/s) |",
        f"| **embedding time / limit** | **{result['ratio_time_vs_limit']}** |",
        f"| whole ingest (parse, chunk, embed, write) | {i['chunks_per_s']} chunks/s; embedding is "
        f"{i['embedding_share']:.0%} of it |",
        f"| re-ingest of the unchanged sample | {', '.join(f'{x} s' for x in i['reingest_unchanged_s'])} |",
    ]
    (out / "embed_throughput.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
