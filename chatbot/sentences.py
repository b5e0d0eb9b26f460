"""What a chunk states, sentence by sentence: the sentences an answer may quote, and the located stage's
unit (`chatbot.locate`), with any text that addresses a model withheld.

Shared by the stage before the gate (how close a chunk's best sentence comes to the question) and the answer
(which sentences to quote), so both read the same sentences.
"""

from __future__ import annotations

import re
from typing import Sequence

from chatbot.types import Candidate

# Sentences in documents that address the model rather than the reader. The prompt already frames
# sources as data; these are also withheld from the model, since small models obey them anyway.
_INSTRUCTION_LIKE = re.compile(
    r"\b(?:ignore|disregard|forget|override|bypass)\b[^.!?\n]{0,80}\b(?:instructions?|rules?|prompts?|guidelines|"
    r"directives?|constraints)\b"
    r"|\byou\s+are\s+(?:now|no\s+longer)\b|\bnew\s+instructions?\b|\bsystem\s+prompt\b"
    r"|\b(?:ai|language\s+model|assistant|chatbot|llm)\s*[:,]\s*(?:you\s+must|always|never|do\s+not)\b"
    r"|<\|[a-z_]+\|>|\[/?(?:INST|SYS)\]|^\s*#{1,6}\s*(?:system|instructions?)\s*:?\s*$",
    re.IGNORECASE | re.MULTILINE)
# Chat-template blocks (a role turn, an [INST] span) are instructions from their first token to their last.
_ROLE_BLOCK = re.compile(r"<\|im_start\|>.*?(?:<\|im_end\|>|$)|\[INST\].*?(?:\[/INST\]|$)|<<SYS>>.*?(?:<</SYS>>|$)",
                         re.IGNORECASE | re.DOTALL)
_SENTENCE_OR_LINE = re.compile(r"[^.!?\n]*(?:[.!?]+|\n|$)")
WITHHELD = "[instruction-like text withheld]"


def withhold_instructions(text: str) -> str:
    """The text with every sentence that addresses the model replaced by a marker, and with it
    the rest of its line: an injected instruction rarely ends with its first sentence."""
    if not _INSTRUCTION_LIKE.search(text):
        return text
    text = _ROLE_BLOCK.sub(WITHHELD, text)
    parts: list[str] = []
    withholding = False
    for m in _SENTENCE_OR_LINE.finditer(text):
        piece = m.group(0)
        if piece and (withholding or _INSTRUCTION_LIKE.search(piece)):
            if not withholding:
                lead = piece[: len(piece) - len(piece.lstrip())]
                parts.append(lead + WITHHELD)
            withholding = not piece.endswith("\n")
            if not withholding:
                parts.append("\n")
        else:
            parts.append(piece)
    return "".join(parts)


_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9€$£])|\n+")


# A line break before a lower-case word is a hard wrap inside a sentence (plain text and e-mail wrapped at
# 72-80 columns), not the end of a line of its own: a list item, a table row or a heading starts otherwise.
_HARD_WRAP = re.compile(r"[ \t]*\n[ \t]*(?=[a-zß-öø-ÿ])")


def split_sentences(text: str) -> list[str]:
    parts = (p.strip(" \t-*•|") for p in _SENTENCE_SPLIT.split(_HARD_WRAP.sub(" ", text)))
    return [p for p in parts if len(p) >= 12 and any(ch.isalpha() for ch in p)]


def _read(text: str):
    """(sentence, what it is judged by, whether it is a question) for each sentence of one chunk's text."""
    asked = ""
    # Text aimed at a model is no answer for the reader either.
    for s in split_sentences(withhold_instructions(text)):
        if WITHHELD in s:
            continue
        is_question = s.rstrip().endswith("?")
        yield s, (f"{asked} {s}" if asked and not is_question else s), is_question
        asked = s if is_question else ""


def quotable_sentences(evidence: Sequence[Candidate]) -> tuple[list[tuple[int, str]], list[str]]:
    """The sentences an extractive answer may quote, as (index into `evidence`, sentence), and what each is
    judged by: itself, or, for the first sentence after a question in the evidence (a FAQ's "What can the
    H2 carry? Up to 600 kg, ..."), the question and it: the reply alone often shares no word or topic with
    what was asked ("Up to 600 kg" for "the heaviest load it can carry")."""
    return _quotable([cand.chunk.text for cand in evidence])


def _quotable(texts: Sequence[str]) -> tuple[list[tuple[int, str]], list[str]]:
    read = [(i, sentence, judged, is_question) for i, text in enumerate(texts)
            for sentence, judged, is_question in _read(text)]
    # A question in the evidence (a FAQ's heading line) restates what was asked and answers nothing, yet it
    # is what reads closest to the question: quote it only when there is nothing else.
    read = [r for r in read if not r[3]] or read
    if not read:
        sentences = [(i, text.strip()) for i, text in enumerate(texts)]
        return sentences, [s for _, s in sentences]
    return [(i, sentence) for i, sentence, _, _ in read], [judged for _, _, judged, _ in read]


# What `chunk_sentences` returns, named: sentence vectors stored at ingest are read only under the name
# they were made with, so a change to how a chunk is read into sentences must change it.
SENTENCING = "sentences-v1"


def sentencing_fingerprint(embedder_fingerprint: str) -> str:
    return f"{SENTENCING}|{embedder_fingerprint}"


def chunk_sentences(text: str) -> list[str]:
    """What the located stage compares with the question for one chunk: its quotable sentences as they are
    judged, the same as `quotable_sentences` gives for the chunk alone."""
    return _quotable([text])[1]
