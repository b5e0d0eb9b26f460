"""Does a reranker's score say "this passage answers" or only "this passage is on topic"? Side by side for one
or more models, on the held-out articles of eval's split (never trained on), each question asked of its own
paragraph, AUROC of `rerank_logit` and `semantic_logit`:

- **written unanswerable**: SQuAD 2.0 answerable questions with their gold paragraph against `is_impossible`
  ones with the paragraph they were written from (the in-domain refusal case);
- **answer removed**: the same answerable questions with their gold paragraph, intact against with the
  sentences holding the gold answer removed (`chatbot.train.strip_answer`): the same topic and neighbouring
  facts, no answer. This is the case of a knowledge base that is about the question and does not answer it.

    .venv/bin/python bench/answer_stripped.py [MODEL ...] [--per-set 300] [--out bench/results/answer_stripped.md]

MODEL defaults to the shipped reranker; pass several to compare a trained candidate with its start.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
SETS = [str(ROOT.parent / "shared/eval/squad2"), str(ROOT.parent / "shared/eval/squad2-extra")]


def held_out_pairs(folder: str, per_kind: int, seed: int = 1):
    """(question, own paragraph, the paragraph with its answer removed or None) for answerable held-out questions,
    and (question, the paragraph it was written from) for unanswerable ones, up to `per_kind` each."""
    from chatbot.evaluate import held_out_filter
    from chatbot.train import strip_answer
    from ingest.beir import load_beir

    from reader_gold_f1 import paragraph_texts  # bench/ is on the path: a sibling script

    data = load_beir(folder)
    corpus = paragraph_texts(folder)
    keep = held_out_filter(data.name, data.queries, 0.2)
    questions = [q for q in data.queries if keep(q)]
    random.Random(seed).shuffle(questions)
    answerable = [(q.text, corpus[min(q.relevant)], strip_answer(corpus[min(q.relevant)], q.answers))
                  for q in questions if q.answerable and q.relevant and q.answers][:per_kind]
    unanswerable = [(q.text, corpus[q.written_from]) for q in questions
                    if not q.answerable and q.written_from in corpus][:per_kind]
    return answerable, unanswerable


def main() -> None:
    from chatbot.metrics import auroc
    from chatbot.rerank import Reranker

    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="*", default=["shipped"])
    parser.add_argument("--per-set", type=int, default=300, help="answerable and as many unanswerable, per set")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "answer_stripped.md"))
    args = parser.parse_args()
    sets = {Path(s).name: held_out_pairs(s, args.per_set) for s in SETS}
    header = ["model"] + [f"{name}: {kind} ({score})" for name in sets for kind in ("written", "removed")
                          for score in ("rerank", "semantic")]
    rows = []
    for model in args.models:
        reranker = Reranker(model, max_length=192)
        cells = [f"`{model}`"]
        for answerable, unanswerable in sets.values():
            intact = np.array([reranker.scores(q, [p])[0, :2] for q, p, _ in answerable])
            written = np.array([reranker.scores(q, [p])[0, :2] for q, p in unanswerable])
            kept = [i for i, (_, _, s) in enumerate(answerable) if s]
            removed = np.array([reranker.scores(answerable[i][0], [answerable[i][2]])[0, :2] for i in kept])
            for col in (0, 1):
                cells.append(f"{auroc(intact[:, col], written[:, col]):.3f}")
            for col in (0, 1):
                cells.append(f"{auroc(intact[kept, col], removed[:, col]):.3f}")
        rows.append("| " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    counts = ", ".join(f"{name}: {len(a)} answerable ({sum(1 for *_, s in a if s)} with the answer removable), "
                       f"{len(u)} written unanswerable" for name, (a, u) in sets.items())
    text = ("# Answers or only on topic? (`bench/answer_stripped.py`)\n\n"
            "AUROC, held-out articles (eval's split), each question asked of its own paragraph: answerable with "
            "its gold paragraph against SQuAD's written-unanswerable with theirs (*written*), and against the "
            f"gold paragraph with the answer's sentences removed (*removed*). {counts}.\n\n"
            "| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n" + "\n".join(rows) + "\n")
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
