"""Scale benchmark (issue #6): latency, memory and quality of the real retrieval code at about
10k, 100k and 300k chunks, side by side with two peers that use the same models.

* 10k: the real SciFact corpus ingested through the project's own BEIR ingest (real embeddings);
  ingest throughput and the re-ingest time of the unchanged corpus are measured.
* 100k / 300k: the 10k rows replicated (new ids and doc_paths, a replica marker word added to the
  text, vectors perturbed by gaussian noise and re-normalised), written with ChunkStore, with
  LanceDB's full-text index and an IVF_PQ vector index.
* Each size is measured in its own process (so peak RSS is per size): per-stage medians and p95 of
  our pipeline (both BM25 backends), LanceDB hybrid search + CrossEncoderReranker, and a plain
  "tutorial" pipeline (rank_bm25 + sentence-transformers cosine + RRF + CrossEncoder.predict),
  alternated question by question. nDCG@10 on the labelled 10k table.

    nice -n 5 .venv/bin/python bench/scale.py --cache-dir /work/bench_cache            # everything
    nice -n 5 .venv/bin/python bench/scale.py --sizes 10k,100k --questions 50         # a subset
    .venv/bin/python bench/scale.py --report-only                                     # re-write the tables

Results: bench/results/scale.json and bench/results/scale.md. Caches (LanceDB tables, per-size
results) live in --cache-dir, outside the repository. The labelled data is read from
../shared/eval/scifact (or --eval-dir) and never copied.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZES = {"10k": 1, "100k": 10, "300k": 30}  # replication factor of the real ~10k-chunk table
BASE_TABLE = "scifact"
NOISE_SIGMA = 0.01  # per dimension, 384 dims: a replica's cosine to its original is about 0.98
POOL = 30


def table_name(size: str) -> str:
    return BASE_TABLE if SIZES[size] == 1 else f"scifact_x{SIZES[size]}"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- building the knowledge bases ------------------------------------------------------------------
def build_base(cache: Path, eval_dir: Path) -> dict:
    """Ingest SciFact through ingest.beir (the path `chatbot eval` uses); time it and a re-ingest."""
    from chatbot.config import Config
    from chatbot.embed import Embedder
    from chatbot.store import ChunkStore
    from ingest.beir import ingest_corpus
    from ingest.run import ChunkingSettings

    cfg = Config()
    settings = ChunkingSettings(cfg.chunk_max_tokens, cfg.chunk_overlap_tokens, cfg.tokenizer_encoding)
    db = str(cache / "lancedb")
    stats_path = cache / "ingest.json"
    stats = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
    store = ChunkStore(db, BASE_TABLE)
    if not stats.get("first_ingest") or not store.exists():
        embedder = Embedder(cfg.embedder, cfg.embed_batch_size)
        t = time.perf_counter()
        embedder.embed_query("warm up")
        load_s = time.perf_counter() - t
        log("ingesting SciFact (real embeddings) ...")
        t = time.perf_counter()
        written = ingest_corpus(eval_dir / "corpus.jsonl", store, embedder, settings)
        took = time.perf_counter() - t
        stats["first_ingest"] = {"chunks_written": written, "seconds": round(took, 1),
                                 "chunks_per_s": round(written / took, 1), "embedder_load_s": round(load_s, 1),
                                 "documents": sum(1 for _ in open(eval_dir / "corpus.jsonl", encoding="utf-8"))}
        log(f"ingested {written} chunks in {took:.0f} s ({written / took:.1f} chunks/s)")
    # Re-ingest of the unchanged corpus, as a fresh process would do it (new store handle, model not loaded).
    reingests = []
    for _ in range(3):
        store2, embedder2 = ChunkStore(db, BASE_TABLE), Embedder(cfg.embedder, cfg.embed_batch_size)
        t = time.perf_counter()
        written = ingest_corpus(eval_dir / "corpus.jsonl", store2, embedder2, settings)
        reingests.append({"seconds": round(time.perf_counter() - t, 2), "chunks_written": written,
                          "embedder_loaded": embedder2._model._value is not None
                          if hasattr(embedder2._model, "_value") else None})
    stats["reingest_unchanged"] = {"runs": reingests,
                                   "median_s": statistics.median(r["seconds"] for r in reingests)}
    stats["chunks"] = ChunkStore(db, BASE_TABLE).count()
    stats_path.write_text(json.dumps(stats, indent=2) + "\n")
    log(f"re-ingest of the unchanged corpus: {stats['reingest_unchanged']['median_s']} s; {stats['chunks']} chunks")
    return stats


def build_replicated(cache: Path, size: str, vector_index: bool = True) -> dict:
    """The base rows times SIZES[size], written with ChunkStore, plus the FTS and vector indexes."""
    import numpy as np
    import pyarrow as pa

    from chatbot.config import Config
    from chatbot.store import ChunkStore, chunk_schema

    db = str(cache / "lancedb")
    name = table_name(size)
    info_path = cache / f"build_{name}.json"
    store = ChunkStore(db, name)
    if info_path.is_file() and store.exists():
        return json.loads(info_path.read_text())
    info: dict = {"table": name, "replicas": SIZES[size]}
    base = ChunkStore(db, BASE_TABLE)
    if name != BASE_TABLE:
        t0 = time.perf_counter()
        src = base._scan(None)
        n, dim = src.num_rows, src.schema.field("vector").type.list_size
        vectors = np.asarray(src.column("vector").combine_chunks().values.to_numpy(zero_copy_only=False),
                             dtype=np.float32).reshape(n, dim)
        db_handle = base.db
        try:
            db_handle.drop_table(name)
        except Exception:
            pass
        try:
            db_handle.drop_table(f"{name}_meta")
        except Exception:
            pass
        store = ChunkStore(db, name)
        store.ensure_table(Config().embedder, lambda: dim)
        rng = np.random.default_rng(6)
        cols = {c: src.column(c).to_pylist() for c in ("id", "doc_path", "text", "search_text")}
        for r in range(SIZES[size]):
            if r == 0:
                part = src
            else:
                marker = f" replica{r:02d}"
                noisy = vectors + rng.normal(0.0, NOISE_SIGMA, vectors.shape).astype(np.float32)
                noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
                part = src.set_column(src.schema.get_field_index("id"), "id",
                                      pa.array([f"{i}~r{r}" for i in cols["id"]]))
                part = part.set_column(part.schema.get_field_index("doc_path"), "doc_path",
                                       pa.array([f"{p}~r{r}" for p in cols["doc_path"]]))
                part = part.set_column(part.schema.get_field_index("text"), "text",
                                       pa.array([t + marker for t in cols["text"]]))
                part = part.set_column(part.schema.get_field_index("search_text"), "search_text",
                                       pa.array([t + marker for t in cols["search_text"]]))
                part = part.set_column(part.schema.get_field_index("vector"), "vector",
                                       pa.FixedSizeListArray.from_arrays(pa.array(noisy.reshape(-1)), dim))
            store.table.add(part.cast(chunk_schema(dim)))
        info["write_s"] = round(time.perf_counter() - t0, 1)
        t = time.perf_counter()
        store.optimize()
        info["optimize_s"] = round(time.perf_counter() - t, 1)
    info["rows"] = store.count()
    t = time.perf_counter()
    store.build_full_text_index()
    info["fts_index_s"] = round(time.perf_counter() - t, 1)
    if vector_index and SIZES[size] > 1:
        t = time.perf_counter()
        n = info["rows"]
        store.table.create_index(metric="cosine", vector_column_name="vector", index_type="IVF_PQ",
                                 num_partitions=max(16, int(n ** 0.5)), num_sub_vectors=48, replace=True)
        info["vector_index"] = {"type": "IVF_PQ", "num_partitions": max(16, int(n ** 0.5)), "num_sub_vectors": 48,
                                "seconds": round(time.perf_counter() - t, 1)}
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    log(f"built {name}: {info}")
    return info
