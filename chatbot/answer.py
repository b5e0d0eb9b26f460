"""From kept evidence to a cited answer: an LLM through any OpenAI-compatible endpoint,
or, with no LLM configured, an extractive answer quoting the best supporting sentences.

Only the gate's survivors reach this module; a refusal never calls the LLM.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence

import numpy as np

from chatbot.errors import LLMError
from chatbot.retrieve import STOP_WORDS, content_terms
from chatbot.sentences import quotable_sentences, split_sentences, withhold_instructions
from chatbot.tokens import get_encoding
from chatbot.types import Answer, Candidate, Chunk

NO_ANSWER = "NO_ANSWER"
_CITATION = re.compile(r"\[(\d+(?:\s*[,;]\s*\d+)*)\]")
_QUOTE_END = re.compile(_CITATION.pattern + r"\s+(?=\w)")  # a citation, then the next quote's words
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


@dataclass(frozen=True)
class Prompt:
    messages: tuple[dict, ...]
    sources: tuple[Chunk, ...]  # sources[i] is [i+1] in the prompt


def load_prompts(prompts_dir: str | Path) -> tuple[str, str]:
    d = Path(prompts_dir)
    try:
        return (d / "answer_system.md").read_text(encoding="utf-8"), (d / "answer_user.md").read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise LLMError("(prompt files)", f"missing prompt file {e.filename}; config key 'prompts_dir' is {d}") from None


def _fill(template: str, values: dict[str, str]) -> str:
    # One pass, so text inside a value ("{{question}}" in a document) is never substituted again.
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def format_source(number: int, chunk: Chunk) -> str:
    where = " > ".join(x for x in (chunk.title, *chunk.heading_path) if x)
    body = withhold_instructions(chunk.text).replace("</source>", "</ source>")  # a document cannot close its tag
    return f'<source id="{number}" from="{where}">\n{body}\n</source>'


def build_prompt(question: str, evidence: Sequence[Candidate], system: str, user: str,
                 max_context_tokens: int, encoding: str = "cl100k_base", span_floor: float | None = None) -> Prompt:
    """Numbered sources, best first, as many as fit in `max_context_tokens`."""
    enc = get_encoding(encoding)
    blocks: list[str] = []
    sources: list[Chunk] = []
    used = 0
    for cand in evidence:
        block = format_source(len(sources) + 1, cand.chunk)
        cost = len(enc.encode_ordinary(block)) + 2
        if used + cost > max_context_tokens:
            continue  # a smaller later chunk may still fit
        blocks.append(block)
        sources.append(cand.chunk)
        used += cost
    located = _located_answers(evidence, sources, span_floor)
    user_text = _fill(user, {"sources": "\n\n".join(blocks), "question": question, "located": located})
    if located and "{{located}}" not in user:  # a custom template without the slot still gets them
        user_text = f"{user_text}\n\n{located}"
    return Prompt(({"role": "system", "content": system}, {"role": "user", "content": user_text}), tuple(sources))


def _located_answers(evidence: Sequence[Candidate], sources: Sequence[Chunk], span_floor: float | None) -> str:
    """The reader's answer spans in the supplied sources, as a line for the prompt ("" without any)."""
    number = {chunk.id: n for n, chunk in enumerate(sources, start=1)}
    supplied = [c for c in evidence if c.chunk.id in number]
    spans = [(number[supplied[i].chunk.id], text.replace("\n", " ")) for i, text in answer_spans(supplied, span_floor)]
    if not spans:
        return ""
    return "Located answer spans (found by a reader model; check them against the source): " + "; ".join(
        f'"{text}" [{n}]' for n, text in spans)


