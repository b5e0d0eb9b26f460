"""The reader alone, on the paragraph that answers: span EM / F1 of each model's best span (at most 30
tokens) in the gold paragraph of held-out answerable SQuAD questions (eval's split, by article), read
through `Reranker` as the product reads (fp32 here, so models compare without int8 noise). It isolates the
reader from retrieval and refusal, which `chatbot eval`'s span F1 mixes in.

    .venv/bin/python bench/reader_gold_f1.py MODEL [MODEL ...]   # e.g. shipped /tmp/candidate
        [--sets ../shared/eval/squad2 ../shared/eval/squad2-extra] [--per-set 400] [--out FILE]

Writes bench/results/reader_gold_f1.md unless --out says otherwise.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def paragraph_texts(folder: str) -> dict[str, str]:
    """A BEIR folder's passages by id, as the reranker sees them: title line, then text."""
    corpus = {}
    with open(Path(folder) / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            corpus[row["_id"]] = f"{row['title']}\n{row['text']}" if row.get("title") else row["text"]
    return corpus


def held_out_questions(folder: str, per_set: int, held: bool = True) -> list[tuple[str, str, tuple[str, ...]]]:
    """(question, gold paragraph as the reranker sees it: title line, then text, answers) for up to `per_set`
    held-out answerable questions of a SQuAD-style BEIR folder (`held` False: of the articles trained on)."""
    from chatbot.evaluate import held_out_filter
    from ingest.beir import load_beir

    name = Path(folder).name
    labelled = load_beir(folder)
    corpus = paragraph_texts(folder)
    keep = held_out_filter(name, labelled.queries, 0.2)
    questions = [q for q in labelled.queries if keep(q) == held and q.answerable and q.answers]
    random.Random(1).shuffle(questions)
    return [(q.text, corpus[min(q.relevant)], q.answers) for q in questions[:per_set]]


def score(model: str, questions) -> dict:
    import numpy as np

    from chatbot import metrics
    from chatbot.rerank import Reranker

    reranker = Reranker(model, max_length=192, read_top=1)  # one passage a call: it is the best, and it is read
    em, f1 = [], []
    for question, passage, answers in questions:
        row = reranker.scores(question, [passage])[0]
        span = passage[int(row[4]):int(row[5])] if row[4] >= 0 else ""
        em.append(metrics.span_exact_match(span, answers) if span else 0.0)
        f1.append(metrics.span_f1(span, answers) if span else 0.0)
    return {"n": len(em), "em": 100 * float(np.mean(em)), "f1": 100 * float(np.mean(f1))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+")
    parser.add_argument("--sets", nargs="+", default=[str(ROOT.parent / "shared/eval/squad2"),
                                                       str(ROOT.parent / "shared/eval/squad2-extra")])
    parser.add_argument("--per-set", type=int, default=400)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "reader_gold_f1.md"),
                        help="where the table goes (a candidate's run need not overwrite the shipped model's)")
    args = parser.parse_args()
    rows = ["| model | " + " | ".join(f"{Path(s).name} EM / F1" for s in args.sets) + " |",
            "|---|" + "---|" * len(args.sets)]
    sets = {s: held_out_questions(s, args.per_set) for s in args.sets}
    for model in args.models:
        cells = []
        for s in args.sets:
            r = score(model, sets[s])
            cells.append(f"{r['em']:.1f} / {r['f1']:.1f} (n={r['n']})")
            print(model, Path(s).name, r, flush=True)
        rows.append(f"| {model} | " + " | ".join(cells) + " |")
    text = ("Reader span EM / F1 on the gold paragraph of held-out answerable questions (by article), fp32\n"
            "(`bench/reader_gold_f1.py`):\n\n" + "\n".join(rows) + "\n")
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
