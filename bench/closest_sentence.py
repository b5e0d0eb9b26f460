"""Does the closest sentence's cosine (`chatbot.locate`, the embedder's) tell "answers" from "on topic" where the
scores P(answerable) already reads do not? On the articles eval's split holds out, each question asked of its own
paragraph, as in `bench/answer_stripped.py`: answerable against SQuAD's written-unanswerable (*written*), and
intact against the same paragraph with the answer's sentences removed (*removed*). For each score alone, and for
logistic regressions over the question-level features `chatbot calibrate` may choose between (the reranker's
`rerank_logit`, the whole chunk's cosine, the closest sentence's), fitted on the *training* articles' pairs (both
kinds of negative) and judged on the held-out ones: what a calibration would learn, and whether it transfers.
Beside the located stage's sentence vectors (each sentence embedded alone), a probe of ones pooled from the
passage's own pass ("late chunking"), which ingest would get with the chunk's vector at no extra cost.

    .venv/bin/python bench/closest_sentence.py [--per-set 300] [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

SCORES = ("rerank_logit", "chunk cosine", "closest sentence", "closest sentence, pooled in the passage's pass",
          "rerank_logit of its window")
MIXES = {"rerank_logit + chunk cosine (the default calibration's)": ("rerank_logit", "chunk cosine"),
         "+ closest sentence (the located calibration's)": ("rerank_logit", "chunk cosine", "closest sentence"),
         "+ closest sentence pooled in the passage's pass": ("rerank_logit", "chunk cosine",
                                                             "closest sentence, pooled in the passage's pass"),
         "rerank_logit + closest sentence": ("rerank_logit", "closest sentence"),
         "+ closest sentence + rerank_logit of its window": ("rerank_logit", "chunk cosine", "closest sentence",
                                                             "rerank_logit of its window")}


def scores(pairs, ce, embedder) -> dict[str, np.ndarray]:
    """Per (question, passage): the reranker's logit, the embedder's cosine to the whole passage (as the vector
    search stores it), the located stage's closest-sentence cosine, through the product's own code, and the
    reranker's logit on that sentence's window (it and its neighbours, three sentences): a probe, not in the
    product, of whether the reranker reads answerability better where the embedder points it."""
    from answer_stripped import pair_scores

    from chatbot.locate import SentenceVectors, closest_sentences
    from chatbot.sentences import chunk_sentences
    from chatbot.types import Candidate, Chunk

    questions = embedder.embed_documents([q for q, _ in pairs])
    passages = embedder.embed_documents([p for _, p in pairs])
    located, windows = [], []
    sentences_of = SentenceVectors(embedder)
    for (q, p), vector in zip(pairs, questions):
        chunk = Chunk(id="c", doc_path="d", title="", heading_path=(), position=0, text=p, token_count=0,
                      content_hash="")
        (c,) = closest_sentences(vector, (Candidate(chunk, 0.0, 1, 0.0, 1, 0.0, rerank_logit=0.0),),
                                 sentences_of, top_n=1)
        located.append(c.sentence_cosine)
        sentences = chunk_sentences(p)
        at = sentences.index(c.closest_sentence)
        windows.append((q, " ".join(sentences[max(0, at - 1):at + 2])))
    return {"rerank_logit": pair_scores(ce, pairs)["rerank_logit"],
            "chunk cosine": np.einsum("ij,ij->i", questions, passages), "closest sentence": np.array(located),
            "closest sentence, pooled in the passage's pass": pooled_closest(embedder, pairs, questions),
            "rerank_logit of its window": pair_scores(ce, windows)["rerank_logit"]}


POOLED_FALLBACK = [0, 0]  # sentences embedded alone (outside the model's window), of all


def sentence_spans(text: str) -> list[tuple[tuple[int, int], ...] | None]:
    """Where in `text` each of `chunk_sentences(text)` lies, as character spans (two for a FAQ reply judged with
    its question), None where not found as written. Sentences differ from the text only in whitespace (hard
    wraps joined), so each is matched word by word from where the one before it ended."""
    import re

    from chatbot.sentences import chunk_sentences

    def find(sentence: str, start: int):
        m = re.compile(r"\s+".join(re.escape(w) for w in sentence.split())).search(text, start)
        return (m.start(), m.end()) if m else None

    spans, at = [], 0
    for sentence in chunk_sentences(text):
        found = find(sentence, at)
        found = (found,) if found else None
        for cut in ([] if found else [m.end() for m in re.finditer(r"\?\s", sentence)]):
            first = find(sentence[:cut].strip(), at)  # a reply judged with its question: each on its own
            second = find(sentence[cut:].strip(), first[1]) if first else None
            if second:
                found = (first, second)
                break
        spans.append(found)
        at = found[-1][1] if found else at
    return spans


def pooled_sentence_vectors(model, texts, spans):
    """For each text, a vector per part (character spans) from the text's own pass: the mean of the part's token
    states, normalized, as the model pools a whole text ("late chunking"); None past the model's window."""
    outputs = model.encode(list(texts), batch_size=16, output_value=None, normalize_embeddings=True,
                           show_progress_bar=False)
    offsets = model.tokenizer(list(texts), return_offsets_mapping=True, truncation=True,
                              max_length=model.max_seq_length)["offset_mapping"]
    parts = []
    for output, text_offsets, text_spans in zip(outputs, offsets, spans):
        # The batch's padding follows the text's own tokens; [CLS] and [SEP] have empty offsets.
        tokens = output["token_embeddings"].float().numpy()[:len(text_offsets)]
        starts, ends = np.array([a for a, _ in text_offsets]), np.array([b for _, b in text_offsets])
        own = []
        for part in text_spans:
            inside = np.zeros(len(starts), dtype=bool)
            for a, b in part or ():
                inside |= (ends > starts) & (starts >= a) & (ends <= b)
            v = tokens[inside].mean(axis=0) if inside.any() else None
            own.append(None if v is None else v / max(float(np.linalg.norm(v)), 1e-12))
        parts.append(own)
    return parts