def resolve_citations(text: str, sources: Sequence[Chunk]) -> tuple[str, tuple[Chunk, ...], tuple[str, ...]]:
    """Renumber citations to the order they are first cited; drop (and report) ones that
    point at no supplied source. Returns (text, cited chunks, dropped markers)."""
    order: list[int] = []
    dropped: list[str] = []

    def replace(m: re.Match) -> str:
        out = []
        for part in re.split(r"\s*[,;]\s*", m.group(1)):
            n = int(part)
            if 1 <= n <= len(sources):
                if n not in order:
                    order.append(n)
                out.append(f"[{order.index(n) + 1}]")
            else:
                dropped.append(f"[{n}]")
        return "".join(out)

    cleaned = _CITATION.sub(replace, text)
    cleaned = re.sub(r"[ \t]+([.,;:!?])", r"\1", cleaned)
    cleaned = re.sub(r"[ \t]{2,}", " ", cleaned).strip()
    return cleaned, tuple(sources[n - 1] for n in order), tuple(dropped)


class ChatLLM(Protocol):
    endpoint: str

    def complete(self, messages: Sequence[dict], max_tokens: int) -> str: ...

    def stream(self, messages: Sequence[dict], max_tokens: int) -> Iterator[str]: ...


class OpenAIChat:
    """Any OpenAI-compatible chat endpoint (OpenAI, Ollama, vLLM, llama.cpp server)."""

    def __init__(self, base_url: str, model: str, api_key: str = "", timeout_s: float = 60.0):
        self.endpoint = base_url
        self.model = model
        self._api_key = api_key
        self.timeout_s = timeout_s
        self._client = None

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIChat(endpoint={self.endpoint!r}, model={self.model!r})"

    @property
    def client(self):
        if self._client is None:
            import openai

            # Local servers need no key, but the client insists on one.
            self._client = openai.OpenAI(base_url=self.endpoint, api_key=self._api_key or "not-needed",
                                         timeout=self.timeout_s, max_retries=1)
        return self._client

    def _reason(self, e: Exception) -> str:
        import openai

        if isinstance(e, openai.APITimeoutError):
            return f"no answer within {self.timeout_s:g} s (config key llm_timeout_s)"
        if isinstance(e, openai.APIConnectionError):
            return "cannot connect (is the server running? check config key llm_base_url)"
        if isinstance(e, openai.AuthenticationError):
            return "the API key was rejected (config key llm_api_key / OPENAI_API_KEY)"
        if isinstance(e, openai.NotFoundError):
            return f"model '{self.model}' or path not found (config keys llm_model, llm_base_url)"
        if isinstance(e, openai.APIStatusError):
            return f"HTTP {e.status_code} from the server"
        return f"{type(e).__name__}"

    def complete(self, messages: Sequence[dict], max_tokens: int) -> str:
        import openai

        try:
            response = self.client.chat.completions.create(
                model=self.model, messages=list(messages), max_tokens=max_tokens, temperature=0.0)
        except openai.OpenAIError as e:
            raise LLMError(self.endpoint, self._reason(e)) from None
        try:
            content = response.choices[0].message.content
        except (AttributeError, IndexError, TypeError):
            content = None
        if not isinstance(content, str) or not content.strip():
            raise LLMError(self.endpoint, "the reply had no answer text (malformed or empty response)")
        return content

    def stream(self, messages: Sequence[dict], max_tokens: int) -> Iterator[str]:
        """The reply as it is generated, piece by piece. Failures mid-stream raise LLMError too."""
        import httpx
        import openai

        got_text = False
        try:
            events = self.client.chat.completions.create(
                model=self.model, messages=list(messages), max_tokens=max_tokens, temperature=0.0, stream=True)
            for event in events:
                try:
                    piece = event.choices[0].delta.content if event.choices else None
                except (AttributeError, IndexError, TypeError):
                    piece = None
                if piece:
                    got_text = True
                    yield piece
        except openai.OpenAIError as e:
            raise LLMError(self.endpoint, self._reason(e)) from None
        except httpx.TimeoutException:
            raise LLMError(self.endpoint, f"no answer within {self.timeout_s:g} s (config key llm_timeout_s)") from None
        except (httpx.HTTPError, ValueError) as e:
            raise LLMError(self.endpoint, f"the streamed reply broke off or was malformed ({type(e).__name__})") from None
        if not got_text:
            raise LLMError(self.endpoint, "the reply had no answer text (malformed or empty response)")


