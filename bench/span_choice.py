"""Which read chunk's span to state: the reader's best span in each of the best-ranked chunks the product
reads, for answerable SQuAD questions, and the span F1 each way of choosing among them would give.

`chatbot eval`'s span F1 takes the span with the highest answer margin (span score minus no-answer score)
over the kept chunks. The reader alone, on the gold paragraph, scores higher (`reader_gold_f1.py`): this
says how much of the gap is the choice between chunks (the oracle row) and whether the ranking's own scores
choose better. A rule's weight is chosen on questions of training articles and reported on held-out ones
(eval's split, by article).

    .venv/bin/python bench/span_choice.py DB [--sets ../shared/eval/squad2 ../shared/eval/squad2-extra]
        [--per-set 300] [--out FILE] [--dump ROWS.json]
    .venv/bin/python bench/span_choice.py - --from-dump ROWS.json    # the table again, from collected rows

DB is a LanceDB folder where `chatbot eval` has ingested the sets (tables `eval_<name>`). The reranker is
the package's shipped one (PYTHONPATH decides which checkout's). Writes bench/results/span_choice.md unless
--out says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def questions(folder: str, per_set: int):
    """(held out?, question) for up to `per_set` answerable questions with answers on each side of the split."""
    from chatbot.evaluate import held_out_filter
    from ingest.beir import load_beir

    labelled = load_beir(folder)
    keep = held_out_filter(Path(folder).name, labelled.queries, 0.2)
    out = []
    for held in (True, False):
        chosen = [q for q in labelled.queries if q.answerable and q.answers and keep(q) == held]
        random.Random(1).shuffle(chosen)
        out += [(held, q) for q in chosen[:per_set]]
    return out


def collect(db: str, folder: str, per_set: int) -> list[dict]:
    """Per question, the read pairs in rank order: rank among the scored pairs, rerank logit, answer margin,
    span F1, kept or not."""
    from chatbot import metrics
    from chatbot.cli import _safe_name
    from chatbot.config import Config
    from chatbot.pipeline import Pipeline

    # the table `chatbot eval` ingested the set into, named by its own rule
    config = Config(db_uri=db, traces=False, table=f"eval_{_safe_name(Path(folder).name)}")
    pipeline = Pipeline.from_config(config)
    rows = []
    for held, q in questions(folder, per_set):
        gate = pipeline.evidence(q.text).gate
        kept = {c.chunk.id for c in gate.kept}
        read = [{"rank": rank, "logit": c.rerank_logit, "margin": c.answer_margin, "kept": c.chunk.id in kept,
                 "f1": metrics.span_f1(c.answer_text, q.answers), "span": c.answer_text,
                 "span_score": c.span_score, "null_score": c.null_score}
                for rank, c in enumerate(gate.scored) if c.answer_text and c.answer_margin is not None]
        rows.append({"held": held, "refused": not gate.kept, "read": read, "question": q.text})
    return rows


_STOP = frozenset("the a an of in on at to for by with and or is was are were be been it its this that as from "
                  "which who what when where how why".split())


def echoes_question(span: str, question: str) -> bool:
    """Whether a span's content words all come from the question (a reader's classic wrong answer)."""
    content = [w for w in re.findall(r"\w+", span.lower()) if w not in _STOP]
    return bool(content) and set(content) <= set(re.findall(r"\w+", question.lower()))


def chosen_f1(rows, score, skip=None) -> float:
    """Mean span F1 when each question states the span of highest `score(pair)` among its kept chunks (a
    refused question: its three best-ranked pairs), as `chatbot eval` chooses, passing over pairs `skip(pair,
    question)` rejects unless it rejects them all."""
    total = 0.0
    for row in rows:
        pairs = [p for p in row["read"] if (p["rank"] < 3 if row["refused"] else p["kept"])]
        if skip is not None:
            pairs = [p for p in pairs if not skip(p, row["question"])] or pairs
        if pairs:
            total += max(pairs, key=score)["f1"]
    return 100 * total / max(1, len(rows))


def with_logit(weight: float):
    return lambda p: p["margin"] + weight * p["logit"]


def table(results: dict) -> str:
    lines = ["| rule (span F1, held-out articles) | " + " | ".join(results) + " |",
             "|---|" + "---|" * len(results)]
    rules = {
        "highest answer margin (the product's)": lambda rows: chosen_f1(rows, with_logit(0.0)),
        "the best-ranked read chunk's span": lambda rows: chosen_f1(rows, lambda p: p["logit"]),
        "highest span score (the null left out)": lambda rows: chosen_f1(rows, lambda p: p["span_score"]),
        "highest margin, spans that only repeat the question passed over":
            lambda rows: chosen_f1(rows, with_logit(0.0), lambda p, q: echoes_question(p["span"], q)),
    }
    for name, rule in rules.items():
        lines.append(f"| {name} | " + " | ".join(f"{rule(r['held']):.1f}" for r in results.values()) + " |")
    cells = []
    for r in results.values():
        best = max(WEIGHTS, key=lambda w: chosen_f1(r["train"], with_logit(w)))  # chosen on training articles
        cells.append(f"{chosen_f1(r['held'], with_logit(best)):.1f} (weight {best:g}; "
                     f"{chosen_f1(r['train'], with_logit(best)):.1f} on training articles)")
    lines.append("| margin + weight x rerank logit, weight chosen on training articles | " + " | ".join(cells) + " |")
    lines.append("| oracle: the best span among the read chunks | " + " | ".join(
        f"{100 * sum(max((p['f1'] for p in row['read']), default=0.0) for row in r['held']) / len(r['held']):.1f}"
        for r in results.values()) + " |")
    lines.append("| the product's rule on training articles (the reader trained on them) | " + " | ".join(
        f"{chosen_f1(r['train'], with_logit(0.0)):.1f}" for r in results.values()) + " |")
    lines.append("| questions (held-out / training articles) | " + " | ".join(
        f"{len(r['held'])} / {len(r['train'])}" for r in results.values()) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("--sets", nargs="+", default=[str(ROOT.parent / "shared/eval/squad2"),
                                                       str(ROOT.parent / "shared/eval/squad2-extra")])
    parser.add_argument("--per-set", type=int, default=300)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "span_choice.md"))
    parser.add_argument("--dump", help="also write the collected rows here (JSON)")
    parser.add_argument("--from-dump", help="re-read the rows an earlier --dump wrote instead of collecting (DB unused)")
    args = parser.parse_args()
    if args.from_dump:
        results = json.loads(Path(args.from_dump).read_text(encoding="utf-8"))
    else:
        results = {}
        for folder in args.sets:
            rows = collect(args.db, folder, args.per_set)
            results[Path(folder).name] = {"held": [r for r in rows if r["held"]],
                                          "train": [r for r in rows if not r["held"]]}
    if args.dump:
        Path(args.dump).write_text(json.dumps(results), encoding="utf-8")
    text = table(results)
    Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
