"""answer/policy.py: answer, decline or general — decided from evidence."""

from __future__ import annotations

from collections import Counter

from ruvllm_edge.answer.policy import DECLINE, Record, by_provenance, plan
from ruvllm_edge.answer.support import Vocabulary
from ruvllm_edge.answer.text import content_terms

NOTE = ["The front door code is 7341.", "The garage door code is 4821.",
        "Bins: recycling on Tuesday night."]
VOCAB = Vocabulary(Counter(t for line in NOTE for t in set(content_terms(line))), len(NOTE))


def recs(*cos: float) -> list[Record]:
    return [Record(i + 1, NOTE[i], c, c) for i, c in enumerate(cos)]


def test_taught_question_is_answered_from_its_record() -> None:
    p = plan("What is the front door code?", recs(0.8, 0.6, 0.1), VOCAB)
    assert p.action == "answer" and p.records[0].id == 1


def test_never_taught_personal_question_is_declined() -> None:
    p = plan("What is the code for the front gate?", recs(0.69, 0.53, 0.1), VOCAB)
    assert p.action == "decline" and p.records == ()
    assert DECLINE == "I don't have that in my notes."


def test_general_question_goes_to_the_model() -> None:
    assert plan("What is the capital of France?", recs(0.1, 0.1, 0.1), VOCAB).action == "general"


def test_session_statements_support_answers() -> None:
    said = [Record(-1, "My name is Zorblax.", 0.62, 0.62, source="session")]
    p = plan("What is my name?", recs(0.2, 0.1, 0.1), VOCAB, session=said)
    assert p.action == "answer" and p.records[0].source == "session"
    assert plan("What is my name?", recs(0.2, 0.1, 0.1), VOCAB).action == "decline"


def test_user_records_outrank_model_answers() -> None:
    model = Record(9, "Q: What is the front door code? A: 1234", 0.95, 0.97, source="model",
                   kind="qa_pair")
    user = Record(1, NOTE[0], 0.8, 0.8)
    assert by_provenance([model, user])[0].id == 1
    confirmed = Record(8, "Q: x A: y", 0.9, 0.9, source="model", confirmed=True)
    assert [r.id for r in by_provenance([model, confirmed, user])] == [1, 8, 9]


def test_a_statement_is_never_declined() -> None:
    # "My daughter is called Ines." in a chat was answered "I don't have that in my
    # notes." (found by hand after the fast-lane merge): the user tells, not asks.
    p = plan("My daughter is called Ines.", recs(0.2, 0.1, 0.1), VOCAB)
    assert p.action == "general" and p.records == ()
    assert plan("What is my daughter called?", recs(0.2, 0.1, 0.1), VOCAB).action == "decline"
