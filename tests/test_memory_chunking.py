"""Token-bounded chunking with the real tokenizer."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings, strategies as st

from ruvllm_edge.embedding import Embedder
from ruvllm_edge.memory.chunking import chunk_text

MODELS = Path(__file__).resolve().parent.parent / "models"


def test_short_text_is_one_chunk(emb: Embedder) -> None:
    assert chunk_text("  A short note.  ", 50, emb.token_offsets) == ["A short note."]
    assert chunk_text("   ", 50, emb.token_offsets) == []


def test_prefers_sentence_boundaries(emb: Embedder) -> None:
    sents = [f"Sentence number {i} has exactly a few words." for i in range(10)]
    chunks = chunk_text(" ".join(sents), 30, emb.token_offsets)
    assert len(chunks) > 1
    assert all(c.endswith(".") for c in chunks)                       # cut after sentences
    assert all(emb.count_tokens(c) <= 30 for c in chunks)
    assert " ".join(chunks) == " ".join(sents)


def test_unbroken_text_is_cut_between_tokens(emb: Embedder) -> None:
    text = "x" * 3000                                                 # one "word", many tokens
    chunks = chunk_text(text, 40, emb.token_offsets)
    assert "".join(chunks) == text and all(emb.count_tokens(c) <= 40 for c in chunks)


@settings(max_examples=30, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("abcdefg .!?\n")), min_size=0, max_size=600),
       size=st.integers(4, 64))
def test_chunks_cover_text_and_respect_the_limit(text: str, size: int) -> None:
    emb = _EMB
    chunks = chunk_text(text, size, emb.token_offsets)
    assert "".join(text.split()) == "".join("".join(chunks).split())  # only whitespace may go
    assert all(c and emb.count_tokens(c) <= size for c in chunks)


_EMB = Embedder(MODELS / "minilm-l6-int8.onnx", MODELS / "minilm-l6-int8.tokenizer.json")
