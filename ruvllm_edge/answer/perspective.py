"""Turn a note the user wrote ("My manager is Priya") into a reply to them ("Your manager is Priya").

Why: when a record is quoted as the answer, the user's own first-person
words read wrongly back ("My blood type is O negative." to "What's my blood
type?"). Only the pronouns change; every other character of the record is
kept, so the value the user wrote is exactly what they get back.
"""

from __future__ import annotations

import re

_SWAPS = (
    (r"\bI am\b", "you are"), (r"\bI'm\b", "you're"), (r"\bI was\b", "you were"),
    (r"\bI've\b", "you've"), (r"\bI'll\b", "you'll"), (r"\bI'd\b", "you'd"),
    (r"\bwe are\b", "you are"), (r"\bwe're\b", "you're"), (r"\bwe were\b", "you were"),
    (r"\bwe've\b", "you've"), (r"\bwe'll\b", "you'll"),
    (r"\bmyself\b", "yourself"), (r"\bourselves\b", "yourselves"),
    (r"\bmine\b", "yours"), (r"\bours\b", "yours"),
    (r"\bmy\b", "your"), (r"\bour\b", "your"),
    (r"\bI\b", "you"), (r"\bwe\b", "you"), (r"\bme\b", "you"), (r"\bus\b", "you"),
)
_COMPILED = tuple((re.compile(p, re.IGNORECASE), r) for p, r in _SWAPS)


def _match_case(src: str, dst: str) -> str:
    return dst[:1].upper() + dst[1:] if src[:1].isupper() and src != "I" else dst


def to_second_person(text: str) -> str:
    """First-person pronouns -> second person; a sentence-initial word stays capitalised."""
    out = text
    for pat, rep in _COMPILED:
        out = pat.sub(lambda m, rep=rep: _match_case(m.group(0), rep), out)
    # "I" at the start of a sentence became "you": capitalise it again.
    return re.sub(r"(^|[.!?]\s+)you\b", lambda m: m.group(1) + "You", out)
