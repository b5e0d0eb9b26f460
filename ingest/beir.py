"""BEIR-format labelled sets (corpus.jsonl, queries.jsonl, qrels/*.tsv) for evaluation,
calibration and reranker training.

Each corpus row becomes one document with doc_path `beir:<corpus-id>`; re-ingesting an
unchanged corpus does no work, as for files.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from chatbot.embed import Embedder
from chatbot.errors import ChatbotError
from chatbot.evaluate import DOC_PREFIX, LabelledQuery
from chatbot.store import ChunkStore
from ingest.chunk import ParsedDocument, Section, chunk_document
from ingest.run import ChunkingSettings, IngestReport, store_sentence_vectors, tidy


class DatasetError(ChatbotError):
    pass


@dataclass(frozen=True)
class BeirSet:
    name: str
    corpus_path: Path
    queries: tuple[LabelledQuery, ...]


def _read_jsonl(path: Path, required: Sequence[str] = ("_id",)) -> Iterable[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise DatasetError(f"{path}:{n}: not valid JSON ({e.msg})") from None
                    missing = [k for k in required if not isinstance(row, dict) or row.get(k) is None]
                    if missing:
                        raise DatasetError(f"{path}:{n}: no {' or '.join(repr(k) for k in missing)} field "
                                           f"(each line of a BEIR {path.name} is an object with "
                                           f"{', '.join(repr(k) for k in required)})")
                    yield row
    except FileNotFoundError:
        raise DatasetError(f"{path} does not exist (a BEIR folder has corpus.jsonl and queries.jsonl)") from None


def load_beir(folder: str | Path, split: str | None = None, unanswerable_field: str = "is_impossible",
              prefer: Sequence[str] = ("test",)) -> BeirSet:
    """Queries with their relevant corpus ids. Relevance comes from qrels/<split>.tsv (when `split` is None:
    the first of `prefer` the set has, BEIR's test split for measuring, else its only or first tsv), or else
    from a `source_paragraph` field.
    Only grades above 0 make a passage relevant. Queries whose `unanswerable_field` is true are kept as
    unanswerable, with the passage they were written against (`source_paragraph`) when given, and so are
    queries whose judged passages are all graded 0 or below (the first of them as that passage); queries with
    no label at all are left out."""
    root = Path(folder)
    qrels: dict[str, dict[str, float]] = {}
    tsvs = sorted((root / "qrels").glob("*.tsv")) if (root / "qrels").is_dir() else []
    if split is not None:
        tsvs = [t for t in tsvs if t.stem == split]
        if not tsvs:
            raise DatasetError(f"{root}/qrels/{split}.tsv does not exist")
    else:
        # dev.tsv sorts before test.tsv and train.tsv: the first file alone would measure on (or train on) dev.
        tsvs = sorted(tsvs, key=lambda t: list(prefer).index(t.stem) if t.stem in prefer else len(prefer))
    for tsv in tsvs[:1]:
        with open(tsv, encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter="\t")
            if not {"query-id", "corpus-id", "score"} <= set(reader.fieldnames or ()):
                raise DatasetError(f"{tsv}: its first line must be the header 'query-id<TAB>corpus-id<TAB>score' "
                                   f"(found {reader.fieldnames})")
            for n, row in enumerate(reader, start=2):
                try:
                    qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = float(row["score"])
                except (TypeError, ValueError):
                    raise DatasetError(f"{tsv}:{n}: the score must be a number, got {row.get('score')!r}") from None
    articles = _articles(root / "corpus.jsonl")
    queries = []
    for row in _read_jsonl(root / "queries.jsonl", required=("_id", "text")):
        qid, text = str(row["_id"]), str(row["text"])
        answers = _answer_texts(row.get("answers"))
        if _is_true(row.get(unanswerable_field)):
            own = str(row.get("source_paragraph") or "")
            queries.append(LabelledQuery(qid, text, {}, answerable=False, written_from=own,
                                         source=articles.get(own, "")))
            continue
        judged = qrels.get(qid, {})
        relevant = {d: g for d, g in judged.items() if g > 0}  # a grade of 0 (or below) judges a passage wrong
        if not relevant and row.get("source_paragraph"):
            relevant = {str(row["source_paragraph"]): 1.0}
        elif not relevant and judged:
            # Annotators read its passages and none answers it: on topic and unanswered, as the corpus stands.
            own = min(judged)
            queries.append(LabelledQuery(qid, text, {}, answerable=False, written_from=own,
                                         source=articles.get(own, "")))
            continue
        elif not relevant:
            continue
        queries.append(LabelledQuery(qid, text, relevant, source=articles.get(min(relevant), ""), answers=answers))
    return BeirSet(root.name, root / "corpus.jsonl", tuple(queries))


def _answer_texts(value) -> tuple[str, ...]:
    """Gold answer texts however a SQuAD export writes them: a list of strings (this project's sets), a list of
    {"text": ...} (SQuAD's own JSON), {"text": [...], "answer_start": [...]} (Hugging Face datasets), or one
    string. A shape misread here would make every span and lead measure 0 without a word."""
    if isinstance(value, dict):
        value = value.get("text", ())
    if isinstance(value, str):
        value = [value]
    texts = (a.get("text", "") if isinstance(a, dict) else a for a in value or ())
    return tuple(str(t) for t in texts if str(t).strip())


def _is_true(value) -> bool:
    """A flag written as JSON true, or as "true" / 1 by a converter."""
    return value is True or (isinstance(value, (int, str)) and str(value).strip().lower() in ("true", "1"))


def _articles(corpus_path: Path) -> dict[str, str]:
    """Passage id -> its article, for passages that share a title with others (SQuAD's paragraphs of one
    Wikipedia article). A title of one passage (a SciFact abstract) makes the passage its own source."""
    titles = {str(row["_id"]): (row.get("title") or "").strip() for row in _read_jsonl(corpus_path)}
    shared = Counter(titles.values())
    return {pid: f"title:{t}" for pid, t in titles.items() if t and shared[t] > 1}


def corpus_size(corpus_path: Path) -> int:
    """How many passages a BEIR corpus holds (its non-empty lines), without parsing them."""
    try:
        with open(corpus_path, "rb") as f:
            return sum(1 for line in f if line.strip())
    except FileNotFoundError:
        raise DatasetError(f"{corpus_path} does not exist (a BEIR folder has corpus.jsonl and queries.jsonl)") from None


def corpus_documents(corpus_path: Path) -> Iterable[tuple[str, ParsedDocument, str]]:
    for row in _read_jsonl(corpus_path):
        title, text = (row.get("title") or "").strip(), (row.get("text") or "").strip()
        yield str(row["_id"]), ParsedDocument(title, (Section((), text),)), title + "\0" + text


def ingest_corpus(corpus_path: Path, store: ChunkStore, embedder: Embedder, settings: ChunkingSettings,
                  progress: Callable[[Iterable, int], Iterable] | None = None, batch_chunks: int = 1024,
                  sentence_vectors: bool = False,
                  sentence_progress: Callable[[Iterable, int], Iterable] | None = None,
                  full_text_index_from: int | None = None) -> int:
    """Ingest a BEIR corpus; returns the number of chunks written (0 when unchanged). `sentence_vectors`: also
    store each chunk's sentence vectors, as `chatbot ingest` does under a calibration that reads them, so that
    questions asked through the located stage read them instead of embedding them (the first time, every
    chunk's sentences are embedded; then only those of chunks written since). `full_text_index_from`: as
    `chatbot ingest` takes it (`chatbot.retrieve.full_text_index_threshold`), so that questions search the
    table with the BM25 backend the product would use on it."""
    store.ensure_table(embedder.fingerprint, lambda: embedder.dimension)
    stored = store.document_hashes()
    docs: list[str] = []
    chunks = []
    written = 0
    seen = set()
    rows = list(corpus_documents(corpus_path))
    for corpus_id, parsed, raw in (progress(rows, len(rows)) if progress else rows):
        doc_path = DOC_PREFIX + corpus_id
        seen.add(doc_path)
        digest = hashlib.sha256(f"{settings.fingerprint}\0{raw}".encode()).hexdigest()
        if stored.get(doc_path) == digest:
            continue
        docs.append(doc_path)
        chunks.extend(chunk_document(parsed, doc_path, digest, settings.max_tokens, settings.overlap_tokens,
                                     settings.encoding))
        if len(chunks) >= batch_chunks:
            store.replace_documents(docs, chunks, embedder.embed_documents([c.context_text for c in chunks]))
            written += len(chunks)
            docs, chunks = [], []
    if docs:
        store.replace_documents(docs, chunks, embedder.embed_documents([c.context_text for c in chunks]))
        written += len(chunks)
    gone = [p for p in stored if p not in seen]
    store.remove_documents(gone)
    sentences_changed = sentence_vectors and store_sentence_vectors(store, embedder, IngestReport(), sentence_progress)
    tidy(store, bool(written or gone), sentences_changed, full_text_index_from)
    return written
