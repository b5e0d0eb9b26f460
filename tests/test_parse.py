import io
import zipfile

import pytest

from chatbot.errors import ParseError
from ingest.parse import parse_file
from tests.helpers import SAMPLE_KB


@pytest.mark.parametrize("name, title, heading", [
    ("employee-handbook.md", "Halyard Robotics Employee Handbook", ("Remote Work", "Hybrid by default")),
    ("glossary.txt", "Halyard Robotics Glossary", ("Operations Terms",)),
    ("office-guide.html", "Office Guide: Lisbon and Austin", ("Austin",)),
    ("travel-policy.pdf", "Travel Policy", ("Hotels",)),
    ("fleet-deployment-guide.docx", "Fleet Software Deployment Guide", ("Deployment Windows and Freezes",)),
])
def test_each_sample_format_parses_with_title_and_headings(name, title, heading):
    doc = parse_file(SAMPLE_KB / name)
    assert doc.title == title
    assert heading in [s.heading_path for s in doc.sections]
    assert sum(len(s.text) for s in doc.sections) > 1500


def test_sample_pdf_text_is_extracted_verbatim():
    doc = parse_file(SAMPLE_KB / "travel-policy.pdf")
    hotels = [s for s in doc.sections if s.heading_path == ("Hotels",)]
    assert "Meridian shows the nightly cap" in hotels[0].text
    # The caps table comes out as rows that carry their column names.
    assert "Hotels — City: Rotterdam; Nightly hotel cap: €160" in hotels[1].text.split("\n")


def test_markdown_ignores_hashes_in_code_blocks(tmp_path):
    f = tmp_path / "a.md"
    f.write_text("# Guide\n\nIntro.\n\n```\n# not a heading\n```\n\n## Part\n\nBody text.\n")
    doc = parse_file(f)
    assert [s.heading_path for s in doc.sections] == [(), ("Part",)]
    assert "# not a heading" in doc.sections[0].text


def test_non_utf8_text_is_decoded(tmp_path):
    f = tmp_path / "latin.txt"
    f.write_bytes("Café crème à Lisboa: prix réduit pour les employés, façade rénovée.".encode("cp1252"))
    assert "Café crème" in parse_file(f).sections[0].text


def test_html_drops_scripts_and_keeps_tables(tmp_path):
    f = tmp_path / "p.html"
    f.write_text("<html><head><title>T</title><script>var secret=1</script></head><body><h1>T</h1>"
                 "<h2>Prices</h2><table><tr><td>Tea</td><td>€2</td></tr></table></body></html>")
    doc = parse_file(f)
    assert doc.title == "T"
    assert "secret" not in str(doc)
    assert doc.sections[0].heading_path == ("Prices",) and doc.sections[0].text == "Prices — Tea: €2"


@pytest.mark.parametrize("name, data, reason", [
    ("broken.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage", "PDF"),
    ("fake.pdf", b"hello, I am text", "not a PDF"),
    ("empty.md", b"", "empty"),
    ("binary.txt", b"\x00\x01\x02\x03" * 100, "binary"),
    ("junk.docx", None, "not a valid .docx"),
    ("thing.xyz", b"data", "unsupported"),
])
def test_bad_files_raise_parse_error_with_reason(tmp_path, name, data, reason):
    if data is None:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("random.bin", b"junk" * 10)
        data = buf.getvalue()
    f = tmp_path / name
    f.write_bytes(data)
    with pytest.raises(ParseError, match=reason) as info:
        parse_file(f)
    assert info.value.path == str(f)
