"""Run labelled questions through the real pipeline and measure every stage.

The lift of each stage is visible side by side: vector-only, BM25-only, fused and
reranked rankings (deduplicated to documents, as labels are per document), then the
refusal signal (AUROC of the best `p_relevant`), calibration (ECE, reliability) and
per-stage latency.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from chatbot import metrics
from chatbot.calibration import Calibration
from chatbot.pipeline import Pipeline

DOC_PREFIX = "beir:"
STAGES = ("vector", "bm25", "fused", "reranked")
HIT_KS = (1, 5, 10, 20)


@dataclass(frozen=True)
class LabelledQuery:
    id: str
    text: str
    relevant: dict[str, float] = field(default_factory=dict, hash=False)  # document id -> grade
    answerable: bool = True
    # An unanswerable question's own passage: the one it was written against, which does not answer it
    # (SQuAD 2.0's `source_paragraph` of an `is_impossible` question). Empty when the data does not say.
    written_from: str = ""


@dataclass(frozen=True)
class QueryOutcome:
    query: LabelledQuery
    rankings: dict[str, list[str]]  # stage -> document ids, best first
    pool_size: int
    top_logit: float
    top_p: float
    top_bm25: float  # baselines for the refusal signal
    top_cosine: float
    pair_logits: tuple[float, ...]  # every reranked chunk's logit...
    pair_labels: tuple[int, ...]  # ...and whether its document is relevant
    timings_ms: dict[str, float]
    pair_cosines: tuple[float, ...]  # every reranked chunk's cosine similarity to the question
    pair_coverages: tuple[float, ...]  # every reranked chunk's term coverage of the question
    pair_semantic_logits: tuple[float | None, ...] = ()  # every reranked chunk's semantic logit, if the model has one


def split_key(dataset_name: str, query: LabelledQuery) -> str:
    """What decides a question's side of a train/held-out split: its passage, so that questions about
    one passage never straddle the split (unanswerable ones included: an unanswerable question trained
    on must not share its passage with a held-out one)."""
    if query.relevant:
        return f"{dataset_name}:{min(query.relevant)}"
    return f"{dataset_name}:{query.written_from or query.id}"


def in_fraction(key: str, fraction: float) -> bool:
    """A fixed, hash-decided `fraction` of all keys: the same on every machine and every run."""
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction


def document_id(doc_path: str) -> str:
    return doc_path[len(DOC_PREFIX):] if doc_path.startswith(DOC_PREFIX) else doc_path


def _dedupe(doc_ids: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(doc_ids))


def run_queries(pipeline: Pipeline, queries: Sequence[LabelledQuery], batch_size: int = 64,
                on_done: Callable[[int], None] | None = None) -> list[QueryOutcome]:
    """Every query through retrieve -> rerank -> gate. Query embeddings are computed in batches."""
    chunk_doc = {c.id: document_id(c.doc_path) for c in pipeline.retriever.index().snapshot.chunks}
    outcomes: list[QueryOutcome] = []
    batches = [queries[i:i + batch_size] for i in range(0, len(queries), batch_size)]
    for batch in batches:
        t = time.perf_counter()
        vectors = pipeline.embedder.embed_documents([q.text for q in batch])
        embed_ms = (time.perf_counter() - t) * 1000.0 / max(1, len(batch))
        for q, vec in zip(batch, vectors):
            ev = pipeline.evidence(q.text, vec)
            timings = dict(ev.timings_ms, embed_query_ms=embed_ms)
            ranked = ev.gate.ranked
            rankings = {
                "vector": _dedupe(chunk_doc[c] for c in ev.retrieval.vector_ids),
                "bm25": _dedupe(chunk_doc[c] for c in ev.retrieval.bm25_ids),
                "fused": _dedupe(document_id(c.chunk.doc_path) for c in ev.retrieval.pool),
                "reranked": _dedupe(document_id(c.chunk.doc_path) for c in ranked),
            }
            read = ev.gate.scored  # the pairs the cross-encoder scored
            labels = tuple(int(q.answerable and q.relevant.get(document_id(c.chunk.doc_path), 0) > 0) for c in read)
            outcomes.append(QueryOutcome(
                query=q, rankings=rankings, pool_size=len(ranked),
                top_logit=ranked[0].rerank_logit if ranked else float("-inf"),
                top_p=ev.gate.best_p_relevant or 0.0,
                top_bm25=max((c.bm25_score for c in ranked), default=0.0),
                top_cosine=max((c.cosine_similarity for c in ranked), default=-1.0),
                pair_logits=tuple(c.rerank_logit for c in read), pair_labels=labels, timings_ms=timings,
                pair_cosines=tuple(c.cosine_similarity for c in read),
                pair_coverages=tuple(c.term_coverage for c in read),
                pair_semantic_logits=tuple(c.semantic_logit for c in read),
            ))
            if on_done is not None:
                on_done(1)
    return outcomes


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def ranking_report(outcomes: Sequence[QueryOutcome]) -> dict:
    answerable = [o for o in outcomes if o.query.answerable]
    report = {}
    for stage in STAGES:
        per = {f"hit@{k}": [] for k in HIT_KS}
        per.update({"mrr@10": [], "ndcg@10": [], "recall@pool": []})
        for o in answerable:
            ranking, rel = o.rankings[stage], o.query.relevant
            for k in HIT_KS:
                per[f"hit@{k}"].append(metrics.hit_at(ranking, rel, k))
            per["mrr@10"].append(metrics.mrr_at(ranking, rel, 10))
            per["ndcg@10"].append(metrics.ndcg_at(ranking, rel, 10))
            per["recall@pool"].append(metrics.recall_at(ranking, rel, len(ranking)))
        report[stage] = {name: _mean(vals) for name, vals in per.items()}
    report["n_answerable"] = len(answerable)
    return report


EXTRA_PREFIX = "extra:"  # queries of another set asked of this corpus (--extra-unanswerable)


def refusal_report(outcomes: Sequence[QueryOutcome], floor: float) -> dict:
    report = _refusal_numbers(outcomes, floor)
    # The two kinds of "no answer here" differ in difficulty: a question written to look answerable
    # from this corpus (SQuAD 2.0's) vs a question from another domain entirely. Report each.
    by_kind = {}
    for kind, is_kind in (("in_domain", lambda q: not q.id.startswith(EXTRA_PREFIX)),
                          ("out_of_domain", lambda q: q.id.startswith(EXTRA_PREFIX))):
        subset = [o for o in outcomes if o.query.answerable or is_kind(o.query)]
        if any(not o.query.answerable for o in subset):
            numbers = _refusal_numbers(subset, floor)
            by_kind[kind] = {k: numbers[k] for k in ("n_unanswerable", "auroc_top_p_relevant", "auroc_top_bm25",
                                                     "auroc_top_cosine", "at_floor")}
    report["by_unanswerable_kind"] = by_kind
    return report


def _refusal_numbers(outcomes: Sequence[QueryOutcome], floor: float) -> dict:
    top_p = [o.top_p for o in outcomes]
    answerable = [o.query.answerable for o in outcomes]
    def separation(scores: list[float]) -> float | None:
        pos = [p for p, a in zip(scores, answerable) if a]
        neg = [p for p, a in zip(scores, answerable) if not a]
        return metrics.auroc(pos, neg) if pos and neg else None

    curve = metrics.risk_coverage(top_p, answerable)
    step = max(1, len(curve) // 50)
    return {
        "n_answerable": sum(answerable), "n_unanswerable": len(answerable) - sum(answerable),
        "auroc_top_p_relevant": separation(top_p),
        "auroc_top_bm25": separation([o.top_bm25 for o in outcomes]),
        "auroc_top_cosine": separation([o.top_cosine for o in outcomes]),
        "at_floor": metrics.refusal_at_floor(top_p, answerable, floor),
        "risk_coverage": curve[::step] + ([curve[-1]] if curve and (len(curve) - 1) % step else []),
    }


def calibration_report(outcomes: Sequence[QueryOutcome], calibration: Calibration) -> dict:
    logits = np.array([x for o in outcomes for x in o.pair_logits], dtype=np.float64)
    cosines = np.array([x for o in outcomes for x in o.pair_cosines], dtype=np.float64)
    coverages = np.array([x for o in outcomes for x in o.pair_coverages], dtype=np.float64)
    labels = np.array([y for o in outcomes for y in o.pair_labels], dtype=np.int64)
    semantic = [x for o in outcomes for x in o.pair_semantic_logits]
    p = calibration.p_relevant(logits, cosine_similarity=cosines, term_coverage=coverages, semantic_logit=semantic)
    rel = metrics.reliability(p, labels, n_bins=10)
    rel["n_pairs"] = int(len(labels))
    rel["positive_rate"] = float(labels.mean()) if len(labels) else None
    return rel


def latency_report(outcomes: Sequence[QueryOutcome]) -> dict:
    stages = sorted({k for o in outcomes for k in o.timings_ms})
    out = {}
    for s in stages:
        v = np.array([o.timings_ms[s] for o in outcomes if s in o.timings_ms])
        out[s] = {"median": float(np.median(v)), "p95": float(np.percentile(v, 95))}
    total = np.array([sum(o.timings_ms.values()) for o in outcomes])
    out["total_ms"] = {"median": float(np.median(total)), "p95": float(np.percentile(total, 95))} if len(total) else {}
    return out


def full_report(outcomes: Sequence[QueryOutcome], pipeline: Pipeline) -> dict:
    return {
        "n_queries": len(outcomes),
        "ranking": ranking_report(outcomes),
        "refusal": refusal_report(outcomes, pipeline.calibration.floor),
        "calibration": calibration_report(outcomes, pipeline.calibration),
        "latency_ms": latency_report(outcomes),
        "floor": pipeline.calibration.floor,
        "fingerprints": {"embedder": pipeline.embedder.fingerprint, "reranker": pipeline.reranker.fingerprint},
    }


def summary_table(report: dict) -> str:
    r = report["ranking"]
    cols = [f"hit@{k}" for k in HIT_KS] + ["mrr@10", "ndcg@10", "recall@pool"]
    lines = [f"{'stage':<10}" + "".join(f"{c:>12}" for c in cols)]
    for stage in STAGES:
        lines.append(f"{stage:<10}" + "".join(
            f"{r[stage][c]:>12.3f}" if r[stage][c] is not None else f"{'-':>12}" for c in cols))
    ref = report["refusal"]
    at = ref["at_floor"]

    def fmt(x):
        return "n/a" if x is None else f"{x:.3f}"

    lines.append("")
    lines.append(f"answerable {ref['n_answerable']}, unanswerable {ref['n_unanswerable']}; AUROC of the top score: "
                 f"p_relevant {fmt(ref['auroc_top_p_relevant'])}, BM25 {fmt(ref['auroc_top_bm25'])}, "
                 f"cosine {fmt(ref['auroc_top_cosine'])}")
    lines.append(f"at floor {report['floor']:.3f}: refusal precision {at['refusal_precision']:.3f}, "
                 f"refusal recall {at['refusal_recall']:.3f}, false refusals {at['false_refusal_rate']:.3f}, "
                 f"coverage {at['coverage']:.3f}")
    for kind, numbers in ref.get("by_unanswerable_kind", {}).items():
        lines.append(f"  {kind.replace('_', '-')} unanswerable ({numbers['n_unanswerable']}): AUROC p_relevant "
                     f"{fmt(numbers['auroc_top_p_relevant'])}, BM25 {fmt(numbers['auroc_top_bm25'])}; at the floor "
                     f"refusal precision {numbers['at_floor']['refusal_precision']:.3f}, "
                     f"recall {numbers['at_floor']['refusal_recall']:.3f}")
    lines.append(f"calibration: ECE {report['calibration']['ece']:.4f} over {report['calibration']['n_pairs']} pairs")
    lat = report["latency_ms"]
    lines.append("latency ms (median / p95): " + ", ".join(
        f"{k.replace('_ms', '')} {v['median']:.0f}/{v['p95']:.0f}" for k, v in lat.items() if v))
    return "\n".join(lines)


def write_plots(report: dict, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    bins = [b for b in report["calibration"]["bins"] if b["count"]]
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o-", label="p_relevant")
    ax.set(xlabel="mean p_relevant in bin", ylabel="fraction relevant",
           title=f"Reliability (ECE {report['calibration']['ece']:.3f})", xlim=(0, 1), ylim=(0, 1))
    ax.legend()
    fig.tight_layout()
    paths.append(out_dir / "reliability.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    curve = report["refusal"]["risk_coverage"]
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([c["coverage"] for c in curve], [c["risk"] for c in curve])
    at = report["refusal"]["at_floor"]
    ax.axvline(at["coverage"], color="red", linestyle=":", label=f"floor {report['floor']:.2f}")
    ax.set(xlabel="coverage (share of questions answered)", ylabel="risk (answered but unanswerable)",
           title="Risk-coverage", xlim=(0, 1), ylim=(0, 1))
    ax.legend()
    fig.tight_layout()
    paths.append(out_dir / "risk_coverage.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
