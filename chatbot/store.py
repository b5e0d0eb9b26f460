"""The chunk store: one LanceDB table of chunks with their embeddings, and a small
`<table>_meta` table recording which embedder built it.

Replacing a document's chunks is one `merge_insert` (insert the new rows, delete the
document's rows that are not among them) so a reader never sees a half-replaced document.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa

from chatbot.errors import ConfigError, EmbedderMismatch, StoreBusy, StoreError
from chatbot.types import EVERYONE, Chunk

_REMOTE = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


METADATA_CACHE_BYTES = 64 * 2**20
VECTOR_REFINE_FACTOR = 5  # candidates re-scored with full vectors per result, when an ANN index answers


WEB_SCHEMA = pa.schema([pa.field("url", pa.string(), nullable=False), pa.field("etag", pa.string()),
                        pa.field("last_modified", pa.string())])


SENTENCE_SCHEMA = pa.schema([
    pa.field("chunk_id", pa.string(), nullable=False),
    pa.field("sentencing", pa.string(), nullable=False),  # chatbot.sentences.sentencing_fingerprint
    pa.field("vectors", pa.list_(pa.float16())),  # the chunk's sentence vectors, row after row
])
_IDS_PER_STATEMENT = 1000
# A knowledge base without sentence vectors is looked at again this often by questions (another process's
# ingest may add them); ingest itself always looks.
SENTENCES_RECHECK_S = 30.0


def sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def chunk_schema(dimension: int) -> pa.Schema:
    return pa.schema([
        pa.field("id", pa.string(), nullable=False),
        pa.field("doc_path", pa.string(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("heading_path", pa.list_(pa.string())),
        pa.field("position", pa.int32()),
        pa.field("text", pa.string()),
        pa.field("token_count", pa.int32()),
        pa.field("content_hash", pa.string()),
        pa.field("search_text", pa.string()),  # title, headings and text: what BM25 indexes
        pa.field("vector", pa.list_(pa.float32(), dimension)),
        pa.field("access", pa.string()),  # the groups that may read the chunk, as ",hr,eng,"
    ])


_GROUP = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


def check_group(name: str) -> str:
    """A group name: lower-case letters, digits and hyphens (nothing SQL or LIKE could read as syntax)."""
    if not _GROUP.match(name or ""):
        raise ConfigError(f"group name {name!r}: use lower-case letters, digits and hyphens, e.g. 'hr' or 'eng-ops'")
    return name


def encode_access(groups: Sequence[str]) -> str:
    return "," + ",".join(sorted({check_group(g) for g in groups} or {EVERYONE})) + ","


def decode_access(value: str | None) -> tuple[str, ...]:
    return tuple(g for g in (value or f",{EVERYONE},").split(",") if g) or (EVERYONE,)


def access_filter(groups: Sequence[str], labels: Iterable[str]) -> str:
    """The SQL condition for the chunks a reader of `groups` may see (EVERYONE included): an IN list of
    the table's distinct access `labels` that name one of the groups, which the access column's bitmap
    index answers (a LIKE per group scanned every row: +56% on retrieval at 100k chunks,
    bench/access_filter.py)."""
    names = {check_group(g) for g in groups} | {EVERYONE}
    readable = sorted(label for label in labels if set(decode_access(label)) & names)
    return f"access IN ({', '.join(sql_str(label) for label in readable)})" if readable else "FALSE"


def _row_to_chunk(row: Mapping) -> Chunk:
    return Chunk(
        id=row["id"], doc_path=row["doc_path"], title=row["title"] or "",
        heading_path=tuple(row["heading_path"] or ()), position=int(row["position"]),
        text=row["text"], token_count=int(row["token_count"]), content_hash=row["content_hash"],
        access=decode_access(row.get("access")),
    )


def _scored_rows(table: pa.Table, score_column: str) -> list[tuple[Chunk, np.ndarray, float]]:
    """A search result's rows as (chunk, vector, the search's own score)."""
    if not table.num_rows:
        return []
    vectors = np.asarray(table.column("vector").to_pylist(), dtype=np.float32)
    scores = table.column(score_column).to_pylist()
    rows = table.drop_columns(["vector"]).to_pylist()
    return [(_row_to_chunk(row), vector, float(score)) for row, vector, score in zip(rows, vectors, scores)]


@dataclass(frozen=True)
class CorpusSnapshot:
    """Every chunk's text and vector at one table version, for BM25 and vector look-ups."""

    version: int
    chunks: tuple[Chunk, ...]
    vectors: np.ndarray  # (n, dim) float32, row i belongs to chunks[i]


