"""From a plan to the words a person reads: which records, a quote, or the model's answer.

Why quoting is the default for short records: SmolLM2-135M, shown the right
note, still answered with a made-up value in about a quarter of the dev
questions (docs/answers.md), while a quote of the user's own sentence is
right by construction. The model is used where it adds something: long
records, and a router that asked for a generated answer; whatever it
generates must pass ``verify.check`` or the quote is given instead.

Pure functions over plain data; the pipeline does the embedding and
generation around them.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from .intent import REQUESTS
from .perspective import to_second_person
from .policy import USER_SOURCES, Plan, Record
from .prompt import Note, strip_framing
from .text import tokens
from .verify import check



def record_of(c: Any) -> Record:
    """A retrieval Candidate as the answer policy sees it."""
    md: Mapping[str, Any] = c.metadata or {}
    date = md.get("date")
    return Record(id=int(c.id), text=c.text, cosine=float(c.similarity), relevance=float(c.relevance),
                  source=c.source, kind=c.kind, date=str(date) if date else None,
                  confirmed=bool(md.get("confirmed")), context=getattr(c, "context", "") or "")


def statements(history: Sequence[tuple[str, str]]) -> list[str]:
    """What the user told the daemon about themselves earlier in a session.

    Their turns that are not questions and not requests: "My name is
    Zorblax.", "He's just started the cello." A request such as "Name one
    colour." states nothing about them.
    """
    out = []
    for role, text in history:
        t = text.strip()
        words = tokens(t)
        if (role == "user" and t and not t.endswith("?") and words
                and words[0] not in REQUESTS):
            out.append(t)
    return out


def session_records(texts: Sequence[str], cosines: Sequence[float]) -> list[Record]:
    """The user's own session statements as records (negative ids: they are not memory nodes)."""
    return [Record(id=-(i + 1), text=t, cosine=float(c), relevance=float(c), source="session")
            for i, (t, c) in enumerate(zip(texts, cosines))]


def quote(r: Record) -> str:
    """The record itself, read back to the user who wrote it ("My" -> "Your")."""
    text = " ".join(r.text.split())
    if r.source in USER_SOURCES:
        text = to_second_person(text)
    if r.date and r.date not in text:
        text = f"{text} ({r.date})"
    return text


def should_quote(plan: Plan, mode: str, quote_max_words: int) -> bool:
    """Quote when the router chose memory mode or the best record is short."""
    best = plan.records[0]
    return mode == "memory" or len(best.text.split()) <= quote_max_words


def notes(records: Sequence[Record]) -> list[Note]:
    return [Note(r.id, r.text, r.date) for r in records]


def accept_generated(text: str, records: Sequence[Record], question: str) -> tuple[str, bool]:
    """(cleaned answer, grounded): framing stripped, every value found in the records."""
    clean = strip_framing(text)
    g = check(clean, [r.text for r in records], question)
    return clean, g.ok