def may_become_no_answer(reply_so_far: str) -> bool:
    """True while a streamed reply could still turn out to be the NO_ANSWER signal, so the
    UI holds it back instead of flashing "NO_ANS..." before the refusal."""
    head = reply_so_far.lstrip(" .\"'`").upper()
    return NO_ANSWER.startswith(head) or head.rstrip(" .\"'`") == NO_ANSWER


def reply_to_answer(reply: str, prompt: Prompt) -> Answer | None:
    """The LLM's full reply as a cited answer, or None when it says the evidence does not answer."""
    reply = reply.strip()
    if reply.strip(" .\"'`").upper() == NO_ANSWER:
        return None
    text, cited, dropped = resolve_citations(reply, prompt.sources)
    return Answer(text=text, cited=cited, mode="llm", dropped_citations=dropped)


_DIGITS = re.compile(r"\d(?:[\d,.]*\d)?")


def _figures(text: str) -> set[str]:
    return {m.group(0).replace(",", "") for m in _DIGITS.finditer(_CITATION.sub(" ", text))}


def grounding_problem(answer: Answer) -> str | None:
    """Why an LLM answer cannot be shown as grounded, or None. An answer must cite a source,
    and every figure it states must appear in what it cites: small models invent numbers
    ("1,000 kg" beside a source that says 600 kg), and a wrong figure is the costliest error."""
    if not answer.cited:
        return "it cites none of the sources"
    missing = _figures(answer.text) - set().union(*(_figures(c.text) for c in answer.cited))
    if missing:
        return f"it states figures its sources do not contain ({', '.join(sorted(missing)[:5])})"
    return None


EXTRACTIVE_NOTE = "No LLM is configured, so this answer quotes the most relevant sentences of the evidence."
LEAD_WORDS = 30


def answer_spans(evidence: Sequence[Candidate], span_floor: float | None, most: int = 2,
                 within: float = 2.0) -> list[tuple[int, str]]:
    """The reader's answer spans worth stating, as (index into `evidence`, span text), best first: the
    best span, and another chunk's different span when the reader rates it nearly as high (a
    question a knowledge base answers in two places). Only spans whose answer margin reaches
    `span_floor` count (the calibration's, fitted where the reader's spans were right): a wrong fact
    stated first is worse than a quote. Empty when `span_floor` is None or without a reader."""
    if span_floor is None:
        return []
    found = [(margin, i, text) for margin, i, text in _read_spans(evidence) if margin >= max(span_floor, 0.0)]
    chosen: list[tuple[int, str]] = []
    for margin, i, text in found:
        if len(chosen) >= most:
            break
        if chosen and (margin < found[0][0] - within or text.lower() in {t.lower() for _, t in chosen}):
            continue
        chosen.append((i, text))
    return chosen


# The sentence that holds the reader's best span (stated or not) gets this much on top of its sentence score,
# and a long one is cut at the clause that holds the span: a hint, not a verdict, since the reader's spans are
# right about half the time. On held-out SQuAD articles the lead then held a gold answer for 0.700 -> 0.713
# of 1,483 answered questions (squad2-extra) and 0.703 -> 0.765 of 391 (squad2); 0.1 did as well, 0.5 and
# more did worse than none (bench/results/lead_sentence.md).
SPAN_LEAD_BONUS = 0.2


def _read_spans(evidence: Sequence[Candidate]) -> list[tuple[float, int, str]]:
    """The reader's spans in the evidence as (answer margin, index into `evidence`, text), best first.
    Text aimed at a model is no answer."""
    return sorted(((c.answer_margin, i, c.answer_text) for i, c in enumerate(evidence)
                   if c.answer_text and c.answer_margin is not None
                   and withhold_instructions(c.answer_text) == c.answer_text), key=lambda t: -t[0])


def best_located_span(evidence: Sequence[Candidate]) -> tuple[int, str] | None:
    """The reader's best span in the evidence, whatever its margin: (index into `evidence`, span text);
    None without a reader or a span."""
    found = _read_spans(evidence)
    return (found[0][1], found[0][2]) if found else None


