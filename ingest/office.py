"""Spreadsheets (.xlsx with openpyxl, .csv / .tsv with the csv module) and slide decks (.pptx with
python-pptx) to `ParsedDocument`s. A sheet's tables keep their header on every row; a slide's title
is its heading, and its text boxes, tables and speaker notes its body."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections import Counter

from chatbot.errors import ParseError
from ingest.chunk import ParsedDocument, Section, Table, title_from_path
from ingest.tables import clean_cell, table_from_rows

_NUMBER = re.compile(r"^[-+]?[\d.,\s%€$£]*\d[\d.,\s%€$£]*$")


def _blocks(rows: list[list[str]]) -> list[list[list[str]]]:
    """Rows cut into blocks at fully empty rows: a sheet often holds several tables one under another."""
    blocks: list[list[list[str]]] = [[]]
    for row in rows:
        if any(cell for cell in row):
            blocks[-1].append(row)
        elif blocks[-1]:
            blocks.append([])
    return [b for b in blocks if b]


def _spreadsheet_header(row: list[str]) -> bool:
    """A spreadsheet's first row names its columns unless it holds figures or is mostly empty."""
    filled = [c for c in row if c]
    return len(filled) * 2 >= len(row) and not any(_NUMBER.match(c) for c in filled)


def _table(block: list[list[str]], caption: str) -> Table | None:
    return table_from_rows(block, caption=caption, has_header=len(block) > 1 and _spreadsheet_header(block[0]))


def _sections(tables: list[tuple[tuple[str, ...], Table | None]]) -> tuple[Section, ...]:
    return tuple(Section(heading, "\n".join(t.lines()), t) for heading, t in tables if t is not None and t.lines())


# --- .xlsx -----------------------------------------------------------------------------------------------

_CURRENCY = re.compile(r"[€$£¥]")


