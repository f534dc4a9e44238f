"""Chunking: never over the size, never across a heading or page, overlapping, nothing lost."""

from __future__ import annotations

import re
import time
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genfoundry.core.errors import InvalidRequest
from genfoundry.knowledge.chunking import TextChunk, chunk_document
from genfoundry.knowledge.loaders import LoadedDocument, Section


def words(text: str) -> int:
    return len(text.split())


def doc_of(*sections: Section) -> LoadedDocument:
    return LoadedDocument(source="x.md", title="X", sections=list(sections), modified="",
                          content_hash="", size=0)


def sentences(prefix: str, count: int, length: int = 8) -> list[str]:
    """Sentences of unique words (``a3w0 a3w1 ...``), so each can be found in exactly one place."""
    return [" ".join(f"{prefix}{i}w{j}" for j in range(length)) + "." for i in range(count)]


def chunk(*sections: Section, **kwargs) -> list[TextChunk]:
    kwargs.setdefault("count_tokens", words)
    return chunk_document(doc_of(*sections), **kwargs)


def test_small_section_is_one_chunk_with_its_heading_and_page():
    chunks = chunk(Section("Refunds take five days.", heading="Returns > Refunds", page=3))
    assert chunks == [TextChunk("Refunds take five days.", "Returns > Refunds", 3, 0)]


def test_chunks_never_cross_sections_and_positions_count_up():
    chunks = chunk(
        Section(" ".join(sentences("a", 30)), heading="A"),
        Section("   \n\n  ", heading="Empty"),
        Section("Tiny.", heading="B"),
        Section(" ".join(sentences("c", 30)), heading="B", page=2),
        max_tokens=50, overlap=10,
    )
    assert [c.position for c in chunks] == list(range(len(chunks)))
    assert "Empty" not in {c.heading for c in chunks}
    for c in chunks:
        prefixes = {w[0] for w in c.text.split() if w != "Tiny."}
        assert len(prefixes) <= 1, "a chunk mixes two sections"
        assert c.heading == {"a": "A", "c": "B"}.get(next(iter(prefixes), ""), "B")
    assert [c.text for c in chunks if c.heading == "B" and c.page is None] == ["Tiny."]
    assert {c.page for c in chunks if c.text.startswith("c")} == {2}


def test_every_chunk_fits_and_no_sentence_is_lost():
    text = "\n\n".join(" ".join(sentences(f"p{p}x", 5, length=3 + p % 7)) for p in range(40))
    chunks = chunk(Section(text), max_tokens=30, overlap=8)
    assert all(0 < words(c.text) <= 30 for c in chunks)
    for sentence in re.findall(r"[^.]+\.", text):
        assert any(sentence.strip() in c.text for c in chunks), sentence


def test_paragraphs_that_fit_are_kept_whole():
    paragraphs = [" ".join(sentences(f"p{i}x", 3, length=5)) for i in range(6)]  # 15 words each
    chunks = chunk(Section("\n\n".join(paragraphs)), max_tokens=40, overlap=0)
    for paragraph in paragraphs:
        assert any(paragraph in c.text for c in chunks), "a paragraph that fits was cut"
    assert all(words(c.text) <= 40 for c in chunks)


def test_consecutive_chunks_overlap_by_whole_sentences():
    chunks = chunk(Section(" ".join(sentences("s", 40, length=5))), max_tokens=40, overlap=10)
    assert len(chunks) > 3
    for before, after in pairwise(chunks):
        shared = [s for s in re.findall(r"[^.]+\.", after.text) if s.strip() in before.text]
        assert shared, "consecutive chunks share nothing"
        assert after.text.startswith(shared[0].strip())
        assert 5 <= sum(words(s) for s in shared) <= 10


def test_no_overlap_when_asked_for_none():
    chunks = chunk(Section(" ".join(sentences("s", 40, length=5))), max_tokens=40, overlap=0)
    seen = [w for c in chunks for w in c.text.split()]
    assert len(seen) == len(set(seen)) == 200


def test_a_sentence_longer_than_a_chunk_is_cut_between_words_with_overlap():
    text = " ".join(f"w{i}" for i in range(1000))  # one "sentence", no full stop
    chunks = chunk(Section(text), max_tokens=100, overlap=20)
    assert all(words(c.text) <= 100 for c in chunks)
    assert set(text.split()) == {w for c in chunks for w in c.text.split()}
    first, second = chunks[0].text.split(), chunks[1].text.split()
    assert 10 <= len(set(first) & set(second)) <= 20


