"""Multi-turn chat: turn a follow-up ("and for adults?") into a standalone question.

The floor is judged on the standalone question, so a follow-up that leans on earlier turns
is not refused for lacking its own topic. With an LLM the rewrite is the model's; without
one (or when its rewrite looks unusable) a plain rule joins the follow-up to the last
question. Questions that stand on their own are left untouched either way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

from chatbot.answer import ChatLLM
from chatbot.errors import LLMError

_WORD = re.compile(r"[\w'’-]+", re.UNICODE)
# Words that point back at an earlier turn: without it, the question has no referent.
_ANAPHORA = {"it", "its", "they", "them", "their", "theirs", "that", "this", "those", "these", "there",
             "he", "she", "him", "her", "his", "one", "ones", "same", "such", "former", "latter"}
_CONTINUATIONS = ("and ", "but ", "or ", "also ", "what about", "how about", "and what", "what if", "then ",
                  "so ", "same ", "why not", "which one", "how so", "else")
_STOPWORDS = {"a", "an", "the", "is", "are", "was", "were", "do", "does", "did", "what", "which", "who", "how",
              "when", "where", "why", "can", "could", "i", "we", "you", "for", "of", "to", "in", "on", "at",
              "and", "or", "but", "about", "with", "my", "our", "your", "be", "much", "many"}
MAX_REWRITE_CHARS = 400


@dataclass(frozen=True)
class Rewrite:
    asked: str  # what the user typed
    standalone: str  # what is searched and judged against the floor
    method: Literal["unchanged", "llm", "rule"]


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def looks_like_followup(question: str) -> bool:
    words = _words(question)
    if not words:
        return False
    lowered = question.strip().lower()
    content = [w for w in words if w not in _STOPWORDS and w not in _ANAPHORA]
    return (lowered.startswith(_CONTINUATIONS) or any(w in _ANAPHORA for w in words)
            or len(content) <= 1)


def rule_rewrite(previous_questions: Sequence[str], followup: str) -> str:
    """The last standalone question, then the follow-up: both lists of search terms survive."""
    return f"{previous_questions[-1].rstrip()} {followup.strip()}"


def _usable(candidate: str, followup: str, previous_questions: Sequence[str]) -> bool:
    """A tiny local model sometimes answers instead of rewriting, or drifts off topic: a
    rewrite must be one question-sized line that keeps some words of the conversation."""
    if not candidate or len(candidate) > MAX_REWRITE_CHARS or "\n" in candidate:
        return False
    said = set(_words(followup)) | {w for q in previous_questions for w in _words(q)}
    content = {w for w in _words(candidate) if w not in _STOPWORDS}
    # What the follow-up itself adds ("Lisbon" in "and in Lisbon?") must survive the rewrite.
    new_terms = {w for w in _words(followup) if w not in _STOPWORDS and w not in _ANAPHORA}
    return (bool(content & said) and new_terms <= content
            and candidate.strip().lower() not in (followup.strip().lower(), previous_questions[-1].strip().lower()))


def load_rewrite_prompt(prompts_dir: str | Path) -> str:
    path = Path(prompts_dir) / "rewrite_followup.md"
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LLMError("(prompt files)", f"missing prompt file {path}; config key 'prompts_dir' is {prompts_dir}") from None


def rewrite_question(previous_questions: Sequence[str], question: str, llm: ChatLLM | None = None,
                     system_prompt: str = "", max_tokens: int = 80) -> Rewrite:
    """`previous_questions`: the standalone questions of earlier turns, oldest first."""
    question = question.strip()
    if not previous_questions or not looks_like_followup(question):
        return Rewrite(question, question, "unchanged")
    if llm is not None and system_prompt:
        recent = "\n".join(f"- {q}" for q in previous_questions[-3:])
        messages = ({"role": "system", "content": system_prompt},
                    {"role": "user", "content": f"Earlier questions:\n{recent}\n\nFollow-up: {question}\n\nStandalone question:"})
        try:
            candidate = llm.complete(messages, max_tokens).strip().strip('"').strip()
        except LLMError:
            candidate = ""  # the answer step reports a dead endpoint; here the rule is enough
        candidate = candidate.removeprefix("Standalone question:").strip()
        if _usable(candidate, question, previous_questions):
            return Rewrite(question, candidate, "llm")
    return Rewrite(question, rule_rewrite(previous_questions, question), "rule")
