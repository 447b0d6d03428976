"""Inference engine with the real SmolLM2 GGUF: planning, generation, stops, memory check."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from ruvllm_edge.config import Config
from ruvllm_edge.errors import ModelUnavailable, TooLarge
from ruvllm_edge.inference import InferenceEngine, kv_cache_mb


@pytest.fixture(scope="module")
def engine(models_dir: Path) -> InferenceEngine:
    cfg = Config()
    inf = dataclasses.replace(cfg.inference, n_ctx_tokens=512, reserve_answer_tokens=64)
    e = InferenceEngine(inf, cfg.system, models_dir)
    yield e
    e.unload()


def test_kv_cache_estimate() -> None:
    # SmolLM2-135M: 30 layers, 3 KV heads of 64 dims, f16: 45 MB at 2048 tokens.
    assert kv_cache_mb(30, 2048, 3, 64) == pytest.approx(45.0)
    with pytest.raises(AssertionError):
        kv_cache_mb(0, 2048, 3, 64)


def test_metadata_read_without_loading_weights(engine: InferenceEngine) -> None:
    info = engine.info()
    assert (info.n_layer, info.n_head_kv, info.head_dim) == (30, 3, 64)
    assert info.has_template and "<|im_start|>" in engine.format([{"role": "user", "content": "x"}])
    est = engine.estimate()
    assert 90 < est.file_mb < 100 and est.need_mb > est.file_mb


def test_generate_and_stop_on_eos(engine: InferenceEngine) -> None:
    plan = engine.plan("You are helpful.", [], "What is the capital of France? One word.", 32)
    g = engine.generate(plan, temperature=0.0, top_p=1.0)
    assert "paris" in g.text.lower()
    assert g.finish_reason == "stop" and not g.truncated
    assert g.prompt_tokens == len(plan.tokens)


def test_max_tokens_and_streaming_callback(engine: InferenceEngine) -> None:
    pieces: list[str] = []
    plan = engine.plan("", [], "Write a long story about a dragon.", 10)
    g = engine.generate(plan, temperature=0.0, top_p=1.0, on_token=pieces.append)
    assert g.completion_tokens == 10 and g.finish_reason == "length" and g.truncated
    assert "".join(pieces).strip() == g.text


def test_stop_callback_cancels_within_a_token(engine: InferenceEngine) -> None:
    seen = []

    def stop() -> str | None:
        return "cancelled" if len(seen) >= 3 else None

    plan = engine.plan("", [], "Write a long story about a dragon.", 200)
    g = engine.generate(plan, temperature=0.0, top_p=1.0, on_token=seen.append, should_stop=stop)
    assert g.finish_reason == "cancelled" and g.completion_tokens <= 4


def test_history_is_trimmed_oldest_first_and_reported(engine: InferenceEngine) -> None:
    history = []
    for i in range(30):
        history += [("user", f"Tell me fact number {i} about the ocean, in detail please."),
                    ("assistant", "The ocean covers most of the planet and is very deep. " * 3)]
    plan = engine.plan("sys", history, "What was fact 29?", 64)
    assert plan.trimmed_turns > 0 and plan.trimmed_turns % 2 == 0
    assert len(plan.tokens) + 64 <= engine.cfg.n_ctx_tokens
    text = engine._vocab.detokenize(plan.tokens).decode()
    assert "fact number 29" in text and "fact number 0 " not in text


def test_prompt_that_cannot_fit_is_too_large(engine: InferenceEngine) -> None:
    with pytest.raises(TooLarge, match="context holds 512"):
        engine.plan("", [], "word " * 2000, 64)


def test_prefix_cache_is_reused_on_the_next_turn(engine: InferenceEngine) -> None:
    p1 = engine.plan("sys", [], "Name a fruit.", 8)
    g1 = engine.generate(p1, temperature=0.0, top_p=1.0)
    p2 = engine.plan("sys", [("user", "Name a fruit."), ("assistant", g1.text)], "Another?", 8)
    g2 = engine.generate(p2, temperature=0.0, top_p=1.0)
    assert g2.cached_tokens >= len(p1.tokens) - 1


def test_model_that_does_not_fit_is_refused_with_numbers(models_dir: Path) -> None:
    cfg = Config()
    tight = dataclasses.replace(cfg.system, max_memory_mb=256)
    e = InferenceEngine(dataclasses.replace(cfg.inference, n_ctx_tokens=131072), tight, models_dir)
    with pytest.raises(ModelUnavailable) as err:
        e.ensure_loaded()
    assert "does not fit" in err.value.message and err.value.details["need_mb"] > 256
    assert not e.loaded


def test_missing_and_corrupt_model_are_unavailable(tmp_path: Path) -> None:
    cfg = Config()
    e = InferenceEngine(cfg.inference, cfg.system, tmp_path)
    with pytest.raises(ModelUnavailable, match="missing"):
        e.info()
    assert e.state == "unavailable"
    (tmp_path / "smollm2-135m-instruct-q4_1.gguf").write_bytes(b"GGUF" + b"\0" * 100)
    with pytest.raises(ModelUnavailable, match="sha256"):
        e.info()


def test_keep_alive_unloads_when_idle(models_dir: Path) -> None:
    cfg = Config()
    e = InferenceEngine(dataclasses.replace(cfg.inference, n_ctx_tokens=256, keep_alive_s=1),
                        cfg.system, models_dir)
    e.ensure_loaded()
    assert e.loaded and not e.maybe_unload(time.monotonic())
    assert e.maybe_unload(time.monotonic() + 2) and not e.loaded and e.state == "unloaded"


def test_q8_0_kv_cache_halves_the_estimate_and_answers_the_same(models_dir: Path) -> None:
    # The edge profile's 8-bit KV cache (with flash attention): the estimate counts
    # 34 bytes per 32 values, and greedy decoding gives the f16 cache's answer.
    cfg = Config()
    base = dataclasses.replace(cfg.inference, n_ctx_tokens=512, reserve_answer_tokens=64)
    answers, kv = {}, {}
    for kind in ("f16", "q8_0"):
        e = InferenceEngine(dataclasses.replace(base, kv_cache_type=kind), cfg.system, models_dir)
        kv[kind] = e.estimate().kv_mb
        plan = e.plan("You are helpful.", [], "What is the capital of France? One word.", 16)
        answers[kind] = e.generate(plan, temperature=0.0, top_p=1.0).text
        assert e.unload() and not e.loaded
    assert kv["q8_0"] == pytest.approx(kv["f16"] * 17 / 32)
    assert "paris" in answers["q8_0"].lower() and answers["q8_0"] == answers["f16"]
