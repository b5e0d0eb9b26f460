"""Does a reranker's encoder know whether a passage answers a question, beyond its relevance score? Linear
probes on (question, the paragraph it was asked of): SQuAD 2.0 answerable questions with their gold paragraph
against unanswerable ones (`is_impossible`) with the paragraph they were written from, so every pair is on
topic and only the answer's presence differs. Logistic regressions on the model's states (the encoder's [CLS],
the reader layer's [CLS] and means, with and without the semantic logit and the reader's best span score) are
fitted on pairs of the sets' training articles and judged (AUROC) on their held-out articles (eval's split).
A state that beats `semantic_logit` here is worth a no-answer head; one that does not is not.

    .venv/bin/python bench/answerability_probe.py [MODEL] [--per-set-train 1000] [--per-set-test 300]

Writes bench/results/answerability_probe.md. MODEL defaults to the shipped reranker; any model with the
project's head (`SegmentCosineHead`) works, and the reader's probes need a reader layer of its own.
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
PROBES = {"semantic_logit": ["semantic"], "semantic_logit + span score": ["semantic", "span"],
          "encoder [CLS]": ["enc_cls"], "encoder [CLS] + semantic_logit": ["enc_cls", "semantic"],
          "reader layer [CLS]": ["reader_cls"], "reader layer [CLS] + semantic_logit": ["reader_cls", "semantic"],
          "reader layer [CLS], passage and question means + semantic_logit + span score":
          ["reader_cls", "reader_passage", "reader_question", "semantic", "span"]}


def split_questions(folder: str, held_out: bool, seed: int):
    """One side of eval's split (by article) of a SQuAD-style folder, its questions shuffled by `seed`, and the
    folder's passages by id as the reranker sees them."""
    from chatbot.evaluate import held_out_filter
    from ingest.beir import load_beir

    from reader_gold_f1 import paragraph_texts  # bench/ is on the path: a sibling script

    data = load_beir(folder)
    keep = held_out_filter(data.name, data.queries, 0.2)
    questions = [q for q in data.queries if keep(q) == held_out]
    random.Random(seed).shuffle(questions)
    return questions, paragraph_texts(folder)


def own_paragraph_pairs(folder: str, held_out: bool, per_kind: int, seed: int) -> list[tuple[str, str, int]]:
    """(question, paragraph, answerable?) for up to `per_kind` answerable and as many unanswerable questions
    of one side of eval's split."""
    questions, corpus = split_questions(folder, held_out, seed)
    answerable = [(q.text, corpus[min(q.relevant)], 1) for q in questions if q.answerable and q.relevant]
    unanswerable = [(q.text, corpus[q.written_from], 0) for q in questions
                    if not q.answerable and q.written_from in corpus]
    return answerable[:per_kind] + unanswerable[:per_kind]


def model_states(ce, pairs, max_length: int = 192, batch_size: int = 32) -> dict[str, np.ndarray]:
    """Per pair: the encoder's [CLS], the reader layer's [CLS] and its passage and question means, the
    semantic logit and the reader's best start + end logit."""
    import torch

    head = ce[1]
    out: dict[str, list] = {k: [] for k in ("enc_cls", "reader_cls", "reader_passage", "reader_question",
                                            "semantic", "span")}
    with torch.inference_mode():
        for i in range(0, len(pairs), batch_size):
            batch = pairs[i:i + batch_size]
            f = dict(ce.tokenizer([q for q, _, _ in batch], [p for _, p, _ in batch], padding=True,
                                  truncation="only_second", max_length=max_length, return_tensors="pt"))
            tokens = ce[0](dict(f))["token_embeddings"]
            semantic = head.relevance({**f, "token_embeddings": tokens})["semantic_logit"]
            mask = f["attention_mask"].to(tokens.dtype)
            passage = mask * f["token_type_ids"].to(tokens.dtype)
            question = mask - passage
            out["enc_cls"].append(tokens[:, 0].float().numpy())
            out["semantic"].append(semantic.float().numpy()[:, None])
            if not getattr(head, "reader_layers", 0):
                continue
            read = head.reader_states(tokens, f["attention_mask"])
            start, end = head.span_logits(read, f["attention_mask"], f["token_type_ids"])
            out["reader_cls"].append(read[:, 0].float().numpy())
            out["reader_passage"].append(((read * passage[..., None]).sum(1) / passage.sum(1, keepdim=True)).numpy())
            out["reader_question"].append(((read * question[..., None]).sum(1) / question.sum(1, keepdim=True)).numpy())
            out["span"].append((start.max(1).values + end.max(1).values).numpy()[:, None])
    return {k: np.concatenate(v) for k, v in out.items() if v}


def write_results(path, preamble: str, header: list[str], rows: list[str]) -> None:
    """A results file: `preamble`, then a markdown table of `header` over the ready-made `rows`; printed too."""
    text = (preamble + "\n\n| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n"
            + "\n".join(rows) + "\n")
    Path(path).write_text(text, encoding="utf-8")
    print(text)


def main() -> None:
    from sklearn.linear_model import LogisticRegression

    from chatbot.metrics import auroc
    from chatbot.rerank import Reranker

    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?", default="shipped")
    parser.add_argument("--per-set-train", type=int, default=1000, help="answerable and as many unanswerable, per set")
    parser.add_argument("--per-set-test", type=int, default=300)
    args = parser.parse_args()
    ce = Reranker(args.model, max_length=192).model  # fp32: probes compare states, not int8 noise
    if len(list(ce.children())) < 2 or not hasattr(ce[1], "relevance"):
        sys.exit("the probes read a SegmentCosineHead model's semantic logit: this model has none")
    train = [p for s in SETS for p in own_paragraph_pairs(s, False, args.per_set_train, seed=2)]
    tests = {Path(s).name: own_paragraph_pairs(s, True, args.per_set_test, seed=1) for s in SETS}
    x_train, y_train = model_states(ce, train), np.array([label for *_, label in train])
    x_tests = {name: (model_states(ce, pairs), np.array([label for *_, label in pairs])) for name, pairs in tests.items()}
    rows = []
    for name, keys in PROBES.items():
        if not set(keys) <= set(x_train):  # the reader's probes, for a model without a reader layer
            continue
        x = np.hstack([x_train[k] for k in keys])
        mean, std = x.mean(0), x.std(0) + 1e-6
        probe = LogisticRegression(C=0.1, max_iter=2000).fit((x - mean) / std, y_train)
        cells = []
        for states, y in x_tests.values():
            p = probe.predict_proba((np.hstack([states[k] for k in keys]) - mean) / std)[:, 1]
            cells.append(f"{auroc(p[y == 1], p[y == 0]):.3f}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    write_results(ROOT / "bench" / "results" / "answerability_probe.md",
                  f"Answerability probes on (question, own paragraph), model `{args.model}` (`bench/answerability_probe.py`): "
                  f"logistic regressions fitted on {len(train)} pairs of the training articles "
                  f"({int(y_train.sum())} answerable), AUROC on the held-out articles' pairs "
                  + ", ".join(f"{n} {len(p)}" for n, p in tests.items()) + ".", ["probe", *tests], rows)


if __name__ == "__main__":
    main()
