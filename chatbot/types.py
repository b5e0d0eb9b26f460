"""The shared vocabulary: frozen values that flow from one stage to the next.

Every score is named for what it is; only `p_relevant` (a calibrated probability)
is ever compared with the floor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Union

HEADING_SEPARATOR = " > "
EVERYONE = "everyone"  # the group every user is in, and a document's access unless it is given one


@dataclass(frozen=True)
class Viewer:
    """Who is asking, for what they may read: a document is theirs when its access names one of their
    groups (everyone is in EVERYONE). None in place of a Viewer: the operator, who reads everything."""

    name: str
    groups: frozenset[str] = frozenset()
    admin: bool = False

    @property
    def reads(self) -> frozenset[str]:
        return self.groups | {EVERYONE}

    def may_read(self, chunk: "Chunk") -> bool:
        return bool(self.reads & set(chunk.access))

    @property
    def scope(self) -> str:
        """What its reads are keyed by in shared caches: its groups (users of the same groups share)."""
        return ",".join(sorted(self.reads))


def cache_scope(viewer: Viewer | None) -> str:
    """The scope `viewer`'s scores are cached under; "" for the operator (None), who reads everything."""
    return viewer.scope if viewer is not None else ""


@dataclass(frozen=True)
class Chunk:
    id: str
    doc_path: str
    title: str
    heading_path: tuple[str, ...]
    position: int
    text: str
    token_count: int
    content_hash: str
    access: tuple[str, ...] = (EVERYONE,)  # the groups that may read it

    @property
    def heading(self) -> str:
        return HEADING_SEPARATOR.join(self.heading_path)

    @property
    def context_text(self) -> str:
        """Text the embedder and the reranker see: where the chunk sits, then what it says.

        The title and headings carry the topic of short chunks ("Refunds: within 30 days").
        """
        where = HEADING_SEPARATOR.join((self.title, *self.heading_path)) if self.title else self.heading
        return f"{where}\n{self.text}" if where else self.text


@dataclass(frozen=True)
class Candidate:
    """A chunk in the candidate pool with the score of every stage it has passed."""

    chunk: Chunk
    vector_distance: float  # cosine distance of normalised embeddings, 0 = same direction
    vector_rank: int | None  # 1-based rank in the vector list, None if outside it
    bm25_score: float
    bm25_rank: int | None
    rrf_score: float
    term_coverage: float = 0.0  # share of the question's content words found in the chunk
    rerank_logit: float | None = None
    # rerank_logit without the reranker's exact-match term: how the pair reads, not how many of the
    # question's words it repeats. None when the reranker has no such term (or did not read the chunk).
    semantic_logit: float | None = None
    p_relevant: float | None = None
    ranking_score: float | None = None  # what the gate orders by, when the calibration has a ranking
    # The reader's (a reranker with a reader head; None otherwise): its best answer span's score
    # (start + end logit), the no-answer score on the same scale, and where that span lies in
    # `chunk.context_text` (character offsets, end exclusive).
    span_score: float | None = None
    null_score: float | None = None
    answer_span: tuple[int, int] | None = None
    # The embedder's cosine between the question and the chunk's closest sentence (`chatbot.locate`), and that
    # sentence; set on the best-ranked read chunks only (None elsewhere).
    sentence_cosine: float | None = None
    closest_sentence: str | None = None

    @property
    def answer_margin(self) -> float | None:
        """How much the reader prefers its best span to "no answer here"."""
        if self.span_score is None or self.null_score is None:
            return None
        return self.span_score - self.null_score

    @property
    def answer_text(self) -> str | None:
        """The reader's best span, as written in the chunk."""
        if self.answer_span is None:
            return None
        first, last = self.answer_span
        return self.chunk.context_text[first:last].strip() or None

    @property
    def cosine_similarity(self) -> float:
        return 1.0 - self.vector_distance


CandidateStatus = Literal["kept", "below_floor", "cut_by_top_n", "not_reranked"]


@dataclass(frozen=True)
class GateResult:
    floor: float
    top_n: int
    ranked: tuple[Candidate, ...]  # the read pool, best first (the calibration's ranking, else the reranker's), then the unread
    kept: tuple[Candidate, ...]
    # With a calibration that judges answerability: P(the evidence answers the question) and its floor,
    # which decide refusal (then `floor` only picks the evidence). None: refusal turns on best_p_relevant.
    p_answerable: float | None = None
    answerability_floor: float | None = None
    answer_span_floor: float | None = None  # the reader's margin from which a span is stated; None: never

    @property
    def judged_answerability(self) -> bool:
        return self.p_answerable is not None

    @property
    def scored(self) -> tuple[Candidate, ...]:
        """The candidates the reranker read, best first: `ranked` without the unread tail."""
        return tuple(c for c in self.ranked if c.p_relevant is not None)

    @property
    def best_p_relevant(self) -> float | None:
        """What the refusal decision turns on: the question is answered when this clears the floor."""
        return max((c.p_relevant for c in self.scored), default=None)

    def nearest(self, n: int) -> tuple[Candidate, ...]:
        """The `n` read candidates with the highest p_relevant."""
        return tuple(sorted(self.scored, key=lambda c: -c.p_relevant)[:n])

    def status(self, chunk_id: str) -> CandidateStatus:
        if any(c.chunk.id == chunk_id for c in self.kept):
            return "kept"
        cand = next(c for c in self.ranked if c.chunk.id == chunk_id)
        if cand.p_relevant is None:
            return "not_reranked"
        below = cand.p_relevant < self.floor or (self.judged_answerability and not self.kept)
        return "below_floor" if below else "cut_by_top_n"


@dataclass(frozen=True)
class Answer:
    text: str  # with citation markers [n] renumbered to `cited`
    cited: tuple[Chunk, ...]  # cited[i] is citation [i+1]
    mode: Literal["llm", "extractive"]
    dropped_citations: tuple[str, ...] = ()  # markers the LLM wrote that matched no supplied chunk
    note: str = ""


@dataclass(frozen=True)
class Refusal:
    reason: str
    floor: float
    best_p_relevant: float | None
    near_misses: tuple[Candidate, ...]  # best candidates that did not clear the floor
    p_answerable: float | None = None  # when the calibration judges answerability: what was below its floor
    answerability_floor: float | None = None


Outcome = Union[Answer, Refusal]


@dataclass(frozen=True)
class AskResult:
    question: str
    gate: GateResult
    outcome: Outcome
    timings_ms: dict[str, float] = field(default_factory=dict)
    llm_error: str | None = None
    trace_id: str | None = None
    trace_error: str | None = None

    @property
    def refused(self) -> bool:
        return isinstance(self.outcome, Refusal)
