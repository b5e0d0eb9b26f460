"""Files to `ParsedDocument`s (a title and sections, each with its heading path).

Parsing is done by well-kept libraries: markdown-it-py, BeautifulSoup (lxml), pypdf,
python-docx, charset-normalizer for text of unknown encoding. Every failure becomes a
`ParseError` naming the file and the reason, so one bad file never stops a batch.
"""

from __future__ import annotations

import dataclasses
import re
import zipfile
from collections import Counter
from pathlib import Path

from chatbot.errors import ParseError
from ingest.chunk import ParsedDocument, Section, Table, title_from_path
from ingest.tables import table_from_rows

from ingest.ocr import ENDS_SENTENCE, IMAGE_SUFFIXES

SUPPORTED_SUFFIXES = (".md", ".markdown", ".txt", ".html", ".htm", ".pdf", ".docx", ".xlsx", ".csv", ".tsv",
                      ".pptx", *IMAGE_SUFFIXES)


_COMMON_ENCODINGS = ("cp1252", "cp1251", "cp932", "gb18030", "euc_kr", "latin_1")


def decode_text(data: bytes, path: str) -> str:
    """Bytes of a text file to str: UTF-8 (with or without BOM), else the detected encoding."""
    if b"\x00" in data[:8192] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ParseError(path, "looks binary (NUL bytes), not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    return data.decode(detect_encoding(data, path), errors="replace")


def detect_encoding(data: bytes, path: str) -> str:
    """The encoding charset-normalizer finds for text that is not UTF-8."""
    from charset_normalizer import from_bytes

    matches = list(from_bytes(data[: 1 << 20]))
    if not matches:
        raise ParseError(path, "not valid UTF-8 and no other text encoding fits")
    # Short samples tie between sibling code pages; among equally clean fits, prefer the
    # most widely used one (Windows-1252 for Western text, Windows-1251 for Cyrillic).
    best_chaos = min(m.chaos for m in matches)
    tied = [m.encoding for m in matches if m.chaos <= best_chaos + 1e-9]
    return next((e for e in _COMMON_ENCODINGS if e in tied), tied[0])


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _clean(text: str) -> str:
    text = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = re.sub(r"[ \t\u00a0]+", " ", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


Item = tuple[int | None, "str | Table"]


def _sections_from_headings(items: list[Item]) -> tuple[str, tuple[Section, ...]]:
    """(heading level or None for body text, text or a Table) in document order -> (first h1, sections).
    A table without a caption takes its nearest heading's."""
    path: list[tuple[int, str]] = []
    sections: list[Section] = []
    body: list[str] = []
    first_h1 = ""

    def flush() -> None:
        text = _clean("\n\n".join(body))
        if text:
            sections.append(Section(tuple(h for _, h in path), text))
        body.clear()

    for level, text in items:
        if isinstance(text, Table):
            flush()
            if text.rows:
                table = text if text.caption or not path else dataclasses.replace(text, caption=path[-1][1])
                lines = table.lines()
                if lines:
                    sections.append(Section(tuple(h for _, h in path), "\n".join(lines), table))
            continue
        if level is None:
            body.append(text)
            continue
        flush()
        heading = _clean(text).replace("\n", " ")[:300]  # a runaway "heading" must not swamp every chunk
        if not heading:
            continue
        if level == 1 and not first_h1:
            first_h1 = heading
        while path and path[-1][0] >= level:
            path.pop()
        path.append((level, heading))
    flush()
    return first_h1, tuple(sections)


def _join_body_lines(items: list[Item], reflow: bool = False) -> list[Item]:
    """Consecutive body lines (level None) back into one body item, keeping their line breaks. `reflow`
    (a page's layout, as in PDFs): a line that does not end a sentence continues on the next one, so a
    sentence broken by the page width is one sentence again ("a fee of €350 (or $380) per unit")."""
    joined: list[Item] = []
    for level, text in items:
        if level is None and isinstance(text, str) and joined and joined[-1][0] is None and isinstance(joined[-1][1], str):
            previous = joined[-1][1]
            glue = " " if (reflow and text and previous and not previous.endswith("\n")
                           and not ENDS_SENTENCE.search(previous)) else "\n"
            joined[-1] = (None, previous + glue + text)
        else:
            joined.append((level, text))
    return joined


def _drop_title_heading(title: str, sections: tuple[Section, ...]) -> tuple[Section, ...]:
    """A leading h1 equal to the title is already in every chunk's context; keep paths short."""
    out = []
    for s in sections:
        hp = s.heading_path[1:] if s.heading_path[:1] == (title,) else s.heading_path
        out.append(Section(hp, s.text, s.table))
    return tuple(out)


def parse_markdown(text: str, path: str) -> ParsedDocument:
    from markdown_it import MarkdownIt

    lines = text.splitlines()
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    items: list[Item] = []
    cursor = 0
    for i, tok in enumerate(tokens):
        if tok.type not in ("heading_open", "table_open") or not tok.map or tok.level != 0:
            continue
        start, end = tok.map
        items.append((None, "\n".join(lines[cursor:start])))
        if tok.type == "heading_open":
            items.append((int(tok.tag[1]), tokens[i + 1].content))  # heading_open is followed by its inline
        else:
            table = _markdown_table(tokens, i)
            items.append((None, table) if table else (None, "\n".join(lines[start:end])))
        cursor = end
    items.append((None, "\n".join(lines[cursor:])))
    h1, sections = _sections_from_headings(items)
    title = h1 or title_from_path(path)
    return ParsedDocument(title, _drop_title_heading(title, sections))


def _markdown_table(tokens, start: int) -> Table | None:
    rows: list[list[str]] = []
    for tok in tokens[start + 1:]:
        if tok.type == "table_close":
            break
        if tok.type == "tr_open":
            rows.append([])
        elif tok.type == "inline" and rows:
            rows[-1].append(_inline_text(tok))
    return table_from_rows(rows, has_header=True)


def _inline_text(tok) -> str:
    """An inline token's text without its markup (**bold**, `code`, [links](...))."""
    if not tok.children:
        return tok.content
    return "".join(c.content for c in tok.children if c.type in ("text", "code_inline", "softbreak", "hardbreak"))


_UNDERLINE = re.compile(r"^(=+|-+)\s*$")


def parse_text(text: str, path: str) -> ParsedDocument:
    """Plain text: a line underlined with === / --- or a short ALL-CAPS line is a heading."""
    lines = _clean(text).split("\n")
    items: list[tuple[int | None, str]] = []
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if line and _UNDERLINE.match(nxt) and len(line) <= 120:
            items.append((1 if nxt.startswith("=") else 2, line))
            i += 2
            continue
        letters = [c for c in line if c.isalpha()]
        if 3 <= len(letters) and line.upper() == line and len(line) <= 80 and not line.endswith((".", ",")):
            items.append((2, line))
        else:
            items.append((None, lines[i]))
        i += 1
    # A heading on the very first line of a text file is its title.
    first = next((k for k, (lvl, t) in enumerate(items) if lvl is not None or t.strip()), None)
    if first is not None and items[first][0] is not None:
        items[first] = (1, items[first][1])
    h1, sections = _sections_from_headings(_join_body_lines(items))
    title = h1 or title_from_path(path)
    return ParsedDocument(title, _drop_title_heading(title, sections))


_BLOCK_TAGS = {"p", "li", "pre", "blockquote", "tr", "dt", "dd", "div", "section", "article",
               "table", "ul", "ol", "br", "figcaption", "caption"}


def parse_html(text: str, path: str) -> ParsedDocument:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(text, "lxml")
    for junk in soup(["script", "style", "noscript", "template", "svg", "nav", "footer", "aside", "header", "head"]):
        if junk.name == "head" or (junk.name == "header" and junk.find_parent(["article", "main"])):
            continue  # an article's own header holds its title; the page's header is site chrome
        junk.decompose()
    title_tag = soup.find("title")
    page_title = _clean(title_tag.get_text(" ")) if title_tag else ""
    root = soup.body or soup
    items: list[tuple[int | None, str]] = []
    buf: list[str] = []

    def walk(node) -> None:
        for child in node.children:
            name = getattr(child, "name", None)
            if name is None:
                if type(child).__name__ == "NavigableString":
                    buf.append(str(child))
                continue
            if re.fullmatch(r"h[1-6]", name):
                items.append((None, "".join(buf)))
                buf.clear()
                items.append((int(name[1]), child.get_text(" ")))
                continue
            if name == "table" and not child.find_parent("table"):
                table = _html_table(child)
                if table is not None:
                    items.append((None, "".join(buf)))
                    buf.clear()
                    items.append((None, table))
                    continue
            if name in _BLOCK_TAGS:
                buf.append("\n")
            if name in ("td", "th"):
                buf.append(" | ")
            walk(child)
            if name in _BLOCK_TAGS:
                buf.append("\n")

    walk(root)
    items.append((None, "".join(buf)))
    items = [(lvl, t if lvl is not None or not isinstance(t, str) else re.sub(r"[ \t]*\n[ \t\n]*\n", "\n\n", t))
             for lvl, t in items]
    h1, sections = _sections_from_headings(items)
    title = page_title or h1 or Path(path).stem
    return ParsedDocument(title, _drop_title_heading(h1 or title, sections))


def _html_table(node) -> Table | None:
    """A <table>: its rows (a cell spanning columns repeats in each), header from <thead> or a first row
    of <th>, caption from <caption>."""
    rows, header_flags = [], []
    for tr in node.find_all("tr"):
        if tr.find_parent("table") is not node:
            continue  # a nested table's rows belong to its cell's text
        cells = tr.find_all(["td", "th"], recursive=False)
        row = []
        for cell in cells:
            try:
                span = max(1, min(int(cell.get("colspan", 1)), 50))
            except (TypeError, ValueError):
                span = 1
            row.extend([cell.get_text(" ")] * span)
        rows.append(row)
        header_flags.append(bool(cells) and (all(c.name == "th" for c in cells) or tr.find_parent("thead") is not None))
    if not rows:
        return None
    caption = node.find("caption")
    has_header = True if header_flags[0] else None
    return table_from_rows(rows, caption=caption.get_text(" ") if caption else "", has_header=has_header)


def parse_pdf(data: bytes, path: str, ocr=None) -> ParsedDocument:
    """PDF text and tables with pdfplumber. A line set in a font clearly larger than the body's is a
    heading; a table pdfplumber finds on a page becomes a Table, in its place among the lines. A page
    with no text layer (a scan) is read by `ocr` (image -> text) when given; a PDF with no text at all
    and no OCR is refused, never stored empty."""
    import io

    import pdfplumber
    from pdfminer.pdfdocument import PDFPasswordIncorrect

    lines: list[tuple[float, "str | Table"]] = []
    scanned = 0
    try:
        with pdfplumber.open(io.BytesIO(data)) as pdf:
            meta_title = pdf.metadata.get("Title") if isinstance(pdf.metadata, dict) else ""
            for page in pdf.pages:
                page_lines = _pdf_page_lines(page)
                if not page_lines and page.images:
                    scanned += 1
                    if ocr is not None:
                        from ingest.ocr import reflow

                        page_lines = [(0.0, text) for text in reflow(ocr(page.to_image(resolution=300).original)).split("\n")]
                lines.extend(page_lines)
                lines.append((0.0, ""))  # page break = paragraph break
    except ParseError:
        raise
    except Exception as e:  # pdfminer raises assorted errors on damaged files; pdfplumber wraps them
        cause = e.args[0] if e.args and isinstance(e.args[0], Exception) else e
        if isinstance(cause, PDFPasswordIncorrect) or "encrypt" in type(cause).__name__.lower():
            raise ParseError(path, "PDF is encrypted with a password") from None
        raise ParseError(path, f"unreadable or corrupt PDF ({type(cause).__name__}: {cause})") from None
    meta_title = meta_title.decode("utf-8", "replace") if isinstance(meta_title, bytes) else str(meta_title or "")

    weights = Counter()
    for size, text in lines:
        if size:
            weights[size] += len(text) if isinstance(text, str) else sum(len(line) for line in text.lines())
    if not weights and not any(isinstance(t, Table) or (isinstance(t, str) and t.strip()) for _, t in lines):
        if scanned:
            raise ParseError(path, f"needs OCR: its {scanned} page(s) are scanned images with no text layer; install "
                                   "Tesseract (apt-get install tesseract-ocr) and ingest it again")
        raise ParseError(path, "PDF has no extractable text")
    body_size = weights.most_common(1)[0][0] if weights else 0.0

    def heading_like(text) -> bool:  # bullets and page numbers come in odd fonts too
        return isinstance(text, str) and sum(ch.isalpha() for ch in text) >= 3 and len(text.strip()) <= 120

    heading_sizes = sorted({s for s, t in lines if body_size and s >= body_size * 1.15 and heading_like(t)},
                           reverse=True)
    level_of = {s: min(i + 1, 6) for i, s in enumerate(heading_sizes)}
    items: list[Item] = [(level_of[size], text) if size in level_of and heading_like(text) else (None, text)
                         for size, text in lines]
    h1, sections = _sections_from_headings(_join_body_lines(items, reflow=True))
    title = meta_title.strip() or h1 or Path(path).stem
    return ParsedDocument(title, _drop_title_heading(h1 or title, sections))


_PDF_GLYPH = re.compile(r"\(cid:\d+\)")  # a glyph with no Unicode mapping (bullets, dingbats)


def _pdf_page_lines(page) -> list[tuple[float, "str | Table"]]:
    """A page's text lines (font size, text) and tables (0, Table), top to bottom. A blank line marks a
    gap wider than a line between two lines: a paragraph break."""
    tables = page.find_tables()
    boxes = [t.bbox for t in tables]

    def outside(obj) -> bool:
        if "x0" not in obj or "top" not in obj:
            return True
        x, y = (obj["x0"] + obj["x1"]) / 2, (obj["top"] + obj["bottom"]) / 2
        return not any(x0 <= x <= x1 and top <= y <= bottom for x0, top, x1, bottom in boxes)

    text_page = page.filter(outside) if boxes else page
    entries: list[tuple[float, float, "str | Table"]] = []
    previous_bottom = None
    for line in text_page.extract_text_lines(return_chars=True):
        # The size of its letters: bullets and symbols come from other fonts at other sizes.
        sizes = Counter(round(c.get("size", 0.0), 1) for c in line.get("chars", []) if c.get("text", "").isalnum())
        size = sizes.most_common(1)[0][0] if sizes else 0.0
        text = _PDF_GLYPH.sub("", line["text"]).strip()
        if not text:
            continue
        if previous_bottom is not None and size and line["top"] - previous_bottom > 0.8 * size:
            entries.append((line["top"] - 0.01, 0.0, ""))
        entries.append((line["top"], size, text))
        previous_bottom = line["bottom"]
    for t in tables:
        table = table_from_rows(t.extract())
        if table is not None:
            sizes = Counter(round(c.get("size", 0.0), 1) for c in page.crop(t.bbox).chars if c.get("text", "").isalnum())
            entries.append((t.bbox[1], sizes.most_common(1)[0][0] if sizes else 0.0, table))
    entries.sort(key=lambda e: e[0])
    return [(size, content) for _, size, content in entries]


def parse_docx(data: bytes, path: str) -> ParsedDocument:
    import io

    import docx
    from docx.table import Table as DocxTable

    try:
        document = docx.Document(io.BytesIO(data))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as e:
        raise ParseError(path, f"not a valid .docx file ({type(e).__name__}: {e})") from None
    except Exception as e:  # python-docx raises assorted lxml/opc errors on junk zips
        raise ParseError(path, f"not a valid .docx file ({type(e).__name__}: {e})") from None
    items: list[tuple[int | None, str]] = []
    for block in document.iter_inner_content():
        if isinstance(block, DocxTable):
            table = table_from_rows([_docx_row(row) for row in block.rows])
            if table is not None:
                items.append((None, table))
            continue
        style = (block.style.name if block.style is not None else "") or ""
        m = re.match(r"Heading (\d)", style)
        if style == "Title":
            items.append((1, block.text))
        elif m:
            items.append((int(m.group(1)), block.text))
        else:
            items.append((None, block.text))
    h1, sections = _sections_from_headings(_join_body_lines(items))
    core_title = (document.core_properties.title or "").strip()
    title = core_title or h1 or Path(path).stem
    return ParsedDocument(title, _drop_title_heading(h1 or title, sections))


def _docx_row(row) -> list[str]:
    """A Word row's cells; a cell merged across columns is listed once per column it covers."""
    try:
        return [c.text for c in row.cells]
    except (ValueError, IndexError):  # a malformed grid: the cells as written
        return [c.text for c in row._tr.tc_lst]


def parse_file(path: Path, data: bytes | None = None, name: str | None = None) -> ParsedDocument:
    """Parse one file by its suffix. Raises ParseError with the reason on any failure. `name`: what the
    document is called in errors and titles (a URL), when `path` only carries the suffix."""
    from ingest.ocr import image_text, ocr_image, tesseract
    from ingest.office import parse_csv, parse_pptx, parse_xlsx

    name = name or str(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ParseError(name, f"unsupported file type '{suffix}' (supported: {', '.join(SUPPORTED_SUFFIXES)})")
    if data is None:
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ParseError(name, f"cannot read file: {e.strerror or e}") from None
    if not data.strip():
        raise ParseError(name, "file is empty")
    if suffix == ".pdf":
        if not data.lstrip()[:5] == b"%PDF-":
            raise ParseError(name, "not a PDF (missing %PDF- header)")
        return parse_pdf(data, name, ocr=ocr_image if tesseract() else None)
    if suffix == ".docx":
        return parse_docx(data, name)
    if suffix == ".xlsx":
        return parse_xlsx(data, name)
    if suffix == ".pptx":
        return parse_pptx(data, name)
    if suffix in (".csv", ".tsv"):
        return parse_csv(data, name)
    if suffix in IMAGE_SUFFIXES:
        text = image_text(data, name)
        if not text.strip():
            raise ParseError(name, "OCR found no text in the image")
        return parse_text(text, name)
    text = decode_text(data, name)
    if suffix in (".md", ".markdown"):
        return parse_markdown(text, name)
    if suffix in (".html", ".htm"):
        return parse_html(text, name)
    return parse_text(text, name)