def test_a_word_longer_than_a_chunk_is_cut_between_characters():
    def chars(text: str) -> int:  # a tokeniser that sees ~4 characters per token
        return (len(text) + 3) // 4

    text = "start " + "x" * 5000 + " end."
    chunks = chunk(Section(text), count_tokens=chars, max_tokens=50, overlap=5)
    assert all(chars(c.text) <= 50 for c in chunks)
    assert sum(c.text.count("x") for c in chunks) >= 5000


def test_lines_are_boundaries_and_cjk_full_stops_too():
    table = "\n".join(f"row {i}: value {i} and more" for i in range(50))
    chunks = chunk(Section(table), max_tokens=20, overlap=0)
    assert all(re.fullmatch(r"(row \d+: value \d+ and more\n?)+", c.text) for c in chunks)
    cjk = "这是第一句。" * 40
    cjk_chunks = chunk(Section(cjk), count_tokens=len, max_tokens=30, overlap=6)
    assert all(len(c.text) <= 30 and c.text.endswith("。") for c in cjk_chunks)


def test_a_tokeniser_that_is_not_additive_still_gets_chunks_that_fit():
    def with_special_tokens(text: str) -> int:  # like a tokeniser adding BOS/EOS per call
        return len(text.split()) + 2

    chunks = chunk(Section(" ".join(sentences("s", 50))), count_tokens=with_special_tokens,
                   max_tokens=40, overlap=10)
    assert all(with_special_tokens(c.text) <= 40 for c in chunks)

    def merges(text: str) -> int:  # joined text counts MORE than its parts: the safety net cuts
        return len(text.split()) + text.count(". ")

    chunks = chunk(Section(" ".join(sentences("m", 50, length=4))), count_tokens=merges,
                   max_tokens=30, overlap=5)
    assert all(merges(c.text) <= 30 for c in chunks)


@pytest.mark.parametrize(("max_tokens", "overlap"), [(10, 10), (10, 20), (10, -1), (0, 0)])
def test_overlap_must_be_smaller_than_the_chunk(max_tokens, overlap):
    with pytest.raises(InvalidRequest, match="overlap"):
        chunk(Section("Hello."), max_tokens=max_tokens, overlap=overlap)


def test_empty_document_gives_no_chunks():
    assert chunk(Section(""), Section(" \n\t ")) == []


def test_five_megabytes_chunk_in_a_couple_of_seconds():
    paragraph = " ".join(sentences("z", 12, length=12)) + "\n\n"
    text = paragraph * (5 * 2**20 // len(paragraph))
    calls = 0

    def counting(text: str) -> int:
        nonlocal calls
        calls += 1
        return len(text.split())

    started = time.perf_counter()
    chunks = chunk(Section(text), count_tokens=counting)
    assert time.perf_counter() - started < 5
    assert all(words(c.text) <= 200 for c in chunks)
    assert calls < 3 * text.count(".")  # a few counts per sentence, never per growing string


paragraph_st = st.lists(
    st.tuples(st.integers(1, 40), st.sampled_from([".", "!", "?", ".\n", ""])),
    min_size=1, max_size=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(paragraphs=st.lists(paragraph_st, min_size=1, max_size=6),
       max_tokens=st.integers(1, 60), overlap_share=st.floats(0, 0.9))
def test_property_chunks_fit_cover_everything_and_stay_in_order(paragraphs, max_tokens,
                                                                 overlap_share):
    overlap = int(max_tokens * overlap_share)
    counter = iter(range(10**9))
    text = "\n\n".join(
        " ".join(" ".join(f"w{next(counter)}" for _ in range(n)) + end for n, end in paragraph)
        for paragraph in paragraphs
    )
    chunks = chunk(Section(text, heading="H"), max_tokens=max_tokens, overlap=overlap)
    assert all(0 < words(c.text) <= max_tokens for c in chunks)
    assert [c.position for c in chunks] == list(range(len(chunks)))
    everything = [w.strip(".!?") for w in text.split()]
    seen = [w.strip(".!?") for c in chunks for w in c.text.split()]
    assert set(seen) == set(everything), "some text was lost or invented"
    flat = " ".join(text.split())
    last_start = -1
    for c in chunks:
        start = flat.find(" ".join(c.text.split()))
        assert start > last_start, "a chunk is not a piece of the text, or out of order"
        last_start = start


def test_counting_many_at_once_gives_the_same_chunks():
    calls = []

    def many(texts):
        calls.append(len(texts))
        return [len(t.split()) for t in texts]

    text = " ".join(f"Sentence number {i} says something short." for i in range(200))
    doc = doc_of(Section(text, heading="Long"))
    one_by_one = chunk_document(doc, count_tokens=lambda t: len(t.split()), max_tokens=40, overlap=8)
    batched = chunk_document(doc, count_tokens=lambda t: len(t.split()), count_many=many, max_tokens=40, overlap=8)
    assert batched == one_by_one and calls == [200]
