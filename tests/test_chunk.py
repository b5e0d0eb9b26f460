import re

from hypothesis import given, settings, strategies as st

from chatbot.tokens import count_tokens
from ingest.chunk import ParsedDocument, Section, chunk_document, split_spans

words = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=12)
texts = st.lists(st.one_of(words, st.sampled_from([" ", "\n", "\n\n", ". ", "<|endoftext|>", "日本語", "é"])),
                 min_size=0, max_size=300).map("".join)


@settings(max_examples=150, deadline=None)
@given(text=texts, max_tokens=st.integers(5, 60), overlap=st.integers(0, 4))
def test_no_span_exceeds_limit_and_spans_cover_text(text, max_tokens, overlap):
    spans = split_spans(text, max_tokens, overlap)
    for span in spans:
        assert count_tokens(text[span.start:span.end]) <= max_tokens
        assert span.token_count == count_tokens(text[span.start:span.end])
    covered = [False] * len(text)
    for span in spans:
        for i in range(span.start, span.end):
            covered[i] = True
    assert all(covered[i] for i, ch in enumerate(text) if not ch.isspace())


@settings(max_examples=80, deadline=None)
@given(st.lists(st.from_regex(r"[a-z]{1,10}", fullmatch=True), min_size=1, max_size=200), st.integers(8, 40))
def test_never_splits_inside_a_word_that_fits(word_list, max_tokens):
    text = " ".join(word_list)
    for span in split_spans(text, max_tokens, 3):
        assert span.start == 0 or text[span.start - 1] == " " or text[span.start] == " "
        assert span.end == len(text) or text[span.end] == " " or text[span.end - 1] == " "


def test_prefers_paragraph_breaks_and_overlaps():
    para = ("Alpha beta gamma delta. " * 12).strip()
    text = f"{para}\n\n{para}\n\n{para}"
    spans = split_spans(text, 120, 20)
    assert len(spans) >= 2
    assert text[spans[0].start:spans[0].end].rstrip().endswith("delta.")
    assert spans[1].start < spans[0].end  # overlapping windows


def test_special_tokens_are_plain_text():
    text = "before <|endoftext|> after " * 50
    spans = split_spans(text, 30, 5)
    assert "".join(text[s.start:s.end] for s in spans).count("endoftext") >= 50


def test_a_giant_word_is_the_only_thing_cut_inside():
    blob = "x" * 5000
    spans = split_spans(f"start {blob} end", 50, 0)
    assert all(s.token_count <= 50 for s in spans)
    assert "".join(f"start {blob} end"[s.start:s.end] for s in spans).replace(" ", "") == f"start{blob}end"


def test_chunks_carry_title_headings_and_stable_ids():
    doc = ParsedDocument("Handbook", (Section(("Leave", "Sick leave"), "Tell your manager by 10:00. " * 40),
                                      Section(("Hours",), "Core hours are 10-16.")))
    a = chunk_document(doc, "/kb/h.md", "hash1", 60, 10)
    b = chunk_document(doc, "/kb/h.md", "hash1", 60, 10)
    assert [c.id for c in a] == [c.id for c in b]
    assert a[0].heading_path == ("Leave", "Sick leave") and a[-1].heading_path == ("Hours",)
    assert [c.position for c in a] == list(range(len(a)))
    assert all(c.token_count <= 60 for c in a)
    assert a[0].context_text.startswith("Handbook > Leave > Sick leave\n")
    assert not re.search(r"Hours", " ".join(c.text for c in a[:-1]))  # a chunk never spans headings
