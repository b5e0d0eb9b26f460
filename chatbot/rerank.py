"""Cross-encoder reranking of the whole candidate pool.

We ask the CrossEncoder for raw logits (activation passed explicitly on every call:
`predict(activation_fn=...)` would otherwise depend on saved config, and setting it
changes state for later calls). The logit becomes a probability only in `calibration`,
in float64, because a sigmoid applied in low precision saturates and ties the top scores.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import OrderedDict
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np

from chatbot.config import RERANKER_PRECISIONS, SHIPPED_RERANKER, SHIPPED_RERANKER_DIR
from chatbot.errors import ModelLoadError
from chatbot.lazy import Lazy, OwnThread
from chatbot.types import Candidate


def resolve_reranker_path(name: str) -> str:
    if name == SHIPPED_RERANKER:
        if not (SHIPPED_RERANKER_DIR / "config.json").is_file():
            raise ModelLoadError(
                f"the shipped reranker is missing from {SHIPPED_RERANKER_DIR}; reinstall the package, "
                "or set config key 'reranker' to a CrossEncoder hub id or local path"
            )
        return str(SHIPPED_RERANKER_DIR)
    return name


def _only_known_modules(path: str) -> bool:
    """True when a local model's modules.json names only sentence-transformers' classes and
    our own (chatbot.*), so allowing "remote code" imports nothing foreign."""
    modules = Path(path) / "modules.json"
    if not modules.is_file():
        return False
    try:
        types = [m["type"] for m in json.loads(modules.read_text(encoding="utf-8"))]
    except (ValueError, KeyError, TypeError):
        return False
    return all(t.startswith(("sentence_transformers.", "chatbot.")) for t in types)


def load_cross_encoder(name: str, max_length: int, device: str = "cpu"):
    """The CrossEncoder that `name` ("shipped", a folder or a hub id) points to: fp32, one logit per pair.
    Shared by serving (`Reranker`) and by training that continues from a reranker (`--init`)."""
    import torch
    from sentence_transformers import CrossEncoder

    where = resolve_reranker_path(name)
    # str(), not Path: some sentence-transformers versions mis-detect a Path as a hub id. fp32 even when
    # weights are stored in fp16: CPU half-precision is slow and saturates scores.
    return CrossEncoder(str(where), num_labels=1, max_length=max_length, device=device,
                        trust_remote_code=_only_known_modules(where), model_kwargs={"dtype": torch.float32})


def model_fingerprint(name: str) -> str:
    """Identity of a reranker for calibration files: its name, plus a hash of every weight file
    when local (heads keep their own weights in sub-folders, and a new head changes the scores)."""
    path = Path(resolve_reranker_path(name))
    weights = sorted(p for pattern in ("*.safetensors", "*.bin") for p in path.rglob(pattern)
                     if "checkpoint" not in p.relative_to(path).parts) if path.is_dir() else []
    if not weights:
        return name
    digest = hashlib.sha1()
    for file in weights:
        digest.update(file.relative_to(path).as_posix().encode())
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return f"{'shipped' if name == SHIPPED_RERANKER else path.name}:{digest.hexdigest()[:16]}"


def _int8_layers(model) -> set[str]:
    """The encoder's linear layers that int8 serves well, by module name.

    Left in fp32: each layer's feed-forward output projection (BERT's `layer.N.output.dense`). Its
    input is the GELU output, whose few very large channels set the scale of a per-tensor dynamic
    quantization and crush the rest: quantizing it moved the shipped model's logits by 2.1 on
    average and cost 3 points of SciFact nDCG@10; without it, 0.39 and no measurable loss."""
    import torch

    return {name for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and "encoder." in name
            and not (name.endswith("output.dense") and "attention" not in name)}


def quantize_int8(model) -> int:
    """Dynamic int8 quantization (weights int8, activations quantized per batch) of `model`'s
    encoder layers, in place; returns how many layers. On CPUs with VNNI the int8 products run
    about twice as fast as fp32 ones."""
    import warnings

    try:
        from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic
    except ImportError as e:  # removed from some future torch: say which setting avoids it
        raise ModelLoadError("int8 reranking needs torch.ao.quantization, which this torch lacks: "
                             "set config key 'reranker_precision' to 'fp32'") from e
    layers = _int8_layers(model)
    if layers:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the API's deprecation notice, once per load
            quantize_dynamic(model, {name: default_dynamic_qconfig for name in layers}, inplace=True)
    return len(layers)


class Reranker:
    def __init__(self, name: str, max_length: int = 256, batch_size: int = 8, device: str = "cpu",
                 cache_pairs: int = 0, precision: str = "fp32"):
        if precision not in RERANKER_PRECISIONS:
            raise ValueError(f"precision must be one of {RERANKER_PRECISIONS}, got {precision!r}")
        self.name = name
        self.max_length = max_length
        # Pairs go longest first; small batches pad each to its own longest pair.
        self.batch_size = batch_size
        self.device = device
        self.precision = precision
        self._model = Lazy(self._load)
        self._thread = OwnThread("reranker")
        # (question, passage) digest -> logit, least recently used first. A repeated question (the
        # same FAQ from many users, a retry, a re-ask) then costs no cross-encoder work. Touched only
        # on the reranker's own thread, so it needs no lock.
        self.cache_pairs = cache_pairs
        self._cache: OrderedDict[bytes, float] = OrderedDict()
        self.cache_hits = 0
        self.cache_misses = 0

    @property
    def model(self):
        return self._thread.run(self._model.get)

    def _load(self):
        where = resolve_reranker_path(self.name)  # outside the try: a missing shipped model names its own fix
        try:
            model = load_cross_encoder(where, self.max_length, self.device)
        except Exception as e:
            raise ModelLoadError.from_failure(
                "reranker", self.name, where, e, "Set config key 'reranker' (or --reranker) to 'shipped', a local "
                "CrossEncoder folder, or a hub id") from e
        if self.precision == "int8":
            quantize_int8(model)
        return model

    @cached_property
    def fingerprint(self) -> str:
        return model_fingerprint(self.name)

    def logits(self, question: str, passages: Sequence[str]) -> np.ndarray:
        if not passages:
            return np.zeros(0, dtype=np.float32)
        return self._thread.run(self._logits, question, passages)

    def _logits(self, question: str, passages: Sequence[str]) -> np.ndarray:
        out = np.empty(len(passages), dtype=np.float32)
        keys = [self._key(question, p) for p in passages] if self.cache_pairs else []
        todo = []
        for i in range(len(passages)):
            cached = self._cache.get(keys[i]) if keys else None
            if cached is None:
                todo.append(i)
            else:
                self._cache.move_to_end(keys[i])
                out[i] = cached
        self.cache_hits += len(passages) - len(todo)
        self.cache_misses += len(todo)
        if todo:
            out[todo] = self._predict(question, [passages[i] for i in todo])
        if keys:
            for i in todo:
                self._cache[keys[i]] = float(out[i])
            while len(self._cache) > self.cache_pairs:
                self._cache.popitem(last=False)
        return out

    @staticmethod
    def _key(question: str, passage: str) -> bytes:
        return hashlib.blake2b(f"{question}\x00{passage}".encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def _predict(self, question: str, passages: Sequence[str]) -> np.ndarray:
        import torch

        # Longest first so each batch pads to similar lengths.
        order = sorted(range(len(passages)), key=lambda i: -len(passages[i]))
        scores = self.model.predict([(question, passages[i]) for i in order], batch_size=self.batch_size,
                                    activation_fn=torch.nn.Identity(), convert_to_numpy=True,
                                    show_progress_bar=False)
        out = np.empty(len(passages), dtype=np.float32)
        out[order] = np.asarray(scores, dtype=np.float32).reshape(-1)
        return out

    def rerank(self, question: str, candidates: Sequence[Candidate], depth: int | None = None) -> list[Candidate]:
        """The first `depth` candidates (all when None) with `rerank_logit` set, best first, then the
        rest unscored in their given order.

        A cascade: `candidates` come in fused order, and the cross-encoder's cost is linear in how
        many it reads. Past the top 15-20 of the fused order, its verdicts seldom lift a chunk into
        the top 10 (bench/README.md has the measurement), so the tail can keep its fused rank."""
        head = list(candidates if depth is None else candidates[:depth])
        logits = self.logits(question, [c.chunk.context_text for c in head])
        scored = [dataclasses.replace(c, rerank_logit=float(l)) for c, l in zip(head, logits)]
        return sorted(scored, key=lambda c: -c.rerank_logit) + list(candidates[len(head):])