def format_cell(value, number_format: str = "General") -> str:
    """A cell's value as the sheet shows it, near enough: dates as ISO dates, whole numbers without ".0",
    the format's currency sign, thousands separator, decimals and percent kept."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat(sep=" ", timespec="minutes")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if not isinstance(value, (int, float)):
        return clean_cell(value)
    fmt = number_format or "General"
    section = fmt.split(";")[0]
    if "%" in section:
        decimals = len(section.split(".")[1].split("%")[0]) if "." in section else 0
        return f"{value * 100:.{decimals}f}%"
    if section == "General" or not re.search(r"[0#]", section):
        text = f"{value:g}" if isinstance(value, float) and abs(value) < 1e15 else str(value)
        return text[:-2] if text.endswith(".0") else text
    decimals = len(re.split(r"[^0#]", section.split(".")[1])[0]) if "." in section else 0
    text = f"{value:,.{decimals}f}" if "," in section else f"{value:.{decimals}f}"
    # A currency as Excel writes it: "[$€-816] #,##0" (locale-tagged), "€#,##0", '#,##0 "€"'.
    tagged = re.search(r"\[\$([^\]-]+)[^\]]*\]", section)
    symbol = tagged.group(1) if tagged else (_CURRENCY.search(section).group() if _CURRENCY.search(section) else "")
    if symbol:
        digits_at = re.search(r"[0#]", section).start()
        where = tagged.start() if tagged else section.find(symbol)
        text = f"{text} {symbol}" if where > digits_at else f"{symbol}{text}"
    return text


def parse_xlsx(data: bytes, path: str) -> ParsedDocument:
    """Every sheet, each of its tables a section under the sheet's name. Cells merged across columns or
    rows take the merged value in each; a first row merged across columns (a group over sub-headers)
    joins the row under it in the header ("Q1 Jan")."""
    import openpyxl

    try:
        # Not read-only: merged ranges live in the full model.
        book = openpyxl.load_workbook(io.BytesIO(data), data_only=True)
    except Exception as e:  # openpyxl raises zip, XML and its own errors on damaged or foreign files
        raise ParseError(path, f"not a valid .xlsx file ({type(e).__name__}: {e})") from None
    tables: list[tuple[tuple[str, ...], Table | None]] = []
    try:
        for sheet in book.worksheets:
            grid = [[format_cell(c.value, c.number_format) for c in row] for row in sheet.iter_rows()]
            grouped_rows = set()
            for merged in sheet.merged_cells.ranges:
                value = grid[merged.min_row - 1][merged.min_col - 1]
                for r in range(merged.min_row, merged.max_row + 1):
                    for c in range(merged.min_col, merged.max_col + 1):
                        grid[r - 1][c - 1] = value
                if merged.max_col > merged.min_col and merged.min_row == merged.max_row:
                    grouped_rows.add(merged.min_row - 1)
            for block in _blocks(grid):
                first = grid.index(block[0])
                if first in grouped_rows and len(block) > 2:  # two header rows: the group and its columns
                    joined = [" ".join(dict.fromkeys(x for x in (a, b) if x)) for a, b in zip(block[0], block[1])]
                    block = [joined] + block[2:]
                tables.append(((sheet.title,), _table(block, sheet.title)))
    except Exception as e:
        raise ParseError(path, f"unreadable .xlsx content ({type(e).__name__}: {e})") from None
    finally:
        book.close()
    sections = _sections(tables)
    if not sections:
        raise ParseError(path, "the workbook has no cells with values")
    title = (book.properties.title or "").strip() or title_from_path(path)
    return ParsedDocument(title, sections)


# --- .csv / .tsv -----------------------------------------------------------------------------------------

def decode_lines(data: bytes, path: str) -> str:
    """Text whose lines may not share one encoding (files joined from several exports): each line is
    UTF-8 if it decodes as such, else in the encoding detected over the lines that are not."""
    from ingest.parse import decode_text, detect_encoding

    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # Excel's "Unicode text" export: UTF-16 with its BOM
        return data.decode("utf-16", errors="replace")
    if b"\x00" in data[:8192]:
        raise ParseError(path, "looks binary (NUL bytes), not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    lines = data.split(b"\n")
    foreign = [line for line in lines if not _is_utf8(line)]
    if not foreign or len(foreign) == len(lines):
        return decode_text(data, path)
    encoding = detect_encoding(b"\n".join(foreign), path)
    return "\n".join(line.decode("utf-8") if _is_utf8(line) else line.decode(encoding, errors="replace")
                     for line in lines).lstrip("\ufeff")


def _is_utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


_DELIMITERS = (",", ";", "\t", "|")


def sniff_delimiter(text: str, default: str) -> str:
    """The delimiter csv.Sniffer finds in the first lines; else the candidate that splits the most of them
    into the same number of fields (more than one)."""
    sample_lines = [line for line in text.splitlines() if line.strip()][:50]
    sample = "\n".join(sample_lines)
    try:
        return csv.Sniffer().sniff(sample, delimiters="".join(_DELIMITERS)).delimiter
    except csv.Error:
        pass
    best, best_score = default, 0
    for delimiter in _DELIMITERS:
        counts = Counter(len(row) for row in csv.reader(sample_lines, delimiter=delimiter))
        width, lines = max(counts.items(), key=lambda kv: (kv[1], kv[0])) if counts else (1, 0)
        if width > 1 and lines > best_score:
            best, best_score = delimiter, lines
    return best


def parse_csv(data: bytes, path: str) -> ParsedDocument:
    """Delimited text: the dialect sniffed (comma, semicolon, tab or bar; tab for .tsv when unsure), the
    encoding detected line by line, the first row the header unless it holds figures."""
    text = decode_lines(data, path)
    delimiter = sniff_delimiter(text[: 256 * 1024], "\t" if path.lower().endswith(".tsv") else ",")
    try:
        rows = [[clean_cell(c) for c in row] for row in csv.reader(io.StringIO(text), delimiter=delimiter)]
    except csv.Error as e:
        raise ParseError(path, f"unreadable delimited text ({e})") from None
    sections = _sections([((), _table(block, title_from_path(path))) for block in _blocks(rows)])
    if not sections:
        raise ParseError(path, "no values in the file")
    return ParsedDocument(title_from_path(path), sections)


# --- .pptx -----------------------------------------------------------------------------------------------

def parse_pptx(data: bytes, path: str) -> ParsedDocument:
    """Each slide a section under its title ("Slide N" without one): its text boxes and tables in reading
    order (top to bottom, left to right), then its speaker notes."""
    from pptx import Presentation

    from ingest.parse import Item, _drop_title_heading, _join_body_lines, _sections_from_headings

    try:
        deck = Presentation(io.BytesIO(data))
    except Exception as e:  # a renamed zip, a .ppt, damaged XML
        raise ParseError(path, f"not a valid .pptx file ({type(e).__name__}: {e})") from None
    items: list[Item] = []
    try:
        for number, slide in enumerate(deck.slides, start=1):
            title_shape = slide.shapes.title
            title = clean_cell(title_shape.text_frame.text) if title_shape is not None and title_shape.has_text_frame else ""
            items.append((1, title or f"Slide {number}"))
            shapes = [s for s in _shapes(slide.shapes) if title_shape is None or s.shape_id != title_shape.shape_id]
            for shape in sorted(shapes, key=lambda s: (s.top or 0, s.left or 0)):
                if getattr(shape, "has_table", False) and shape.has_table:
                    rows = [[cell.text for cell in row.cells] for row in shape.table.rows]
                    table = table_from_rows(rows, has_header=True if shape.table.first_row and len(rows) > 1 else None)
                    if table is not None:
                        items.append((None, table))
                elif getattr(shape, "has_text_frame", False) and shape.has_text_frame:
                    text = "\n".join(p.text for p in shape.text_frame.paragraphs if p.text.strip())
                    if text:
                        items.append((None, text))
            if slide.has_notes_slide:
                notes = slide.notes_slide.notes_text_frame.text.strip() if slide.notes_slide.notes_text_frame else ""
                if notes:
                    items.append((None, f"Speaker notes: {notes}"))
    except Exception as e:
        raise ParseError(path, f"unreadable .pptx content ({type(e).__name__}: {e})") from None
    _, sections = _sections_from_headings(_join_body_lines(items))
    if not sections:
        raise ParseError(path, "the slide deck has no text")
    title = (deck.core_properties.title or "").strip() or title_from_path(path)
    return ParsedDocument(title, _drop_title_heading(title, sections))


def _shapes(shapes):
    """Every shape, with the shapes inside groups."""
    from pptx.enum.shapes import MSO_SHAPE_TYPE

    for shape in shapes:
        if shape.shape_type == MSO_SHAPE_TYPE.GROUP:
            yield from _shapes(shape.shapes)
        else:
            yield shape
