"""Would word-level features, or the spread of the read chunks' logits, help P(answerable)? A side-by-side
of question-level feature sets, fitted the way `chatbot calibrate` fits P(answerable) (logistic regression,
l2 1e-2), on one labelled run and judged on held-out articles of it and on a second run over other articles.

    # 1. run the pipeline over labelled questions (same arguments as `chatbot calibrate`), keep what the
    #    features need: every read chunk's text, and the knowledge base's word document frequencies
    python bench/answerability_features.py collect /tmp/fit.pkl -- --db EVALDB calibrate \
        ../shared/eval/squad2-extra ../shared/eval/scifact --extra-unanswerable ../shared/eval/scifact \
        --extra-unanswerable ../shared/eval/squad2 --held-out-fraction 0.2 --leave-gold-out --keyword-queries --limit 700
    python bench/answerability_features.py collect /tmp/test.pkl -- --db EVALDB calibrate ../shared/eval/squad2 \
        --extra-unanswerable ../shared/eval/scifact --held-out-fraction 0.2 --leave-gold-out --keyword-queries --limit 800
    # 2. fit on the first run's other articles, judge on its held-out articles and on the second run
    python bench/answerability_features.py compare /tmp/fit.pkl /tmp/test.pkl   # writes results/answerability_features.md

The pickles hold chunk texts of the eval sets: keep them outside the repository.
"""

from __future__ import annotations

import collections
import hashlib
import math
import pickle
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# name -> what it reads; the first two are what the shipped calibration chooses between
FEATURE_SETS = {
    "logit+cosine (shipped)": ["logit", "cosine"],
    "semantic+cosine": ["semantic", "cosine"],
    "logit+cosine+reader margin": ["logit", "cosine", "margin"],
    "+ top chunk's coverage": ["logit", "cosine", "coverage_top"],
    "+ top chunk's idf coverage": ["logit", "cosine", "idf_coverage_top"],
    "+ best chunk's idf coverage": ["logit", "cosine", "idf_coverage_best"],
    "+ top 3 chunks' idf coverage": ["logit", "cosine", "idf_coverage_top3"],
    "+ idf share absent from the KB": ["logit", "cosine", "absent_from_kb"],
    "+ rarest word missing from top": ["logit", "cosine", "rarest_missing"],
    "+ idf coverage top + absent": ["logit", "cosine", "idf_coverage_top", "absent_from_kb"],
    "+ best minus second-best logit": ["logit", "cosine", "logit_gap"],
    "+ mean logit of the read chunks": ["logit", "cosine", "logit_mean"],
    "+ entropy of the softmax over read logits": ["logit", "cosine", "logit_entropy"],
    "logit+cosine+closest sentence (located)": ["logit", "cosine", "sentence"],
    "located + logit gap": ["logit", "cosine", "sentence", "logit_gap"],
    "located + mean logit": ["logit", "cosine", "sentence", "logit_mean"],
    "located + entropy": ["logit", "cosine", "sentence", "logit_entropy"],
    "idf coverage of the top chunk alone": ["idf_coverage_top"],
    "idf share absent from the KB alone": ["absent_from_kb"],
}


def collect(out: str, argv: list[str]) -> None:
    from chatbot import cli
    from chatbot.pipeline import Pipeline
    from chatbot.retrieve import content_terms

    args = cli.build_parser().parse_args(argv)
    read: dict[tuple, list[str]] = {}
    evidence = Pipeline.evidence

    def keeping_texts(self, question, query_vector=None, without_docs=frozenset(), viewer=None):
        ev = evidence(self, question, query_vector, without_docs, viewer)
        read[(self.config.table, question, without_docs)] = [f"{c.chunk.title} {c.chunk.text}" for c in ev.gate.scored]
        return ev

    Pipeline.evidence = keeping_texts  # a bench-only hook: the product's run_queries, unchanged, underneath
    pipeline, outcomes = cli._eval_outcomes(args, cli._config(args), fitting=True)
    frequencies = {}
    for table in {key[0] for key in read}:
        chunks = pipeline.with_table(table).retriever.index().snapshot.chunks
        df = collections.Counter(t for c in chunks for t in content_terms(c.text))
        frequencies[table] = (len(chunks), df)
    with open(out, "wb") as f:
        pickle.dump({"outcomes": outcomes, "read": read, "frequencies": frequencies}, f)
    print(f"{len(outcomes)} questions -> {out}")


