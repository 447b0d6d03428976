"""From a plan to the reply: records of candidates, quotes, session statements, grounding."""

from __future__ import annotations

from ruvllm_edge.answer import compose
from ruvllm_edge.answer.policy import Plan, Record
from ruvllm_edge.memory.types import Candidate


def cand(i: int, text: str, source: str = "user", **md: object) -> Candidate:
    return Candidate(id=i, kind="document", text=text, trust=0.8, quality=1.0, similarity=0.7,
                     relevance=0.9, hop=0, created_at=0.0, source=source, metadata=md,
                     context="House notes")


def test_record_of_carries_provenance_date_confirmation_and_context() -> None:
    r = compose.record_of(cand(3, "Caroline: I went to the support group.", date="8 May 2023"))
    assert (r.id, r.source, r.date, r.context, r.cosine) == (3, "user", "8 May 2023", "House notes", 0.7)
    assert compose.record_of(cand(4, "Q: a A: b", source="model", confirmed=True)).confirmed


def test_a_quote_reads_the_users_words_back_to_them_and_keeps_the_value() -> None:
    r = Record(1, "My  blood type is O negative.", 0.8, 0.9)
    assert compose.quote(r) == "Your blood type is O negative."
    dated = Record(2, "Caroline: I went to the group.", 0.8, 0.9, date="8 May 2023")
    assert compose.quote(dated).endswith("(8 May 2023)")
    model = Record(3, "Q: x A: my answer", 0.8, 0.9, source="model")
    assert compose.quote(model) == "Q: x A: my answer"      # not the user's words: unchanged


def test_session_statements_are_the_users_non_questions() -> None:
    hist = [("user", "My name is Zorblax."), ("assistant", "Nice to meet you."),
            ("user", "What is my name?")]
    assert compose.statements(hist) == ["My name is Zorblax."]
    recs = compose.session_records(["My name is Zorblax."], [0.61])
    assert recs[0].id == -1 and recs[0].source == "session" and recs[0].tier == 0


def test_quote_or_generate_and_grounding() -> None:
    short = Plan("answer", (Record(1, "The wifi password is tulip-42.", 0.8, 0.9),))
    assert compose.should_quote(short, "short", 40)
    assert not compose.should_quote(short, "long", 3)
    assert compose.should_quote(short, "memory", 3)
    recs = list(short.records)
    text, ok = compose.accept_generated("Notes:\nThe password is tulip-42.", recs,
                                        "What is the wifi password?")
    assert ok and text == "The password is tulip-42."      # echoed framing removed
    text, ok = compose.accept_generated("The password is 123-456.", recs, "What is the wifi password?")
    assert not ok and text == "The password is 123-456."


def test_requests_are_not_statements() -> None:
    hist = [("user", "Name one colour."), ("user", "Tell me a story"), ("user", "He's 9 and plays cello.")]
    assert compose.statements(hist) == ["He's 9 and plays cello."]
