"""The extractive answer's first sentence: which signals pick the sentence that holds the answer?

For held-out answerable SQuAD questions the product answers (shipped models and calibration), every
sentence the extractive answer could lead with is kept with what could score it: the shipped rule's parts
(question cosine, p_relevant, the question's words, the figure bonus), the cross-encoder's own scores of
(question, sentence), and whether the sentence holds its chunk's reader span. Variants are then compared
on the share of questions whose lead (first 30 words) holds a gold answer, the sentence as it stands or, as
shipped, a long sentence shown from the clause that holds the question's words (`answer.lead_excerpt`).

    python bench/lead_sentence.py collect EVALDB eval_squad2_extra ../shared/eval/squad2-extra /tmp/lead_x.pkl
    python bench/lead_sentence.py collect EVALDB eval_squad2 ../shared/eval/squad2 /tmp/lead_2.pkl
    python bench/lead_sentence.py compare /tmp/lead_x.pkl /tmp/lead_2.pkl   # writes results/lead_sentence.md

EVALDB is a `chatbot eval` database that holds the sets' tables (run `chatbot --db EVALDB eval ...` once).
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def collect(db: str, table: str, folder: str, out: str) -> None:
    from chatbot import answer as A
    from chatbot.config import Config
    from chatbot.evaluate import held_out_filter
    from chatbot.metrics import contains_answer
    from chatbot.pipeline import Pipeline
    from ingest.beir import load_beir

    pipe = Pipeline.from_config(Config(db_uri=db, table=table, traces=False))
    data = load_beir(folder, split=None)
    keep = held_out_filter(data.name, data.queries, 0.2)  # eval's split: by article
    rows = []
    for q in (q for q in data.queries if keep(q) and q.answerable and q.answers):
        ev = pipe.evidence(q.text)
        kept = ev.gate.kept
        if not kept:
            continue
        shown = A.lead_sentence(A.extractive_answer(q.text, kept, pipe.embedder.embed_documents,
                                                    span_floor=ev.gate.answer_span_floor).text)
        sentences, judged = A.quotable_sentences(kept)  # never empty: kept chunks are its fallback
        shipped_score = A.sentence_scores(q.text, kept, sentences, judged, pipe.embedder.embed_documents)
        scores = pipe.reranker.scores(q.text, judged)
        idf = A.question_term_idf(q.text, judged)
        rows.append({
            "source": q.source, "shown_holds_answer": contains_answer(shown, q.answers), "shipped": shipped_score,
            "chunk": np.array([i for i, _ in sentences]),
            "sentence_logit": scores[:, 0], "sentence_semantic": scores[:, 1],
            "sentence_margin": np.nan_to_num(scores[:, 2] - scores[:, 3]),
            "holds_span": np.array([bool(kept[i].answer_text) and kept[i].answer_text in s for i, s in sentences]),
            "span_margin": np.array([kept[i].answer_margin if kept[i].answer_margin is not None else -99.0
                                     for i, _ in sentences]),
            "holds_answer": np.array([contains_answer(" ".join(s.split()[:30]), q.answers) for _, s in sentences]),
            # as the lead shows it: a long sentence from the clause that holds the question's words
            "holds_answer_cut": np.array([contains_answer(A.lead_excerpt(s, idf) or " ".join(s.split()[:30]), q.answers)
                                          for _, s in sentences]),
            # the same, a sentence that holds its chunk's reader span cut at the clause that holds the span
            "holds_answer_span_cut": np.array([contains_answer(
                A.lead_excerpt(s, idf, holding=kept[i].answer_text if kept[i].answer_text and kept[i].answer_text in s
                               else None) or " ".join(s.split()[:30]), q.answers) for i, s in sentences])})
    with open(out, "wb") as f:
        pickle.dump(rows, f)
    print(f"{len(rows)} answered questions -> {out}")


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def shipped(r):  # answer.sentence_scores, what extractive_answer ranks sentences by
    return r["shipped"]


def best_span_only(r):
    best = r["chunk"] == r["chunk"][np.argmax(r["span_margin"])]
    return r["holds_span"] & best


def span_hint(w):  # the shipped score, + w for the sentences that hold the best reader span
    return lambda r: shipped(r) + w * best_span_only(r)


VARIANTS = {
    "sentence score, lead from the first chunk": (shipped, True),
    "sentence score, lead from any kept chunk": (shipped, False),
    **{f"+ {w} x sigmoid(sentence rerank logit)": ((lambda r, w=w: shipped(r) + w * sigmoid(r["sentence_logit"])), True)
       for w in (0.25, 0.5, 1.0)},
    **{f"+ {w} x sigmoid(sentence semantic logit)": ((lambda r, w=w: shipped(r) + w * sigmoid(r["sentence_semantic"])), True)
       for w in (0.25, 0.5, 1.0)},
    **{f"+ {w} x sentence reader margin / 10": ((lambda r, w=w: shipped(r) + w * r["sentence_margin"] / 10), True)
       for w in (0.25, 0.5, 1.0)},
    **{f"+ {w} if it holds the best reader span": (span_hint(w), True) for w in (0.1, 0.3, 1.0)},
    **{f"+ {w} x sigmoid(span margin) if it holds its chunk's span":
       ((lambda r, w=w: shipped(r) + w * r["holds_span"] * sigmoid(r["span_margin"])), True) for w in (0.1, 0.3, 1.0)},
    # The reader with a layer of its own (2026-11-29 build) finds spans at F1 ~46: the same bonuses, the lead
    # taken from any kept chunk as shipped.
    **{f"any kept chunk, + {w} if it holds the best reader span": (span_hint(w), False) for w in (0.1, 0.2, 0.3, 0.5, 1.0)},
    **{f"any kept chunk, + {w} x sigmoid(span margin) if it holds its chunk's span":
       ((lambda r, w=w: shipped(r) + w * r["holds_span"] * sigmoid(r["span_margin"])), False) for w in (0.1, 0.3, 1.0)},
    "oracle within the first chunk": ((lambda r: r["holds_answer"].astype(float)), True),
    "oracle within every kept chunk": ((lambda r: r["holds_answer"].astype(float)), False),
}


CUT = {  # the lead as shipped: a long sentence shown from the clause that holds the question's words
    "sentence score, any kept chunk, a long sentence cut at that clause (shipped)": (shipped, False),
    "oracle within every kept chunk, cut as shipped": ((lambda r: r["holds_answer_cut"].astype(float)), False),
    **{f"any kept chunk, + {w} if it holds the best reader span, cut as shipped": (span_hint(w), False)
       for w in (0.1, 0.2, 0.3)},
}
SPAN_CUT = {  # a long sentence that holds the reader's span shown from the clause that holds the span
    f"any kept chunk, + {w} if it holds the best reader span, cut at the span's clause": (span_hint(w), False)
    for w in (0.1, 0.2, 0.3)}


def lead_rate(rows, score, first_only: bool, column: str = "holds_answer") -> float:
    hits = []
    for r in rows:
        s = score(r)
        pick = np.flatnonzero(r["chunk"] == 0) if first_only and (r["chunk"] == 0).any() else np.arange(len(s))
        hits.append(bool(r[column][pick[np.argmax(s[pick])]]))
    return float(np.mean(hits))


def compare(paths: list[str]) -> None:
    sets = {}
    for p in paths:
        with open(p, "rb") as f:
            sets[Path(p).stem] = pickle.load(f)
    lines = ["# The extractive answer's lead: which signals pick the answer's sentence (`bench/lead_sentence.py`)", "",
             "Share of answered held-out answerable questions whose lead (first 30 words) holds a gold answer. "
             "Product as shown: " + ", ".join(f"{n} {np.mean([r['shown_holds_answer'] for r in rows]):.3f} "
                                             f"({len(rows)} questions)" for n, rows in sets.items()) + ".", "",
             "| lead chosen by | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
    for name, (score, first_only) in VARIANTS.items():
        lines.append(f"| {name} | " + " | ".join(f"{lead_rate(rows, score, first_only):.3f}" for rows in sets.values()) + " |")
    for name, (score, first_only) in CUT.items():
        lines.append(f"| {name} | " + " | ".join(f"{lead_rate(rows, score, first_only, 'holds_answer_cut'):.3f}"
                                                for rows in sets.values()) + " |")
    for name, (score, first_only) in SPAN_CUT.items():
        if all("holds_answer_span_cut" in rows[0] for rows in sets.values() if rows):
            lines.append(f"| {name} | " + " | ".join(f"{lead_rate(rows, score, first_only, 'holds_answer_span_cut'):.3f}"
                                                    for rows in sets.values()) + " |")
    text = "\n".join(lines) + "\n"
    (ROOT / "bench" / "results" / "lead_sentence.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "collect":
        collect(*sys.argv[2:])
    elif len(sys.argv) >= 3 and sys.argv[1] == "compare":
        compare(sys.argv[2:])
    else:
        sys.exit(__doc__)
