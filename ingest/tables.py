"""Rows of cells, as every parser finds them, to a `Table`: cells cleaned, empty rows and columns
dropped, rows padded to one width, and the header row told apart from the data."""

from __future__ import annotations

import re
from typing import Iterable, Sequence

from ingest.chunk import Table

_SPACE = re.compile(r"\s+")
_DIGIT = re.compile(r"\d")


def clean_cell(value) -> str:
    if value is None:
        return ""
    return _SPACE.sub(" ", str(value)).strip()


def looks_like_header(row: Sequence[str], rest: Sequence[Sequence[str]]) -> bool:
    """A first row reads as column names when every cell is filled, none holds a figure, and the rows
    under it do hold one somewhere (a table of words alone gives no such sign: take its first row as
    the header anyway, as most tables are written)."""
    if not rest or not all(row) or any(_DIGIT.search(cell) for cell in row):
        return False
    return len(set(row)) == len(row)


def table_from_rows(rows: Iterable[Sequence], caption: str = "", has_header: bool | None = None) -> Table | None:
    """None when nothing is left once empty rows and columns are gone. `has_header` None: guess it."""
    cleaned = [[clean_cell(c) for c in row] for row in rows]
    cleaned = [row for row in cleaned if any(row)]
    if not cleaned:
        return None
    width = max(len(r) for r in cleaned)
    cleaned = [r + [""] * (width - len(r)) for r in cleaned]
    keep = [j for j in range(width) if any(r[j] for r in cleaned)]
    cleaned = [[r[j] for j in keep] for r in cleaned]
    if has_header is None:
        has_header = looks_like_header(cleaned[0], cleaned[1:])
    if has_header:
        header, body = tuple(cleaned[0]), cleaned[1:]
        if not body:  # a header alone is a line of text, not a table
            body, header = [cleaned[0]], tuple("" for _ in cleaned[0])
    else:
        header, body = tuple("" for _ in cleaned[0]), cleaned
    return Table(header=header, rows=tuple(tuple(r) for r in body), caption=clean_cell(caption))
