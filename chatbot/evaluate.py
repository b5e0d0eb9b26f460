"""Run labelled questions through the real pipeline and measure every stage.

The lift of each stage is visible side by side: vector-only, BM25-only, fused and
reranked rankings (deduplicated to documents, as labels are per document), then the
refusal signal (AUROC of the best `p_relevant`), calibration (ECE, reliability) and
per-stage latency.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from chatbot import metrics
from chatbot.calibration import Calibration
from chatbot.errors import ChatbotError
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
    # The article (or other source) its passage comes from: what a held-out split keeps whole. Empty:
    # the passage is its own source.
    source: str = ""
    answers: tuple[str, ...] = ()  # gold answer texts, where the set has them (SQuAD); empty otherwise
    # Documents taken out of the pool before reranking: an answerable question asked without its gold
    # passages (leave gold out) is on topic and unanswered, in any labelled set.
    left_out: frozenset[str] = field(default_factory=frozenset, hash=False)


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
    pair_answer_margins: tuple[float | None, ...] = ()  # every reranked chunk's reader margin, if the model has a reader
    pair_sentence_cosines: tuple[float | None, ...] = ()  # the closest sentence's cosine (best-ranked chunks only)
    p_answerable: float | None = None  # when the calibration judges answerability
    refused: bool = False  # the product's decision
    # the reader's best span (highest margin, shown or not) among the evidence (or the first read chunks, if refused)
    predicted_span: str | None = None
    predicted_span_margin: float | None = None
    shown_lead: str = ""  # the extractive answer's first sentence, citations removed ("" when refused)
    dataset: str = ""  # the set it came from (the corpus it was asked of)


def split_key(dataset_name: str, query: LabelledQuery) -> str:
    """What decides a question's side of a train/held-out split: the article (source) of its passage,
    so that questions about one article never straddle the split. A split by passage leaks: a model
    that trained on an article's other paragraphs learns the article, not the skill (on SQuAD 2.0 the
    shipped reranker's answerability AUROC fell from 0.95 to 0.64 on articles it never saw)."""
    if query.source:
        return f"{dataset_name}:{query.source}"
    if query.relevant:
        return f"{dataset_name}:{min(query.relevant)}"
    return f"{dataset_name}:{query.written_from or query.id}"


def _key_hash(key: str) -> float:
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def in_fraction(key: str, fraction: float) -> bool:
    """A fixed, hash-decided `fraction` of all keys: the same on every machine and every run."""
    return _key_hash(key) < fraction


def held_out_keys(keys, fraction: float) -> frozenset[str]:
    """The held-out part of a set's split keys: those `in_fraction`, topped up with the next keys in
    hash order to at least round(fraction * n) and one. A set of 8 articles would otherwise often
    hold out none (SQuAD's 8 at 0.2 do), and a held-out number needs held-out articles."""
    keys = sorted(set(keys), key=_key_hash)
    if fraction <= 0 or not keys:
        return frozenset()
    chosen = {k for k in keys if in_fraction(k, fraction)}
    want = min(len(keys), max(1, round(fraction * len(keys))))
    for k in keys:
        if len(chosen) >= want:
            break
        chosen.add(k)
    return frozenset(chosen)


def held_out_filter(dataset_name: str, queries, fraction: float):
    """A predicate: is this query of `dataset_name` on the held-out side of the split at `fraction`?"""
    held = held_out_keys((split_key(dataset_name, q) for q in queries), fraction)
    return lambda q: split_key(dataset_name, q) in held


def document_id(doc_path: str) -> str:
    return doc_path[len(DOC_PREFIX):] if doc_path.startswith(DOC_PREFIX) else doc_path


def _dedupe(doc_ids: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(doc_ids))


EXTRA_PREFIX = "extra:"  # queries of another set asked of this corpus (--extra-unanswerable)
GOLD_OUT_PREFIX = "gold-out:"  # an answerable query asked with its gold passages left out