def lead_sentence(answer_text: str, max_words: int = LEAD_WORDS) -> str:
    """What a reader sees first: the answer's first line or sentence, without citation markers, at most
    `max_words` words. A citation with words after it ends the sentence too: the extractive answer quotes table
    rows, list items and cut excerpts, which have no full stop, one after another, each with its citation."""
    first = answer_text.strip().split("\n", 1)[0]
    sentence = (split_sentences(first) or [first])[0]
    cited = _QUOTE_END.search(sentence)
    if cited:
        sentence = sentence[:cited.start()]
    words = " ".join(_CITATION.sub(" ", sentence).split()[:max_words])
    return re.sub(r" ([.,;:!?])", r"\1", words)


# How much the question's words in a sentence count beside its embedding cosine: as much (both run 0..1).
# Fitted on held-out SQuAD 2.0 articles of squad2-extra (eval --held-out-fraction 0.2): the first sentence
# held a gold answer for 0.62 -> 0.67 of 1,485 answered questions (0.683 -> 0.727 of the eval's 183), and
# on squad2's other articles 0.650 -> 0.678 of 388; anywhere from 0.8 to 1.5 did about as well.
OVERLAP_WEIGHT = 1.0


# A question that asks for an amount, a date or a time is answered by a sentence stating a figure (or a number
# word, a month; a digit glued to a letter, as in a model name "H2", is no figure). The bonus is a tie-breaker
# beside the 0..1 cosine and overlap: on the same held-out questions it changed little (squad2-extra 0.6727 ->
# 0.6741 of 1,485, the eval's 183 unchanged; squad2 0.678 -> 0.680), the same anywhere from 0.1 to 0.3, but the
# overlap alone would lead "How heavy a cart can it tow?" with a sentence about a "heavy-duty" robot rather
# than the one with "1,000 kg".
FIGURE_BONUS = 0.2
_ASKS_FIGURE = re.compile(
    r"\b(?:how\s+(?:many|much|long|old|far|fast|heavy|large|big|tall|high|deep|wide|often|late|early|soon)"
    r"|(?:what|which)\s+(?:year|years|decade|century|date|day|month|time|percentage|percent|proportion|share|number"
    r"|amount|age|size|population)|when|percent|percentage)\b", re.IGNORECASE)
_STATES_FIGURE = re.compile(
    r"(?<![^\W_])\d|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|thirty"
    r"|forty|fifty|sixty|seventy|eighty|ninety|hundreds?|thousands?|millions?|billion|dozen|half"
    r"|january|february|march|april|june|july|august|september|october|november|december)\b", re.IGNORECASE)


# A question about one amount ("an expense claim of €3,000", "a team of 12 people") is answered by the rule
# whose range holds it ("Above €2,500: the CFO"), which neither meaning nor words tell from its neighbours:
# "€500.01 to €2,500: the department head" repeats the question's words and currency and reads as close.
# Internal documents state rules as ranges (approval limits, price tiers, leave by years of service).
RANGE_BONUS = 0.3
# A figure on its own (not part of a word as in "H2", a time "07:12", a date "2024-05-13" or a version), with
# its scale word ("1.5 million") and its unit: the currency before it (a symbol or a code), else the word or "%"
# after it.
def _figure_pattern(groups: bool) -> str:
    g = "(" if groups else "(?:"  # groups only where the pattern is not nested in another one
    return (rf"(?<![\w.,:/-]){g}[€$£]|(?:EUR|USD|GBP)(?=\s?\d))?\s?"
            rf"{g}\d{{1,3}}(?:,\d{{3}})+(?:\.\d+)?|\d+(?:\.\d+)?)(?![\d/]|[:.,-]\d)"
            rf"(?:\s+{g}thousand|million|billion)\b)?(?:\s?{g}%|per\s?cent\b|[^\W\d_]+))?")


# One currency however it is written: people ask "3000 EUR" or "3,000 euros" of a policy that states "€2,500".
# "pound" is left alone: a weight as often as a currency.
_CURRENCIES = {"eur": "€", "euro": "€", "usd": "$", "dollar": "$", "gbp": "£"}


_AMOUNT = re.compile(_figure_pattern(groups=True), re.IGNORECASE)
_F = _figure_pattern(groups=False)
_BETWEEN = re.compile(rf"\bbetween\s+{_F}\D{{0,12}}?\s(?:and|to)\s+{_F}"
                      rf"|{_F}\D{{0,12}}?(?:\s(?:to|through|until)\s|\s?[–—]\s?|\s-\s){_F}", re.IGNORECASE)
