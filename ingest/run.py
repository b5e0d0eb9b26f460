"""Ingest files and folders into the chunk store, doing only the work that changed.

A document's `content_hash` covers its bytes and the chunking settings, so an unchanged
file with unchanged settings is skipped before parsing or embedding. Changed documents
are written in batches, each batch one atomic `merge_insert`: a crash leaves every
document either wholly old or wholly new. Re-ingesting a folder removes the chunks of
files that are no longer in it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from chatbot.embed import Embedder
from chatbot.errors import ParseError
from chatbot.sentences import chunk_sentences, sentencing_fingerprint
from chatbot.store import ChunkStore
from chatbot.types import Chunk
from ingest.chunk import chunk_document
from ingest.parse import SUPPORTED_SUFFIXES, parse_file

MAX_FILE_BYTES = 32 * 1024 * 1024  # a bigger file is a log or data dump, not a document to cite


@dataclass(frozen=True)
class ChunkingSettings:
    max_tokens: int = 200
    overlap_tokens: int = 30
    encoding: str = "cl100k_base"

    @property
    def fingerprint(self) -> str:
        return f"chunker-v1|{self.encoding}|max={self.max_tokens}|overlap={self.overlap_tokens}"


@dataclass
class IngestReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    relabeled: list[str] = field(default_factory=list)  # unchanged, but now readable by other groups
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    chunks_written: int = 0
    sentences_of_chunks: int = 0  # chunks whose sentences were embedded and stored for the located stage
    embed_seconds: float = 0.0
    total_seconds: float = 0.0

    def summary(self) -> str:
        rate = f", {self.chunks_written / self.embed_seconds:.0f} chunks/s embedded" if self.embed_seconds > 0 else ""
        return (f"{len(self.added)} added, {len(self.updated)} updated, {len(self.unchanged)} unchanged, "
                + (f"{len(self.relabeled)} relabeled, " if self.relabeled else "") +
                f"{len(self.removed)} removed, {len(self.failed)} failed; "
                f"{self.chunks_written} chunks written in {self.total_seconds:.1f}s{rate}"
                + (f"; the sentences of {self.sentences_of_chunks} chunks embedded" if self.sentences_of_chunks else ""))


def discover(paths: Sequence[Path]) -> tuple[list[Path], list[Path], list[tuple[str, str]]]:
    """(files to ingest, folders scanned, failures). Hidden entries are skipped; symlinked
    folders are not followed, so a symlink loop cannot trap the walk."""
    files: list[Path] = []
    folders: list[Path] = []
    failed: list[tuple[str, str]] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_dir():
            folder = p.resolve()
            folders.append(folder)
            for root, dirs, names in os.walk(folder, followlinks=False, onerror=lambda e: failed.append(
                    (str(e.filename), f"cannot list folder: {e.strerror}"))):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(names):
                    f = Path(root) / name
                    if not name.startswith(".") and f.suffix.lower() in SUPPORTED_SUFFIXES:
                        files.append(f)
        elif p.is_file():
            files.append(p.resolve())
        else:
            failed.append((str(p), "no such file or folder"))
    unique = list(dict.fromkeys(f if f.is_absolute() else f.resolve() for f in files))
    return unique, folders, failed


# Raised when parsing changes what a file becomes, so that re-ingest reads every stored file again.
# 2: tables as rows that carry their headers; PDFs through pdfplumber.
PARSER_VERSION = 2


def content_hash(data: bytes, settings: ChunkingSettings) -> str:
    return hashlib.sha256(f"parser-v{PARSER_VERSION}|{settings.fingerprint}".encode() + b"\0" + data).hexdigest()


def ingest_paths(
    paths: Sequence[str | Path],
    store: ChunkStore,
    embedder: Embedder,
    settings: ChunkingSettings = ChunkingSettings(),
    *,
    batch_chunks: int = 512,
    progress: Callable[[Iterable, int], Iterable] | None = None,
    full_text_index_from: int | None = None,
    max_file_bytes: int = MAX_FILE_BYTES,
    access: Sequence[str] | None = None,
    access_rules: dict[str, Sequence[str]] | None = None,
    prepare: Preparer | None = None,
    sentence_vectors: bool = False,
    sentence_progress: Callable[[Iterable, int], Iterable] | None = None,
) -> IngestReport:
    """`full_text_index_from`: also (re)build LanceDB's full-text index, for the "lancedb" BM25 backend,
    once the table holds at least this many chunks (0: always; None: never). `access`: the groups that
    may read these documents; without it, `access_rules` ({folder: groups}, the deepest folder that holds
    a file wins) decide per file, and a file under none of them is for everyone. An unchanged document
    given other groups is relabeled in place, without parsing or embedding it again.
    `prepare`: where changed documents are parsed, chunked and embedded (default: in this process;
    `ingest.on_ray.RayPreparer` for a Ray cluster). Commits are made here either way.
    `sentence_vectors`: also store each chunk's sentence vectors, which the located stage reads (a knowledge
    base ingested without them gains them on its next ingest, its chunks untouched); `sentence_progress` wraps
    that step's chunks as `progress` does the files.
    Only one ingest writes to a knowledge base at a time: a second raises `StoreBusy`."""
    with store.write_lock():
        rules = {} if access else {Path(folder).expanduser().resolve(): access_groups(groups)
                                   for folder, groups in (access_rules or {}).items()}
        return _ingest(paths, store, embedder, settings, batch_chunks, progress, full_text_index_from, max_file_bytes,
                       access_groups(access), rules, prepare,
                       SentenceStep(embedder, sentence_progress) if sentence_vectors else None)


def _ruled_access(path: Path, rules: dict[Path, tuple[str, ...]]) -> tuple[str, ...] | None:
    """The groups of the deepest rule folder that holds `path`, or None."""
    holding = [folder for folder in rules if path.is_relative_to(folder)]
    return rules[max(holding, key=lambda f: len(f.parts))] if holding else None


def access_groups(access: Sequence[str] | None) -> tuple[str, ...]:
    from chatbot.store import check_group
    from chatbot.types import EVERYONE

    return tuple(sorted({check_group(g.strip().lower()) for g in access or () if g.strip()} or {EVERYONE}))


@dataclass(frozen=True)
class Source:
    """One document as a source gives it: its bytes (a file read, a page fetched), or why there are none."""

    doc_path: str  # a file's absolute path, or a page's URL
    data: bytes | None = None
    suffix: str = ""  # how to parse it: ".pdf", ".html", ...
    reason: str = ""  # with no data: why it failed
    unchanged: bool = False  # with no data: known unchanged without its bytes (HTTP 304)
    access: tuple[str, ...] | None = None  # who may read it, when not the batch's groups


def _ingest(paths, store: ChunkStore, embedder: Embedder, settings: ChunkingSettings, batch_chunks: int,
            progress, full_text_index_from: int | None, max_file_bytes: int, access: tuple[str, ...],
            rules: dict[Path, tuple[str, ...]], prepare: Preparer | None,
            sentences: SentenceStep | None) -> IngestReport:
    started = time.perf_counter()
    report = IngestReport()
    files, folders, failures = discover([Path(p) for p in paths])
    report.failed.extend(failures)
    iterator = progress(files, len(files)) if progress else files
    sources = (dataclasses.replace(source, access=_ruled_access(path, rules)) if rules else source
               for path in iterator for source in [_read(path, max_file_bytes)])
    seen = write_sources(sources, store, embedder, settings, batch_chunks, report, access, prepare)
    gone = [p for p in store.document_hashes() if p not in seen and any(_is_under(p, f) for f in folders)]
    finish(store, report, gone, full_text_index_from, started, sentences)
    return report


def _read(path: Path, max_file_bytes: int) -> Source:
    doc_path = str(path)
    try:
        size = path.stat().st_size
        if size > max_file_bytes:
            return Source(doc_path, reason=f"file is {size / 2**20:.0f} MiB; the limit is {max_file_bytes / 2**20:g} "
                                           "MiB (config key max_file_mb)")
        return Source(doc_path, path.read_bytes(), path.suffix.lower())
    except OSError as e:
        return Source(doc_path, reason=f"cannot read file: {e.strerror or e}")


@dataclass(frozen=True)
class Work:
    """A changed document, to be parsed, chunked and embedded."""

    doc_path: str
    data: bytes
    suffix: str
    digest: str  # content_hash of `data`
    access: tuple[str, ...]


@dataclass(frozen=True)
class Prepared:
    """A document ready to store: its chunks and their vectors, or why it has none."""

    doc_path: str
    chunks: tuple[Chunk, ...] = ()
    vectors: np.ndarray | None = None  # (len(chunks), dim) float32
    reason: str = ""  # set when it failed
    # Each chunk's sentence vectors ((sentences, dim) each), when the preparer embedded them (a Ray worker does,
    # so that the driver need not); None: the ingest's sentence step embeds them, after the commits.
    sentence_vectors: tuple[np.ndarray, ...] | None = None


# Prepares changed documents, in any order: here (prepare_locally) or on a Ray cluster (ingest.on_ray).
Preparer = Callable[[Iterable[Work]], Iterable[Prepared]]


def chunk_work(work: Work, settings: ChunkingSettings) -> tuple[Chunk, ...]:
    """Parse and chunk one document; ParseError when it cannot be read or holds no text."""
    parsed = parse_file(Path(f"document{work.suffix}"), work.data, name=work.doc_path)
    chunks = chunk_document(parsed, work.doc_path, work.digest, settings.max_tokens, settings.overlap_tokens,
                            settings.encoding, work.access)
    if not chunks:
        raise ParseError(work.doc_path, "no text found in the file")
    return tuple(chunks)


def embed_sentences_of(texts: Sequence[str], embedder: Embedder) -> tuple[np.ndarray, ...]:
    """Each chunk text's sentence vectors ((sentences, dim) each), as the located stage reads them."""
    per_chunk = [chunk_sentences(text) for text in texts]
    vectors = embedder.embed_documents([s for sentences in per_chunk for s in sentences])
    ends = np.cumsum([len(sentences) for sentences in per_chunk], dtype=int)
    return tuple(vectors[end - len(sentences):end] for sentences, end in zip(per_chunk, ends))


