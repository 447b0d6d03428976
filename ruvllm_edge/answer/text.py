"""Words of questions and records, as plain data: tokens, light stems, noun phrases.

Why not a real tagger: the decision "does this record talk about the thing the
question asks about" must run on a Pi in microseconds, with no model. A
question is short and regular ("What is the code for the side gate?"), so a
chunker that treats runs of content words after a determiner, possessive or
preposition as noun phrases finds the asked-about thing well enough; the
measured misses are in benchmarks/results/bench_answers.json.

Stems are deliberately light (plural, -ing, -ed): "planted" meets "plant",
"tyres" meets "tyre", but "meter" stays "meter" and "boss" stays "boss", so
two different words are never merged into one.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

# Function words: never the asked-about thing.
STOP = frozenset("""
a an the and or but if of to in on at by for with about as is are was were be been being am do does did doing
have has had having i you he she it we they me him her us them my your his its our their mine yours ours theirs
this that these those what which who whom whose when where why how not no yes so than then there here from up
down out over under again once all any both each few more most other some such only own same too very can will
just should now would could may might must shall also into onto off per via get gets got s t d ll re ve m o
please tell know remind let 's whats wheres whos hows im ive id youre dont doesnt didnt isnt arent
much many often long old far big tall anything something everything nothing anyone someone everyone
""".split())
DETERMINERS = frozenset("the a an my our your his her their its this that these those 's".split())
PREPOSITIONS = frozenset("of for at in on to with about from by into".split())
# After these a noun names the kind of answer ("what time", "which day"), not the subject.
ANSWER_TYPE_WH = frozenset("what which whose much many".split())
COPULAS_AUX = frozenset("is are was were be am do does did can could will would should shall may might must has have had".split())
# After do-support or a modal the subject is followed by a bare verb: "does Leo *wear*".
DO_MODAL = frozenset("do does did can could will would should shall may might must".split())
WH_WORDS = frozenset("what which who whom whose when where why how".split())
SUBJECT_PRONOUNS = frozenset("i we you they he she it".split())

# Abbreviations people use in notes, mapped to the word a question uses.
ABBREVIATIONS = {
    "dr": "doctor", "appt": "appointment", "tel": "phone", "ph": "phone", "mob": "mobile",
    "st": "street", "rd": "road", "ave": "avenue", "hrs": "hour", "hr": "hour", "mins": "minute",
    "min": "minute", "wk": "week", "wks": "week", "yr": "year", "yrs": "year", "bday": "birthday",
    "mon": "monday", "tue": "tuesday", "tues": "tuesday", "wed": "wednesday", "weds": "wednesday",
    "thu": "thursday", "thur": "thursday", "thurs": "thursday", "fri": "friday", "sat": "saturday",
    "sun": "sunday", "jan": "january", "feb": "february", "mar": "march", "apr": "april",
    "jun": "june", "jul": "july", "aug": "august", "sep": "september", "sept": "september",
    "oct": "october", "nov": "november", "dec": "december", "approx": "approximately",
    "pw": "password", "pwd": "password", "addr": "address", "num": "number", "mob": "mobile",
    "acct": "account", "acc": "account", "btn": "button", "rm": "room", "tel": "phone",
    "mum's": "mum", "wk": "week", "thru": "through", "info": "information", "yrs": "year",
}
# Irregular past participles: after a noun they are the verb ("the firewood kept").
IRREGULAR_PARTICIPLES = frozenset("""kept left put set paid bought sent given made done gone taken held found
known shown told said run shut cut hit let read built sold lost won got brought caught taught thought fed led
met hung sat stood spent lent meant heard hidden broken chosen driven eaten fallen forgotten frozen ridden
risen spoken stolen written worn born""".split())
_NUMBER_ABBREV = re.compile(r"\bno\.?\s*(?=[#:]?\s*[A-Za-z-]*\d)|#(?=\d)", re.IGNORECASE)

_POSSESSIVE = re.compile(r"(\w)['\u2019]s\b")
_TOKEN = re.compile(r"'s|[a-z0-9]+(?:[-'@.][a-z0-9]+)*")


def tokens(text: str) -> list[str]:
    """Lower-case word tokens; a possessive 's becomes its own token "'s".

    Codes, e-mail addresses and hyphenated words stay whole ("mango-sunset-77",
    "finance@northwind.example").
    """
    text = _NUMBER_ABBREV.sub(" number ", text)           # "acct no. PC-20417", "#14"
    return _TOKEN.findall(_POSSESSIVE.sub(r"\1 's", text.lower()))


@functools.lru_cache(maxsize=65_536)
def stem(t: str) -> str:
    """Strip one inflection: plural, -ing or -ed; a final 'e' goes too, on both sides."""
    t = ABBREVIATIONS.get(t, t)
    if not t.isalpha() or len(t) <= 3:
        return t
    if t.endswith(("ies", "ied")) and len(t) > 4:
        t = t[:-3] + "y"
    elif t.endswith("oes") and len(t) > 4:
        t = t[:-2]
    elif t.endswith("s") and not t.endswith(("ss", "us", "is")):
        t = t[:-1]
    elif t.endswith("ing") and len(t) > 5:
        t = t[:-3]
    elif t.endswith("ed") and len(t) > 4:
        t = t[:-2]
    if len(t) > 3 and t[-1] == t[-2] and t[-1] not in "lsz":
        t = t[:-1]                                   # stopped -> stop
    if t.endswith("e") and len(t) > 3:
        t = t[:-1]
    return t


def content_terms(text: str) -> list[str]:
    """Stems of the content words, in order (duplicates kept)."""
    return [stem(t) for t in tokens(text) if t not in STOP]


def term_set(text: str) -> frozenset[str]:
    return frozenset(content_terms(text))


@dataclass(frozen=True)
class Phrase:
    """A run of content words. ``terms`` are stems; the last one is the head."""

    terms: tuple[str, ...]
    words: tuple[str, ...]       # the surface words, lower case
    kind: str                    # "noun" (the asked-about thing), "answer_type" or "verb"

    @property
    def head(self) -> str:
        return self.terms[-1]

    @property
    def modifiers(self) -> tuple[str, ...]:
        return self.terms[:-1]


def phrases(text: str) -> list[Phrase]:
    """Runs of content words with a guess at their role.

    - after a determiner, possessive or preposition, or ending the sentence:
      a noun phrase ("the front gate", "Leo's teacher");
    - after a copula or auxiliary: the subject, a noun phrase ("is Dad", "does Biscuit");
    - right after what/which/whose/how much: the answer type ("what time", "which day");
    - right after who/how/when/where or a subject pronoun: a verb ("who fixed", "we planted").
    A trailing -ed word of a longer run is taken as a verb and dropped ("the
    bins collected" -> "bins"); so is a trailing -ing word after do/modal,
    but "the all-hands meeting" keeps its noun.
    """
    toks = tokens(text)
    out: list[Phrase] = []
    run: list[str] = []
    before: str | None = None      # the function word before the current run
    prev: str | None = None
    aux: str | None = None         # the latest do/modal not yet followed by its subject
    for t in toks + ["."]:
        if t != "." and t not in STOP:
            if not run:
                before = prev
            run.append(t)
            prev = t
            continue
        if run:
            words = list(run)
            if len(words) > 1 and (words[-1].endswith("ed") or words[-1] in IRREGULAR_PARTICIPLES
                                   or (aux is not None and words[-1].endswith("ing"))):
                words.pop()                          # "the bins collected", "does Maya go swimming"
            if aux is not None and len(words) > 1 and t not in COPULAS_AUX:
                words.pop()                          # "does Leo wear" -> Leo (not "should X be")
            aux = None
            if all(w.endswith(("ed", "ing")) for w in words) and before in COPULAS_AUX:
                kind_override: str | None = "verb"   # "be inflated", "is serviced"
            else:
                kind_override = None
            if before in ANSWER_TYPE_WH:
                kind = "answer_type"
            elif (before is None or before in DETERMINERS or before in PREPOSITIONS
                  or before in COPULAS_AUX):
                kind = "noun"
            elif before in WH_WORDS or before in SUBJECT_PRONOUNS:
                kind = "verb"
            else:
                kind = "noun" if t == "." else "verb"
            out.append(Phrase(tuple(stem(w) for w in words), tuple(words), kind_override or kind))
            run = []
        if t in DO_MODAL:
            aux = t
        prev = t
    return out


_CAPITALISED = re.compile(r"(?<![.!?]\s)(?<!^)\b([A-Z][a-zA-Z]+)\b")
FAMILY = frozenset("mum mom mother dad father grandma granny grandmother grandpa grandad grandfather "
                   "nan nana gran sister brother son daughter wife husband partner aunt uncle cousin "
                   "niece nephew baby".split())


def names(text: str) -> list[str]:
    """Stems of proper names and family roles in a question.

    Capitalised words that do not start the sentence ("When is Maya's
    lesson?" -> maya) plus family words ("mum", "dad"): in a question these
    name *whose* thing is asked about, and a record about someone else's
    thing must not answer it.
    """
    found = [m.group(1).lower() for m in _CAPITALISED.finditer(text.strip())]
    found = [w for w in found if w not in STOP and w != "i"]
    found += [t for t in tokens(text) if t in FAMILY]
    return list(dict.fromkeys(stem(w) for w in found))


def asked_terms(text: str) -> list[str]:
    """Stems of the noun phrases a question asks about (not its answer type or verbs)."""
    return list(dict.fromkeys(t for p in phrases(text) if p.kind == "noun" for t in p.terms))


def capitalised_names(texts: list[str] | tuple[str, ...]) -> list[str]:
    """Stems of words written capitalised mid-sentence in records: the memory's names.

    A question typed in lower case ("whats toms number") is matched against
    these, so "tom" is still a name the answering record must contain. Line
    starts count too: notes begin lines with names ("Isla routine").
    """
    out: dict[str, None] = {}
    for text in texts:
        for m in _ANY_CAPITALISED.finditer(text):
            w = m.group(1).lower()
            if w not in STOP and w not in ABBREVIATIONS:
                out[stem(w)] = None
    return list(out)


# Notes start lines with names ("Isla routine", "Health visitor Janine"), so
# for the memory's names every capitalised word counts, line starts included.
_ANY_CAPITALISED = re.compile(r"\b([A-Z][a-zA-Z]+)\b")