# "no more than" is "at most", and not also "more than"; a group marks the bounds that leave their figure out.
_AT_MOST = re.compile(rf"(?<!\bno\s)(?<!\bnot\s)\b(?:up\s+to|at\s+most|no\s+more\s+than|not\s+more\s+than|"
                      rf"a\s+maximum\s+of|max\.?|(under|below|less\s+than|fewer\s+than))\s+{_F}", re.IGNORECASE)
_AT_LEAST = re.compile(rf"(?<!\bno\s)(?<!\bnot\s)\b(?:at\s+least|no\s+(?:less|fewer)\s+than|"
                       rf"not\s+(?:less|fewer)\s+than|a\s+minimum\s+of|min\.?|"
                       rf"(above|over|more\s+than|greater\s+than|exceeding|beyond))\s+{_F}", re.IGNORECASE)
_OR_MORE = re.compile(rf"{_F}\D{{0,12}}?\s(?:(or\s+more|and\s+(?:above|over|up|more))|or\s+less|or\s+fewer"
                      rf"|and\s+(?:below|under|less))\b", re.IGNORECASE)
_SCALE = {"thousand": 1e3, "million": 1e6, "billion": 1e9}


@dataclass(frozen=True)
class Amount:
    value: float
    unit: str  # "€", "%", a word singular and lower-case ("year"), or "" when none follows (no figure without
    # a unit is compared: "greater than 1" in a definition is no rule about "the number 1")


@dataclass(frozen=True)
class AmountRange:
    low: float
    high: float
    low_included: bool
    high_included: bool
    unit: str

    def holds(self, amount: Amount) -> bool:
        above = self.low < amount.value or (self.low_included and self.low == amount.value)
        below = amount.value < self.high or (self.high_included and self.high == amount.value)
        return above and below and amount.unit != "" and amount.unit == self.unit

    def margin(self, amount: Amount) -> float:
        """How far `amount` is from this range's nearer bound: a tier's own row holds it closest."""
        return min(amount.value - self.low, self.high - amount.value)


# A word after a figure that is no unit of it: a stop word ("12 of them"), or an ordinal's ending ("the 17th
# century" is a position in a series, not an amount a range could hold).
_ORDINAL_ENDINGS = frozenset({"st", "nd", "rd", "th"})
_NO_UNIT = STOP_WORDS | _ORDINAL_ENDINGS


def _amount(figure: re.Match) -> Amount:
    currency, number, scale, after = figure.groups()
    unit = (after or "").lower()
    unit = "%" if unit.startswith("per") and unit.endswith("cent") else "" if unit in _NO_UNIT else unit
    if currency and not currency.isalpha():  # a symbol stands as written
        unit = currency
    else:  # a currency code, or the word after the figure: lower case, singular
        unit = (currency or unit).lower().removesuffix("s")
    return Amount(float(number.replace(",", "")) * (_SCALE[scale.lower()] if scale else 1.0),
                  _CURRENCIES.get(unit, unit))


def stated_amounts(text: str) -> list[Amount]:
    """The figures `text` states, in order: "an expense claim of €3,000" -> Amount(3000.0, "€"),
    "1.5 million people" -> Amount(1.5e6, "people")."""
    return [_amount(m) for m in _AMOUNT.finditer(text)]


def asked_amounts(question: str) -> list[Amount]:
    """The amounts a question is about, years and ordinals left out: "in 2010" or "in the 17th century" dates the
    question; it is no amount a rule's range could hold."""
    return [_amount(m) for m in _AMOUNT.finditer(question)
            if m.group(1) or not (re.fullmatch(r"1\d{3}|20\d{2}", m.group(2))
                                  or (m.group(4) or "").lower() in _ORDINAL_ENDINGS)]


