"""Split a note into the units memory stores: one per line, one per sentence.

Why: a question about one fact meets the one sentence that states it far
better than the whole note. With the int8 MiniLM, a six-line house note has
cosine 0.14-0.62 to a one-fact question, the line that answers it 0.53-0.83
(issue 9). So ``memory.add`` stores a note of several units as a parent node
(the whole text) plus one child node per unit (nodes.py).

The rule, applied in order:
1. split on newlines; blank lines are dropped;
2. a line holding several sentences is split into sentences, when the text
   has several lines (a note) or the line is longer than
   ``SENTENCE_SPLIT_MIN_WORDS`` words (a paragraph). A short one-line text,
   such as one turn of a conversation, stays whole: splitting LoCoMo turns
   into sentences let the sentences of one turn fill the top 10 and cost
   0.04 turn recall@10 (bench_locomo, report split). A sentence ends
   at ``.``, ``!`` or ``?`` (plus closing quotes/brackets) followed by space
   and then an upper-case letter, a digit or an opening quote. Not after a
   known abbreviation ("Dr.", "e.g.", "St.") or a single initial ("J."),
   and never inside a number ("3.5", "7.30": no space follows the dot);
3. a unit longer than ``chunk_tokens`` embedding tokens is cut further by
   chunking.chunk_text.
Every unit is an exact, stripped substring of the input (nothing rewritten),
so a unit's text can be found in its parent's text.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

from .chunking import chunk_text

# Lines up to this many words are one unit even when they hold several sentences.
SENTENCE_SPLIT_MIN_WORDS = 40

# Words that end with a dot but rarely end a sentence (compared lower-case,
# without their final dot). "a.m."/"p.m." and "etc." are left out on purpose:
# before a capital letter they usually do end the sentence.
ABBREVIATIONS = frozenset({
    "dr", "mr", "mrs", "ms", "mx", "prof", "sr", "jr", "st", "mt", "vs", "cf", "e.g", "i.e",
    "dept", "inc", "ltd", "corp", "ave", "capt", "sgt", "lt", "hon", "jan", "feb", "apr", "jun",
    "jul", "aug", "sep", "sept", "oct", "nov", "dec", "mon", "tue", "tues", "thu", "thur",
    "thurs", "fri",
})
# Abbreviations that are also plain words ("I said no. 4 ..." is rare, "no. 4"
# is not): they hold a sentence together only before a number.
NUMBER_ABBREVIATIONS = frozenset({"no", "nos", "tel", "ph", "ext", "fig", "apt", "approx", "min",
                                  "max", "p", "pp", "vol", "ch"})

# A candidate sentence end: terminator(s), optional closers, then whitespace,
# then something that can start a sentence. CJK full stops end a sentence
# without a following space.
_END = re.compile(r"""([.!?]+)(["'”’)\]]*)\s+(?=[A-Z0-9"'“‘(\[À-ÖØ-Þ])|([。！？])\s*(?=\S)""")
_WORD_BEFORE = re.compile(r"(\S+)$")


_NUMBERISH = re.compile(r"[#:]?[A-Za-z-]*\d")   # "12", "#4", "PC-20417": a number follows "no."


def _is_abbreviation(before: str, next_word: str) -> bool:
    """True when the text up to a '.' ends with an abbreviation or an initial.

    ``next_word`` is the text right after the dot's whitespace: "acct no.
    PC-20417" holds together because a reference with digits follows.
    """
    m = _WORD_BEFORE.search(before)
    if not m:
        return False
    word = m.group(1).lstrip("(\"'“‘[").lower()
    if len(word) == 1 and word.isalpha() and word not in ("a", "i"):   # an initial: "J. Smith"
        return True
    return word in ABBREVIATIONS or (bool(_NUMBERISH.match(next_word)) and word in NUMBER_ABBREVIATIONS)


def split_sentences(line: str) -> list[str]:
    """The sentences of one line, each stripped; [line.strip()] when it has one."""
    out: list[str] = []
    start = 0
    for m in _END.finditer(line):
        if m.group(1) == "." and _is_abbreviation(line[start:m.start()], line[m.end():m.end() + 24]):
            continue
        end = m.end(2) if m.group(1) is not None else m.end(3)
        piece = line[start:end].strip()
        if piece:
            out.append(piece)
        start = m.end()
    tail = line[start:].strip()
    if tail:
        out.append(tail)
    return out


def split_units(text: str, chunk_tokens: int,
                offsets: Callable[[str], Sequence[tuple[int, int]]]) -> list[str]:
    """The stored units of ``text`` in text order (see the module docstring).

    ``offsets`` is Embedder.token_offsets (character span of every token);
    ``chunk_tokens`` the memory.chunk_tokens limit. Returns [] for blank text.
    """
    units: list[str] = []
    lines = text.splitlines()
    note = sum(1 for ln in lines if ln.strip()) > 1
    for line in lines:
        parts = (split_sentences(line) if note or len(line.split()) > SENTENCE_SPLIT_MIN_WORDS
                 else [line.strip()] if line.strip() else [])
        for sentence in parts:
            if len(sentence) <= chunk_tokens:
                # every token spans at least one character: it fits without tokenizing
                units.append(sentence)
            else:
                units.extend(chunk_text(sentence, chunk_tokens, offsets))
    return units
