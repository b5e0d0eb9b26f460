"""What the chat UI shows, computed from pipeline values: the answer with its sources, the
refusal with its near misses, the inspection table, the score chart and the timings.

Pure functions of frozen values, so they are tested without a browser; `chatbot.ui` only
places them on the page.
"""

from __future__ import annotations

import html
import io
import os
import threading
from typing import Sequence

from chatbot.types import Answer, AskResult, Candidate, Chunk, GateResult, Refusal

REFUSAL_TEXT = "I don't have evidence for that."
STATUS_LABELS = {"kept": "kept", "below_floor": "below floor", "cut_by_top_n": "cut by top-n",
                 "not_reranked": "past rerank depth"}
TABLE_HEADERS = ["#", "status", "cited", "p_relevant", "ranking_score", "rerank_logit", "semantic_logit",
                 "span_score", "null_score", "answer", "sentence_cosine", "rrf_score", "bm25_score", "vector_distance",
                 "term_coverage", "document", "heading"]


def where(chunk: Chunk) -> str:
    return " > ".join(x for x in (chunk.title, *chunk.heading_path) if x) or os.path.basename(chunk.doc_path)


def display_path(path: str) -> str:
    if "://" in path:  # a web page's URL, as it was fetched
        return path
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return path
    return path if relative.startswith("..") else relative


def sources_markdown(cited: Sequence[Chunk]) -> str:
    lines = [f"{i}. **{html.escape(where(c))}**  \n   `{display_path(c.doc_path)}`" for i, c in enumerate(cited, start=1)]
    return "**Sources**\n\n" + "\n".join(lines)


def answer_markdown(answer: Answer) -> str:
    parts = [answer.text]
    if answer.note:
        parts.append(f"*{answer.note}*")
    if answer.cited:
        parts.append(sources_markdown(answer.cited))
    if answer.dropped_citations:
        parts.append(f"*Removed citations to sources that were not supplied: {', '.join(answer.dropped_citations)}*")
    return "\n\n".join(parts)


def refusal_scores(refusal: Refusal) -> str:
    """What the refusal turned on, in words: P(answerable) against its floor, or the best p_relevant."""
    if refusal.p_answerable is not None:
        return f"P(answerable) {refusal.p_answerable:.3f}, floor {refusal.answerability_floor:.3f}"
    best = f"{refusal.best_p_relevant:.3f}" if refusal.best_p_relevant is not None else "n/a"
    return f"best p_relevant {best}, floor {refusal.floor:.3f}"


def near_misses_heading(refusal: Refusal) -> str:
    if refusal.p_answerable is not None:
        return "Closest passages, which do not answer it"
    return "Closest passages, below the evidence floor"


def refusal_markdown(refusal: Refusal) -> str:
    parts = [f"<div class='refusal'>🚫 <strong>{REFUSAL_TEXT}</strong></div>",
             f"{refusal.reason} ({refusal_scores(refusal)})"]
    if refusal.near_misses:
        misses = "\n".join(f"- {html.escape(where(c.chunk))} (`{display_path(c.chunk.doc_path)}`), "
                           f"p_relevant {c.p_relevant or 0.0:.3f}" for c in refusal.near_misses)
        parts.append(f"**{near_misses_heading(refusal)}:**\n\n{misses}")
    return "\n\n".join(parts)


def outcome_markdown(result: AskResult) -> str:
    text = (refusal_markdown(result.outcome) if isinstance(result.outcome, Refusal)
            else answer_markdown(result.outcome))
    if result.llm_error:
        text += f"\n\n⚠️ *{result.llm_error}*"
    return text


