"""Text from images of text (scans, photographed pages) with the Tesseract OCR engine, when it is
installed (`apt-get install tesseract-ocr`). Run as its command-line program: no Python binding to
keep in step with it, and a hung page is stopped by a timeout."""

from __future__ import annotations

import io
import re
import shutil
import subprocess

from chatbot.errors import ParseError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
OCR_TIMEOUT_S = 180
NEEDS_OCR = "install Tesseract (apt-get install tesseract-ocr) and ingest it again"


def tesseract() -> str | None:
    """The tesseract program, or None when it is not installed."""
    return shutil.which("tesseract")


def ocr_image(image, language: str = "eng") -> str:
    """The text Tesseract reads in a PIL image (one page)."""
    program = tesseract()
    if program is None:
        raise ParseError("image", f"needs OCR: {NEEDS_OCR}")
    buffer = io.BytesIO()
    image.convert("L").save(buffer, format="PNG")
    try:
        done = subprocess.run([program, "stdin", "stdout", "-l", language, "--psm", "3"], input=buffer.getvalue(),
                              capture_output=True, timeout=OCR_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise ParseError("image", f"OCR took longer than {OCR_TIMEOUT_S} s on one page") from None
    if done.returncode != 0:
        raise ParseError("image", f"OCR failed: {done.stderr.decode('utf-8', 'replace').strip()[-300:]}")
    return done.stdout.decode("utf-8", "replace")


# A line that ends a sentence (or a clause): the next line starts anew. Also read by parse's reflow.
ENDS_SENTENCE = re.compile(r"[.!?:;]\s*$")


def reflow(text: str) -> str:
    """OCR text with its lines rejoined into sentences: Tesseract ends a line where the page did, and
    leaves a blank line after it when the print is widely spaced, so a line that does not end a
    sentence (and is not an all-caps heading) continues on the next one."""
    lines = [line.strip() for line in text.splitlines()]
    out: list[str] = []
    for line in lines:
        if not line:
            out.append("")
            continue
        # the last written line, across one blank line
        k = len(out) - 1 if out and out[-1] else len(out) - 2
        if (k >= 0 and out[k] and not ENDS_SENTENCE.search(out[k]) and out[k].upper() != out[k]
                and all(not x for x in out[k + 1:])):
            out[k] = f"{out[k]} {line}"
            del out[k + 1:]
        else:
            out.append(line)
    return "\n".join(out).strip()


def image_text(data: bytes, path: str) -> str:
    """The text of every page (frame) of an image file, pages apart by a blank line."""
    from PIL import Image, ImageSequence, UnidentifiedImageError

    if tesseract() is None:
        raise ParseError(path, f"needs OCR: an image of text; {NEEDS_OCR}")
    try:
        with Image.open(io.BytesIO(data)) as image:
            pages = [frame.copy() for frame in ImageSequence.Iterator(image)]
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise ParseError(path, f"not a readable image ({type(e).__name__}: {e})") from None
    try:
        return "\n\n".join(reflow(ocr_image(page)) for page in pages)
    except ParseError as e:
        raise ParseError(path, e.reason) from None
