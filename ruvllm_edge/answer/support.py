"""Does this record answer the question that was asked? Lexical evidence, no model.

Why this exists: cosine similarity alone cannot tell "the code for the front
gate" from "the garage door code" (0.53 with the int8 MiniLM, above many true
matches), and a 135M model will happily read a neighbour's value as the
answer. So before a record may answer, the asked-about thing must be the
record's thing:

1. Names: every proper name or family role in the question ("Maya", "Dad")
   appears in the record. A record about Leo's shoes never answers Maya's.
2. Heads: the head word of every noun phrase the question asks about
   ("gate" in "the front gate", "email" in "Chloe's email") appears in the
   record (or in the title of the note it came from), or, for an attribute
   word, a value of its shape does ("Gwen 07700 914362" has a *number*). The
   answer-type noun ("what *time*", "which *day*") is exempt.
3. No rival modifier: when the question qualifies a word ("the *garage* key")
   with something this record lacks, while the record qualifies the same
   word differently ("the *shed* key"), the record is about a sibling
   entity. When only a value stands for the head, every qualifier must be in
   the record ("Maya's *shoe* size" is not "Maya has swimming lessons at 10").
4. Enough overlap: the question's content words the record covers, weighted
   by how rare they are in the memory (idf), and the cosine, clear floors
   fitted on the development notes (``benchmarks/bench_answers.py --fit``).

Synonyms the note does not use ("boss" for "manager") fail rule 2; that is
the price of never inventing. Declining is cheap to fix: a correction teaches
the daemon the user's own words (a correction is stored with its question).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from .text import Phrase, content_terms, names, phrases, stem, tokens

# An attribute the question asks for may be present as a value without its
# word: "Gwen 07700 914362" answers "Gwen's mobile number?". Each attribute
# head maps to the shape of its value.
_DIGITS = re.compile(r"\d{3,}")
_TIME = re.compile(r"\b\d{1,2}(?:[:.]\d{2})?\s*(?:am|pm)\b|\b\d{1,2}[:.]\d{2}\b|\bnoon\b|\bmidnight\b",
                   re.IGNORECASE)
_DAY = re.compile(r"\b(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*\b|\bweekend|\bweekday|\btoday|\btomorrow",
                  re.IGNORECASE)
_DATE = re.compile(r"\b\d{1,2}(?:st|nd|rd|th)?\s+(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*"
                   r"|\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\s+\d{1,4}"
                   r"|\b\d{1,2}/\d{1,2}(?:/\d{2,4})?\b|\b(?:19|20)\d{2}\b", re.IGNORECASE)
_MONEY = re.compile(r"[£$€]\s*\d|\d\s*(?:p|pence|pounds?|dollars?|euros?|gbp|usd|eur)\b", re.IGNORECASE)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
_NAME = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-z]+")
_SIZE = re.compile(r"\b\d+\b|\b(?:xs|s|m|l|xl|xxl)\b", re.IGNORECASE)
VALUE_SHAPES: dict[str, tuple[re.Pattern[str], ...]] = {
    **{stem(w): (_DIGITS,) for w in "number phone mobile contact code pin ip extension".split()},
    **{stem(w): (_TIME, _DIGITS) for w in "time hour".split()},
    **{stem(w): (_DAY, _DATE) for w in "day days".split()},
    **{stem(w): (_DATE, _DAY) for w in "date deadline".split()},
    **{stem(w): (_MONEY, _DIGITS) for w in "cost price fee rate charge amount deposit balance".split()},
    stem("email"): (_EMAIL,), stem("address"): (_EMAIL, _DIGITS),
    stem("name"): (_NAME,), stem("size"): (_SIZE,),
}


_ASKS_PRICE = re.compile(r"\bhow much\b.*\b(cost|costs|pay|paid|charge|charged|price|spend|owe|owing)\b"
                         r"|\bwhat does .* cost\b", re.IGNORECASE)


def value_present(head: str, record: str) -> bool:
    """True when ``record`` holds a value of the shape the attribute ``head`` asks for."""
    shapes = VALUE_SHAPES.get(head)
    return bool(shapes) and any(p.search(record) for p in shapes)

# Floors fitted on the development notes (benchmarks/data/notes-dev.json) by
# ``bench_answers.py --fit``; see docs/answers.md. Never tuned on held-out data.
MIN_COSINE = 0.40
MIN_COVER = 0.20


@dataclass(frozen=True)
class Support:
    """The verdict for one (question, record) pair. ``reasons`` name the failed rules."""

    ok: bool
    cover: float                       # idf-weighted share of question terms in the record
    cosine: float
    reasons: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Vocabulary:
    """How many searchable records contain each word (from the FTS index)."""

    df: Mapping[str, int]
    n_docs: int

    def idf(self, term: str) -> float:
        return math.log(1.0 + (self.n_docs + 1.0) / (self.df.get(term, 0) + 0.5))

    def known(self, term: str) -> bool:
        return self.df.get(term, 0) > 0


def record_terms(record: str) -> frozenset[str]:
    return frozenset(content_terms(record))


def _record_modifiers(record: str) -> dict[str, set[str]]:
    """head stem -> the stems that qualify it somewhere in the record."""
    out: dict[str, set[str]] = {}
    for ph in phrases(record):
        for i in range(1, len(ph.terms)):
            out.setdefault(ph.terms[i], set()).update(ph.terms[:i])
    return out


def asked_phrases(question: str) -> list[Phrase]:
    return [p for p in phrases(question) if p.kind == "noun"]


def check(question: str, record: str, vocab: Vocabulary, cosine: float, *,
          context: str = "", known_names: Iterable[str] = (),
          min_cosine: float = MIN_COSINE, min_cover: float = MIN_COVER) -> Support:
    """Apply the four rules (module docstring) to one record.

    ``context`` is text the record inherits (the title line of the note it
    came from); ``known_names`` are stems the memory writes capitalised, so
    a lower-case "isla" in a question is still a name.
    """
    rt = record_terms(f"{record}\n{context}" if context else record)
    qt = list(dict.fromkeys(content_terms(question)))
    reasons: list[str] = []
    q_stems = set(content_terms(question))
    for n in dict.fromkeys([*names(question), *(k for k in known_names if k in q_stems)]):
        if n not in rt:
            reasons.append(f"name:{n}")
    rec_mods = _record_modifiers(record)
    for ph in asked_phrases(question):
        if ph.head not in rt:
            if not value_present(ph.head, record):
                reasons.append(f"head:{ph.head}")
                continue
            # Only the value stands for the head ("Gwen 07700 914362" for "mobile
            # number"): then every qualifier must be there, or be a value too.
            for m in ph.modifiers:
                if m not in rt and not value_present(m, record):
                    reasons.append(f"qualifier:{m}")   # "Maya's *shoe* size", "the *email* address"
            continue
        for i in range(1, len(ph.terms)):
            word, ours = ph.terms[i], set(ph.terms[:i])
            theirs = rec_mods.get(word, set())
            if word in rt and theirs and (ours - rt) and not theirs & ours:
                reasons.append(f"rival:{word}")
    if _ASKS_PRICE.search(question) and not _MONEY.search(record):
        reasons.append("price")                          # "how much does the jersey cost"
    total = sum(vocab.idf(t) for t in qt) or 1.0
    cover = sum(vocab.idf(t) for t in qt if t in rt) / total
    if cosine < min_cosine:
        reasons.append("cosine")
    if cover < min_cover:
        reasons.append("cover")
    return Support(not reasons, round(cover, 4), round(float(cosine), 4), tuple(reasons))


def question_terms(question: str) -> list[str]:
    """The surface words whose document frequency the vocabulary needs."""
    return list(dict.fromkeys(t for t in tokens(question) if stem(t) in set(content_terms(question))))
