"""Does a reranker's score say "this passage answers" or only "this passage is on topic"? Side by side for one
or more models, on the held-out articles of eval's split (never trained on), each question asked of its own
paragraph, AUROC of `rerank_logit`, `semantic_logit` and two untrained scores of where in the passage the question
matches (`pair_scores`):

- **written unanswerable**: SQuAD 2.0 answerable questions with their gold paragraph against `is_impossible`
  ones with the paragraph they were written from (the in-domain refusal case);
- **answer removed**: the same answerable questions with their gold paragraph, intact against with the
  sentences holding the gold answer removed (`chatbot.train.strip_answer`): the same topic and neighbouring
  facts, no answer. This is the case of a knowledge base that is about the question and does not answer it.

    .venv/bin/python bench/answer_stripped.py [MODEL ...] [--per-set 300] [--training-articles] [--out FILE]

MODEL defaults to the shipped reranker; pass several to compare a trained candidate with its start.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
SETS = [str(ROOT.parent / "shared/eval/squad2"), str(ROOT.parent / "shared/eval/squad2-extra")]


def held_out_pairs(folder: str, per_kind: int, seed: int = 1, held_out: bool = True):
    """(question, own paragraph, the paragraph with its answer removed or None) for answerable held-out questions,
    and (question, the paragraph it was written from) for unanswerable ones, up to `per_kind` each (of the
    training articles instead with `held_out` False: what a model learned, beside what transfers)."""
    from chatbot.train import strip_answer

    from answerability_probe import split_questions  # bench/ is on the path: a sibling script

    questions, corpus = split_questions(folder, held_out, seed)
    answerable = [(q.text, corpus[min(q.relevant)], strip_answer(corpus[min(q.relevant)], q.answers))
                  for q in questions if q.answerable and q.relevant and q.answers][:per_kind]
    unanswerable = [(q.text, corpus[q.written_from]) for q in questions
                    if not q.answerable and q.written_from in corpus][:per_kind]
    return answerable, unanswerable


def pair_scores(ce, pairs, max_length: int = 192, window: int = 32, batch_size: int = 32) -> dict[str, np.ndarray]:
    """Per (question, passage): the model's `rerank_logit` and `semantic_logit` (fp32), and two scores that read
    where in the passage the question's match is, from the same token states, untrained: `token maxsim` (each
    question token's best cosine over the passage's tokens, averaged: ColBERT's late interaction) and `best window`
    (the question's mean token against each `window`-token stretch of the passage, the best cosine); for a model
    whose reader has a layer of its own, the reader's best start + end logit and its margin over no-answer. The head's
    cosine compares the question with the whole passage's mean, which one missing sentence barely moves."""
    import torch

    norm = torch.nn.functional.normalize
    out: dict[str, list[float]] = {k: [] for k in ("rerank_logit", "semantic_logit", "token maxsim", "best window")}
    with torch.inference_mode():
        for i in range(0, len(pairs), batch_size):
            batch = pairs[i:i + batch_size]
            f = dict(ce.tokenizer([q for q, _ in batch], [p for _, p in batch], padding=True,
                                  truncation="only_second", max_length=max_length, return_tensors="pt"))
            tokens = ce[0](dict(f))["token_embeddings"].float()
            scored = ce[1].relevance({**f, "token_embeddings": tokens})
            out["rerank_logit"] += scored["scores"].reshape(-1).tolist()
            out["semantic_logit"] += scored.get("semantic_logit", scored["scores"].reshape(-1)).tolist()
            if getattr(ce[1], "reader_layers", 0):  # the reader's own layer: local by construction
                start, end = ce[1].read_spans(tokens, f["attention_mask"], f["token_type_ids"])
                span = start.max(1).values + end.max(1).values
                out.setdefault("reader span score", []).extend(span.tolist())
                out.setdefault("reader margin", []).extend((span - 2 * scored["null_logit"].reshape(-1)).tolist())
            for row in range(len(batch)):
                kept, types = f["attention_mask"][row].bool(), f["token_type_ids"][row]
                at = torch.arange(len(kept))
                q_at, p_at = at[kept & (types == 0)][1:-1], at[kept & (types == 1)][:-1]  # no [CLS] / [SEP]
                q, p = tokens[row, q_at], tokens[row, p_at]
                out["token maxsim"].append(float((norm(q, dim=-1) @ norm(p, dim=-1).T).max(1).values.mean()))
                stretches = p.unfold(0, window, 4).mean(-1) if len(p) > window else p.mean(0, keepdim=True)
                out["best window"].append(float((norm(stretches, dim=-1) @ norm(q.mean(0), dim=-1)).max()))
    return {k: np.array(v) for k, v in out.items()}


def main() -> None:
    from answerability_probe import write_results

    from chatbot.metrics import auroc
    from chatbot.rerank import Reranker

    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="*", default=["shipped"])
    parser.add_argument("--per-set", type=int, default=300, help="answerable and as many unanswerable, per set")
    parser.add_argument("--training-articles", action="store_true",
                        help="measure on the training side of the split (a model's own articles) instead")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "answer_stripped.md"))
    args = parser.parse_args()
    sets = {Path(s).name: held_out_pairs(s, args.per_set, held_out=not args.training_articles) for s in SETS}
    header = ["model", "score"] + [f"{name}: {kind}" for name in sets for kind in ("written", "removed")]
    rows = []
    for model in args.models:
        ce = Reranker(model, max_length=192).model  # fp32
        cells: dict[str, list[str]] = {}
        for answerable, unanswerable in sets.values():
            strippable = np.array([s is not None for *_, s in answerable])
            intact = pair_scores(ce, [(q, p) for q, p, _ in answerable])
            written = pair_scores(ce, unanswerable)
            removed = pair_scores(ce, [(q, s) for q, _, s in answerable if s is not None])
            for score in intact:
                cells.setdefault(score, []).extend([f"{auroc(intact[score], written[score]):.3f}",
                                                    f"{auroc(intact[score][strippable], removed[score]):.3f}"])
        for score, values in cells.items():
            rows.append(f"| `{model}` | {score} | " + " | ".join(values) + " |")
            print(rows[-1], flush=True)
    counts = ", ".join(f"{name}: {len(a)} answerable ({sum(1 for *_, s in a if s)} with the answer removable), "
                       f"{len(u)} written unanswerable" for name, (a, u) in sets.items())
    side = "training articles" if args.training_articles else "held-out articles"
    write_results(args.out, "# Answers or only on topic? (`bench/answer_stripped.py`)\n\n"
                  f"AUROC, {side} (eval's split), each question asked of its own paragraph: answerable with its gold "
                  "paragraph against SQuAD's written-unanswerable with theirs (*written*), and against the gold paragraph "
                  f"with the answer's sentences removed (*removed*). {counts}. fp32.", header, rows)


if __name__ == "__main__":
    main()