class ChunkStore:
    def __init__(self, uri: str, table: str = "chunks", storage_options: Mapping[str, str] | None = None):
        """`storage_options`: object-storage credentials and endpoint (config key `storage`); without
        them, LanceDB and the lock read the usual AWS variables."""
        self.uri = uri
        self.table_name = table
        self.storage_options = dict(storage_options or {})
        self._db = None
        self._table = None
        self._labels: tuple[int, frozenset[str]] | None = None  # (table version, its access labels)
        self._sentences_table = None
        self._sentences_missing_at: float | None = None  # when the question path last found no such table

    @property
    def is_remote(self) -> bool:
        return bool(_REMOTE.match(self.uri))

    @contextmanager
    def write_lock(self) -> Iterator[None]:
        """Held by an ingest for its whole run, so two ingests into one local knowledge base never
        interleave: the second fails at once, naming the holder. The kernel drops the lock when the
        holder dies, even by SIGKILL. On s3:// the lock is an object created with a conditional write
        (`chatbot.s3lock`), which holds across machines; other remote stores rely on LanceDB's own
        commit conflict checks."""
        if self.uri.startswith("s3://"):
            from chatbot.s3lock import s3_write_lock

            with s3_write_lock(self.uri, self.table_name, options=self.storage_options):
                yield
            return
        if self.is_remote:
            yield
            return
        folder = Path(self.uri)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            handle = open(folder / f".{self.table_name}.write.lock", "a+", encoding="utf-8")
        except OSError as e:
            raise StoreError(f"cannot write to the database folder '{self.uri}' (config key db_uri): {e.strerror or e}") from e
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise StoreBusy(f"another ingest ({holder}) is writing to the knowledge base '{self.table_name}' at "
                                f"'{self.uri}'; wait for it to finish, then run this one again") from None
            handle.truncate(0)
            handle.write(f"pid {os.getpid()}")
            handle.flush()
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @property
    def db(self):
        if self._db is None:
            import lancedb

            try:
                if not self.is_remote:
                    Path(self.uri).mkdir(parents=True, exist_ok=True)
                # Interval 0: a long-running server sees documents another process ingested.
                # A bounded metadata cache: Lance caches the manifest of every table version it has
                # seen, and the traces table gains a version per question asked, each manifest
                # longer than the last, so a server's memory grew with the square of its questions.
                session = None if self.is_remote else lancedb.Session(metadata_cache_size_bytes=METADATA_CACHE_BYTES)
                self._db = lancedb.connect(self.uri, read_consistency_interval=timedelta(0), session=session,
                                           storage_options=self.storage_options or None)
            except Exception as e:
                raise StoreError(f"cannot open the database at '{self.uri}' (config key db_uri): {e}") from e
        return self._db

    def _open(self, name: str):
        try:
            return self.db.open_table(name)
        except (FileNotFoundError, ValueError):
            return None
        except Exception as e:
            if "not found" in str(e).lower() or "does not exist" in str(e).lower():
                return None
            raise StoreError(f"cannot open table '{name}' in '{self.uri}': {e}") from e

    @property
    def table(self):
        if self._table is None:
            self._table = self._open(self.table_name)
        return self._table

    def exists(self) -> bool:
        return self.table is not None

    def has_table(self, name: str) -> bool:
        """Whether a table of that name is in this database (without creating it)."""
        return self._open(name) is not None

    # -- what built the table -------------------------------------------------
    def _meta(self) -> dict[str, str]:
        meta = self._open(f"{self.table_name}_meta")
        if meta is None:
            return {}
        return {r["key"]: r["value"] for r in meta.to_arrow().to_pylist()}

    def embedder_fingerprint(self) -> str | None:
        return self._meta().get("embedder")

    def check_embedder(self, fingerprint: str) -> None:
        stored = self.embedder_fingerprint()
        if stored is not None and stored != fingerprint:
            raise EmbedderMismatch(
                f"table '{self.table_name}' in '{self.uri}' was built with embedder '{stored}', "
                f"but the configured embedder is '{fingerprint}'. Set config key 'embedder' back to "
                f"'{stored}', or ingest into a new table (config key 'table')."
            )

    def ensure_table(self, embedder_fingerprint: str, dimension: Callable[[], int]) -> None:
        """Create the table if needed; `dimension` is only called then (it may load a model). A table from
        before access labels gains its column, every chunk readable by everyone, as it was."""
        self.check_embedder(embedder_fingerprint)
        if self.table is None:
            self._table = self.db.create_table(self.table_name, schema=chunk_schema(dimension()), exist_ok=True)
        elif "access" not in self.table.schema.names:
            self.table.add_columns({"access": f"'{encode_access([EVERYONE])}'"})
        if self.embedder_fingerprint() is None:
            rows = [{"key": "embedder", "value": embedder_fingerprint},
                    {"key": "dimension", "value": json.dumps(self.table.schema.field("vector").type.list_size)}]
            self.db.create_table(f"{self.table_name}_meta", data=rows, mode="overwrite")

    # -- reads ---------------------------------------------------------------
    def version(self) -> int:
        return -1 if self.table is None else int(self.table.version)

    def count(self) -> int:
        return 0 if self.table is None else int(self.table.count_rows())

    def document_hashes(self) -> dict[str, str]:
        """doc_path -> content_hash of every stored document."""
        if self.table is None:
            return {}
        t = self._scan(["doc_path", "content_hash"])
        return dict(zip(t.column("doc_path").to_pylist(), t.column("content_hash").to_pylist()))

    def document_access(self) -> dict[str, tuple[str, ...]]:
        """doc_path -> the groups that may read it."""
        if self.table is None:
            return {}
        if "access" not in self.table.schema.names:
            return {p: (EVERYONE,) for p in self.document_hashes()}
        t = self._scan(["doc_path", "access"])
        return {p: decode_access(a) for p, a in zip(t.column("doc_path").to_pylist(), t.column("access").to_pylist())}

    def access_labels(self) -> frozenset[str]:
        """The table's distinct access values (a handful: one per combination of groups in use), kept
        per table version."""
        version = self.version()
        cached = self._labels
        if cached is None or cached[0] != version:
            labels = frozenset(self._scan(["access"]).column("access").unique().to_pylist()) - {None} \
                if self.table is not None and "access" in self.table.schema.names else frozenset()
            cached = self._labels = (version, labels)
        return cached[1]

    def index_access(self) -> None:
        """A bitmap index on the access column, which the access filter's IN list reads."""
        if self.table is not None and "access" in self.table.schema.names:
            self.table.create_scalar_index("access", index_type="BITMAP", replace=True)

    def relabel(self, doc_path: str, groups: Sequence[str]) -> None:
        """Change who may read a document, in place: no parsing, no embedding."""
        self.table.update(where=f"doc_path = {sql_str(doc_path)}", values={"access": encode_access(groups)})

    # -- what web pages were fetched as (ETag / Last-Modified), for conditional re-fetching -----------
    @property
    def _web_table_name(self) -> str:
        return f"{self.table_name}_web"

    def web_validators(self) -> dict[str, tuple[str, str]]:
        """url -> (etag, last_modified) of every page stored from the web."""
        table = self._open(self._web_table_name)
        if table is None:
            return {}
        return {r["url"]: (r["etag"], r["last_modified"]) for r in table.to_arrow().to_pylist()}

    def save_web_validators(self, validators: dict[str, tuple[str, str]]) -> None:
        if not validators:
            return
        rows = pa.Table.from_pylist([{"url": u, "etag": e or "", "last_modified": m or ""}
                                     for u, (e, m) in validators.items()], schema=WEB_SCHEMA)
        table = self._open(self._web_table_name)
        if table is None:
            self.db.create_table(self._web_table_name, data=rows)
        else:
            table.merge_insert("url").when_matched_update_all().when_not_matched_insert_all().execute(rows)

    def chunk_ids(self) -> set[str]:
        if self.table is None:
            return set()
        return set(self._scan(["id"]).column("id").to_pylist())

    def document_chunk_counts(self) -> dict[str, int]:
        """doc_path -> number of chunks, for showing what is indexed."""
        if self.table is None:
            return {}
        return dict(Counter(self._scan(["doc_path"]).column("doc_path").to_pylist()))

    def snapshot(self) -> CorpusSnapshot:
        if self.table is None:
            return CorpusSnapshot(-1, (), np.zeros((0, 0), dtype=np.float32))
        version = int(self.table.version)
        t = self._scan(None)
        rows = t.drop_columns(["vector"]).to_pylist()
        vectors = np.asarray(t.column("vector").combine_chunks().values.to_numpy(zero_copy_only=False),
                             dtype=np.float32).reshape(len(rows), -1) if rows else np.zeros((0, 0), np.float32)
        return CorpusSnapshot(version, tuple(_row_to_chunk(r) for r in rows), vectors)

    def full_text_search(self, query: str, limit: int) -> list[tuple[str, float]]:
        """(chunk id, BM25 score) from LanceDB's own full-text index, best first."""
        if self.table is None:
            return []
        hits = self._full_text(query, limit, ["id", "_score"])
        return list(zip(hits.column("id").to_pylist(), (float(x) for x in hits.column("_score").to_pylist())))

    def full_text_chunks(self, query: str, limit: int, where: str | None = None) -> list[tuple[Chunk, np.ndarray, float]]:
        """(chunk, its vector, BM25 score) from LanceDB's own full-text index, best first. The rows come
        with the search: fetching them by id afterwards filters the whole table (15 ms at 100k chunks,
        33 ms at 300k in bench/scale.py)."""
        if self.table is None:
            return []
        return _scored_rows(self._full_text(query, limit, None, where), "_score")

    def _full_text(self, query: str, limit: int, columns: list[str] | None, where: str | None = None) -> pa.Table:
        """`where`: a condition applied before ranking (a prefilter), so the limit counts only matching rows."""
        search = self.table.search(query, query_type="fts", fts_columns="search_text")
        if where:
            search = search.where(where, prefilter=True)
        try:
            return (search.select(columns) if columns else search).limit(limit).to_arrow()
        except Exception as e:
            if "index" in str(e).lower():
                raise StoreError(f"table '{self.table_name}' has no full-text index: run `chatbot ingest` "
                                 "again, or set config key bm25_backend to 'rank_bm25'") from e
            raise

    def has_full_text_index(self) -> bool:
        if self.table is None:
            return False
        return any(i.index_type == "FTS" and "search_text" in i.columns for i in self.table.list_indices())

    def build_full_text_index(self) -> None:
        """(Re)build the full-text index; run after ingest, never on the request path."""
        if self.table is None:
            return
        from lancedb.index import FTS

        # With an FTS config, the first argument names the text column.
        self.table.create_index("search_text", config=FTS(), replace=True)

    def has_vector_index(self) -> bool:
        if self.table is None:
            return False
        return any(i.columns == ["vector"] and i.index_type.lower().startswith("ivf")
                   for i in self.table.list_indices())

    def build_vector_index(self) -> dict[str, int | str]:
        """Build an approximate (IVF_PQ) index of the chunk vectors; run after ingest, never on the request path.
        Searched with `VECTOR_REFINE_FACTOR`, it answers in ~10 ms at 100k-300k chunks where the exact search
        takes 60-200 ms (bench/README.md, scale.py). Later writes join it as the table is compacted. Returns
        how it was built."""
        if self.table is None:
            return {}
        from lancedb.index import IvfPq

        dimension = self.table.schema.field("vector").type.list_size
        # sqrt(n) partitions, as LanceDB advises; sub-vectors of 8 dimensions (48 for MiniLM's 384).
        built = {"type": "IVF_PQ", "num_partitions": max(16, int(self.count() ** 0.5)),
                 "num_sub_vectors": dimension // 8 if dimension % 8 == 0 else 1}
        self.table.create_index("vector", config=IvfPq(distance_type="cosine", num_partitions=built["num_partitions"],
                                                       num_sub_vectors=built["num_sub_vectors"]), replace=True)
        return built

    def _scan(self, columns: list[str] | None) -> pa.Table:
        query = self.table.search()
        if columns is not None:
            query = query.select(columns)
        return query.limit(None).to_arrow()

    def vector_search(self, query_vector: np.ndarray, limit: int, where: str | None = None) -> list[tuple[str, float]]:
        """(chunk id, cosine distance) of the nearest chunks, nearest first."""
        if self.table is None:
            return []
        hits = self._nearest(query_vector, limit, where).select(["id", "_distance"]).to_arrow()
        return list(zip(hits.column("id").to_pylist(), (float(d) for d in hits.column("_distance").to_pylist())))

    def nearest_chunks(self, query_vector: np.ndarray, limit: int,
                       where: str | None = None) -> list[tuple[Chunk, np.ndarray, float]]:
        """(chunk, its vector, cosine distance) of the nearest chunks, nearest first, rows and all."""
        if self.table is None:
            return []
        return _scored_rows(self._nearest(query_vector, limit, where).to_arrow(), "_distance")

    def _nearest(self, query_vector: np.ndarray, limit: int, where: str | None = None):
        """`where`: a prefilter, so the limit counts only rows that match it."""
        # refine_factor: an IVF_PQ index ranks by compressed vectors, which blur near neighbours (recall@30
        # 0.73 at 100k chunks in bench/scale.py); re-scoring 5x the limit with the full vectors raised it to
        # 0.94 for under 2 ms. Without a vector index the search is exact and this does nothing.
        search = (self.table.search(np.asarray(query_vector, dtype=np.float32), vector_column_name="vector")
                  .metric("cosine").refine_factor(VECTOR_REFINE_FACTOR).limit(limit))
        return search.where(where, prefilter=True) if where else search

    # -- writes --------------------------------------------------------------
    def replace_documents(self, doc_paths: Sequence[str], chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        """Atomically make `chunks` the whole content of `doc_paths` (a doc with no chunks is removed)."""
        if self.table is None:
            raise StoreError("table does not exist yet: call ensure_table first")
        if len(chunks) != len(vectors):
            raise ValueError("one vector per chunk")
        rows = pa.Table.from_pylist([
            {"id": c.id, "doc_path": c.doc_path, "title": c.title, "heading_path": list(c.heading_path),
             "position": c.position, "text": c.text, "token_count": c.token_count,
             "content_hash": c.content_hash, "search_text": c.context_text, "vector": v,
             "access": encode_access(c.access)}
            for c, v in zip(chunks, np.asarray(vectors, dtype=np.float32))
        ], schema=self.table.schema)
        in_docs = "doc_path IN (" + ", ".join(sql_str(p) for p in doc_paths) + ")"
        (self.table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all()
         .when_not_matched_by_source_delete(in_docs).execute(rows))

    def remove_documents(self, doc_paths: Iterable[str]) -> None:
        paths = list(doc_paths)
        if self.table is None or not paths:
            return
        self.table.delete("doc_path IN (" + ", ".join(sql_str(p) for p in paths) + ")")

    def optimize(self) -> None:
        """Compact small fragments left by many incremental writes (off the request path)."""
        for table in (self.table, self._sentences()):
            if table is not None:
                try:
                    table.optimize()
                except Exception:
                    pass  # compaction is an optimisation; a failure must not fail an ingest

    # -- sentence vectors -----------------------------------------------------
    # Each chunk's sentences embedded at ingest, for the located stage, which otherwise embeds the best
    # chunks' sentences while the user waits. A table beside the chunks, keyed by chunk id (which changes
    # with the document's content), so a row never describes other text than its chunk's. Rows are added
    # after the chunks they belong to and pruned after those go: a chunk without its row is embedded at
    # question time, as on a knowledge base ingested before. float16: half the disk, cosines within 1e-3.
    @property
    def sentences_table_name(self) -> str:
        return f"{self.table_name}_sentences"

    def _sentences(self, asked: bool = False):
        # Kept once found: an open handle reads the table's latest version (read_consistency_interval 0).
        # `asked` (the question path): a missing table is looked for again only after SENTENCES_RECHECK_S, since
        # looking costs a LIST request per question on object storage. Ingest always looks.
        if self._sentences_table is None:
            now = time.monotonic()
            if asked and self._sentences_missing_at is not None and now - self._sentences_missing_at < SENTENCES_RECHECK_S:
                return None
            self._sentences_table = self._open(self.sentences_table_name)
            self._sentences_missing_at = now if self._sentences_table is None else None
        return self._sentences_table

    def _unreadable_sentences(self, e: Exception) -> StoreError:
        return StoreError(f"cannot read the sentence vectors in '{self.sentences_table_name}' at '{self.uri}': "
                          f"{e}; remove that table and ingest again (the chunks are kept)")

    @staticmethod
    def _sentences_of(chunk_ids: Sequence[str], sentencing: str) -> str:
        """The condition for the sentence-vector rows of `chunk_ids` made under `sentencing`."""
        return f"sentencing = {sql_str(sentencing)} AND chunk_id IN (" + ", ".join(map(sql_str, chunk_ids)) + ")"

    def sentence_vectors(self, chunk_ids: Sequence[str], sentencing: str) -> dict[str, np.ndarray]:
        """{chunk id: its stored sentence vectors, (sentences, dim) float32} for those of `chunk_ids` stored
        under `sentencing`; a knowledge base without any gives {}."""
        table = self._sentences(asked=True) if chunk_ids else None
        if table is None:
            return {}
        try:
            rows = table.search().where(self._sentences_of(chunk_ids, sentencing)).select(["chunk_id", "vectors"]).limit(len(chunk_ids)).to_arrow()
            dimension = self.table.schema.field("vector").type.list_size
            return {chunk_id: np.asarray(flat, dtype=np.float32).reshape(-1, dimension)
                    for chunk_id, flat in zip(rows.column("chunk_id").to_pylist(),
                                              rows.column("vectors").to_numpy(zero_copy_only=False))}
        except Exception as e:  # LanceDB's own errors, or rows that are not vectors of this dimension
            raise self._unreadable_sentences(e) from e

    def chunks_with_sentence_vectors(self, chunk_ids: Sequence[str], sentencing: str) -> set[str]:
        """Those of `chunk_ids` with sentence vectors stored under `sentencing`: their ids only, not the vectors."""
        table = self._sentences() if chunk_ids else None
        if table is None:
            return set()
        found: set[str] = set()
        try:
            for at in range(0, len(chunk_ids), _IDS_PER_STATEMENT):
                where = self._sentences_of(chunk_ids[at:at + _IDS_PER_STATEMENT], sentencing)
                found.update(table.search().where(where).select(["chunk_id"]).limit(None).to_arrow()
                             .column("chunk_id").to_pylist())
        except Exception as e:
            raise self._unreadable_sentences(e) from e
        return found

    def chunks_lacking_sentence_vectors(self, sentencing: str) -> list[tuple[str, str]]:
        """(chunk id, text) of every chunk with no sentence vectors stored under `sentencing`."""
        if self.table is None:
            return []
        table = self._sentences()
        try:
            have = set() if table is None else set(
                table.search().where(f"sentencing = {sql_str(sentencing)}").select(["chunk_id"]).limit(None)
                .to_arrow().column("chunk_id").to_pylist())
        except Exception as e:
            raise self._unreadable_sentences(e) from e
        if not set(self._scan(["id"]).column("id").to_pylist()) - have:
            return []  # the usual re-ingest: every chunk's text stays unread
        chunks = self._scan(["id", "text"])
        return [(i, text) for i, text in zip(chunks.column("id").to_pylist(), chunks.column("text").to_pylist())
                if i not in have]

    def add_sentence_vectors(self, rows: Sequence[tuple[str, np.ndarray]], sentencing: str) -> None:
        if not rows:
            return
        data = pa.table({
            "chunk_id": [chunk_id for chunk_id, _ in rows], "sentencing": [sentencing] * len(rows),
            "vectors": pa.array([np.asarray(v, dtype=np.float16).ravel() for _, v in rows],
                                type=pa.list_(pa.float16())),
        }, schema=SENTENCE_SCHEMA)
        table = self._sentences()
        if table is None:
            table = self._sentences_table = self.db.create_table(self.sentences_table_name, schema=SENTENCE_SCHEMA)
        table.add(data)

    def prune_sentence_vectors(self, sentencing: str) -> int:
        """Delete the sentence vectors of chunks no longer stored, and any made under another `sentencing`
        (another embedder, or an older way of reading sentences); returns how many rows went."""
        table = self._sentences()
        if table is None:
            return 0
        rows = table.search().select(["chunk_id", "sentencing"]).limit(None).to_arrow()
        stored = set(self._scan(["id"]).column("id").to_pylist()) if self.table is not None else set()
        made_under = rows.column("sentencing").to_pylist()
        other = sum(made != sentencing for made in made_under)
        if other:
            table.delete(f"sentencing != {sql_str(sentencing)}")
        gone = sorted({i for i, made in zip(rows.column("chunk_id").to_pylist(), made_under)
                       if made == sentencing and i not in stored})
        for at in range(0, len(gone), _IDS_PER_STATEMENT):
            table.delete("chunk_id IN (" + ", ".join(sql_str(i) for i in gone[at:at + _IDS_PER_STATEMENT]) + ")")
        return other + len(gone)

    def index_sentence_vectors(self) -> None:
        """A B-tree on chunk_id: the located stage looks up a handful of chunks per question."""
        table = self._sentences()
        if table is not None:
            table.create_scalar_index("chunk_id", index_type="BTREE", replace=True)
