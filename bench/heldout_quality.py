"""Ranking and refusal quality of rerankers over the same held-out pools, side by side.

The questions are the ones `chatbot train-reranker` holds out (20%, split by passage; unanswerable
SQuAD questions go with the passage they were written from), so no reranker trained with the recipe
has seen them. For each, the product's hybrid retriever builds the RRF pool of 30 once; every setting
then scores the same pools:
  * nDCG@10 and hit@5 of the reranked pool against the fused order, per dataset, on the *report half*
    (the tuning half chose the exact-match weight, so it is left out);
  * for SQuAD 2.0, AUROC of the top logit, answerable against `is_impossible` questions asked of their
    own corpus, over the whole held-out set and averaged within articles (an article's share of
    unanswerable questions alone must not count as a signal); the same for the top semantic logit
    (the logit without the exact-match term), for a reranker that has one.
Pairs past a setting's depth keep their fused order below the reranked ones, as in the product.

    .venv/bin/python bench/heldout_quality.py shipped:int8:20 shipped:fp32:30 /path/to/6-layer:fp32:30

Each argument is RERANKER[:PRECISION[:DEPTH]] (defaults: the product's). The eval tables are the
ones `chatbot train-reranker` fills (`--db`, default the config's); the pools are cached in
`--cache-dir`. Writes bench/results/heldout_quality.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chatbot import metrics  # noqa: E402


def build_pools(eval_dir: Path, db_uri: str, fraction: float) -> dict[str, list[dict]]:
    import dataclasses

    from chatbot.calibration import Calibration
    from chatbot.config import Config
    from chatbot.evaluate import document_id, held_out_filter, in_fraction
    from chatbot.pipeline import Pipeline
    from ingest.beir import ingest_corpus, load_beir
    from ingest.run import ChunkingSettings

    config = dataclasses.replace(Config(), db_uri=db_uri)
    chunking = ChunkingSettings(config.chunk_max_tokens, config.chunk_overlap_tokens, config.tokenizer_encoding)
    pools = {}
    for name in ("squad2", "scifact"):
        dataset = load_beir(eval_dir / name)
        # Retrieval only: no reranker is loaded and no calibration is read.
        pipeline = Pipeline.from_config(dataclasses.replace(config, table=f"eval_{name}"),
                                        calibration=Calibration(floor=0.5))
        ingest_corpus(dataset.corpus_path, pipeline.store, pipeline.embedder, chunking)  # no-op when stored
        rows = []
        held = held_out_filter(dataset.name, dataset.queries, fraction)
        for q in dataset.queries:
            if not held(q):
                continue
            pool = pipeline.retriever.retrieve(q.text, pipeline.embedder.embed_query(q.text)).pool
            passage = min(q.relevant) if q.relevant else q.written_from
            rows.append({"question": q.text, "answerable": q.answerable,
                         "article": passage.rsplit("-", 1)[0] if passage else q.id,
                         "report_half": not in_fraction(f"tune:{q.id}", 0.5),
                         "pool": [c.chunk.context_text for c in pool],
                         "relevant": [q.relevant.get(document_id(c.chunk.doc_path), 0) > 0 for c in pool]})
        pools[name] = rows
    return pools


def ranking(order: list[str], grades: dict[str, float]) -> tuple[float, float]:
    return metrics.ndcg_at(order, grades, 10), metrics.hit_at(order, grades, 5)


def within_article_auroc(tops: list[float], rows: list[dict]) -> float:
    values, weights = [], []
    for article in sorted({r["article"] for r in rows}):
        pos = [t for t, r in zip(tops, rows) if r["article"] == article and r["answerable"]]
        neg = [t for t, r in zip(tops, rows) if r["article"] == article and not r["answerable"]]
        if pos and neg:
            values.append(metrics.auroc(pos, neg))
            weights.append(len(pos) + len(neg))
    return float(np.average(values, weights=weights))


def measure(setting: str, pools: dict[str, list[dict]]) -> dict:
    from chatbot.config import Config
    from chatbot.rerank import Reranker
    from chatbot.train import pool_rankings

    defaults = Config()
    name, precision, depth = (setting.split(":") + ["", ""])[:3]
    precision = precision or defaults.reranker_precision
    depth = int(depth or defaults.rerank_depth)
    reranker = Reranker(name, max_length=defaults.reranker_max_length, precision=precision, cache_pairs=0)
    result = {"reranker": name, "precision": precision, "depth": depth, "datasets": {}}
    started = time.perf_counter()
    for dataset, rows in pools.items():
        tops, semantic_tops, fused, reranked = [], [], [], []
        for r in rows:
            scores = reranker.scores(r["question"], r["pool"][:depth])
            logits = scores[:, 0]
            tops.append(float(logits.max()) if len(logits) else float("-inf"))
            # the refusal signal a calibration on the semantic part reads (NaN: the model has none)
            semantic_tops.append(float(scores[:, 1].max()) if len(logits) else float("-inf"))
            if r["answerable"] and any(r["relevant"]) and r["report_half"]:
                below = -1e9 - np.arange(len(r["pool"]) - len(logits))  # past the depth: fused order, below
                ids, order, grades = pool_rankings(np.concatenate([logits, below]), r["relevant"])
                reranked.append(ranking(order, grades))
                fused.append(ranking(ids, grades))
        out = {"report_half_questions": len(reranked),
               "fused": dict(zip(("ndcg@10", "hit@5"), np.mean(fused, 0).round(4).tolist())),
               "reranked": dict(zip(("ndcg@10", "hit@5"), np.mean(reranked, 0).round(4).tolist()))}
        pos = [t for t, r in zip(tops, rows) if r["answerable"]]
        neg = [t for t, r in zip(tops, rows) if not r["answerable"]]
        if neg:
            out.update(answerable=len(pos), unanswerable=len(neg), auroc_top_logit=round(metrics.auroc(pos, neg), 4),
                       auroc_within_article=round(within_article_auroc(tops, rows), 4))
            if not np.isnan(semantic_tops).any():
                pos = [t for t, r in zip(semantic_tops, rows) if r["answerable"]]
                neg = [t for t, r in zip(semantic_tops, rows) if not r["answerable"]]
                out.update(auroc_top_semantic_logit=round(metrics.auroc(pos, neg), 4),
                           auroc_semantic_within_article=round(within_article_auroc(semantic_tops, rows), 4))
        result["datasets"][dataset] = out
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def markdown(results: list[dict]) -> str:
    lines = ["| reranker | precision | depth | SQuAD nDCG@10 / hit@5 | SciFact nDCG@10 / hit@5 | both, nDCG@10 "
             "| SQuAD AUROC top logit (within article) | top semantic logit (within article) |",
             "|---|---|---|---|---|---|---|---|"]
    first = results[0]["datasets"]
    fused = {d: first[d]["fused"] for d in first}
    n = {d: first[d]["report_half_questions"] for d in first}

    def both(per):
        return sum(per[d]["ndcg@10"] * n[d] for d in per) / sum(n.values())

    lines.append(f"| fused order (RRF) | - | - | {fused['squad2']['ndcg@10']:.3f} / {fused['squad2']['hit@5']:.3f} "
                 f"| {fused['scifact']['ndcg@10']:.3f} / {fused['scifact']['hit@5']:.3f} | {both(fused):.3f} | - | - |")
    for r in results:
        d = r["datasets"]
        per = {k: d[k]["reranked"] for k in d}
        lines.append(f"| {r['reranker']} | {r['precision']} | {r['depth']} "
                     f"| {per['squad2']['ndcg@10']:.3f} / {per['squad2']['hit@5']:.3f} "
                     f"| {per['scifact']['ndcg@10']:.3f} / {per['scifact']['hit@5']:.3f} | {both(per):.3f} "
                     f"| {d['squad2']['auroc_top_logit']:.3f} ({d['squad2']['auroc_within_article']:.3f}) "
                     + (f"| {d['squad2']['auroc_top_semantic_logit']:.3f} ({d['squad2']['auroc_semantic_within_article']:.3f}) |"
                        if "auroc_top_semantic_logit" in d["squad2"] else "| - |"))
    return (f"Report half of the held-out split: {n['squad2']} SQuAD 2.0 and {n['scifact']} SciFact answerable "
            f"questions; AUROC over all {first['squad2']['answerable']} answerable and "
            f"{first['squad2']['unanswerable']} unanswerable held-out SQuAD questions.\n\n" + "\n".join(lines) + "\n")


def main() -> None:
    from chatbot.config import Config

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("settings", nargs="+", help="RERANKER[:PRECISION[:DEPTH]]")
    parser.add_argument("--eval-dir", type=Path, default=ROOT.parent / "shared" / "eval")
    parser.add_argument("--db", default=Config().db_uri, help="LanceDB holding the eval_squad2 / eval_scifact tables")
    parser.add_argument("--held-out-fraction", type=float, default=0.2)
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "grounded-chatbot-bench")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "heldout_quality")
    args = parser.parse_args()

    cache = args.cache_dir / f"heldout_pools_{args.held_out_fraction}.json"
    if cache.exists():
        pools = json.loads(cache.read_text())
    else:
        pools = build_pools(args.eval_dir, args.db, args.held_out_fraction)
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(pools))
    results = []
    for setting in args.settings:
        results.append(measure(setting, pools))
        print(json.dumps(results[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"held_out_fraction": args.held_out_fraction,
                                                         "results": results}, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