def stated_ranges(sentence: str) -> list[AmountRange]:
    """The ranges a sentence states: "€500.01 to €2,500", "between 5 and 10 years", "up to €500", "above €2,500"
    (bounds "above" and "under" leave out), "10 years or more". A two-sided range is read first, so "at least 5 to
    10" is not also "at least 5". A range's unit is its last figure's ("5 to 10 years": years)."""
    sentence = sentence.replace("*", "")  # Markdown's bold: "above **€25**"
    ranges = []
    for m in _BETWEEN.finditer(sentence):
        low, high = stated_amounts(m.group())
        if low.value <= high.value:
            ranges.append(AmountRange(low.value, high.value, True, True, high.unit or low.unit))
    rest = _BETWEEN.sub(" ", sentence)
    for m in _AT_MOST.finditer(rest):
        bound = stated_amounts(m.group())[0]
        ranges.append(AmountRange(-math.inf, bound.value, False, m.group(1) is None, bound.unit))
    for m in _AT_LEAST.finditer(rest):
        bound = stated_amounts(m.group())[0]
        ranges.append(AmountRange(bound.value, math.inf, m.group(1) is None, False, bound.unit))
    for m in _OR_MORE.finditer(rest):
        bound = stated_amounts(m.group())[0]
        ranges.append(AmountRange(bound.value, math.inf, True, False, bound.unit) if m.group(1)
                      else AmountRange(-math.inf, bound.value, False, True, bound.unit))
    return ranges


def question_word_overlap(question: str, sentences: Sequence[str]) -> np.ndarray:
    """Per sentence, the share of the question's content words it contains, each word weighted by how rare it
    is among `sentences` (BM25's idf). The sentence that states the asked-for fact usually repeats the
    question's specific words ("... charter ... approved ... on February 9, 1832" for "When was the town
    charter approved?"), where the embedder also rates a sentence that is only about the same topic close.
    A word every candidate sentence shares (the article's subject) counts for little."""
    idf = question_term_idf(question, sentences)
    total = sum(idf.values())
    if not total:
        return np.zeros(len(sentences))
    return np.array([sum(idf[w] for w in idf.keys() & content_terms(s)) / total for s in sentences])


def question_term_idf(question: str, sentences: Sequence[str]) -> dict[str, float]:
    """The question's content words, each with its BM25 idf among `sentences`."""
    terms = [content_terms(s) for s in sentences]
    n = len(sentences)
    return {w: math.log(1.0 + (n - df + 0.5) / (df + 0.5))
            for w in content_terms(question) for df in [sum(w in t for t in terms)]}


# Where a long sentence may be cut for the lead: after a clause's punctuation.
_CLAUSE_END = (",", ";", ":", ")")


def lead_excerpt(sentence: str, idf: dict[str, float], max_words: int = LEAD_WORDS,
                 holding: str | None = None) -> str | None:
    """The part of a long sentence to state first: the `max_words` words from a clause start (the sentence's
    or one after , ; : or a closing parenthesis) that hold the most of the question's words (weighted by
    `idf`, as question_word_overlap), the earliest on ties; marked with an ellipsis where cut. None when the
    sentence fits in `max_words` or its own opening holds the most: the sentence is then its own lead.
    With `holding` (the reader's answer span), only the clause starts whose words hold all of it are tried,
    when some do.

    A long sentence's fact often comes after its first 30 words ("..., and in 1854 the treaty was
    signed at ..."), and the question's words sit next to it."""
    words = sentence.split()
    if len(words) <= max_words or not (idf or holding):
        return None
    # A clause start near the sentence's end would lead with a fragment ("...in 1854."): not that close.
    starts = [0] + [i + 1 for i, w in enumerate(words[:-10]) if w.endswith(_CLAUSE_END)]
    if holding:
        wanted = " ".join(holding.split())
        starts = [i for i in starts if wanted in " ".join(words[i:i + max_words])] or starts

    def held(start: int) -> float:
        return sum(idf[w] for w in idf.keys() & content_terms(" ".join(words[start:start + max_words])))

    best = max(starts, key=lambda start: (held(start), -start))
    if best == 0:
        return None
    part = " ".join(words[best:best + max_words])
    return "\u2026" + (part.rstrip(",;:") + "\u2026" if best + max_words < len(words) else part)


