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
from chatbot.lazy import Lazy, OwnThread, TorchWorkers
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
    ce = CrossEncoder(str(where), num_labels=1, max_length=max_length, device=device,
                      trust_remote_code=_only_known_modules(where), model_kwargs={"dtype": torch.float32})
    # Serving mode: a head module is built fresh when loaded, so it starts in training mode, and a reader's
    # own layers would drop out at random.
    return ce.eval()


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


def _length_batches(lengths: Sequence[int], most: int, workers: int) -> list[list[int]]:
    """Indices longest first, cut into batches of at most `most` that differ in size by one at most,
    and whose count is a multiple of `workers`, so each worker gets the same share of pairs."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    if not order:
        return []
    count = workers * -(-len(order) // (workers * most))
    base, extra = divmod(len(order), count)
    bounds = np.cumsum([0] + [base + (k < extra) for k in range(count)])
    return [order[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


# Columns of a scored pair. The reader's are NaN (and the span -1) for a model without a reader.
SCORE_COLUMNS = ("rerank_logit", "semantic_logit", "span_score", "null_score", "answer_start", "answer_end")


def _forward(model, features, offsets=None, late_spans: bool = False):
    """One batch's SCORE_COLUMNS per pair, as `CrossEncoder.predict` computes the logit, without its
    tokenizing. The semantic logit is NaN for a model with no separate part; the reader's columns are
    NaN for a model without a reader, and `offsets` (the tokenizer's character offsets into the
    passage) turn its best span's token positions into characters.

    `late_spans` (a reader with layers of its own): the span columns stay unset, and the batch's token
    states come back beside the columns, for `_read_late` to read the pairs that rank best."""
    import torch
    from sentence_transformers.util import batch_to_device

    from chatbot.cross_encoder import best_spans

    with torch.inference_mode():
        batch = batch_to_device(features, model.device)
        out = model[1].relevance(model[0](batch)) if late_spans else model(batch)
        scores = out["scores"].float().reshape(-1)
        nan = torch.full_like(scores, float("nan"))
        semantic = out.get("semantic_logit")
        columns = [scores, nan if semantic is None else semantic.float().reshape(-1)]
        if "start_logits" in out and offsets is not None:
            span, first, last = best_spans(out["start_logits"].float(), out["end_logits"].float())
            offsets = offsets.to(first.device)  # the model may run on a GPU (training's validation)
            rows = torch.arange(len(span), device=first.device)
            columns += [span, 2 * out["null_logit"].float().reshape(-1),
                        offsets[rows, first, 0].float(), offsets[rows, last, 1].float()]
        else:
            null = out.get("null_logit")
            columns += [nan, nan if null is None else 2 * null.float().reshape(-1), torch.full_like(scores, -1.0), nan]
        table = torch.stack(columns, dim=1).cpu().numpy()
    if late_spans:
        return table, (out["token_embeddings"], batch["attention_mask"], batch["token_type_ids"])
    return table


def _read_late(model, states: Sequence[tuple], offsets: Sequence) -> np.ndarray:
    """[span_score, answer_start, answer_end] for pairs whose token states (tokens, attention mask, token
    types: one pair's each, rows of batches of different widths) the ranking pass kept, read by the head's
    reader."""
    import torch

    from chatbot.cross_encoder import best_spans

    width = max(s[0].shape[0] for s in states)

    def pad(t):  # zeros after the last token; the attention mask's zeros keep them out
        return torch.nn.functional.pad(t, (0, 0) * (t.dim() - 1) + (0, width - t.shape[0]))

    tokens = torch.stack([pad(s[0]) for s in states])
    mask = torch.stack([pad(s[1]) for s in states])
    types = torch.stack([pad(s[2]) for s in states])
    where = torch.stack([pad(o) for o in offsets]).to(tokens.device)
    with torch.inference_mode():
        span, first, last = best_spans(*model[1].read_spans(tokens, mask, types))
        rows = torch.arange(len(span), device=first.device)
        return torch.stack([span, where[rows, first, 0].float(), where[rows, last, 1].float()], dim=1).cpu().numpy()


def _reader_fields(row: np.ndarray) -> dict:
    def value(x):
        return None if np.isnan(x) else float(x)

    _, semantic, span, null, first, last = row
    has_span = not np.isnan(span) and first >= 0 and last > first
    return dict(semantic_logit=value(semantic), span_score=value(span), null_score=value(null),
                answer_span=(int(first), int(last)) if has_span else None)


class Reranker:
    def __init__(self, name: str, max_length: int = 256, batch_size: int | None = None, device: str = "cpu",
                 cache_pairs: int = 0, precision: str = "fp32", workers: int | None = None, read_top: int = 5):
        if precision not in RERANKER_PRECISIONS:
            raise ValueError(f"precision must be one of {RERANKER_PRECISIONS}, got {precision!r}")
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.name = name
        self.max_length = max_length
        # Pairs go longest first; small batches pad each to its own longest pair. At most this many
        # pairs a batch, in as many batches as balance the workers. None: 4 with two workers, 8 with
        # one. On 2 cores (int8 and fp32 alike) two workers scored 20 pairs 15% and 30 pairs 13% faster
        # in batches of 4 than one thread team in batches of 8, and one team is fastest in batches of 8;
        # two workers in batches of 5-8 lost the gain at 30 pairs (bench/README.md).
        self.batch_size = batch_size
        self.workers = workers
        # A reader with layers of its own costs a layer's time per pair it reads, so it reads only the pairs
        # that rank best in a call: the evidence the gate can keep (the pipeline passes its top_n).
        self.read_top = read_top
        self.device = device
        self.precision = precision
        self._model = Lazy(self._load)
        self._thread = OwnThread("reranker")
        self._team = Lazy(self._make_team)
        # (question, passage) digest -> its SCORE_COLUMNS, least recently used first. A repeated
        # question (the same FAQ from many users, a retry, a re-ask) then costs no cross-encoder work.
        # Touched only on the reranker's own thread, so it needs no lock.
        self.cache_pairs = cache_pairs
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
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
            from chatbot.int8 import quantize_int8

            quantize_int8(model)
        return model

    @cached_property
    def fingerprint(self) -> str:
        return model_fingerprint(self.name)

    def logits(self, question: str, passages: Sequence[str]) -> np.ndarray:
        """`rerank_logit` per passage."""
        return self.scores(question, passages)[:, 0]

    def scores(self, question: str, passages: Sequence[str], scope: str = "") -> np.ndarray:
        """SCORE_COLUMNS per passage: [rerank_logit, semantic_logit, span_score, null_score, answer_start,
        answer_end]. The semantic logit is the model's reading of the pair without its exact-match term
        (`cross_encoder.SegmentCosineHead`), NaN for a model without one. A model with a reader also
        gives its best answer span's score, the no-answer score, and where that span lies in the passage
        (character offsets; NaN without a reader)."""
        if not passages:
            return np.zeros((0, len(SCORE_COLUMNS)), dtype=np.float32)
        return self._thread.run(self._scores, question, passages, scope)

    @property
    def has_reader(self) -> bool:
        from chatbot.cross_encoder import has_reader

        return has_reader(self.model)

    def _scores(self, question: str, passages: Sequence[str], scope: str = "") -> np.ndarray:
        out = np.empty((len(passages), len(SCORE_COLUMNS)), dtype=np.float32)
        keys = [self._key(question, p, scope) for p in passages] if self.cache_pairs else []
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
            cached = np.setdiff1d(np.arange(len(passages)), todo)
            out[todo] = self._predict(question, [passages[i] for i in todo], self.read_top, out[cached, 0])
        if keys and self._reads_late:
            # a cached pair read no span when it ranked lower in an earlier call; now it ranks among the best
            best = np.argsort(-out[:, 0], kind="stable")[:self.read_top]
            unread = [int(i) for i in best if np.isnan(out[i, 2])]
            if unread:
                out[unread] = self._predict(question, [passages[i] for i in unread], len(unread))
                todo = sorted(set(todo) | set(unread))
        if keys:
            for i in todo:
                self._cache[keys[i]] = out[i].copy()
            while len(self._cache) > self.cache_pairs:
                self._cache.popitem(last=False)
        return out

    def clear_cache(self) -> None:
        self._thread.run(self._cache.clear)

    def remember(self, question: str, passage: str, row: Sequence[float], scope: str = "") -> bool:
        """Put a pair's SCORE_COLUMNS, scored before by this same model (a stored trace), in the pair
        cache, so reading the pair again costs nothing. False when the cache is off."""
        if not self.cache_pairs:
            return False
        return self._thread.run(self._remember, self._key(question, passage, scope), np.asarray(row, dtype=np.float32))

    def _remember(self, key: bytes, row: np.ndarray) -> bool:
        self._cache[key] = row
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_pairs:
            self._cache.popitem(last=False)
        return True

    @staticmethod
    def _key(question: str, passage: str, scope: str = "") -> bytes:
        """`scope`: whose cache it is (the asker's groups), so one group's questions never warm another's."""
        return hashlib.blake2b(f"{scope}\x00{question}\x00{passage}".encode("utf-8", "surrogatepass"),
                               digest_size=16).digest()

    def _make_team(self) -> TorchWorkers:
        import torch

        cores = torch.get_num_threads()
        count = self.workers if self.workers is not None else min(2, cores)
        return TorchWorkers("reranker-worker", count, max(1, cores // count))

    @cached_property
    def _reads_late(self) -> bool:
        from chatbot.cross_encoder import reader_layer_count

        return bool(reader_layer_count(self.model))

    def _predict(self, question: str, passages: Sequence[str], read_top: int,
                 ranked_with: np.ndarray = np.zeros(0)) -> np.ndarray:
        """SCORE_COLUMNS of `passages`. A reader with layers of its own reads spans in those that rank among
        the best `read_top` of them and of the pairs whose `ranked_with` logits the cache gave."""
        model, team = self.model, self._team.get()
        most = self.batch_size or (4 if team.count > 1 else 8)
        batches = _length_batches([len(p) for p in passages], most, team.count)
        # Tokenized here, on the reranker's one thread: a fast tokenizer is not safe to share between threads.
        from chatbot.cross_encoder import encode_pairs, has_reader

        if has_reader(model):
            # The reader's spans need character offsets, and its training tokenized exactly like this.
            features, offsets = [], []
            for batch in batches:
                encoded = encode_pairs(model.tokenizer, [question] * len(batch), [passages[i] for i in batch],
                                       self.max_length)
                offsets.append(encoded.pop("offset_mapping"))
                features.append(dict(encoded))
            late = self._reads_late
            scores = team.map(lambda fo: _forward(model, *fo, late_spans=late), list(zip(features, offsets)))
            if late:
                states = [s[1] for s in scores]
                scores = [s[0] for s in scores]
        else:
            late = False
            features = [model.preprocess([(question, passages[i]) for i in batch]) for batch in batches]
            scores = team.map(lambda f: _forward(model, f), features)
        out = np.empty((len(passages), len(SCORE_COLUMNS)), dtype=np.float32)
        for batch, batch_scores in zip(batches, scores):
            out[batch] = batch_scores
        if late and read_top > 0:
            ranked = np.argsort(-np.concatenate([out[:, 0], ranked_with]), kind="stable")[:read_top]
            best = [int(i) for i in ranked if i < len(out)]
            if best:
                at = {i: (b, row) for b, batch in enumerate(batches) for row, i in enumerate(batch)}
                picked = [at[i] for i in best]
                out[np.ix_(best, [2, 4, 5])] = _read_late(model, [tuple(t[row] for t in states[b]) for b, row in picked],
                                                          [offsets[b][row] for b, row in picked])
        return out

    def rerank(self, question: str, candidates: Sequence[Candidate], depth: int | None = None,
               scope: str = "") -> list[Candidate]:
        """The first `depth` candidates (all when None) with `rerank_logit` set, best first, then the
        rest unscored in their given order.

        A cascade: `candidates` come in fused order, and the cross-encoder's cost is linear in how
        many it reads. Past the top 15-20 of the fused order, its verdicts seldom lift a chunk into
        the top 10 (bench/README.md has the measurement), so the tail can keep its fused rank."""
        head = list(candidates if depth is None else candidates[:depth])
        scores = self.scores(question, [c.chunk.context_text for c in head], scope)
        scored = [dataclasses.replace(c, rerank_logit=float(row[0]), **_reader_fields(row)) for c, row in zip(head, scores)]
        return sorted(scored, key=lambda c: -c.rerank_logit) + list(candidates[len(head):])