def prepare_locally(works: Iterable[Work], embedder: Embedder, settings: ChunkingSettings, batch_chunks: int,
                    report: IngestReport) -> Iterator[Prepared]:
    """Parse and chunk in this process, embedding about `batch_chunks` chunks of several documents at once."""
    waiting: list[tuple[str, tuple[Chunk, ...]]] = []
    waiting_chunks = 0

    def embedded() -> Iterator[Prepared]:
        nonlocal waiting_chunks
        t = time.perf_counter()
        vectors = embedder.embed_documents([c.context_text for _, chunks in waiting for c in chunks])
        report.embed_seconds += time.perf_counter() - t
        at = 0
        for doc_path, chunks in waiting:
            yield Prepared(doc_path, chunks, vectors[at:at + len(chunks)])
            at += len(chunks)
        waiting.clear()
        waiting_chunks = 0

    for work in works:
        try:
            chunks = chunk_work(work, settings)
        except ParseError as e:
            yield Prepared(work.doc_path, reason=e.reason)
            continue
        waiting.append((work.doc_path, chunks))
        waiting_chunks += len(chunks)
        if waiting_chunks >= batch_chunks:
            yield from embedded()
    if waiting:
        yield from embedded()


def write_sources(sources: Iterable[Source], store: ChunkStore, embedder: Embedder, settings: ChunkingSettings,
                  batch_chunks: int, report: IngestReport, access: tuple[str, ...] = ("everyone",),
                  prepare: Preparer | None = None) -> set[str]:
    """Parse, chunk, embed and store what changed among `sources`, in atomic batches, readable by the
    `access` groups; returns every doc_path seen. A failed source leaves what is stored for it as it was.
    `prepare` does the parsing, chunking and embedding (default: here); the commits are always made here,
    whole documents at a time, so a killed ingest leaves each document wholly old or wholly new."""
    store.ensure_table(embedder.fingerprint, lambda: embedder.dimension)
    stored = store.document_hashes()
    stored_access = store.document_access()
    seen: set[str] = set()

    def keep(doc_path: str, groups: tuple[str, ...]) -> None:
        """An unchanged document: relabeled in place when it is now for other groups."""
        if tuple(sorted(stored_access.get(doc_path, ()))) != groups:
            store.relabel(doc_path, groups)
            report.relabeled.append(doc_path)
        else:
            report.unchanged.append(doc_path)

    def changed() -> Iterator[Work]:
        for source in sources:
            doc_path = source.doc_path
            seen.add(doc_path)
            groups = source.access or access
            if source.data is None:
                if source.unchanged and doc_path in stored:
                    keep(doc_path, groups)
                else:
                    report.failed.append((doc_path, source.reason or "no content"))
                continue
            digest = content_hash(source.data, settings)
            if stored.get(doc_path) == digest:
                keep(doc_path, groups)
            else:
                yield Work(doc_path, source.data, source.suffix, digest, groups)

    pending_docs: list[str] = []
    pending_chunks: list[Chunk] = []
    pending_vectors: list[np.ndarray] = []
    pending_sentences: list[tuple[str, np.ndarray]] = []

    def commit() -> None:
        if pending_docs:
            store.replace_documents(pending_docs, pending_chunks, np.concatenate(pending_vectors))
            report.chunks_written += len(pending_chunks)
            pending_docs.clear()
            pending_chunks.clear()
            pending_vectors.clear()
        if pending_sentences:
            # After the chunks: a stop in between leaves chunks without them, which the sentence step fills in.
            # A chunk whose text was stored before keeps its id and its vectors: they are not added twice.
            sentencing = sentencing_fingerprint(embedder.fingerprint)
            have = store.chunks_with_sentence_vectors([i for i, _ in pending_sentences], sentencing)
            store.add_sentence_vectors([(i, v) for i, v in pending_sentences if i not in have], sentencing)
            report.sentences_of_chunks += len(pending_sentences) - len(have)
            pending_sentences.clear()

    prepare = prepare or (lambda works: prepare_locally(works, embedder, settings, batch_chunks, report))
    for prepared in prepare(changed()):
        if prepared.reason:
            report.failed.append((prepared.doc_path, prepared.reason))
            continue
        (report.updated if prepared.doc_path in stored else report.added).append(prepared.doc_path)
        pending_docs.append(prepared.doc_path)
        pending_chunks.extend(prepared.chunks)
        pending_vectors.append(prepared.vectors)
        if prepared.sentence_vectors is not None:
            pending_sentences.extend((c.id, v) for c, v in zip(prepared.chunks, prepared.sentence_vectors))
        if len(pending_chunks) >= batch_chunks:
            commit()
    commit()
    return seen


