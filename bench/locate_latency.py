"""What the located stage (`chatbot.locate`) costs beside the reranking it follows, side by side in one process.

Each round is a new question with a new pool (SciFact claims and abstracts cut to 200 tokens, as chunks are),
so the embedder's sentence cache starts cold, as for a question about chunks no earlier question met: the
product's reranking of the pool (int8, two workers, `rerank_depth` of 30), then the located stage over its
best `top_n`, then the extractive answer's embedding of the same sentences (which the cache then serves); then,
the cache emptied, the same located stage reading the sentence vectors an ingest stored (`chatbot ingest` with
a calibration that reads the closest sentence), and the answer after it. Rounds alternate, and the result is
medians and the ratio to reranking.

    .venv/bin/python bench/locate_latency.py [--rounds 40]     # writes bench/results/locate_latency.{json,md}
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SCIFACT = ROOT.parent / "shared" / "eval" / "scifact"


def main(rounds: int) -> None:
    import tempfile

    from chatbot.config import Config
    from chatbot.embed import Embedder
    from chatbot.locate import SentenceVectors, closest_sentences
    from chatbot.rerank import Reranker
    from chatbot.sentences import quotable_sentences
    from chatbot.store import ChunkStore
    from chatbot.tokens import get_encoding
    from chatbot.types import Candidate, Chunk
    from ingest.run import IngestReport, store_sentence_vectors

    config = Config()
    enc = get_encoding()
    with open(SCIFACT / "corpus.jsonl", encoding="utf-8") as f:
        docs = [json.loads(line) for _, line in zip(range(30 * (rounds + 1)), f)]
    with open(SCIFACT / "queries.jsonl", encoding="utf-8") as f:
        claims = [json.loads(line)["text"] for _, line in zip(range(rounds + 1), f)]
    texts = [enc.decode(enc.encode_ordinary(d["text"])[:config.chunk_max_tokens]) for d in docs]
    reranker = Reranker("shipped", max_length=config.reranker_max_length, precision="int8", read_top=config.top_n)
    embedder = Embedder(config.embedder, config.embed_batch_size)
    chunks = [Chunk(f"{k // 30}-{k % 30}", f"d{k}", "", (), 0, t, 0, "") for k, t in enumerate(texts)]
    # The same pools in a knowledge base whose ingest stored their sentence vectors (calibration "located").
    store = ChunkStore(tempfile.mkdtemp(prefix="locate-latency-"))
    store.ensure_table(embedder.fingerprint, lambda: embedder.dimension)
    store.replace_documents([c.doc_path for c in chunks], chunks, embedder.embed_documents(texts))
    store_sentence_vectors(store, embedder, IngestReport())
    embedder._cache.clear()
    computed, stored = SentenceVectors(embedder), SentenceVectors(embedder, store)
    times: dict[str, list[float]] = {"rerank": [], "locate": [], "answer's embedding, after locate": [],
                                     "answer's embedding, cold": [], "locate, sentence vectors stored at ingest": [],
                                     "answer's embedding, after stored locate": []}
    for r in range(rounds + 1):  # the first round warms up (loads the models) and is not counted
        question = claims[r]
        candidates = tuple(Candidate(c, 0.5, i + 1, 0.0, i + 1, 0.0) for i, c in enumerate(chunks[30 * r:30 * (r + 1)]))
        query = embedder.embed_query(question)
        t0 = time.perf_counter()
        reranked = reranker.rerank(question, candidates, config.rerank_depth)
        t1 = time.perf_counter()
        located = closest_sentences(query, reranked, computed, config.top_n)
        t2 = time.perf_counter()
        judged = [s for c in located[:config.top_n] for s in quotable_sentences([c])[1]]
        embedder.embed_sentences([question] + judged)
        t3 = time.perf_counter()
        embedder._cache.clear()
        embedder.embed_sentences([question] + judged)
        t4 = time.perf_counter()
        embedder._cache.clear()
        again = closest_sentences(query, reranked, stored, config.top_n)
        t5 = time.perf_counter()
        embedder.embed_sentences([question] + judged)
        t6 = time.perf_counter()
        embedder._cache.clear()
        assert [c.closest_sentence for c in again] == [c.closest_sentence for c in located]
        if r:
            for name, seconds in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5)):
                times[name].append(seconds * 1000)
    rerank = statistics.median(times["rerank"])
    result = {"rounds": rounds, "cpus": os.cpu_count(), "pool": 30, "rerank_depth": config.rerank_depth,
              "top_n": config.top_n,
              "stages_ms": {k: {"median": round(statistics.median(v), 1), "p95": round(sorted(v)[int(0.95 * (len(v) - 1))], 1),
                                "ratio_to_rerank": round(statistics.median(v) / rerank, 3)} for k, v in times.items()}}
    out = ROOT / "bench" / "results"
    (out / "locate_latency.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# The located stage's cost (`bench/locate_latency.py`, {rounds} rounds, cold sentence cache, "
             f"{os.cpu_count()} CPUs)\n", "| stage | median ms | p95 ms | median / rerank's |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['median']} | {v['p95']} | {v['ratio_to_rerank']:.2f} |" for k, v in result["stages_ms"].items()]
    (out / "locate_latency.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    main(parser.parse_args().rounds)
