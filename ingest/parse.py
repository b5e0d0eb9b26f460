"""Files to `ParsedDocument`s (a title and sections, each with its heading path).

Parsing is done by well-kept libraries: markdown-it-py, BeautifulSoup (lxml), pypdf,
python-docx, charset-normalizer for text of unknown encoding. Every failure becomes a
`ParseError` naming the file and the reason, so one bad file never stops a batch.
"""

from __future__ import annotations

import re
import zipfile
from collections import Counter
from pathlib import Path

from chatbot.errors import ParseError
from ingest.chunk import ParsedDocument, Section

SUPPORTED_SUFFIXES = (".md", ".markdown", ".txt", ".html", ".htm", ".pdf", ".docx")


_COMMON_ENCODINGS = ("cp1252", "cp1251", "cp932", "gb18030", "euc_kr", "latin_1")


def decode_text(data: bytes, path: str) -> str:
    """Bytes of a text file to str: UTF-8 (with or without BOM), else the detected encoding."""
    if b"\x00" in data[:8192] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ParseError(path, "looks binary (NUL bytes), not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    matches = list(from_bytes(data[: 1 << 20]))
    if not matches:
        raise ParseError(path, "not valid UTF-8 and no other text encoding fits")
    # Short samples tie between sibling code pages; among equally clean fits, prefer the
    # most widely used one (Windows-1252 for Western text, Windows-1251 for Cyrillic).
    best_chaos = min(m.chaos for m in matches)
    tied = [m.encoding for m in matches if m.chaos <= best_chaos + 1e-9]
    encoding = next((e for e in _COMMON_ENCODINGS if e in tied), tied[0])
    return data.decode(encoding, errors="replace")


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _clean(text: str) -> str:
    text = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = re.sub(r"[ \t\u00a0]+", " ", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _sections_from_headings(items: list[tuple[int | None, str]]) -> tuple[str, tuple[Section, ...]]:
    """(heading level or None for body text, text) in document order -> (first h1, sections)."""
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


def _join_body_lines(items: list[tuple[int | None, str]]) -> list[tuple[int | None, str]]:
    """Consecutive body lines (level None) back into one body item, keeping their line breaks."""
    joined: list[tuple[int | None, str]] = []
    for level, text in items:
        if level is None and joined and joined[-1][0] is None:
            joined[-1] = (None, joined[-1][1] + "\n" + text)
        else:
            joined.append((level, text))
    return joined


def _drop_title_heading(title: str, sections: tuple[Section, ...]) -> tuple[Section, ...]:
    """A leading h1 equal to the title is already in every chunk's context; keep paths short."""
    out = []
    for s in sections:
        hp = s.heading_path[1:] if s.heading_path[:1] == (title,) else s.heading_path
        out.append(Section(hp, s.text))
    return tuple(out)


def parse_markdown(text: str, path: str) -> ParsedDocument:
    from markdown_it import MarkdownIt

    lines = text.splitlines()
    tokens = MarkdownIt("commonmark").parse(text)
    items: list[tuple[int | None, str]] = []
    cursor = 0
    for i, tok in enumerate(tokens):
        if tok.type != "heading_open" or not tok.map:
            continue
        start, end = tok.map
        items.append((None, "\n".join(lines[cursor:start])))
        items.append((int(tok.tag[1]), tokens[i + 1].content))  # heading_open is followed by its inline
        cursor = end
    items.append((None, "\n".join(lines[cursor:])))
    h1, sections = _sections_from_headings(items)
    title = h1 or Path(path).stem.replace("_", " ").replace("-", " ")
    return ParsedDocument(title, _drop_title_heading(title, sections))


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
    title = h1 or Path(path).stem.replace("_", " ").replace("-", " ")
    return ParsedDocument(title, _drop_title_heading(title, sections))


_BLOCK_TAGS = {"p", "li", "pre", "blockquote", "tr", "dt", "dd", "div", "section", "article",
               "table", "ul", "ol", "br", "figcaption", "caption"}


def parse_html(text: str, path: str) -> ParsedDocument:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(text, "lxml")
    for junk in soup(["script", "style", "noscript", "template", "svg", "nav", "footer", "head"]):
        if junk.name == "head":
            continue
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
            if name in _BLOCK_TAGS:
                buf.append("\n")
            if name in ("td", "th"):
                buf.append(" | ")
            walk(child)
            if name in _BLOCK_TAGS:
                buf.append("\n")

    walk(root)
    items.append((None, "".join(buf)))
    items = [(lvl, t if lvl is not None else re.sub(r"[ \t]*\n[ \t\n]*\n", "\n\n", t)) for lvl, t in items]
    h1, sections = _sections_from_headings(items)
    title = page_title or h1 or Path(path).stem
    return ParsedDocument(title, _drop_title_heading(h1 or title, sections))


def parse_pdf(data: bytes, path: str) -> ParsedDocument:
    """PDF text with pypdf. A line set in a font clearly larger than the body's is a heading."""
    import io

    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                if not reader.decrypt(""):
                    raise ParseError(path, "PDF is encrypted with a password")
            except ParseError:
                raise
            except Exception:
                raise ParseError(path, "PDF is encrypted and cannot be decrypted") from None
        lines: list[tuple[float, str]] = []
        for page in reader.pages:
            runs: list[tuple[float, str]] = []

            def visit(text, cm, tm, font_dict, font_size, runs=runs):
                scale = (tm[0] ** 2 + tm[1] ** 2) ** 0.5 or 1.0
                runs.append((round(float(font_size) * scale, 1), text))

            page.extract_text(visitor_text=visit)
            current: list[str] = []
            size = 0.0
            for run_size, run_text in runs:
                parts = run_text.split("\n")
                for k, part in enumerate(parts):
                    if part.strip():
                        size = max(size, run_size) if current else run_size
                        current.append(part)
                    if k < len(parts) - 1 and current:
                        lines.append((size, "".join(current)))
                        current = []
            if current:
                lines.append((size, "".join(current)))
            lines.append((0.0, ""))  # page break = paragraph break
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
    except ParseError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, OSError, RecursionError) as e:
        raise ParseError(path, f"unreadable or corrupt PDF ({type(e).__name__}: {e})") from None

    weights = Counter()
    for size, text in lines:
        if size:
            weights[size] += len(text)
    if not weights:
        raise ParseError(path, "PDF has no extractable text (scanned image? OCR it first)")
    body_size = weights.most_common(1)[0][0]
    def heading_like(text: str) -> bool:  # bullets and page numbers come in odd fonts too
        return sum(ch.isalpha() for ch in text) >= 3 and len(text.strip()) <= 120

    heading_sizes = sorted({s for s, t in lines if s >= body_size * 1.15 and heading_like(t)}, reverse=True)
    level_of = {s: min(i + 1, 6) for i, s in enumerate(heading_sizes)}
    items: list[tuple[int | None, str]] = []
    for size, text in lines:
        if size in level_of and heading_like(text):
            items.append((level_of[size], text))
        else:
            items.append((None, text))
    h1, sections = _sections_from_headings(_join_body_lines(items))
    title = meta_title.strip() or h1 or Path(path).stem
    return ParsedDocument(title, _drop_title_heading(h1 or title, sections))


def parse_docx(data: bytes, path: str) -> ParsedDocument:
    import io

    import docx
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as e:
        raise ParseError(path, f"not a valid .docx file ({type(e).__name__}: {e})") from None
    except Exception as e:  # python-docx raises assorted lxml/opc errors on junk zips
        raise ParseError(path, f"not a valid .docx file ({type(e).__name__}: {e})") from None
    items: list[tuple[int | None, str]] = []
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            rows = [" | ".join(c.text.strip() for c in row.cells) for row in block.rows]
            items.append((None, "\n".join(rows)))
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


def parse_file(path: Path, data: bytes | None = None) -> ParsedDocument:
    """Parse one file by its suffix. Raises ParseError with the reason on any failure."""
    name = str(path)
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
        return parse_pdf(data, name)
    if suffix == ".docx":
        return parse_docx(data, name)
    text = decode_text(data, name)
    if suffix in (".md", ".markdown"):
        return parse_markdown(text, name)
    if suffix in (".html", ".htm"):
        return parse_html(text, name)
    return parse_text(text, name)