def finish(store: ChunkStore, report: IngestReport, gone: Sequence[str], full_text_index_from: int | None,
           started: float, sentences: SentenceStep | None = None) -> None:
    """Remove `gone` documents, store sentence vectors where asked, compact, rebuild the full-text index when
    due, and time the report."""
    if gone:
        store.remove_documents(gone)
        report.removed.extend(gone)
    sentences_changed = (store_sentence_vectors(store, sentences.embedder, report, sentences.progress)
                         or report.sentences_of_chunks > 0) if sentences else False
    tidy(store, bool(report.chunks_written or gone or report.relabeled), sentences_changed, full_text_index_from)
    report.total_seconds = time.perf_counter() - started


# From this many chunks an ingest builds an approximate vector index: the exact search grows with the table
# (60 ms at 100k chunks, 200 ms at 300k on 2 cores) and the index answers in ~10 ms at recall@30 0.94 / 0.88
# (bench/README.md). Built once (103 s at 100k); compaction adds later chunks to it.
VECTOR_INDEX_MIN_CHUNKS = 100_000


def tidy(store: ChunkStore, changed: bool, sentences_changed: bool, full_text_index_from: int | None) -> None:
    """After a write: compact, and rebuild the indexes the writes made stale. An index that is due and missing
    is built though nothing changed: a table ingested under another `bm25_backend`, or before ingest built
    vector indexes, gets it from the next ingest (which the full-text search's error tells its user to run)."""
    if changed or sentences_changed:
        store.optimize()
        store.index_access()
        if sentences_changed:
            store.index_sentence_vectors()
    exists = store.exists()
    count = store.count() if exists else 0
    if (full_text_index_from is not None and exists and count >= full_text_index_from
            and (changed or not store.has_full_text_index())):
        store.build_full_text_index()
    if count >= VECTOR_INDEX_MIN_CHUNKS and not store.has_vector_index():
        store.build_vector_index()