def pooled_closest(embedder, pairs, questions) -> np.ndarray:
    """The closest sentence's cosine with sentence vectors pooled from the passage's own pass; a sentence past the
    model's window embedded alone."""
    from chatbot.sentences import chunk_sentences

    texts = [p for _, p in pairs]
    parts = pooled_sentence_vectors(embedder.model, texts, [sentence_spans(p) for p in texts])
    best = []
    for p, own, q in zip(texts, parts, questions):
        alone = [k for k, v in enumerate(own) if v is None]
        sentences = chunk_sentences(p) if alone else []
        for k, v in zip(alone, embedder.embed_documents([sentences[k] for k in alone])):
            own[k] = v
        POOLED_FALLBACK[0] += len(alone)
        POOLED_FALLBACK[1] += len(own)
        best.append(float(np.max(np.stack(own) @ q)))
    return np.array(best)


def main() -> None:
    from answer_stripped import SETS, held_out_pairs
    from answerability_probe import write_results

    from chatbot.calibrate import fit_logistic
    from chatbot.embed import Embedder
    from chatbot.metrics import auroc
    from chatbot.rerank import Reranker

    parser = argparse.ArgumentParser()
    parser.add_argument("--per-set", type=int, default=300, help="answerable and as many unanswerable, per set")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "closest_sentence.md"))
    args = parser.parse_args()
    ce = Reranker("shipped", max_length=192).model  # fp32
    embedder = Embedder("sentence-transformers/all-MiniLM-L6-v2", cache_size=100_000)
    data = {}  # (held out?, set) -> kind -> score -> values
    for held in (False, True):
        for folder in SETS:
            answerable, unanswerable = held_out_pairs(folder, args.per_set, held_out=held)
            stripped = [(q, p, s) for q, p, s in answerable if s is not None]
            data[held, Path(folder).name] = {
                "answerable": scores([(q, p) for q, p, _ in answerable], ce, embedder),
                "written": scores(unanswerable, ce, embedder),
                "intact": scores([(q, p) for q, p, _ in stripped], ce, embedder),
                "removed": scores([(q, s) for q, _, s in stripped], ce, embedder)}
    names = sorted({name for _, name in data})
    header = ["score (held-out articles)"] + [f"{name}: {kind}" for name in names for kind in ("written", "removed")]
    rows = []

    def row(label, score_of):
        cells = []
        for name in names:
            d = data[True, name]
            cells += [f"{auroc(score_of(d['answerable']), score_of(d['written'])):.3f}",
                      f"{auroc(score_of(d['intact']), score_of(d['removed'])):.3f}"]
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)

    for score in SCORES:
        row(score, lambda d, s=score: d[s])
    for label, features in MIXES.items():
        x, y = [], []
        for name in names:  # the training articles' pairs, both kinds of negative
            d = data[False, name]
            for kind, label_value in (("answerable", 1), ("written", 0), ("intact", 1), ("removed", 0)):
                x.append(np.column_stack([d[kind][f] for f in features]))
                y.append(np.full(len(d[kind][features[0]]), label_value, dtype=np.float64))
        *w, b = fit_logistic(np.vstack(x), np.concatenate(y), l2=1e-2)
        row(f"{label}; fitted weights {', '.join(f'{v:.2f}' for v in w)}",
            lambda d, f=features, w=np.array(w): np.column_stack([d[k] for k in f]) @ w + b)
    counts = ", ".join(f"{name}: {len(data[True, name]['answerable']['rerank_logit'])} answerable "
                       f"({len(data[True, name]['intact']['rerank_logit'])} with the answer removable), "
                       f"{len(data[True, name]['written']['rerank_logit'])} written unanswerable" for name in names)
    counts += (f"; pooled sentence vectors: {POOLED_FALLBACK[0]} of {POOLED_FALLBACK[1]} sentences lay past the "
               "embedder's 256-token window and were embedded alone")
    write_results(args.out, "# The closest sentence (`bench/closest_sentence.py`)\n\n"
                  "AUROC on the held-out articles of eval's split, each question asked of its own paragraph: answerable "
                  "against SQuAD's written-unanswerable (*written*), intact against the answer's sentences removed "
                  f"(*removed*). {counts}. The mixes are fitted on as many pairs of the training articles. fp32.",
                  header, rows)


if __name__ == "__main__":
    main()