def leave_gold_out(queries: Sequence[LabelledQuery]) -> list[LabelledQuery]:
    """Each answerable query again, as an unanswerable one whose relevant documents leave the pool."""
    return [LabelledQuery(f"{GOLD_OUT_PREFIX}{q.id}", q.text, {}, answerable=False, source=q.source,
                          left_out=frozenset(q.relevant)) for q in queries if q.answerable and q.relevant]


KEYWORD_PREFIX = "keywords:"  # a query asked as keywords (its content words), the way search boxes are used


def as_keywords(queries: Sequence[LabelledQuery]) -> list[LabelledQuery]:
    """Each query again as its content words in their order ("hotel cap night Rotterdam"): the floor must
    not refuse a search-box query whose answer is there, nor answer one whose answer is not."""
    import dataclasses

    from chatbot.retrieve import STOP_WORDS

    out = []
    for q in queries:
        words = [w for w in re.findall(r"[\w'’-]+", q.text) if w.lower() not in STOP_WORDS]
        if words and " ".join(words) != q.text:
            out.append(dataclasses.replace(q, id=f"{KEYWORD_PREFIX}{q.id}", text=" ".join(words)))
    return out


def unanswerable_kind(query: LabelledQuery) -> str:
    qid = query.id.removeprefix(KEYWORD_PREFIX)
    if qid.startswith(EXTRA_PREFIX):
        return "out_of_domain"
    if qid.startswith(GOLD_OUT_PREFIX):
        return "gold_left_out"
    return "in_domain"


def run_queries(pipeline: Pipeline, queries: Sequence[LabelledQuery], batch_size: int = 64,
                on_done: Callable[[int], None] | None = None, answers: bool = False) -> list[QueryOutcome]:
    """Every query through retrieve -> rerank -> gate; with `answers`, also the extractive answer of
    each answered query with gold answer texts (what a user would be shown first). Query embeddings
    are computed in batches."""
    from chatbot.answer import extractive_answer, lead_sentence

    chunk_doc = {c.id: document_id(c.doc_path) for c in pipeline.retriever.index().snapshot.chunks}
    outcomes: list[QueryOutcome] = []
    batches = [queries[i:i + batch_size] for i in range(0, len(queries), batch_size)]
    for batch in batches:
        t = time.perf_counter()
        vectors = pipeline.embedder.embed_documents([q.text for q in batch])
        embed_ms = (time.perf_counter() - t) * 1000.0 / max(1, len(batch))
        for q, vec in zip(batch, vectors):
            ev = pipeline.evidence(q.text, vec, frozenset(DOC_PREFIX + d for d in q.left_out))
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
            refused = not ev.gate.kept
            spoken = [c for c in (ev.gate.kept or read[:3]) if c.answer_text and c.answer_margin is not None]
            best = max(spoken, key=lambda c: c.answer_margin) if spoken else None
            lead = ""
            if answers and q.answers and not refused:
                lead = lead_sentence(extractive_answer(q.text, ev.gate.kept, pipeline.embedder.embed_sentences,
                                                       span_floor=ev.gate.answer_span_floor).text)
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
                pair_answer_margins=tuple(c.answer_margin for c in read),
                pair_sentence_cosines=tuple(c.sentence_cosine for c in read),
                p_answerable=ev.gate.p_answerable, refused=refused,
                predicted_span=best.answer_text if best else None,
                predicted_span_margin=best.answer_margin if best else None, shown_lead=lead,
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


