"""Parse, chunk and embed on a Ray cluster (Ray Data); commit here, as a local ingest does.

Embedding is most of an ingest's time (30-50 chunks/s per 2 cores), so that is what goes out: each
Ray worker holds one embedder, loaded once, and prepares whole documents. The driver (this process)
keeps what must stay single: deciding what changed (content hashes), the write lock, and the commits,
each a batch of whole documents in one `merge_insert`. A killed driver therefore leaves every document
wholly old or wholly new, exactly as a local ingest does, and its Ray job ends with it.

Workers read each file from its path (so a cluster's machines must see the same paths: one machine,
or a shared filesystem) and check that its content hash is still the one the driver decided on.
Nothing here is imported unless `ingest --ray` is asked for; Ray is an optional dependency.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from chatbot.errors import ChatbotError, ConfigError
from chatbot.types import Chunk
from ingest.run import (ChunkingSettings, IngestReport, Prepared, Work, content_hash, embed_sentences_of,
                        prepare_locally)

DOCS_PER_BATCH = 8  # documents a worker prepares per call: enough chunks to fill the embedder's batches


@dataclass(frozen=True)
class RayPreparer:
    """An `ingest.run.Preparer` that runs on Ray. `address`: a running cluster ("auto", "host:6379",
    "ray://host:10001"); None starts a local one for this ingest. `workers`: embedders to run (default:
    one per CPU of the cluster)."""

    embedder: str
    settings: ChunkingSettings
    address: str | None = None
    workers: int | None = None
    embed_batch_size: int = 16
    # Wraps the stream of prepared documents (iterable, total) -> iterable: a progress bar of the part
    # that takes the time, as the files' own bar ends once the driver has hashed them.
    progress: Callable[[Iterable, int], Iterable] | None = None
    # The workers also embed each chunk's sentences (an ingest that stores sentence vectors): as much work
    # again as the chunks, which the driver would otherwise do alone after the cluster is done.
    sentence_vectors: bool = False

    def __call__(self, works: Iterable[Work]) -> Iterator[Prepared]:
        items = [{"doc_path": w.doc_path, "suffix": w.suffix, "digest": w.digest, "access": ",".join(w.access)}
                 for w in works]
        if not items:  # nothing changed: no cluster is started or joined
            return
        ray = _ray()
        started_here = not ray.is_initialized()
        if started_here:
            _init(ray, self.address)
        try:
            workers = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
            # The settings ride on the class, not as constructor arguments: Ray would keep those in its
            # object store and warn that a restarted worker might not find them.
            preparer = type("DocumentPreparer", (_DocumentPreparer,),
                            {"embedder_name": self.embedder, "batch_size": self.embed_batch_size,
                             "settings": self.settings, "sentence_vectors": self.sentence_vectors})
            blocks = max(1, -(-len(items) // DOCS_PER_BATCH))  # one block would feed one worker
            dataset = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
                preparer, batch_size=DOCS_PER_BATCH, batch_format="pandas",
                compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1)
            try:
                rows = dataset.iter_rows()
                for row in self.progress(rows, len(items)) if self.progress else rows:
                    yield _prepared(row)
            except ray.exceptions.RayError as e:  # a worker failed: what was committed stays, whole
                cause = getattr(e, "cause", None) or e
                raise ChatbotError(f"the Ray ingest stopped: {str(cause).strip().splitlines()[-1]}; the documents "
                                   "committed before it are stored, the others are as they were") from None
        finally:
            if started_here:
                ray.shutdown()


def _ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("`ingest --ray` needs Ray: pip install 'ray[data]'") from None
    return ray


def _reachable(address: str, timeout_s: float = 5.0) -> bool:
    """Whether a host:port cluster address answers on TCP; Ray itself would wait many minutes for one that
    does not. Other forms ("auto", "ray://...") are left to Ray."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return True
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def _init(ray, address: str | None) -> None:
    if address and not _reachable(address):
        raise _cannot_join(address, "nothing answers there")
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # per-dataset plans and timings: noise in a CLI
    try:
        with warnings.catch_warnings():
            # Ray starts its processes with fork+exec, which LanceDB's fork hook warns about; exec leaves
            # nothing of LanceDB's state behind in them.
            warnings.filterwarnings("ignore", message="lancedb fork support")
            if address:
                ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
            else:
                ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise _cannot_join(address, str(e)) from None


