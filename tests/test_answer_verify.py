"""answer/verify.py: every value in a generated answer comes from the records."""

from __future__ import annotations

from ruvllm_edge.answer.verify import check, values

DOCTOR = "Our doctor is Dr. Amara Osei at Elm Street Surgery, phone 01632 960 118."


def test_invented_values_are_caught() -> None:
    g = check("The phone number of our doctor is 123-456-7890.", [DOCTOR])
    assert not g.ok and g.missing == ("123-456-7890",)
    assert not check("Dave from Boilers Ltd serviced it.", ["The boiler was serviced by Dave Pike."]).ok


def test_values_from_records_or_question_pass() -> None:
    assert check("Your doctor's phone number is 01632 960 118.", [DOCTOR]).ok
    assert check("It is 01632960118.", [DOCTOR]).ok
    assert check("Your name is Zorblax.", ["My name is Zorblax."]).ok
    assert check("Yes, Tuesday.", [], "Is it Tuesday?").ok


def test_empty_answer_is_not_grounded() -> None:
    assert not check("  ", [DOCTOR]).ok


def test_values_ignores_sentence_starts_and_common_words() -> None:
    assert values("The code is 7341. Your key is under Biscuit's bowl.") == ["7341", "Biscuit's"]