def _fmt(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def candidate_rows(gate: GateResult, cited: Sequence[Chunk] = ()) -> list[list[str]]:
    """One row per pool candidate, best first: every stage's score and its fate."""
    cited_ids = [c.id for c in cited]
    rows = []
    for rank, c in enumerate(gate.ranked, start=1):
        cited_as = f"[{cited_ids.index(c.chunk.id) + 1}]" if c.chunk.id in cited_ids else ""
        rows.append([str(rank), STATUS_LABELS[gate.status(c.chunk.id)], cited_as, _fmt(c.p_relevant, 4),
                     _fmt(c.ranking_score), _fmt(c.rerank_logit), _fmt(c.semantic_logit), _fmt(c.span_score, 2),
                     _fmt(c.null_score, 2), c.answer_text or "", _fmt(c.sentence_cosine), _fmt(c.rrf_score, 4),
                     _fmt(c.bm25_score), _fmt(c.vector_distance), _fmt(c.term_coverage, 2),
                     display_path(c.chunk.doc_path), where(c.chunk)])
    return rows


def result_rows(result: AskResult) -> list[list[str]]:
    cited = result.outcome.cited if isinstance(result.outcome, Answer) else ()
    return candidate_rows(result.gate, cited)


def timings_markdown(timings_ms: dict[str, float]) -> str:
    if not timings_ms:
        return ""
    cells = " · ".join(f"{k.removesuffix('_ms').replace('_', ' ')} **{v:.0f} ms**" for k, v in timings_ms.items())
    return f"Latency: {cells}"


def floor_markdown(gate: GateResult, asked: str, standalone: str) -> str:
    kept = len(gate.kept)
    lines = [f"**Searched:** {html.escape(standalone)}"]
    if standalone != asked:
        lines.append(f"*(rewritten from the follow-up: “{html.escape(asked)}”)*")
    read = len(gate.scored)
    reranked = f" · reranked the fused top {read}" if read < len(gate.ranked) else ""
    if gate.judged_answerability:
        verdict = "answered" if gate.kept else "refused"
        lines.append(f"**Floor:** P(answerable) ≥ {gate.answerability_floor:.3f}; this question "
                     f"**{gate.p_answerable:.3f}**, {verdict} · evidence: p_relevant ≥ {gate.floor:.4f} · "
                     f"**kept** {kept} of {len(gate.ranked)} (top-n {gate.top_n}){reranked}")
    else:
        lines.append(f"**Floor:** p_relevant ≥ {gate.floor:.4f} · **kept** {kept} of {len(gate.ranked)} "
                     f"(top-n {gate.top_n}){reranked}")
    return "  \n".join(lines)


def chunk_markdown(candidate: Candidate, status: str) -> str:
    """The chunk's text with the reader's answer span highlighted, under its scores."""
    c = candidate.chunk
    scores = f"p_relevant {_fmt(candidate.p_relevant, 4)}"
    if candidate.span_score is not None:
        scores += f" · span {_fmt(candidate.span_score, 2)} · no answer {_fmt(candidate.null_score, 2)}"
    if candidate.sentence_cosine is not None:
        scores += f" · closest sentence {_fmt(candidate.sentence_cosine)}"
    return (f"**{html.escape(where(c))}** · `{display_path(c.doc_path)}` · {STATUS_LABELS.get(status, status)} · "
            f"{scores}\n\n{highlight_answer(candidate)}")


TABLE_CAPTION, TABLE_CELL = " — ", "; "  # how ingest writes a table row: "caption — header: value; header: value"


def table_markdown(text: str) -> str | None:
    """A chunk of table rows (as ingest writes them) as a small markdown table; None when the text is not
    rows of one table (differing columns, a cell that does not read "header: value")."""
    caption, header, rows = None, None, []
    for line in text.split("\n"):
        head, sep, cells = line.partition(TABLE_CAPTION)
        if not sep:
            head, cells = "", line
        if caption is None:
            caption = head
        pairs = [cell.partition(": ") for cell in cells.split(TABLE_CELL)]
        if head != caption or any(not p[1] or not p[0] for p in pairs) or len(pairs) < 2:
            return None
        keys = [p[0] for p in pairs]
        if header is None:
            header = keys
        if keys != header:
            return None
        rows.append([p[2] for p in pairs])
    if not rows:
        return None

    def cell(value: str) -> str:
        return html.escape(value).replace("|", "\\|")

    lines = ([f"*{cell(caption)}*", ""] if caption else []) + ["| " + " | ".join(cell(h) for h in header) + " |",
                                                                "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def highlight_answer(candidate: Candidate) -> str:
    """The chunk's text (as markdown) with the reader's span marked, when the span lies in the text."""
    text = candidate.chunk.text
    if candidate.answer_span is None:
        return table_markdown(text) or text
    offset = len(candidate.chunk.context_text) - len(text)  # the span counts from the title and headings
    first, last = candidate.answer_span[0] - offset, candidate.answer_span[1] - offset
    if first < 0 or last > len(text) or first >= last:
        return text
    return f"{text[:first]}<mark>{html.escape(text[first:last])}</mark>{text[last:]}"


def score_chart(gate: GateResult):
    """p_relevant of every candidate (log scale: calibrated scores span decades) with the floor drawn.
    Built without pyplot, whose global state is not safe across the UI's worker threads."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter

    fig = Figure(figsize=(5.2, 2.4), dpi=100)
    ax = fig.subplots()
    colours = {"kept": "#2e7d32", "below_floor": "#9e9e9e", "cut_by_top_n": "#f9a825"}
    read = gate.scored  # the unread tail has no probability to draw
    values = [max(c.p_relevant, 1e-6) for c in read]
    statuses = [gate.status(c.chunk.id) for c in read]
    ax.bar(range(1, len(values) + 1), values, color=[colours[s] for s in statuses])
    ax.axhline(gate.floor, color="#c62828", linestyle="--", linewidth=1.2, label=f"floor {gate.floor:.4f}")
    ax.set_yscale("log")
    ax.set_ylim(1e-6, 1.0)
    # Plain tick labels: log axes default to mathtext, whose shared parser breaks under concurrent use.
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.set_xlabel("candidate (best first)")
    ax.set_ylabel("p_relevant")
    handles = [ax.get_lines()[0]] + [Patch(color=c, label=STATUS_LABELS[s]) for s, c in colours.items()]
    ax.legend(handles=handles, fontsize=7, loc="upper right", ncol=2)
    fig.tight_layout()
    return fig


_RENDER_LOCK = threading.Lock()  # matplotlib's font and text caches are shared by every figure


def chart_image(gate: GateResult):
    """The score chart as a PNG image, rendered here rather than by the UI framework's threads."""
    from PIL import Image

    buffer = io.BytesIO()
    with _RENDER_LOCK:
        score_chart(gate).savefig(buffer, format="png")
    buffer.seek(0)
    return Image.open(buffer)


REPLAY_HEADERS = ["verdict", "then", "now", "score then", "score now", "rating", "top evidence then",
                  "top evidence now", "question"]
RATING_MARKS = {1: "👍", -1: "👎"}


def replay_rows(replayed) -> list[list[str]]:
    """One row per replayed question (`replay.Replayed`): the decision then and now, the score it turned on,
    the user's rating and the top evidence document."""
    def doc(path):
        return display_path(path) if path else ""

    return [[r.verdict or "unchanged", r.was + ("" if r.was_final == r.was else f" ({r.was_final} by the LLM)"),
             r.now, _fmt(r.was_score), _fmt(r.now_score), RATING_MARKS.get(r.rating, ""), doc(r.was_top_doc),
             doc(r.now_top_doc), r.question] for r in replayed]


def replay_summary(report) -> str:
    """A `replay.ReplayReport` in a few lines: what flipped, how it reads against the ratings, what was skipped."""
    s, setting = report.summary(), report.setting
    lines = []
    if setting:
        lines.append(f"setting: reranker {setting.get('reranker')}, calibration {setting.get('calibration')}, "
                     f"floor {setting['floor']:.4f} on {setting.get('floor_on')}" if "floor" in setting
                     else f"setting: {setting}")
    skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(s["skip_reasons"].items()))
    lines.append(f"replayed {s['replayed']} stored questions in {s['seconds']:.1f} s"
                 + (f"; skipped {s['skipped']} ({skipped})" if s["skipped"] else "")
                 + f"; pair scores reused from the traces {s['reused_pairs']}, read again {s['scored_pairs']}")
    verdicts = ", ".join(f"{n} {v}" for v, n in sorted(s["verdicts"].items()))
    lines.append(f"answered -> refused {s['answered_to_refused']}, refused -> answered {s['refused_to_answered']}, "
                 f"top evidence changed {s['top_citation_changed']}" + (f" ({verdicts})" if verdicts else ""))
    lines.append(f"{s['regressions']} regression(s): outcomes users rated good would change"
                 if s["regressions"] else "no outcome a user rated 👍 would change")
    return "\n".join(lines)
