"""Quality judge: parsing, failure paths (fake generate), and the real model once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ruvllm_edge.learning import judge as J

MODEL = Path(__file__).resolve().parent.parent / "models" / "smollm2-135m-instruct-q4_1.gguf"


def _fixed(reply: str) -> tuple[J.Generate, list[tuple[list[dict[str, str]], int, float]]]:
    calls: list[tuple[list[dict[str, str]], int, float]] = []

    def gen(messages: list[dict[str, str]], max_tokens: int, temperature: float) -> str:
        calls.append((messages, max_tokens, temperature))
        return reply
    return gen, calls


@pytest.mark.parametrize("reply,score", [
    ("4", 4), ("Score: 5", 5), ("I'd say 2/5.", 2), (" 1\n", 1), ("3 out of 5", 3),
    ("", None), ("great answer", None), ("10", None), ("4.5", None), ("0", None),
])
def test_parse_score(reply: str, score: int | None) -> None:
    assert J.parse_score(reply) == score


def test_model_score_normalises_and_calls_at_temperature_zero() -> None:
    gen, calls = _fixed("5")
    assert J.judge_answer(gen, "What is 2+2?", "4") == 1.0
    msgs, max_tokens, temp = calls[0]
    assert temp == 0.0 and max_tokens == J.JUDGE_MAX_TOKENS
    assert "What is 2+2?" in msgs[-1]["content"] and "4" in msgs[-1]["content"]
    gen1, _ = _fixed("1")
    assert J.judge_answer(gen1, "q", "a") == 0.0


def test_parse_failure_and_errors_score_three() -> None:
    gen, _ = _fixed("no idea")
    assert J.judge_answer(gen, "q", "a") == pytest.approx(0.5)

    def broken(messages: list[dict[str, str]], max_tokens: int, temperature: float) -> str:
        raise RuntimeError("model unloaded")
    assert J.judge_answer(broken, "q", "a") == pytest.approx(0.5)


def test_empty_answer_scores_zero_without_a_model_call() -> None:
    gen, calls = _fixed("5")
    assert J.judge_answer(gen, "q", "   ") == 0.0
    assert calls == []


def test_reference_dominates_the_score() -> None:
    gen, _ = _fixed("3")  # an indifferent model judge
    ref = "The garage door code is 4417."
    right = J.judge_answer(gen, "What is the garage code?", "The code is 4417 for the garage door.", ref)
    wrong = J.judge_answer(gen, "What is the garage code?", "It is 1234.", ref)
    assert right > 0.8 and wrong < 0.4 and right > wrong


def test_lexical_agreement_ignores_words_from_the_question() -> None:
    q = "What is the capital of France?"
    assert J.lexical_agreement("Paris.", "The capital of France is Paris.", q) == 1.0
    assert J.lexical_agreement("Lyon.", "The capital of France is Paris.", q) == 0.0
    assert J.lexical_agreement("Paris.", "The capital of France is Paris.") == pytest.approx(1 / 3)


def test_reference_agreement_with_an_embedder() -> None:
    vecs = {"cat": np.array([1.0, 0.0]), "dog": np.array([0.0, 1.0])}
    same = J.reference_agreement("cat", "cat", embed=lambda t: vecs[t])
    other = J.reference_agreement("cat", "dog", embed=lambda t: vecs[t])
    assert same == pytest.approx(1.0) and other == pytest.approx(0.0)


def test_long_inputs_are_clipped_in_the_prompt() -> None:
    gen, calls = _fixed("4")
    J.judge_answer(gen, "q" * 10_000, "a" * 10_000)
    assert len(calls[0][0][-1]["content"]) < 2 * J.MAX_PROMPT_CHARS + 200


@pytest.mark.slow
def test_real_model_judge() -> None:
    """The fakes above stand in for this: the real GGUF through llama-cpp at temperature 0."""
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(model_path=str(MODEL), n_ctx=1024, n_threads=1, verbose=False, seed=1)
    replies: list[str] = []

    def generate(messages: list[dict[str, str]], max_tokens: int, temperature: float) -> str:
        out = llm.create_chat_completion(messages=messages, max_tokens=max_tokens,
                                         temperature=temperature)
        text = out["choices"][0]["message"]["content"] or ""
        replies.append(text)
        return text

    good = J.judge_answer(generate, "What is the capital of France?", "Paris.")
    again = J.judge_answer(generate, "What is the capital of France?", "Paris.")
    with_ref = J.judge_answer(generate, "What is the capital of France?", "Paris.",
                              reference="The capital of France is Paris.")
    assert len(replies) == 3 and all(isinstance(r, str) for r in replies)
    assert 0.0 <= good <= 1.0 and good == again  # temperature 0: deterministic
    assert good in {0.0, 0.25, 0.5, 0.75, 1.0}
    assert with_ref == pytest.approx(J.REFERENCE_WEIGHT + (1 - J.REFERENCE_WEIGHT) * good)