def refusal_report(outcomes: Sequence[QueryOutcome], floor: float) -> dict:
    """Question-level refusal: how well the decision score (P(answerable) when the calibration judges
    answerability, else the best p_relevant) separates answerable from unanswerable questions, and
    what the product decided, overall and per kind of unanswerable question."""
    report = _refusal_numbers(outcomes, floor)
    # The kinds of "no answer here" differ in difficulty: a question written to look answerable from this
    # corpus (SQuAD 2.0's), an answerable one whose gold passages are gone (on topic, unanswered), and a
    # question from another domain entirely. Report each.
    by_kind = {}
    for kind in ("in_domain", "gold_left_out", "out_of_domain"):
        subset = [o for o in outcomes if o.query.answerable or unanswerable_kind(o.query) == kind]
        if any(not o.query.answerable for o in subset):
            numbers = _refusal_numbers(subset, floor)
            by_kind[kind] = {k: numbers[k] for k in ("n_unanswerable", "auroc_decision_score", "auroc_top_p_relevant",
                                                     "auroc_top_bm25", "auroc_top_cosine",
                                                     "auroc_top_sentence_cosine", "at_floor")}
    report["by_unanswerable_kind"] = by_kind
    keywords = [o for o in outcomes if o.query.id.startswith(KEYWORD_PREFIX)]
    if keywords:  # the same questions asked as keywords, apart
        numbers = _refusal_numbers(keywords, floor)
        report["keyword_queries"] = {k: numbers[k] for k in ("n_answerable", "n_unanswerable", "auroc_decision_score",
                                                             "at_floor")}
    return report


def decision_scores(outcomes: Sequence[QueryOutcome]) -> tuple[list[float], str]:
    """The score each question's refusal turned on, and its name."""
    if outcomes and all(o.p_answerable is not None for o in outcomes):
        return [o.p_answerable for o in outcomes], "p_answerable"
    return [o.top_p for o in outcomes], "best_p_relevant"


def _refusal_numbers(outcomes: Sequence[QueryOutcome], floor: float) -> dict:
    top_p = [o.top_p for o in outcomes]
    scores, score_name = decision_scores(outcomes)
    answerable = [o.query.answerable for o in outcomes]
    def separation(values: list[float]) -> float | None:
        pos = [p for p, a in zip(values, answerable) if a]
        neg = [p for p, a in zip(values, answerable) if not a]
        return metrics.auroc(pos, neg) if pos and neg else None

    located = [max((c for c in o.pair_sentence_cosines if c is not None), default=None) for o in outcomes]
    curve = metrics.risk_coverage(scores, answerable)
    step = max(1, len(curve) // 50)
    refused = np.array([o.refused for o in outcomes], dtype=bool)
    return {
        "n_answerable": sum(answerable), "n_unanswerable": len(answerable) - sum(answerable),
        "decision_score": score_name,
        "auroc_decision_score": separation(scores),
        "auroc_top_p_relevant": separation(top_p),
        "auroc_top_bm25": separation([o.top_bm25 for o in outcomes]),
        "auroc_top_cosine": separation([o.top_cosine for o in outcomes]),
        # the located stage's best closest-sentence cosine (None unless every question was located)
        "auroc_top_sentence_cosine": separation(located) if all(v is not None for v in located) else None,
        "at_floor": metrics.refusal_decisions(refused, answerable, floor),
        "risk_coverage": curve[::step] + ([curve[-1]] if curve and (len(curve) - 1) % step else []),
    }


def answerability_report(outcomes: Sequence[QueryOutcome]) -> dict | None:
    """How well P(answerable) is calibrated, question by question (None when it was not judged)."""
    judged = [o for o in outcomes if o.p_answerable is not None]
    if not judged:
        return None
    p = np.array([o.p_answerable for o in judged], dtype=np.float64)
    y = np.array([o.query.answerable for o in judged], dtype=np.float64)
    rel = metrics.reliability(p, y, n_bins=10)
    return {"n_questions": len(judged), "log_loss": metrics.log_loss(p, y), **rel}


def answer_report(outcomes: Sequence[QueryOutcome]) -> dict | None:
    """Span exact match / F1 of the reader's best span against the gold answers (every answerable
    question with answers, refused or not: the reader's quality), and how often what the user is shown
    first (the extractive answer's lead sentence, at most 30 words) holds a gold answer."""
    with_gold = [o for o in outcomes if o.query.answerable and o.query.answers]
    if not with_gold:
        return None
    em = [metrics.span_exact_match(o.predicted_span, o.query.answers) if o.predicted_span else 0.0 for o in with_gold]
    f1 = [metrics.span_f1(o.predicted_span, o.query.answers) if o.predicted_span else 0.0 for o in with_gold]
    answered = [o for o in with_gold if not o.refused]
    shown = [metrics.contains_answer(o.shown_lead, o.query.answers) for o in answered]
    return {"n_questions": len(with_gold), "span_exact_match": 100 * float(np.mean(em)),
            "span_f1": 100 * float(np.mean(f1)), "n_answered": len(answered),
            "lead_contains_answer_of_answered": float(np.mean(shown)) if shown else None,
            "lead_contains_answer_of_all": float(np.sum(shown)) / len(with_gold),
            "lead_words_mean": float(np.mean([len(o.shown_lead.split()) for o in answered])) if answered else None}


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
        "refusal": refusal_report(outcomes, pipeline.calibration.decision_floor),
        "answerability": answerability_report(outcomes),
        "answers": answer_report(outcomes),
        "calibration": calibration_report(outcomes, pipeline.calibration),
        "latency_ms": latency_report(outcomes),
        "floor": pipeline.calibration.decision_floor,
        "fingerprints": {"embedder": pipeline.embedder.fingerprint, "reranker": pipeline.reranker.fingerprint},
    }


