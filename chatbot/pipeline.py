"""The one place that wires the stages together: retrieve -> rerank -> gate -> answer.

The CLI and the UI only build a `Pipeline` from a `Config` and call `ask`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from chatbot.answer import ChatLLM, OpenAIChat, extractive_answer, llm_answer, load_prompts
from chatbot.calibration import Calibration
from chatbot.config import SHIPPED_RERANKER, SHIPPED_RERANKER_DIR, Config
from chatbot.embed import Embedder
from chatbot.errors import ChatbotError, EmptyQuestion, LLMError, StoreError
from chatbot.gate import apply_gate
from chatbot.record import ask_record
from chatbot.rerank import Reranker
from chatbot.retrieve import HybridRetriever, Retrieval, resolve_bm25_backend
from chatbot.store import ChunkStore
from chatbot.traces import TraceStore
from chatbot.types import AskResult, GateResult, Refusal

MAX_QUESTION_CHARS = 4000
NEAR_MISSES = 3


class QuestionTooLong(ChatbotError):
    pass


def default_calibration_path(config: Config) -> Path | None:
    if config.calibration:
        return Path(config.calibration)
    if config.reranker == SHIPPED_RERANKER:
        return SHIPPED_RERANKER_DIR / "calibration.json"
    return None


@dataclass(frozen=True)
class Evidence:
    retrieval: Retrieval
    gate: GateResult
    timings_ms: dict


@dataclass
class _Clock:
    timings: dict

    def lap(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.timings[stage] = round((now - since) * 1000.0, 2)
        return now


class Pipeline:
    def __init__(self, config: Config, *, store: ChunkStore, embedder: Embedder, reranker: Reranker,
                 calibration: Calibration, llm: ChatLLM | None = None, traces: TraceStore | None = None):
        self.config = config
        self.store = store
        self.embedder = embedder
        self.reranker = reranker
        self.calibration = calibration
        self.llm = llm
        self.traces = traces
        self.retriever = HybridRetriever(store, embedder, config.pool_size, config.rrf_k,
                                         resolve_bm25_backend(config.bm25_backend, store.is_remote))
        self._prompts: tuple[str, str] | None = None
        self._ready_version: int | None = None

    @classmethod
    def from_config(cls, config: Config, llm: ChatLLM | None = None,
                    calibration: Calibration | None = None) -> "Pipeline":
        """`calibration` given explicitly (e.g. while fitting one) bypasses the configured file."""
        reranker = Reranker(config.reranker, max_length=config.reranker_max_length)
        path = default_calibration_path(config)
        if calibration is not None:
            pass
        elif path is None:
            # A hub or local reranker with no calibration fitted yet: plain sigmoid, even odds.
            calibration = Calibration(floor=0.5, notes={"source": "uncalibrated default"})
        else:
            calibration = Calibration.load(path)
            calibration.check_fits(reranker.fingerprint, str(path))
        if llm is None and config.llm_enabled:
            llm = OpenAIChat(config.llm_base_url, config.llm_model, config.llm_api_key, config.llm_timeout_s)
        store = ChunkStore(config.db_uri, config.table)
        return cls(config, store=store, embedder=Embedder(config.embedder, config.embed_batch_size),
                   reranker=reranker, calibration=calibration, llm=llm,
                   traces=TraceStore(store) if config.traces else None)

    @property
    def prompts(self) -> tuple[str, str]:
        if self._prompts is None:
            self._prompts = load_prompts(self.config.prompts_dir)
        return self._prompts

    def check_ready(self) -> None:
        version = self.store.version()
        if version == self._ready_version:
            return
        if not self.store.exists() or self.store.count() == 0:
            raise StoreError(
                f"the knowledge base '{self.store.table_name}' at '{self.store.uri}' is empty: "
                "run `chatbot ingest PATH` first"
            )
        self.store.check_embedder(self.embedder.fingerprint)
        self._ready_version = version

    def ask(self, question: str) -> AskResult:
        # Control characters carry no meaning for search and can break terminals and logs.
        question = " ".join("".join(ch for ch in question if ch.isprintable() or ch.isspace()).split())
        if not question:
            raise EmptyQuestion("the question is empty: type a question")
        if len(question) > MAX_QUESTION_CHARS:
            raise QuestionTooLong(f"the question is {len(question)} characters long; the limit is {MAX_QUESTION_CHARS}")
        evidence = self.evidence(question)
        gate, clock = evidence.gate, _Clock(dict(evidence.timings_ms))
        t = time.perf_counter()

        llm_error = None
        if not gate.kept:
            outcome = self._refusal(gate, "No passage in the knowledge base clears the evidence floor.")
        else:
            outcome = None
            if self.llm is not None:
                system, user = self.prompts
                try:
                    outcome = llm_answer(question, gate.kept, self.llm, system, user,
                                         self.config.context_max_tokens, self.config.llm_max_answer_tokens,
                                         self.config.tokenizer_encoding)
                    if outcome is None:
                        outcome = self._refusal(gate, "The evidence that cleared the floor does not answer the question (the LLM found no answer in it).")
                except LLMError as e:
                    llm_error = str(e)
            if outcome is None:
                note = (f"The LLM failed ({llm_error}); this answer quotes the evidence instead."
                        if llm_error else None)
                kwargs = {"note": note} if note else {}
                outcome = extractive_answer(question, gate.kept, self.embedder.embed_documents, **kwargs)
        clock.lap("answer_ms", t)
        clock.timings["total_ms"] = round(sum(clock.timings.values()), 2)
        result = AskResult(question=question, gate=gate, outcome=outcome, timings_ms=clock.timings, llm_error=llm_error)
        return self._trace(result)

    @property
    def fingerprints(self) -> dict[str, str]:
        c = self.config
        return {"embedder": self.embedder.fingerprint, "reranker": self.reranker.fingerprint,
                "calibration": self.calibration.reranker_fingerprint or "uncalibrated",
                "chunking": f"max={c.chunk_max_tokens},overlap={c.chunk_overlap_tokens},{c.tokenizer_encoding}"}

    def _trace(self, result: AskResult) -> AskResult:
        if self.traces is None:
            return result
        try:
            trace_id = self.traces.record(ask_record(result, self.fingerprints), self.config.public_dict(),
                                          self.fingerprints)
        except Exception as e:  # a failed trace write must not cost the user their answer
            return dataclasses.replace(result, trace_error=f"could not store the trace: {e}")
        return dataclasses.replace(result, trace_id=trace_id)

    def evidence(self, question: str, query_vector=None) -> "Evidence":
        """Retrieve, rerank and gate: everything before the answer, with per-stage timings."""
        self.check_ready()
        clock = _Clock({})
        t = time.perf_counter()
        if query_vector is None:
            query_vector = self.embedder.embed_query(question)
        t = clock.lap("embed_query_ms", t)
        retrieval = self.retriever.retrieve(question, query_vector)
        t = clock.lap("retrieve_ms", t)
        reranked = self.reranker.rerank(question, retrieval.pool)
        t = clock.lap("rerank_ms", t)
        gate = apply_gate(reranked, self.calibration, self.config.top_n)
        clock.lap("gate_ms", t)
        return Evidence(retrieval, gate, clock.timings)

    def _refusal(self, gate, reason: str) -> Refusal:
        best = gate.ranked[0].p_relevant if gate.ranked else None
        return Refusal(reason=reason, floor=gate.floor, best_p_relevant=best, near_misses=gate.ranked[:NEAR_MISSES])