def _cannot_join(address: str | None, why: str) -> ConfigError:
    return ConfigError(f"cannot join the Ray cluster at {address!r}: {why}. Start one with `ray start --head` and "
                       "pass its address (host:6379), or give --ray alone for a local one")


class _DocumentPreparer:
    """A Ray Data worker: one embedder, loaded on its first batch, prepares whole documents."""

    embedder_name: str
    batch_size: int
    settings: ChunkingSettings
    sentence_vectors: bool

    def __init__(self):
        from chatbot.embed import Embedder

        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.embedder = Embedder(self.embedder_name, self.batch_size)

    def __call__(self, batch):
        works, failed = [], []
        for doc_path, suffix, digest, access in zip(batch["doc_path"], batch["suffix"], batch["digest"],
                                                    batch["access"]):
            try:
                data = Path(doc_path).read_bytes()
            except OSError as e:
                failed.append(Prepared(doc_path, reason=f"cannot read file on the Ray worker: {e.strerror or e}"))
                continue
            if content_hash(data, self.settings) != digest:  # changed since the driver looked: next ingest
                failed.append(Prepared(doc_path, reason="changed while being ingested; ingest it again"))
                continue
            works.append(Work(doc_path, data, suffix, digest, tuple(access.split(","))))
        prepared = failed + list(prepare_locally(works, self.embedder, self.settings, 10**9, IngestReport()))
        if self.sentence_vectors:
            sentences = iter(embed_sentences_of([c.text for p in prepared for c in p.chunks], self.embedder))
            prepared = [dataclasses.replace(p, sentence_vectors=tuple(next(sentences) for _ in p.chunks))
                        if not p.reason else p for p in prepared]
        import pandas as pd

        return pd.DataFrame({
            "doc_path": [p.doc_path for p in prepared],
            "chunks": [json.dumps([asdict(c) for c in p.chunks]) for p in prepared],
            "vectors": [p.vectors.astype(np.float32).tobytes() if p.vectors is not None else b"" for p in prepared],
            "dimension": [int(p.vectors.shape[1]) if p.vectors is not None and p.vectors.ndim == 2 else 0
                          for p in prepared],
            # float16, as they are stored; with each chunk's count of sentences
            "sentences": [json.dumps([len(v) for v in p.sentence_vectors]) if p.sentence_vectors is not None else ""
                          for p in prepared],
            "sentence_vectors": [np.concatenate(p.sentence_vectors).astype(np.float16).tobytes()
                                 if p.sentence_vectors else b"" for p in prepared],
            "reason": [p.reason for p in prepared],
        })


def _prepared(row: dict[str, Any]) -> Prepared:
    if row["reason"]:
        return Prepared(row["doc_path"], reason=row["reason"])
    chunks = tuple(Chunk(**{**c, "heading_path": tuple(c["heading_path"]), "access": tuple(c["access"])})
                   for c in json.loads(row["chunks"]))
    dimension = int(row["dimension"])
    vectors = np.frombuffer(row["vectors"], dtype=np.float32).reshape(len(chunks), dimension)
    sentences = None
    if row["sentences"]:
        counts = json.loads(row["sentences"])
        flat = np.frombuffer(row["sentence_vectors"], dtype=np.float16).reshape(-1, dimension)
        sentences = tuple(flat[end - count:end] for count, end in zip(counts, np.cumsum(counts, dtype=int)))
    return Prepared(row["doc_path"], chunks, vectors, sentence_vectors=sentences)