# What `eval --baseline` compares: (name, path into report.json, higher is better, guarded). A guarded
# metric that moves the wrong way by more than the tolerance fails the comparison.
BASELINE_METRICS = (
    ("nDCG@10", ("ranking", "reranked", "ndcg@10"), True, True),
    ("hit@1", ("ranking", "reranked", "hit@1"), True, False),
    ("MRR@10", ("ranking", "reranked", "mrr@10"), True, False),
    ("refusal AUROC", ("refusal", "auroc_decision_score"), True, True),
    *((f"refusal AUROC, {kind.replace('_', ' ')}", ("refusal", "by_unanswerable_kind", kind, "auroc_decision_score"),
       True, True) for kind in ("in_domain", "gold_left_out", "out_of_domain")),
    ("refusal AUROC, as keywords", ("refusal", "keyword_queries", "auroc_decision_score"), True, True),
    ("false refusals at the floor", ("refusal", "at_floor", "false_refusal_rate"), False, True),
    ("refusal recall at the floor", ("refusal", "at_floor", "refusal_recall"), True, False),
    ("P(answerable) log loss", ("answerability", "log_loss"), False, False),
    ("span F1", ("answers", "span_f1"), True, False),
    ("first sentence holds an answer", ("answers", "lead_contains_answer_of_answered"), True, False),
)


class BaselineMismatch(ChatbotError):
    """The baseline report was measured on other questions, so its numbers do not compare."""


def _at(report: dict, path: tuple[str, ...]):
    for key in path:
        if not isinstance(report, dict) or report.get(key) is None:
            return None
        report = report[key]
    return report


def compare_with_baseline(report: dict, baseline: dict, tolerance: float) -> list[dict]:
    """Each BASELINE_METRICS number in both reports: its change, and whether it regressed (a guarded metric
    worse by more than `tolerance`, absolute). Raises BaselineMismatch when the questions differ."""
    for what, path in (("datasets", ("dataset",)), ("questions", ("n_queries",)),
                       ("answerable questions", ("refusal", "n_answerable")),
                       ("unanswerable questions", ("refusal", "n_unanswerable"))):
        now, then = _at(report, path), _at(baseline, path)
        if then is not None and now != then:
            raise BaselineMismatch(f"the baseline was measured on other {what} ({then}; now {now}): "
                                   "run eval with the baseline's arguments (datasets, --limit, --held-out-fraction, ...)")
    rows = []
    for name, path, higher_better, guarded in BASELINE_METRICS:
        now, then = _at(report, path), _at(baseline, path)
        if now is None or then is None:
            continue
        change = float(now) - float(then)
        worse = -change if higher_better else change
        rows.append({"metric": name, "baseline": float(then), "now": float(now), "change": change,
                     "guarded": guarded, "regressed": guarded and worse > tolerance})
    return rows


