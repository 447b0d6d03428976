"""Is a question about the user's own world, or general knowledge?

Why it matters: a personal question with no supporting record must be
declined ("I don't have that in my notes"), never answered by a 135M model
that will invent a phone number. A general-knowledge question ("What is the
capital of France?") still goes to the model. The split is decided from the
words and from what the memory knows, not by the model, as a small score:

  + first-person words (my, I, me; our/we/us unless "our solar system");
  + a definite noun phrase ("the wifi password") or a name the memory knows
    (written capitalised in a record, asked in any case: "toms number");
  + a possessive ("derek's email"): someone's particular thing;
  + a definite noun phrase naming a thing of everyday life that people keep
    notes about (a code, a bill, an appointment, the plumber);
  + an event on a definite thing ("Who repaired the dishwasher?");
  - encyclopedic forms ("the capital of", "the largest", "who wrote",
    "how many days are in a week", "in Celsius");
  and definitional or how-to questions about an indefinite thing ("What is
  a beagle?", "How do I change a tyre?") are general outright.

The cue lists were written against the development notes only
(benchmarks/data/notes-dev.json); the held-out figures are in
benchmarks/results/bench_answers.json.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

from .text import content_terms, names, phrases, stem, tokens

FIRST_PERSON_SINGULAR = frozenset("i my me mine myself i'm i've i'd".split())
FIRST_PERSON_PLURAL = frozenset("our we us ours ourselves we're we've".split())
UNIVERSAL = frozenset("planet solar system world universe galaxy country nation species society body "
                      "language history sun moon earth ancestors".split())
EVERYDAY = frozenset(stem(w) for w in """
code pin password passcode key keys lock alarm wifi router bill bills rent tax insurance policy mortgage
landlord plumber electrician builder cleaner gardener babysitter nanny neighbour neighbor dentist doctor
vet gp surgery appointment appt meeting standup review interview deadline birthday anniversary party
wedding holiday flight booking reservation ticket tickets school teacher class lesson lessons practice
boss manager colleague team office desk locker parking bay spare meter boiler bin bins collection
rota schedule timetable subscription account username login number address phone email mobile
""".split())
ENCYCLOPEDIC = re.compile(
    r"\b(capital|largest|biggest|smallest|tallest|highest|longest|deepest|fastest|oldest|"
    r"population|century|planet|ocean|continent|celsius|fahrenheit|boiling|freezing|"
    r"formula|chemical|element|invented|discovered|wrote|painted|composed|author of|"
    r"speed of|meaning of|define|definition)\b"
    r"|\bhow many \w+ (are|is) (in|there in) (a|an|one)\b",
    re.IGNORECASE)
_DEFINITIONAL = re.compile(
    r"^\s*(what|who)\s*(is|are|was|were|'s)\s+(?!the\b|my\b|our\b|your\b|this\b|that\b)"
    r"|^\s*how\s+(do|does|can|should)\s+(i|you|one|we)?\s*\w+\s+(a|an|some)\b"
    r"|^\s*how\s+(do|does)\s+(?!(the|my|our|your)\b)[\w\s-]+\s+work\b"
    r"|^\s*why\s+(do|does|is|are)\s+(?!(the|my|our|your)\b)"
    r"|\bused for\b|\bmean(s|ing)?\b",
    re.IGNORECASE)
_INDEFINITE = re.compile(r"\b(a|an)\s+\S+", re.IGNORECASE)
_EVENT = re.compile(r"^\s*(who|when|where)\s+(\w+ed|did|was|were|had|took|put|left|paid|bought|"
                    r"sent|gave|fixed|made|came)\b", re.IGNORECASE)


# First words of a request ("Name one colour.", "Tell me a story."), not a statement.
REQUESTS = frozenset("""name tell give write list explain say translate summarise summarize describe
please show count calculate make help suggest find compare define repeat continue answer""".split())
# First words of a question, also typed without its "?" ("whats the gate code").
QUESTION_START = frozenset("""what whats what's who whos who's whom whose when whens when's where
wheres where's which why how hows how's is are am was were do does did can could will would should
shall may might have has had remind""".split())
_SUBJECT_START = frozenset("i we he she they it my our his her their your the this that these those"
                           .split())
_SUBJECT_VERB = frozenset("i'm we're he's she's it's they're i've we've they've".split())
_TELLS = frozenset("""is are am was were 's 're 'm has have had got live lives work works like likes
love loves hate hates started starts moved called named""".split())


def is_statement(text: str) -> bool:
    """The user tells something ("My daughter is called Ines.") rather than asks.

    A statement is not a question about their world, so it is never declined:
    it goes to the model like small talk, and in a session it becomes one of
    the user's own records for later questions (compose.statements). The test
    is on form only: no "?", no question or request word first, and a subject
    followed by a telling verb within the first words. A query typed as a bare
    phrase ("wifi password for the cabin") has no such verb and stays a query.
    """
    t = text.strip()
    toks = tokens(t)
    if not toks or t.endswith("?") or len(toks) < 3:
        return False
    if toks[0] in QUESTION_START or toks[0] in REQUESTS:
        return False
    if toks[0] in _SUBJECT_VERB:
        return True
    subject = toks[0] in _SUBJECT_START or t[:1].isupper()
    return subject and any(w in _TELLS for w in toks[1:6])


# "Tell me about trees", "Can you give me a recipe": the "me" of a request is
# the asker, not a thing of theirs. Only the request's own "me" is dropped;
# "Tell me my wifi password" keeps its "my".
_REQUEST_ME = re.compile(r"^\s*(?:please\s+|(?:can|could|would|will)\s+you\s+)?"
                         r"(?:tell|give|show|teach|explain to|write|find|remind)\s+me\b",
                         re.IGNORECASE)


def first_person(question: str) -> bool:
    toks = tokens(_REQUEST_ME.sub(" ", question, count=1))
    if any(t in FIRST_PERSON_SINGULAR for t in toks):
        return True
    for i, t in enumerate(toks):
        if t in FIRST_PERSON_PLURAL and not any(u in UNIVERSAL for u in toks[i + 1:i + 3]):
            return True
    return False


def is_general_form(question: str) -> bool:
    """A definitional or how-to question about an indefinite thing, with no name."""
    if any(t in FIRST_PERSON_SINGULAR for t in tokens(question)) and not re.match(
            r"^\s*how\s+(do|can|should)\s+i\s+\w+\s+(a|an)\b", question, re.IGNORECASE):
        return False
    if "'s" in tokens(question.replace("what's", "what is").replace("What's", "What is")):
        return False                        # "what's derek's email": someone's particular thing
    # "What is a VPN?": a capitalised word after "a"/"an" is a kind of thing, not a name.
    return bool(_DEFINITIONAL.search(question)) and not names(_INDEFINITE.sub(" ", question))


def _definite_phrases(question: str) -> list[tuple[str, ...]]:
    """Noun phrases introduced by the/my/our/…/'s (not a/an, not bare)."""
    out = []
    toks = tokens(question)
    for ph in phrases(question):
        if ph.kind != "noun":
            continue
        # find the token just before this phrase's first word
        first = ph.words[0]
        idx = [i for i, t in enumerate(toks) if t == first]
        before = toks[idx[0] - 1] if idx and idx[0] > 0 else None
        if before in ("the", "my", "our", "your", "his", "her", "their", "this", "that", "'s"):
            out.append(ph.terms)
    return out


def personal_score(question: str, known: Callable[[str], bool],
                   known_names: Sequence[str] = ()) -> int:
    """The score described in the module docstring (>= 1 means personal)."""
    score = 0
    if first_person(question):
        score += 2
    definite = _definite_phrases(question)
    asked = set(content_terms(question))
    if (any(known(t) for ph in definite for t in ph) or any(known(n) for n in names(question))
            or asked & set(known_names)):
        score += 1
    if "'s" in tokens(question) and not ENCYCLOPEDIC.search(question):
        score += 1                          # "derek's email": someone's particular thing
    if any(t in EVERYDAY for ph in definite for t in ph):
        score += 1
    if definite and _EVENT.search(question):
        score += 1
    if ENCYCLOPEDIC.search(question):
        score -= 2
    return score


def is_personal(question: str, known: Callable[[str], bool],
                known_names: Sequence[str] = ()) -> bool:
    """True when the question is about the user's own world (see module docstring).

    ``known_names``: stems of names the memory holds (written capitalised in
    records), so "toms number" is about the user's Tom.
    """
    if is_general_form(question):
        return False
    return personal_score(question, known, known_names) >= 1
