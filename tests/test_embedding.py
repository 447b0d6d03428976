"""Embedder tests against the real int8 MiniLM ONNX model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ruvllm_edge.embedding import DIM, Embedder, mean_pool_normalise
from ruvllm_edge.errors import BadRequest, ModelUnavailable

MODELS = Path(__file__).resolve().parent.parent / "models"
MODEL = MODELS / "minilm-l6-int8.onnx"
TOKENIZER = MODELS / "minilm-l6-int8.tokenizer.json"


@pytest.fixture(scope="module")
def emb() -> Embedder:
    return Embedder(MODEL, TOKENIZER, threads=1, cache_entries=4, max_seq_tokens=64, batch_size=3)


def test_shape_dtype_and_unit_norm(emb: Embedder) -> None:
    v = emb.embed("The access code for the north gate is 7341")
    assert v.shape == (DIM,) and v.dtype == np.float32
    assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-5


def test_paraphrase_is_closer_than_unrelated(emb: Embedder) -> None:
    a, b, c = emb.embed_batch(["What code opens the north gate?",
                               "The access code for the north gate is 7341",
                               "Bread needs flour, water, salt and yeast."])
    assert float(a @ b) > float(a @ c) + 0.3


def test_batch_matches_single_despite_padding(emb: Embedder) -> None:
    texts = ["short", "a much longer sentence with many more tokens than the first one has", "mid size text"]
    batch = emb.embed_batch(texts)
    fresh = Embedder(MODEL, TOKENIZER, cache_entries=0, max_seq_tokens=64)
    for t, row in zip(texts, batch):
        np.testing.assert_allclose(fresh.embed(t), row, atol=1e-5)


def test_empty_batch_and_duplicates(emb: Embedder) -> None:
    assert emb.embed_batch([]).shape == (0, DIM)
    out = emb.embed_batch(["same text", "same text", "other"])
    np.testing.assert_array_equal(out[0], out[1])
    assert not np.allclose(out[0], out[2])


def test_lru_cache_hits_evicts_and_is_read_only() -> None:
    e = Embedder(MODEL, TOKENIZER, cache_entries=2, max_seq_tokens=32)
    v1 = e.embed("one")
    e.embed("one")
    assert e.cache_info()["hits"] == 1
    e.embed("two")
    e.embed("three")                          # "one" is now the least recently used: evicted
    assert e.cache_info()["entries"] == 2
    misses = e.cache_info()["misses"]
    np.testing.assert_array_equal(e.embed("one"), v1)
    assert e.cache_info()["misses"] == misses + 1
    v1[0] = 42.0                              # the caller's copy, not the cache's
    assert e.embed("one")[0] != 42.0


def test_count_tokens_is_not_truncated(emb: Embedder) -> None:
    text = " ".join(["word"] * 300)
    assert emb.count_tokens(text) == 300      # max_seq_tokens is 64 for embedding only
    assert emb.count_tokens("hello world") == 2
    assert len(emb.token_offsets("hello world")) == 2


def test_truncation_bounds_long_inputs(emb: Embedder) -> None:
    base = "alpha beta gamma delta " * 16      # 64 tokens
    assert np.allclose(emb.embed(base + "tail " * 100), emb.embed(base + "other " * 100), atol=1e-5)


def test_bad_input_is_a_clear_error(emb: Embedder) -> None:
    with pytest.raises(BadRequest):
        emb.embed_batch("not a list")         # type: ignore[arg-type]
    with pytest.raises(BadRequest):
        emb.embed_batch(["ok", 3])            # type: ignore[list-item]


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="not found"):
        Embedder(tmp_path / "nope.onnx", TOKENIZER)
    with pytest.raises(ModelUnavailable, match="not found"):
        Embedder(MODEL, tmp_path / "nope.json")


def test_corrupt_model_and_tokenizer(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ModelUnavailable, match="cannot be loaded"):
        Embedder(bad, TOKENIZER)
    badtok = tmp_path / "bad.json"
    badtok.write_text("{not json")
    with pytest.raises(ModelUnavailable, match="tokenizer"):
        Embedder(MODEL, badtok)


def test_mean_pool_ignores_padding() -> None:
    rng = np.random.default_rng(0)
    h = rng.standard_normal((2, 5, 4)).astype(np.float32)        # (n, L, d)
    h[1, :3] = h[0, :3]
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 0, 0]])
    out = mean_pool_normalise(h, mask)
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)        # padding rows differ, result does not
    ref = h[0, :3].mean(axis=0)
    np.testing.assert_allclose(out[0], ref / np.linalg.norm(ref), atol=1e-6)


TEXTS = ["The access code for the north gate is 7341", "short",
         "a much longer sentence " * 30]


def test_prepared_model_is_made_once_and_gives_identical_vectors(tmp_path: Path) -> None:
    original = Embedder(MODEL, TOKENIZER, cache_entries=0, prepare=False)
    assert original.prepared is None
    first = Embedder(MODEL, TOKENIZER, cache_entries=0, prepared_dir=tmp_path)
    assert first.prepared is not None and Path(first.prepared).parent.parent == tmp_path
    weights = Path(first.prepared).with_name("weights.bin")
    assert weights.stat().st_size > 80 * 2**20          # the folded float32 weights, mapped
    mtime = weights.stat().st_mtime_ns
    (tmp_path / "minilm-l6-int8-ort0.0-1-1").mkdir()      # a stale key: removed on the next prepare
    again = Embedder(MODEL, TOKENIZER, cache_entries=0, prepared_dir=tmp_path)
    assert again.prepared == first.prepared and weights.stat().st_mtime_ns == mtime   # reused
    assert np.array_equal(first.embed_batch(TEXTS), original.embed_batch(TEXTS))
    assert np.array_equal(again.embed_batch(TEXTS), original.embed_batch(TEXTS))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_prepared_model_falls_back_to_the_original(tmp_path: Path) -> None:
    # An unusable directory (a file is in the way) and a damaged copy both load the original.
    (tmp_path / "file").write_text("x")
    blocked = Embedder(MODEL, TOKENIZER, cache_entries=0, prepared_dir=tmp_path / "file" / "sub")
    assert blocked.prepared is None and blocked.embed("hello").shape == (DIM,)
    ok = Embedder(MODEL, TOKENIZER, cache_entries=0, prepared_dir=tmp_path / "p")
    weights = Path(ok.prepared).with_name("weights.bin")
    # Replaced, not truncated in place: a live session maps the old file (SIGBUS otherwise).
    (weights.parent / "short").write_bytes(weights.read_bytes()[:1024])
    (weights.parent / "short").replace(weights)
    damaged = Embedder(MODEL, TOKENIZER, cache_entries=0, prepared_dir=tmp_path / "p")
    assert damaged.prepared is None
    assert np.array_equal(damaged.embed_batch(TEXTS), ok.embed_batch(TEXTS))


def test_corrupt_model_is_not_prepared(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(ModelUnavailable, match="corrupt or not ONNX"):
        Embedder(bad, TOKENIZER, prepared_dir=tmp_path / "p")
    assert not any((tmp_path / "p").iterdir())


def test_release_idle_pages_drops_mapped_weights_and_vectors_stay_the_same(tmp_path: Path) -> None:
    e = Embedder(MODEL, TOKENIZER, cache_entries=0, prepared_dir=tmp_path)
    assert e.prepared is not None
    texts = [f"note {i}: the {w} in the shed" for i, w in enumerate(
        ["padlock", "ladder", "mower", "bicycle", "kettle", "lantern", "compass", "violin"] * 8)]
    before = e.embed_batch(texts)
    assert e.release_idle_pages() > 0          # the touched word-embedding rows were resident
    assert np.array_equal(e.embed_batch(texts), before)
    original = Embedder(MODEL, TOKENIZER, cache_entries=0, prepare=False)
    assert original.prepared is None and original.release_idle_pages() == 0
