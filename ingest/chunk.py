"""Token-aware, heading-aware chunking.

Each section (text under one heading path) is cut into windows of at most `max_tokens`
tiktoken tokens, overlapping by about `overlap_tokens`. Cuts fall on a paragraph break if
one is in the second half of the window, else a sentence end, else between words. A single
"word" longer than a whole window (a URL, a base64 blob) is the only thing ever cut inside.
A chunk never spans two sections, so every chunk has one heading path.

A table is its own section, and each of its rows one line that carries the table's caption and
its column headers ("Nightly hotel cap — City: Rotterdam; Cap per night: €160"), so a row can be
found and quoted alone. Table chunks are cut between rows, never inside one (a row longer than a
whole window is the exception, cut as text), and need no overlap: every row names its columns.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from chatbot.tokens import get_encoding
from chatbot.types import Chunk

_SENTENCE_END = re.compile(r"[.!?;:][\"')\]]*$")


CAPTION_SEPARATOR = " — "
CELL_SEPARATOR = "; "


@dataclass(frozen=True)
class Table:
    """A table as its header and rows of cell text (rows padded to the header's width)."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""

    def row_text(self, row: tuple[str, ...]) -> str:
        """One row as a line of "header: value" cells, after the caption. Empty cells are left out;
        a column without a header gives its bare value."""
        if not any(self.header):  # no column names: the first cell labels the row ("Maximum payload: 600 kg")
            label, rest = row[0], [v for v in row[1:] if v]
            cells = f"{label}: {CELL_SEPARATOR.join(rest)}" if label and rest else CELL_SEPARATOR.join(v for v in row if v)
        else:
            cells = CELL_SEPARATOR.join(f"{h}: {v}" if h else v for h, v in zip(self.header, row) if v)
        return f"{self.caption}{CAPTION_SEPARATOR}{cells}" if self.caption and cells else cells

    def lines(self) -> list[str]:
        return [line for line in (self.row_text(r) for r in self.rows) if line]


@dataclass(frozen=True)
class Section:
    heading_path: tuple[str, ...]
    text: str
    table: Table | None = None  # a table section: `text` is its row lines, and chunks cut between rows


@dataclass(frozen=True)
class ParsedDocument:
    title: str
    sections: tuple[Section, ...]


def title_from_path(path: str | Path) -> str:
    """A document's title when it names none: its file name, words apart ("travel_policy-2025.md")."""
    return Path(path).stem.replace("_", " ").replace("-", " ")


@dataclass(frozen=True)
class Span:
    start: int  # character offsets into the section text
    end: int
    token_count: int


def split_spans(text: str, max_tokens: int, overlap_tokens: int = 0, encoding: str = "cl100k_base") -> list[Span]:
    """Character spans of `text`, each at most `max_tokens` tokens, together covering it."""
    if max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    if not 0 <= overlap_tokens < max_tokens:
        raise ValueError("overlap_tokens must be >= 0 and < max_tokens")
    enc = get_encoding(encoding)
    tokens = enc.encode_ordinary(text)
    if not tokens:
        return []
    _, offsets = enc.decode_with_offsets(tokens)
    n = len(tokens)
    starts = offsets + [len(text)]  # char offset where token i begins; starts[n] = end

    def is_word_boundary(i: int) -> bool:
        c = starts[i]
        return c >= len(text) or c == 0 or text[c - 1].isspace() or text[c].isspace()

    def cut_quality(i: int) -> int:
        window_start = max(0, starts[i] - 64)  # look back a little, never at the whole text
        before = text[window_start: starts[i]].rstrip()
        gap = text[window_start + len(before): starts[i] + 1]
        if "\n\n" in gap or (gap.startswith("\n") and before.endswith(":")):
            return 3
        if _SENTENCE_END.search(before[-4:]):
            return 2
        return 1 if is_word_boundary(i) else 0

    spans: list[Span] = []
    s = 0
    while s < n:
        end = min(s + max_tokens, n)
        if end < n:
            lo = s + max(1, max_tokens // 2)
            best = max(range(end, s, -1), key=lambda i: (cut_quality(i) if i >= lo else min(cut_quality(i), 1), i))
            end = best if cut_quality(best) > 0 else end
        # Re-count: BPE across a cut can differ by a token from the slice length.
        while end > s + 1 and len(enc.encode_ordinary(text[starts[s]:starts[end]])) > max_tokens:
            end -= 1
            # Shrinking must not land inside a word when a word boundary is still available.
            end = next((i for i in range(end, s, -1) if is_word_boundary(i)), end)
        spans.append(Span(starts[s], starts[end], len(enc.encode_ordinary(text[starts[s]:starts[end]]))))
        if end >= n:
            break
        nxt = end - overlap_tokens
        if nxt <= s:
            nxt = end  # an overlap as long as the window itself would not advance
        elif overlap_tokens:
            # Start the overlap on a word boundary too.
            nxt = next((i for i in range(nxt, end) if is_word_boundary(i)), end)
        s = nxt
    return spans


def chunk_document(
    doc: ParsedDocument,
    doc_path: str,
    content_hash: str,
    max_tokens: int,
    overlap_tokens: int,
    encoding: str = "cl100k_base",
    access: tuple[str, ...] | None = None,
) -> list[Chunk]:
    """`access`: the groups that may read the document (None: everyone)."""
    chunks: list[Chunk] = []
    for section in doc.sections:
        if section.table is not None:
            pieces = table_pieces(section.table, max_tokens, encoding)
        else:
            pieces = [(section.text[span.start:span.end].strip(), span.token_count)
                      for span in split_spans(section.text, max_tokens, overlap_tokens, encoding)]
        for text, token_count in pieces:
            if not text:
                continue
            position = len(chunks)
            chunk_id = hashlib.sha1(f"{doc_path}\0{content_hash}\0{position}".encode()).hexdigest()[:24]
            chunks.append(Chunk(
                id=chunk_id,
                doc_path=doc_path,
                title=doc.title,
                heading_path=section.heading_path,
                position=position,
                text=text,
                token_count=token_count,
                content_hash=content_hash,
                **({"access": tuple(access)} if access else {}),
            ))
    return chunks


def table_pieces(table: Table, max_tokens: int, encoding: str = "cl100k_base") -> list[tuple[str, int]]:
    """(text, token count) of a table's chunks: whole row lines packed up to `max_tokens`."""
    enc = get_encoding(encoding)
    pieces: list[tuple[str, int]] = []
    lines: list[str] = []
    count = 0

    def flush() -> None:
        nonlocal count
        if lines:
            text = "\n".join(lines)
            pieces.append((text, len(enc.encode_ordinary(text))))
        lines.clear()
        count = 0

    for line in table.lines():
        tokens = len(enc.encode_ordinary(line)) + 1  # and its line break
        if tokens > max_tokens:  # a row longer than a window: alone, cut as text
            flush()
            pieces.extend((line[s.start:s.end].strip(), s.token_count) for s in split_spans(line, max_tokens, 0, encoding))
            continue
        if count + tokens > max_tokens:
            flush()
        lines.append(line)
        count += tokens
    flush()
    return pieces
