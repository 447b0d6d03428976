"""The quality judge: a 0..1 score for an answer, from the model and from a reference.

The model judge follows reference.md: one temperature-0 call of ~10 tokens
asking for a 1-5 score for accuracy, completeness, coherence and conciseness; a
reply without a usable score counts as 3; the score maps to (s - 1) / 4.

Why also a reference signal: the model we have is small (135M-350M) and a poor
judge of facts it does not know. When we do know the answer (a user's
correction, a trusted fact, a gold answer in a benchmark), agreement with it is
a much stronger signal, so it carries most of the weight.
"""

from __future__ import annotations

import logging
import re
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

Generate = Callable[[list[dict[str, str]], int, float], str]
Embed = Callable[[str], np.ndarray]

JUDGE_MAX_TOKENS = 10
PARSE_FAILURE_SCORE = 3
REFERENCE_WEIGHT = 0.7
MAX_PROMPT_CHARS = 1500  # per field: keeps the judge prompt inside a 1024-token context

_SYSTEM = ("You grade answers. Reply with one digit from 1 to 5 and nothing else. "
           "5 = accurate, complete, coherent and concise; 1 = wrong or useless.")
_SCORE_RE = re.compile(r"(?<![\d.])([1-5])(?![\d.])")
_WORD_RE = re.compile(r"[a-z0-9]+")
_STOP = frozenset("a an the is are was were be been of to in on at for and or it its this that "
                  "with as by from your you i my me we our do does did not no yes".split())


def _clip(text: str) -> str:
    return text if len(text) <= MAX_PROMPT_CHARS else text[:MAX_PROMPT_CHARS] + " [...]"


def judge_messages(question: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": _SYSTEM},
            {"role": "user", "content": f"Question: {_clip(question)}\n\nAnswer: {_clip(answer)}"
                                        "\n\nScore (1-5):"}]


def parse_score(reply: str) -> int | None:
    """The first standalone digit 1-5 in the reply (e.g. "4", "Score: 4/5"), else None."""
    m = _SCORE_RE.search(reply or "")
    return int(m.group(1)) if m else None


def _content_words(text: str) -> list[str]:
    return [w for w in _WORD_RE.findall(text.lower()) if w not in _STOP]


def lexical_agreement(answer: str, reference: str, question: str = "") -> float:
    """Share of the reference's content words that the answer contains (recall), 0..1.

    Recall, not F1: a correct answer may say more than the reference, but it
    must say what the reference says. Words the question already contains are
    left out ("The capital of France is Paris" against "Paris." for "What is
    the capital of France?" is full agreement).
    """
    ref = set(_content_words(reference))
    new = ref - set(_content_words(question))
    ref = new or ref
    if not ref:
        return 0.0
    ans = set(_content_words(answer))
    return len(ref & ans) / len(ref)


def reference_agreement(answer: str, reference: str, embed: Embed | None = None,
                        question: str = "") -> float:
    """Lexical recall, averaged with embedding cosine (clipped at 0) when an embedder is given."""
    lex = lexical_agreement(answer, reference, question)
    if embed is None:
        return lex
    a, r = embed(answer), embed(reference)
    cos = float(np.dot(a, r) / max(float(np.linalg.norm(a) * np.linalg.norm(r)), 1e-12))
    return 0.5 * lex + 0.5 * max(cos, 0.0)


def model_score(generate: Generate, question: str, answer: str) -> float:
    """The LLM judge alone, 0..1."""
    try:
        reply = generate(judge_messages(question, answer), JUDGE_MAX_TOKENS, 0.0)
    except Exception as exc:  # noqa: BLE001 - a judge failure must not lose the sample
        log.warning("judge call failed; scoring as a parse failure",
                    extra={"error": f"{type(exc).__name__}: {exc}"})
        reply = ""
    s = parse_score(reply)
    if s is None:
        log.debug("judge reply had no score", extra={"reply_chars": len(reply or "")})
        s = PARSE_FAILURE_SCORE
    return (s - 1) / 4.0


def judge_answer(generate: Generate, question: str, answer: str, reference: str | None = None,
                 embed: Embed | None = None) -> float:
    """0..1. An empty answer scores 0 without a model call."""
    if not answer or not answer.strip():
        return 0.0
    m = model_score(generate, question, answer)
    if reference is None or not reference.strip():
        return m
    agree = reference_agreement(answer, reference, embed, question)
    return float(REFERENCE_WEIGHT * agree + (1.0 - REFERENCE_WEIGHT) * m)
