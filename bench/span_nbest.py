"""The reader's n best spans in the gold paragraph: how often the answer is among them (oracle F1 at k), and
whether checking the answer's type against the question ("how many" wants a number, "when" a date, "who" a
name) picks it better than the reader's best span. Held-out answerable SQuAD questions (eval's split, by
article) and, beside them, questions of the articles the reader trained on. fp32, as `reader_gold_f1.py`.

    .venv/bin/python bench/span_nbest.py [MODEL] [--sets ...] [--per-set 400] [--out FILE]

Writes bench/results/span_nbest.md unless --out says otherwise.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

KS = (1, 3, 5, 10)
_NUMBER_WORDS = (r"\b(one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|forty|fifty|"
                 r"hundred|thousand|million|billion|dozen|half)\b")
_MONTHS = r"\b(january|february|march|april|may|june|july|august|september|october|november|december)\b"


def answer_type(question: str) -> str | None:
    """What kind of answer the question's wording asks for, where it says so plainly; None otherwise."""
    q = question.lower()
    if re.search(r"\bhow (many|much|old|far|big|large|tall|high|long|often|fast|wide|deep|heavy)\b"
                 r"|\bwhat (number|percentage|percent|proportion|amount)\b", q):
        return "number"
    if re.search(r"^when\b|\bwhen (did|was|were|is|does|do|will|had|has)\b|\bin what year\b"
                 r"|\b(what|which) (year|years|date|day|month|century|decade)\b", q):
        return "date"
    if re.search(r"^(who|whom|whose)\b|\b(who|whom|whose) (is|was|were|did|does|has|had)\b", q):
        return "name"
    return None


def fits(kind: str, span: str) -> bool:
    s = span.lower()
    if kind == "number":
        return bool(re.search(r"\d", s) or re.search(_NUMBER_WORDS, s))
    if kind == "date":
        return bool(re.search(r"\d", s) or re.search(_MONTHS, s) or re.search(r"century|decade", s))
    return any(w[:1].isupper() for w in span.split()) and not re.fullmatch(r"[\d\s,.%]+", span)


def n_best(model, pairs, k: int = max(KS), batch: int = 8) -> list[list[str]]:
    """Each (question, passage) pair's k best spans (start + end logit, at most MAX_ANSWER_TOKENS tokens), best
    first, read as the product reads: through the reader's own layers when it has them."""
    import torch
    from sentence_transformers.util import batch_to_device

    from chatbot.cross_encoder import NOT_A_SPAN, encode_pairs, reader_layer_count, span_scores

    late = bool(reader_layer_count(model))
    out = []
    for at in range(0, len(pairs), batch):
        part = pairs[at:at + batch]
        encoded = encode_pairs(model.tokenizer, [q for q, _ in part], [p for _, p in part], 192)
        offsets = encoded.pop("offset_mapping")
        with torch.inference_mode():
            features = batch_to_device(dict(encoded), model.device)
            if late:
                tokens = model[0](features)["token_embeddings"]
                start, end = model[1].read_spans(tokens, features["attention_mask"], features["token_type_ids"])
            else:
                heads = model(features)
                start, end = heads["start_logits"], heads["end_logits"]
            n = start.shape[-1]
            scores, flat = span_scores(start.float(), end.float()).reshape(len(part), -1).topk(k, -1)
        for row, (_, passage) in enumerate(part):
            spans = []
            for score, index in zip(scores[row].tolist(), flat[row].tolist()):
                if score <= NOT_A_SPAN:
                    break
                first, last = divmod(index, n)
                spans.append(passage[int(offsets[row, first, 0]):int(offsets[row, last, 1])])
            out.append(spans)
    return out


def measure(model, chosen) -> dict:
    import numpy as np

    from chatbot import metrics

    spans = n_best(model, [(q, p) for q, p, _ in chosen])
    f1 = [[metrics.span_f1(s, answers) for s in found] or [0.0] for found, (_, _, answers) in zip(spans, chosen)]
    typed, by_type = [], {}
    for found, scores, (question, _, _) in zip(spans, f1, chosen):
        kind = answer_type(question)
        pick = next((j for j, s in enumerate(found) if kind is None or fits(kind, s)), 0)
        typed.append(scores[pick])
        if kind:
            by_type.setdefault(kind, []).append((scores[0], scores[pick]))
    row = {"n": len(chosen), "typed": 100 * float(np.mean(typed))}
    row.update({f"oracle@{k}": 100 * float(np.mean([max(s[:k]) for s in f1])) for k in KS})
    row["types"] = {kind: (len(v), 100 * float(np.mean([a for a, _ in v])), 100 * float(np.mean([b for _, b in v])))
                    for kind, v in sorted(by_type.items())}
    return row


def main() -> None:
    from chatbot.rerank import Reranker
    from reader_gold_f1 import held_out_questions

    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?", default="shipped")
    parser.add_argument("--sets", nargs="+", default=[str(ROOT.parent / "shared/eval/squad2"),
                                                       str(ROOT.parent / "shared/eval/squad2-extra")])
    parser.add_argument("--per-set", type=int, default=400)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "span_nbest.md"))
    args = parser.parse_args()
    model = Reranker(args.model, max_length=192).model
    lines = [f"# The reader's n best spans in the gold paragraph (`bench/span_nbest.py`, model `{args.model}`, fp32)", "",
             "Span F1 of the reader's best span (k = 1), the best of its k best (an oracle's choice), and the first of "
             "them whose type fits the question's wording (number / date / name; other questions keep the best span).",
             "", "| set | articles | n | " + " | ".join(f"oracle@{k}" for k in KS) + " | type-checked | per type: n, best -> checked |",
             "|---|---|---|" + "---|" * (len(KS) + 2)]
    for folder in args.sets:
        for held in (True, False):
            r = measure(model, held_out_questions(folder, args.per_set, held=held))
            types = "; ".join(f"{kind} {n}, {a:.1f} -> {b:.1f}" for kind, (n, a, b) in r["types"].items())
            lines.append(f"| {Path(folder).name} | {'held out' if held else 'trained on'} | {r['n']} | "
                         + " | ".join(f"{r[f'oracle@{k}']:.1f}" for k in KS) + f" | {r['typed']:.1f} | {types} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