def sentence_scores(question: str, evidence: Sequence[Candidate], sentences: Sequence[tuple[int, str]],
                    judged: Sequence[str], embed: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    """How well each quotable sentence answers the question: its cosine to the question, a head start for
    evidence more likely relevant (p_relevant), the question's own words (see question_word_overlap), a
    figure where an amount or a date is asked for, and the range that holds an amount the question states."""
    vectors = embed([question] + list(judged))
    p = np.array([evidence[i].p_relevant or 0.0 for i, _ in sentences])
    score = vectors[1:] @ vectors[0] + 0.25 * p + OVERLAP_WEIGHT * question_word_overlap(question, judged)
    if _ASKS_FIGURE.search(question):  # "How heavy...?" is answered by "1,000 kg", not by "heavy-duty"
        score += FIGURE_BONUS * np.array([bool(_STATES_FIGURE.search(s)) for _, s in sentences])
    amounts = asked_amounts(question)
    if amounts:  # the rule whose range holds the amount closest: "above €2,500" rather than "above €25"
        margins = np.array([min((r.margin(a) for r in stated_ranges(s) for a in amounts if r.holds(a)),
                                default=math.inf) for _, s in sentences])
        if np.isfinite(margins).any():
            score += RANGE_BONUS * (margins == margins.min())
    return score


def extractive_answer(question: str, evidence: Sequence[Candidate], embed: Callable[[list[str]], np.ndarray],
                      max_sentences: int = 3, note: str = EXTRACTIVE_NOTE, span_floor: float | None = None) -> Answer:
    """State the reader's answer span(s) first, each cited, then quote the sentence that holds the best
    one and the other sentences of the kept chunks closest to the question, each with its citation.
    Without a reader (or a span), the quotes alone, led by the best sentence's clause that holds the
    question's words when that sentence is too long to lead whole (see lead_excerpt)."""
    sentences, judged = quotable_sentences(evidence)
    score = sentence_scores(question, evidence, sentences, judged, embed)
    spans = answer_spans(evidence, span_floor)
    # The sentence that holds the reader's best span: first among the quotes when the span is stated (the
    # stated spans start with that best one), else a close call tips its way.
    located = best_located_span(evidence)
    located_in = [k for k, (i, sentence) in enumerate(sentences)
                  if located and i == located[0] and located[1] in sentence][:1]
    score[located_in] = np.inf if spans else score[located_in] + SPAN_LEAD_BONUS
    # The lead: the sentence that holds the span, else the best-scoring sentence of any kept chunk (each
    # chunk's p_relevant is in its sentences' scores). Keeping it to the reranker's first chunk led with a
    # gold answer less often (held-out SQuAD articles 0.672 -> 0.679 and 0.675 -> 0.691, the sample knowledge
    # base 9 -> 10 of 12: bench/results/lead_sentence.md). Then the closest others, in reading order.
    best = int(np.argmax(score))
    rest = [k for k in np.argsort(-score) if k != best][: max_sentences - 1]
    chosen = [best] + sorted(rest, key=lambda k: (sentences[k][0], k))
    order: list[int] = []

    def cite(chunk_index: int) -> str:
        if chunk_index not in order:
            order.append(chunk_index)
        return f"[{order.index(chunk_index) + 1}]"

    lead = "; ".join(f"{text} {cite(i)}" for i, text in spans)
    # A long lead sentence's clause that holds the question's words goes first, then the quotes: on held-out
    # SQuAD articles the first 30 words then hold a gold answer for 0.686 -> 0.704 of 490 answered questions
    # (eval, squad2-extra) and 0.689 -> 0.695 of 318 (squad2); bench/results/lead_sentence.md.
    if not lead:
        excerpt = lead_excerpt(sentences[best][1], question_term_idf(question, judged),
                               holding=located[1] if best in located_in else None)
        lead = f"{excerpt} {cite(sentences[best][0])}" if excerpt else ""
    quotes = " ".join(f"{sentences[k][1]} {cite(sentences[k][0])}" for k in chosen)
    text = f"{lead}\n\n{quotes}" if lead else quotes
    return Answer(text=text, cited=tuple(evidence[i].chunk for i in order), mode="extractive", note=note)
