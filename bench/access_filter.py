"""What the per-user access filter costs retrieval at 100k chunks with 10 groups (issue #20).

A synthetic table (so it builds in minutes, with no embedding): 100k chunks of Zipf-distributed words
from a 5,000-word vocabulary, random unit vectors, each chunk readable by one of 10 groups or by
everyone (20%), with LanceDB's full-text index and an IVF_PQ vector index, as `bm25_backend = "auto"`
serves a table this size. The product's own `HybridRetriever` answers the same questions without a
viewer (the operator) and as a user of 2 groups, alternated question by question.

    .venv/bin/python bench/access_filter.py [--chunks 100000] [--questions 60]   # bench/results/access_filter.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LANCE_LOG", "error")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
GROUPS = [f"team-{i}" for i in range(10)]
DIM = 384


def build(db: str, n: int, rng) -> None:
    import numpy as np
    import pyarrow as pa

    from chatbot.store import ChunkStore, chunk_schema, encode_access

    vocabulary = [f"w{i}" for i in range(5000)]
    weights = 1.0 / np.arange(1, len(vocabulary) + 1)
    weights /= weights.sum()
    store = ChunkStore(db)
    store.ensure_table("synthetic", lambda: DIM)
    for start in range(0, n, 20_000):
        size = min(20_000, n - start)
        words = rng.choice(len(vocabulary), size=(size, 60), p=weights)
        texts = [" ".join(vocabulary[w] for w in row) for row in words]
        vectors = rng.normal(size=(size, DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        groups = rng.integers(0, len(GROUPS) + 3, size=size)  # 3 of 13 draws: everyone (about 23%)
        rows = {"id": [f"c{start + i}" for i in range(size)], "doc_path": [f"doc{(start + i) // 5}" for i in range(size)],
                "title": ["synthetic"] * size, "heading_path": [[] for _ in range(size)],
                "position": [(start + i) % 5 for i in range(size)], "text": texts, "token_count": [60] * size,
                "content_hash": ["h"] * size, "search_text": texts,
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), DIM),
                "access": [encode_access([GROUPS[g]] if g < len(GROUPS) else ["everyone"]) for g in groups]}
        store.table.add(pa.table(rows).cast(chunk_schema(DIM)))
    store.optimize()
    store.index_access()  # as ingest does
    store.build_full_text_index()
    store.table.create_index(metric="cosine", vector_column_name="vector", index_type="IVF_PQ",
                             num_partitions=max(16, int(n ** 0.5)), num_sub_vectors=48, replace=True)


def main(n: int, n_questions: int) -> dict:
    import numpy as np

    from chatbot.retrieve import HybridRetriever
    from chatbot.store import ChunkStore
    from chatbot.types import Viewer

    rng = np.random.default_rng(20)
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "db")
        t = time.perf_counter()
        build(db, n, rng)
        build_s = time.perf_counter() - t
        store = ChunkStore(db)
        # what "auto" serves from 20k chunks: LanceDB's full-text index beside the vector index
        retriever = HybridRetriever(store, embedder=None, pool_size=30, bm25_backend="lancedb")
        viewer = Viewer("user", frozenset(GROUPS[:2]))
        questions = [(" ".join(f"w{int(w)}" for w in rng.zipf(1.3, size=6) % 5000),
                      (lambda v: v / np.linalg.norm(v))(rng.normal(size=DIM).astype(np.float32)))
                     for _ in range(n_questions)]
        for question, vector in questions[:5]:  # warm both paths
            retriever.retrieve(question, vector)
            retriever.retrieve(question, vector, viewer)
        times = {"operator (no filter)": [], "user of 2 groups (prefilter)": []}
        pools = {"operator (no filter)": [], "user of 2 groups (prefilter)": []}
        leaked = 0
        for question, vector in questions:
            for name, who in (("operator (no filter)", None), ("user of 2 groups (prefilter)", viewer)):
                t = time.perf_counter()
                retrieval = retriever.retrieve(question, vector, who)
                times[name].append((time.perf_counter() - t) * 1000)
                pools[name].append(len(retrieval.pool))
                if who is not None:
                    leaked += sum(not who.may_read(c.chunk) for c in retrieval.pool)
    median = {k: statistics.median(v) for k, v in times.items()}
    return {
        "chunks": n, "groups": len(GROUPS), "questions": n_questions, "build_s": round(build_s, 1),
        "retrieval_ms_median": {k: round(v, 1) for k, v in median.items()},
        "retrieval_ms_p95": {k: round(sorted(v)[int(0.95 * (len(v) - 1))], 1) for k, v in times.items()},
        "filter_cost": round(median["user of 2 groups (prefilter)"] / median["operator (no filter)"] - 1, 3),
        "mean_pool": {k: round(statistics.mean(v), 1) for k, v in pools.items()},
        "chunks_outside_the_users_groups_in_pools": leaked,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "access_filter.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    med, p95, pool = result["retrieval_ms_median"], result["retrieval_ms_p95"], result["mean_pool"]
    lines = [f"# Access filter cost: {result['chunks']:,} chunks, {result['groups']} groups, "
             f"{result['questions']} questions (`bench/access_filter.py`)", "",
             "| retrieval (vector + full-text, fused) | median ms | p95 ms | mean pool |", "|---|---|---|---|"]
    lines += [f"| {k} | {med[k]} | {p95[k]} | {pool[k]} |" for k in med]
    lines += ["", f"Filter cost: **{result['filter_cost'] * 100:+.1f}%** of retrieval time; chunks outside the "
                  f"user's groups in their pools: {result['chunks_outside_the_users_groups_in_pools']}."]
    (out / "access_filter.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--questions", type=int, default=60)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    outcome = main(args.chunks, args.questions)
    write(outcome, args.out)
    print(json.dumps(outcome, indent=2))
