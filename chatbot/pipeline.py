"""The one place that wires the stages together: retrieve -> rerank -> gate -> answer.

The CLI and the UI only build a `Pipeline` from a `Config` and call `ask`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from chatbot.answer import (ChatLLM, OpenAIChat, build_prompt, extractive_answer, grounding_problem, load_prompts,
                            may_become_no_answer, reply_to_answer)
from chatbot.calibration import Calibration
from chatbot.config import SHIPPED_CALIBRATIONS, SHIPPED_RERANKER, SHIPPED_RERANKER_DIR, Config
from chatbot.embed import Embedder
from chatbot.errors import ChatbotError, ConfigError, EmptyQuestion, LLMError, StoreError, UngroundedAnswer
from chatbot.gate import apply_gate
from chatbot.locate import SentenceVectors, closest_sentences
from chatbot.record import ask_record
from chatbot.rerank import Reranker
from chatbot.retrieve import HybridRetriever, Retrieval
from chatbot.store import ChunkStore
from chatbot.traces import TraceStore
from chatbot.types import AskResult, GateResult, Refusal, Viewer, cache_scope

MAX_QUESTION_CHARS = 4000
NEAR_MISSES = 3


class QuestionTooLong(ChatbotError):
    pass


def clean_question(question: str) -> str:
    """The question as searched: control characters carry no meaning for search and can break
    terminals and logs; runs of white space fold to one."""
    question = " ".join("".join(ch for ch in question if ch.isprintable() or ch.isspace()).split())
    if not question:
        raise EmptyQuestion("the question is empty: type a question")
    if len(question) > MAX_QUESTION_CHARS:
        raise QuestionTooLong(f"the question is {len(question)} characters long; the limit is {MAX_QUESTION_CHARS}")
    return question


@dataclass(frozen=True)
class AnswerDelta:
    """Text the LLM has just added to the answer (before citations are renumbered)."""

    text: str


def default_calibration_path(config: Config) -> Path | None:
    """The calibration file config key `calibration` names: a path, or one shipped with the shipped reranker
    (SHIPPED_CALIBRATIONS: empty for the default); None for another reranker with none named (uncalibrated)."""
    if config.calibration not in SHIPPED_CALIBRATIONS:
        return Path(config.calibration)
    if config.reranker == SHIPPED_RERANKER:
        return SHIPPED_RERANKER_DIR / SHIPPED_CALIBRATIONS[config.calibration]
    if config.calibration:
        raise ConfigError(f"calibration '{config.calibration}' was fitted for the shipped reranker, not for "
                          f"{config.reranker}: fit one for it with `chatbot calibrate` and set config key "
                          "'calibration' to its file")
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
                 calibration: Calibration, llm: ChatLLM | None = None, traces: TraceStore | None = None,
                 locate: bool | None = None):
        """`locate`: whether questions go through the located stage (`chatbot.locate`); None, only when the
        calibration's P(answerable) reads its closest-sentence cosine (the stage embeds the best chunks'
        sentences unless ingest stored their vectors, a cost only worth paying for a reason). Evaluation and
        calibration always locate."""
        self.config = config
        self.locate = locate
        self.store = store
        self.embedder = embedder
        self.sentence_vectors = SentenceVectors(embedder, store)
        self.reranker = reranker
        self.calibration = calibration
        self.llm = llm
        self.traces = traces
        self.retriever = HybridRetriever(store, embedder, config.pool_size, config.rrf_k, config.bm25_backend)
        self._prompts: tuple[str, str] | None = None
        self._ready_version: int | None = None

    @classmethod
    def from_config(cls, config: Config, llm: ChatLLM | None = None,
                    calibration: Calibration | None = None, locate: bool | None = None) -> "Pipeline":
        """`calibration` given explicitly (e.g. while fitting one) bypasses the configured file; `locate` as for
        the constructor."""
        reranker = Reranker(config.reranker, max_length=config.reranker_max_length,
                            cache_pairs=config.rerank_cache_pairs, precision=config.reranker_precision,
                            read_top=config.top_n)
        embedder = Embedder(config.embedder, config.embed_batch_size)
        path = default_calibration_path(config)
        if calibration is not None:
            pass
        elif path is None:
            # A hub or local reranker with no calibration fitted yet: plain sigmoid, even odds.
            calibration = Calibration(floor=0.5, notes={"source": "uncalibrated default"})
        else:
            calibration = Calibration.load(path)
            calibration.check_fits({"reranker": reranker.fingerprint, "embedder": embedder.fingerprint,
                                    "chunking": config.chunking_fingerprint}, str(path))
        if llm is None and config.llm_enabled:
            llm = OpenAIChat(config.llm_base_url, config.llm_model, config.llm_api_key, config.llm_timeout_s)
        store = ChunkStore(config.db_uri, config.table, config.storage)
        return cls(config, store=store, embedder=embedder,
                   reranker=reranker, calibration=calibration, llm=llm,
                   traces=TraceStore(store) if config.traces else None, locate=locate)

    @property
    def locates_sentences(self) -> bool:
        return self.calibration.reads_sentence_cosine if self.locate is None else self.locate

    def with_table(self, table: str) -> "Pipeline":
        """The same models, calibration and LLM over another table of chunks (evaluating several sets
        loads the models once)."""
        config = dataclasses.replace(self.config, table=table)
        store = ChunkStore(config.db_uri, table, config.storage)
        return Pipeline(config, store=store, embedder=self.embedder, reranker=self.reranker,
                        calibration=self.calibration, llm=self.llm, traces=TraceStore(store) if config.traces else None,
                        locate=self.locate)

    def with_calibration(self, calibration: Calibration) -> "Pipeline":
        """The same knowledge base and models under another calibration, storing no traces (what
        replay asks with: re-asking a stored question must not add a trace of its own)."""
        return Pipeline(dataclasses.replace(self.config, traces=False), store=self.store, embedder=self.embedder,
                        reranker=self.reranker, calibration=calibration, llm=None, traces=None, locate=self.locate)

    @property
    def prompts(self) -> tuple[str, str]:
        if self._prompts is None:
            self._prompts = load_prompts(self.config.prompts_dir)
        return self._prompts

    def warm(self) -> None:
        """Load the models now, so the first person to ask does not wait for them."""
        self.embedder.embed_query("warm up")
        self.reranker.logits("warm up", ["warm up"])

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

    def ask(self, question: str, viewer: Viewer | None = None) -> AskResult:
        """The whole question at once: the last event of `ask_stream`."""
        *_, result = self.ask_stream(question, stream=False, viewer=viewer)
        return result

    def ask_stream(self, question: str, *, stream: bool = True,
                   viewer: Viewer | None = None) -> Iterator[Evidence | AnswerDelta | AskResult]:
        """The question's progress as events: its `Evidence` (the panel can fill before any LLM
        work), then `AnswerDelta`s as the LLM writes (none for refusals or extractive answers),
        then the final `AskResult`, traced. A refusal never reaches the LLM. With a `viewer`, nothing they
        may not read is retrieved, so nothing of it reaches the reranker, the answer or the trace."""
        question = clean_question(question)
        evidence = self.evidence(question, viewer=viewer)
        yield evidence
        gate, clock = evidence.gate, _Clock(dict(evidence.timings_ms))
        t = time.perf_counter()

        llm_error = set_aside = None
        outcome = None
        if not gate.kept:
            outcome = self._refusal(gate, (
                "The passages found do not answer the question: the chance that they do is below the floor."
                if gate.judged_answerability else "No passage in the knowledge base clears the evidence floor."))
        elif self.llm is not None:
            try:
                outcome = yield from self._llm_outcome(question, gate, stream, clock, t)
            except LLMError as e:
                llm_error = str(e)
            except UngroundedAnswer as e:
                set_aside = str(e)
        if outcome is None:
            if llm_error:
                note = f"The LLM failed ({llm_error}); this answer quotes the evidence instead."
            elif set_aside:
                note = f"The LLM's answer was set aside because {set_aside}; this answer quotes the evidence instead."
            else:
                note = None
            kwargs = {"note": note} if note else {}
            outcome = extractive_answer(question, gate.kept, self.embedder.embed_sentences,
                                        span_floor=gate.answer_span_floor, **kwargs)
        clock.lap("answer_ms", t)
        clock.timings["total_ms"] = round(sum(v for k, v in clock.timings.items() if k != "first_token_ms"), 2)
        result = AskResult(question=question, gate=gate, outcome=outcome, timings_ms=clock.timings, llm_error=llm_error)
        yield self._trace(result, viewer)

    def _llm_outcome(self, question: str, gate: GateResult, stream: bool, clock: "_Clock", started: float):
        """Yields AnswerDeltas; returns the Answer, a Refusal (the LLM found no answer), or raises LLMError."""
        system, user = self.prompts
        prompt = build_prompt(question, gate.kept, system, user, self.config.context_max_tokens,
                              self.config.tokenizer_encoding, span_floor=gate.answer_span_floor)
        pieces = (self.llm.stream(prompt.messages, self.config.llm_max_answer_tokens) if stream
                  else [self.llm.complete(prompt.messages, self.config.llm_max_answer_tokens)])
        reply, shown = "", 0
        for piece in pieces:
            if not reply:
                clock.lap("first_token_ms", started)
            reply += piece
            if not may_become_no_answer(reply):
                yield AnswerDelta(reply[shown:])
                shown = len(reply)
        answer = reply_to_answer(reply, prompt)
        if answer is None:
            return self._refusal(gate, "The evidence that cleared the floor does not answer the question "
                                       "(the LLM found no answer in it).")
        problem = grounding_problem(answer)
        if problem:
            raise UngroundedAnswer(problem)
        return answer

    @property
    def fingerprints(self) -> dict[str, str]:
        c = self.config
        return {"embedder": self.embedder.fingerprint, "reranker": self.reranker.fingerprint,
                "calibration": self.calibration.reranker_fingerprint or "uncalibrated",
                "chunking": c.chunking_fingerprint}

    def _trace(self, result: AskResult, viewer: Viewer | None = None) -> AskResult:
        if self.traces is None:
            return result
        try:
            record = ask_record(result, self.fingerprints)
            record["asked_by"] = viewer.name if viewer is not None else None
            trace_id = self.traces.record(record, self.config.public_dict(), self.fingerprints)
        except Exception as e:  # a failed trace write must not cost the user their answer
            return dataclasses.replace(result, trace_error=f"could not store the trace: {e}")
        return dataclasses.replace(result, trace_id=trace_id)

    def evidence(self, question: str, query_vector=None, without_docs: frozenset[str] = frozenset(),
                 viewer: Viewer | None = None) -> "Evidence":
        """Retrieve, rerank and gate: everything before the answer, with per-stage timings.
        `without_docs` (document paths) are taken out of the pool before reranking: how evaluation asks
        an answerable question of a knowledge base that lacks its answer (leave gold out)."""
        self.check_ready()
        clock = _Clock({})
        t = time.perf_counter()
        if query_vector is None:
            query_vector = self.embedder.embed_query(question)
        t = clock.lap("embed_query_ms", t)
        retrieval = self.retriever.retrieve(question, query_vector, viewer)
        if without_docs:
            retrieval = dataclasses.replace(retrieval, pool=tuple(c for c in retrieval.pool
                                                                  if c.chunk.doc_path not in without_docs))
        t = clock.lap("retrieve_ms", t)
        reranked = self.reranker.rerank(question, retrieval.pool, self.config.rerank_depth,
                                        scope=cache_scope(viewer))
        t = clock.lap("rerank_ms", t)
        if self.locates_sentences:
            reranked = closest_sentences(query_vector, reranked, self.sentence_vectors, self.config.top_n)
            t = clock.lap("locate_ms", t)
        gate = apply_gate(reranked, self.calibration, self.config.top_n)
        clock.lap("gate_ms", t)
        return Evidence(retrieval, gate, clock.timings)

    def _refusal(self, gate, reason: str) -> Refusal:
        return Refusal(reason=reason, floor=gate.floor, best_p_relevant=gate.best_p_relevant,
                       near_misses=gate.nearest(NEAR_MISSES), p_answerable=gate.p_answerable,
                       answerability_floor=gate.answerability_floor)
