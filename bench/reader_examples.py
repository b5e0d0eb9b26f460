"""Training data for the reader alone, built straight from labelled sets: no knowledge base, no embedder.

`train-reranker --reader-layers` reads (question, passage holding a gold answer) pairs and a third as many
(question, passage that does not answer): the first negative of a group. Mining those (`train-reranker
--save-examples`) ingests every corpus and retrieves a pool per question, an hour on 2 cores; the reader
needs none of it. Here each question's passage is its paragraph chunked as ingest chunks it (what the
reranker sees), and its negative is the paragraph it was written against (SQuAD's unanswerable questions)
or the BM25-best other passage of its own article (answerable ones; the whole corpus for a set without
articles, such as SciFact). Only the training side of eval's split by article is used
(`held_out_filter`, 0.2), so held-out articles stay unseen.

    .venv/bin/python bench/reader_examples.py ../shared/eval/squad2 ../shared/eval/squad2-extra \
        ../shared/eval/scifact --out /work/runs/reader_examples.json.gz
    chatbot train-reranker --examples /work/runs/reader_examples.json.gz --init shipped --reader-layers 2 ...
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def dataset_examples(folder: str, fraction: float):
    from rank_bm25 import BM25Okapi

    from chatbot.evaluate import DOC_PREFIX, held_out_filter
    from chatbot.retrieve import bm25_tokens as tokenize
    from chatbot.train import TrainingExample
    from ingest.beir import _articles, corpus_documents, load_beir
    from ingest.chunk import chunk_document
    from ingest.run import ChunkingSettings

    settings = ChunkingSettings()
    dataset = load_beir(folder)
    articles = _articles(dataset.corpus_path)
    chunks: dict[str, list[str]] = {}
    for corpus_id, parsed, _ in corpus_documents(dataset.corpus_path):
        # Only the chunks' texts are kept: their ids (which the content hash names) are never read here.
        chunks[corpus_id] = [c.context_text for c in chunk_document(parsed, DOC_PREFIX + corpus_id, "",
                                                                    settings.max_tokens, settings.overlap_tokens,
                                                                    settings.encoding)]
    # BM25 per article (the whole corpus for passages without one): the negative is on the question's topic.
    groups: dict[str, list[str]] = defaultdict(list)
    for pid in chunks:
        groups[articles.get(pid, "")].append(pid)
    indexes = {}

    def best_other(question: str, gold: set[str]) -> str | None:
        group = articles.get(min(gold), "") if gold else ""
        if group not in indexes:
            ids = [(pid, text) for pid in groups[group] for text in chunks[pid]]
            indexes[group] = (ids, BM25Okapi([tokenize(t) for _, t in ids]))
        ids, bm25 = indexes[group]
        scores = bm25.get_scores(tokenize(question))
        for i in scores.argsort()[::-1]:
            if ids[i][0] not in gold:
                return ids[i][1]
        return None

    def answering_chunk(pid: str, answers) -> str:
        for text in chunks.get(pid, ()):
            if any(a in text for a in answers):
                return text
        return chunks[pid][0] if chunks.get(pid) else ""

    held = held_out_filter(dataset.name, dataset.queries, fraction)
    examples = []
    for q in dataset.queries:
        if held(q):
            continue
        if not q.answerable:
            own = chunks.get(q.written_from)
            if own:
                examples.append(TrainingExample(q.text, (), (own[0],)))
            continue
        gold = {pid for pid, g in q.relevant.items() if g > 0 and pid in chunks}
        if not gold:
            continue
        positive = answering_chunk(min(gold), q.answers)
        negative = best_other(q.text, gold)
        if positive and negative:
            examples.append(TrainingExample(q.text, (positive,), (negative,), q.answers))
    return examples


def main() -> None:
    from chatbot.train import TrainingData, save_training_data

    parser = argparse.ArgumentParser()
    parser.add_argument("datasets", nargs="+")
    parser.add_argument("--held-out-fraction", type=float, default=0.2)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    examples = []
    for folder in args.datasets:
        found = dataset_examples(folder, args.held_out_fraction)
        answering = sum(1 for e in found if e.answerable and e.answers)
        print(f"{Path(folder).name}: {len(found)} questions ({answering} with a gold answer)", file=sys.stderr)
        examples += found
    mined_with = {"datasets": args.datasets, "built_by": "bench/reader_examples.py",
                  "held_out_fraction": args.held_out_fraction}
    save_training_data(TrainingData(tuple(examples), (), (), (), mined_with), args.out)
    print(f"{len(examples)} questions saved to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
