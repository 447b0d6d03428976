"""Which records may answer, and when to say "I don't have that in my notes".

This is the decision the issue calls "answers you can trust". It is pure: it
takes the question, the ranked records retrieval found (and the user's own
earlier words in this session) and returns a plan; the pipeline then quotes,
generates or declines. The model never makes this decision: a 135M model
cannot tell that it does not know, so the evidence has to (see support.py).

Plans:
- ``answer``: some records pass the support check; the pipeline answers from
  them (quoting one, or generating with them in the prompt and checking the
  result is grounded).
- ``decline``: the question is about the user's world (intent.py) and no
  record supports it. The reply is ``DECLINE`` and nothing is written back.
- ``general``: general knowledge; the model answers without memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from . import intent, support
from .text import content_terms

DECLINE = "I don't have that in my notes."

# Provenance tiers: what the user gave us outranks what a model said, always.
USER_SOURCES = ("user", "feedback", "session")
TIER_USER, TIER_CONFIRMED, TIER_OTHER = 0, 1, 2
# Records checked for support, best first: support is checked on the top few
# only, so a weak record far down the list cannot answer.
CHECK_TOP = 5


@dataclass(frozen=True)
class Record:
    """A retrieved record as the answer policy sees it (plain data)."""

    id: int
    text: str
    cosine: float
    relevance: float
    source: str = "user"          # user | feedback | model | learning | session
    kind: str = "document"
    date: str | None = None
    confirmed: bool = False        # a model answer the user rated well
    context: str = ""              # text the record inherits: its note's title line

    @property
    def tier(self) -> int:
        if self.source in USER_SOURCES:
            return TIER_USER
        return TIER_CONFIRMED if self.confirmed else TIER_OTHER


@dataclass(frozen=True)
class Plan:
    action: str                                        # answer | decline | general
    records: tuple[Record, ...] = ()                   # supporting records, best first
    personal: bool = False
    checked: tuple[tuple[int, tuple[str, ...]], ...] = field(default_factory=tuple)  # (id, failed rules)


def by_provenance(records: Sequence[Record]) -> list[Record]:
    """Stable sort: user-given first, then confirmed answers, then the rest."""
    return sorted(records, key=lambda r: r.tier)


def plan(question: str, records: Sequence[Record], vocab: support.Vocabulary,
         session: Sequence[Record] = (), *, known_names: Sequence[str] = (),
         min_cosine: float = support.MIN_COSINE, min_cover: float = support.MIN_COVER) -> Plan:
    """Decide answer / decline / general for one question (module docstring)."""
    if intent.is_general_form(question) or intent.is_statement(question):
        return Plan("general")
    # The user's earlier words in this session are user-given records too.
    pool = list(session) + list(records[:CHECK_TOP])
    ok: list[Record] = []
    checked = []
    for r in pool:
        s = support.check(question, r.text, vocab, r.cosine, context=r.context,
                          known_names=known_names, min_cosine=min_cosine, min_cover=min_cover)
        checked.append((r.id, s.reasons))
        if s.ok:
            ok.append(r)
    if ok:
        return Plan("answer", tuple(by_provenance(ok)), True, tuple(checked))
    known = vocab.known
    if (intent.is_personal(question, known, known_names)
            or (session and _mentions_session(question, session))):
        return Plan("decline", (), True, tuple(checked))
    return Plan("general", (), False, tuple(checked))


def _mentions_session(question: str, session: Sequence[Record]) -> bool:
    words = set(content_terms(question))
    return any(words & set(content_terms(r.text)) for r in session)