def baseline_table(rows: Sequence[dict], tolerance: float) -> str:
    lines = [f"{'against the baseline':<34}{'baseline':>10}{'now':>10}{'change':>10}"]
    for r in rows:
        mark = "  REGRESSED" if r["regressed"] else ("" if r["guarded"] else "  (not guarded)")
        lines.append(f"{r['metric']:<34}{r['baseline']:>10.4f}{r['now']:>10.4f}{r['change']:>+10.4f}{mark}")
    failed = [r["metric"] for r in rows if r["regressed"]]
    lines.append(f"tolerance {tolerance:g} (absolute): " + (f"regressed: {', '.join(failed)}" if failed
                                                          else "no guarded metric regressed"))
    return "\n".join(lines)


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
                 f"{ref['decision_score']} {fmt(ref['auroc_decision_score'])}, p_relevant "
                 f"{fmt(ref['auroc_top_p_relevant'])}, BM25 {fmt(ref['auroc_top_bm25'])}, "
                 f"cosine {fmt(ref['auroc_top_cosine'])}, closest sentence {fmt(ref.get('auroc_top_sentence_cosine'))}")
    lines.append(f"at floor {report['floor']:.3f} ({ref['decision_score']}): refusal precision "
                 f"{at['refusal_precision']:.3f}, refusal recall {at['refusal_recall']:.3f}, false refusals "
                 f"{at['false_refusal_rate']:.3f}, coverage {at['coverage']:.3f}")
    for kind, numbers in ref.get("by_unanswerable_kind", {}).items():
        lines.append(f"  {kind.replace('_', '-')} unanswerable ({numbers['n_unanswerable']}): AUROC "
                     f"{ref['decision_score']} {fmt(numbers['auroc_decision_score'])}, BM25 "
                     f"{fmt(numbers['auroc_top_bm25'])}, closest sentence {fmt(numbers.get('auroc_top_sentence_cosine'))}; "
                     f"at the floor refusal precision "
                     f"{numbers['at_floor']['refusal_precision']:.3f}, recall {numbers['at_floor']['refusal_recall']:.3f}")
    if ref.get("keyword_queries"):
        k = ref["keyword_queries"]
        lines.append(f"  as keywords ({k['n_answerable']} answerable, {k['n_unanswerable']} unanswerable): AUROC "
                     f"{fmt(k['auroc_decision_score'])}; false refusals {k['at_floor']['false_refusal_rate']:.3f}, "
                     f"refusal recall {k['at_floor']['refusal_recall']:.3f}")
    if report.get("answerability"):
        a = report["answerability"]
        lines.append(f"P(answerable) over {a['n_questions']} questions: log loss {a['log_loss']:.4f}, ECE {a['ece']:.4f}")
    if report.get("answers"):
        a = report["answers"]
        lines.append(f"reader on {a['n_questions']} answerable questions with gold answers: span EM {a['span_exact_match']:.1f}, "
                     f"F1 {a['span_f1']:.1f}; the answer's first sentence holds a gold answer for "
                     f"{fmt(a['lead_contains_answer_of_answered'])} of {a['n_answered']} answered "
                     f"({a['lead_contains_answer_of_all']:.3f} of all), mean {fmt(a['lead_words_mean'])} words")
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

    def reliability_plot(rel: dict, score: str, fraction: str, title: str, name: str) -> None:
        bins = [b for b in rel["bins"] if b["count"]]
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o-", label=score)
        ax.set(xlabel=f"mean {score} in bin", ylabel=fraction, title=f"{title} (ECE {rel['ece']:.3f})",
               xlim=(0, 1), ylim=(0, 1))
        ax.legend()
        fig.tight_layout()
        paths.append(out_dir / name)
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)

    reliability_plot(report["calibration"], "p_relevant", "fraction relevant", "Reliability", "reliability.png")
    if report.get("answerability"):
        reliability_plot(report["answerability"], "P(answerable)", "fraction answerable", "Question-level reliability",
                         "answerability_reliability.png")

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
