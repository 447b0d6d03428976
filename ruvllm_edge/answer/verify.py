"""Is a generated answer grounded in the records it was given?

Why: a small model shown the right record can still answer with a value it
made up ("The phone number of our doctor is 123-456-7890"). Such an answer
must not be shown as if it came from the user's notes, and must never be
written back to memory. The check is deliberately about *values*: every
number, code, e-mail address and name in the answer must occur in the
records or in the question. Paraphrase around the values is fine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

# Capitalised words that start many correct answers and are not values.
_COMMON = frozenset("""the a an yes no your you it its this that they there he she we i my our
according based sure sorry hello hi okay ok note notes answer question on in at by is are""".split())
_VALUE = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+|\S*\d\S*|(?<![.!?]\s)(?<!^)\b[A-Z][a-zA-Z'-]+")


def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9@.+-]", "", s.lower()).strip(".-")


def _digits(s: str) -> str:
    return re.sub(r"\D", "", s)


@dataclass(frozen=True)
class Grounding:
    ok: bool
    values: tuple[str, ...]          # the values found in the answer
    missing: tuple[str, ...]         # values not found in records or question


def values(answer: str) -> list[str]:
    """Numbers, codes, e-mail addresses and mid-sentence capitalised words."""
    out = []
    for m in _VALUE.finditer(answer.strip()):
        v = m.group(0).strip(".,;:!?()[]\"'")
        if v and v.lower() not in _COMMON:
            out.append(v)
    return list(dict.fromkeys(out))


def check(answer: str, records: Sequence[str], question: str = "") -> Grounding:
    """Every value of the answer must appear in the records or the question."""
    hay = " ".join([*records, question])
    hay_norm = _norm(hay.replace(" ", "~")).replace("~", " ")
    hay_words = {_norm(w) for w in hay.split()}
    hay_digits = _digits(hay)
    vals = values(answer)
    missing = []
    for v in vals:
        n = _norm(v)
        if not n:
            continue
        d = _digits(v)
        if n in hay_words or n in hay_norm:
            continue
        if d and len(d) >= 2 and d in hay_digits and len(d) >= len(n) // 2:
            continue                                     # "07700 900461" vs "07700900461"
        missing.append(v)
    return Grounding(not missing and bool(answer.strip()), tuple(vals), tuple(missing))