SENTENCE_BATCH_CHUNKS = 256


@dataclass(frozen=True)
class SentenceStep:
    """An ingest's last step, when asked for: store each chunk's sentence vectors (`store_sentence_vectors`)."""
    embedder: Embedder
    progress: Callable[[Iterable, int], Iterable] | None = None


def store_sentence_vectors(store: ChunkStore, embedder: Embedder, report: IngestReport,
                           progress: Callable[[Iterable, int], Iterable] | None = None) -> bool:
    """Embed and store the sentences of every chunk that has none stored (the whole knowledge base the first
    time, then what changed), and drop those of chunks gone; whether anything changed. In batches, each
    committed: an ingest stopped midway keeps what it stored, and the next one goes on from there."""
    sentencing = sentencing_fingerprint(embedder.fingerprint)
    lacking = store.chunks_lacking_sentence_vectors(sentencing)
    chunks = iter(progress(lacking, len(lacking)) if progress and lacking else lacking)
    while batch := list(itertools.islice(chunks, SENTENCE_BATCH_CHUNKS)):
        vectors = embed_sentences_of([text for _, text in batch], embedder)
        store.add_sentence_vectors([(chunk_id, v) for (chunk_id, _), v in zip(batch, vectors)], sentencing)
        report.sentences_of_chunks += len(batch)
    return bool(store.prune_sentence_vectors(sentencing)) or bool(lacking)


def _is_under(path: str, folder: Path) -> bool:
    try:
        Path(path).relative_to(folder)
        return True
    except ValueError:
        return False