def rows_of(path: str) -> list[dict]:
    from chatbot.evaluate import DOC_PREFIX, unanswerable_kind
    from chatbot.retrieve import content_terms

    with open(path, "rb") as f:
        run = pickle.load(f)
    rows = []
    for o in run["outcomes"]:
        if not o.pair_logits:
            continue
        table = "eval_" + re.sub(r"[^A-Za-z0-9_]", "_", o.dataset)
        texts = run["read"][(table, o.query.text, frozenset(DOC_PREFIX + d for d in o.query.left_out))]
        n, df = run["frequencies"][table]
        asked = content_terms(o.query.text)
        idf = {t: math.log((n + 1) / (df.get(t, 0) + 0.5)) for t in asked}
        total = sum(idf.values()) or 1.0
        terms = [content_terms(t) for t in texts]
        order = np.argsort(-np.asarray(o.pair_logits))
        top = terms[order[0]]
        # How the read chunks' logits spread: one chunk that stands out, or many alike (on topic, none answering)
        logits = np.sort(np.asarray(o.pair_logits, dtype=np.float64))[::-1]
        softmax = np.exp(logits - logits[0]) / np.exp(logits - logits[0]).sum()
        located = [s for s in o.pair_sentence_cosines if s is not None]

        def idf_coverage(have, asked=asked, idf=idf, total=total):
            return sum(idf[t] for t in asked if t in have) / total

        def best(values):
            return float(max(values)) if values and None not in values else 0.0

        rows.append({"answerable": int(o.query.answerable), "source": o.query.source or o.query.id,
                     "squad": "squad" in o.dataset,
                     "kind": "answerable" if o.query.answerable else unanswerable_kind(o.query),
                     "f": {"logit": float(max(o.pair_logits)), "semantic": best(o.pair_semantic_logits),
                           "cosine": float(max(o.pair_cosines)),
                           # the reader reads only the best-ranked pairs: the best margin among those it read
                           "margin": max([m for m in o.pair_answer_margins if m is not None] or [0.0]),
                           "coverage_top": len(asked & top) / len(asked) if asked else 0.0,
                           "idf_coverage_top": idf_coverage(top),
                           "idf_coverage_best": max(idf_coverage(t) for t in terms),
                           "idf_coverage_top3": idf_coverage(set().union(*(terms[i] for i in order[:3]))),
                           "absent_from_kb": sum(idf[t] for t in asked if not df.get(t)) / total,
                           "rarest_missing": max([idf[t] for t in asked if t not in top] or [0.0]) / math.log(n + 1),
                           "logit_gap": float(logits[0] - logits[1]) if len(logits) > 1 else 0.0,
                           "logit_mean": float(logits.mean()),
                           "logit_entropy": float(-(softmax * np.log(softmax + 1e-12)).sum()),
                           "sentence": max(located) if located else 0.0}})
    return rows


def judged(p: np.ndarray, rows: list[dict]) -> dict:
    from chatbot.metrics import auroc

    y = np.array([r["answerable"] for r in rows]) == 1
    kind = np.array([r["kind"] for r in rows])
    squad = np.array([r["squad"] for r in rows])
    out = {"all": auroc(p[y], p[~y])}
    for k in ("in_domain", "gold_left_out", "out_of_domain"):
        out[k] = auroc(p[y & squad], p[(kind == k) & squad]) if k != "out_of_domain" else auroc(p[y], p[kind == k])
    floor = np.quantile(p[y & squad], 0.05)  # refuse at most 5% of answerable SQuAD questions
    out["squad_recall_at_5pct"] = float(np.mean(p[~y & squad & (kind != "out_of_domain")] < floor))
    return out


def compare(fit_path: str, test_paths: list[str]) -> None:
    from chatbot.calibrate import fit_logistic

    fit = rows_of(fit_path)
    tests = {Path(p).name: rows_of(p) for p in test_paths}
    held = np.array([int(hashlib.sha1(r["source"].encode()).hexdigest(), 16) % 1000 < 300 for r in fit])
    lines = ["# Question-level features for P(answerable), side by side (`bench/answerability_features.py`)", "",
             (f"Fitted on {int((~held).sum())} questions of `{Path(fit_path).name}` (70% of its articles); "
              "AUROC answerable vs each kind of unanswerable (SQuAD rows only for in-domain and gold-left-out), "
              "and the share of SQuAD's unanswerable questions refused where 5% of its answerable ones are."), "",
             ("| features | " + " | ".join(f"{name}: all / in-domain / gold-out / out-of-domain / recall"
                                           for name in ["held-out articles", *tests]) + " |"),
             "|---|" + "---|" * (1 + len(tests))]
    for label, names in FEATURE_SETS.items():
        def x(rows, names=names):
            return np.array([[r["f"][n] for n in names] for r in rows])
        y = np.array([r["answerable"] for r in fit], dtype=np.float64)
        *w, b = fit_logistic(x(fit)[~held], y[~held], l2=1e-2)
        cells = []
        for rows in [[r for r, h in zip(fit, held) if h], *tests.values()]:
            m = judged(x(rows) @ np.array(w) + b, rows)
            cells.append(" / ".join(f"{m[k]:.3f}" for k in ("all", "in_domain", "gold_left_out", "out_of_domain",
                                                             "squad_recall_at_5pct")))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    (ROOT / "bench" / "results" / "answerability_features.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "collect" and sys.argv[3] == "--":
        collect(sys.argv[2], sys.argv[4:])
    elif len(sys.argv) >= 4 and sys.argv[1] == "compare":
        compare(sys.argv[2], sys.argv[3:])
    else:
        sys.exit(__doc__)
