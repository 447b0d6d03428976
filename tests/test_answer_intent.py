"""answer/intent.py: personal world or general knowledge."""

from __future__ import annotations

import pytest

from ruvllm_edge.answer.intent import is_general_form, is_personal, is_statement

KNOWN = {"wifi", "password", "beagl", "landlord", "code", "biscuit"}


def known(t: str) -> bool:
    return t in KNOWN


@pytest.mark.parametrize("q", [
    "What is the wifi password?", "Who is our plumber?", "When is my dentist appointment?",
    "What is the code for the front gate?", "Who repaired the dishwasher?",
    "How much is the council tax?", "When is the all-hands meeting?", "what's derek's email address"])
def test_personal(q: str) -> None:
    assert is_personal(q, known)


@pytest.mark.parametrize("q", [
    "What is the capital of France?", "How many days are in a week?", "Who wrote Romeo and Juliet?",
    "What is the largest planet in our solar system?", "What is a beagle?", "What is a VPN?",
    "How do I change a tyre?", "How do smoke alarms work?", "What is photosynthesis?",
    "What is the freezing point of water in Celsius?"])
def test_general(q: str) -> None:
    assert not is_personal(q, known)


def test_lower_case_names_from_memory_make_it_personal() -> None:
    assert not is_personal("what shoe size is isla", known)
    assert is_personal("what shoe size is isla", known, known_names=["isla"])


def test_general_form_needs_no_name_or_possessive() -> None:
    assert is_general_form("What is a VPN?")
    assert not is_general_form("What is Bluebird?")
    assert not is_general_form("What's Chloe's email?")


def test_the_me_of_a_request_is_not_a_personal_thing() -> None:
    from ruvllm_edge.answer import intent
    unknown = lambda t: False  # noqa: E731 - an empty memory
    assert not intent.is_personal("Tell me about trees.", unknown)
    assert not intent.is_personal("Can you tell me a story?", unknown)
    assert intent.is_personal("Tell me my wifi password", unknown)


@pytest.mark.parametrize("text", [
    "My daughter is called Ines.", "I'm feeling tired today", "Tom is our plumber.",
    "He's just started the cello.", "The gate code is 4412.", "My name is Zorblax."])
def test_statements_tell_rather_than_ask(text: str) -> None:
    assert is_statement(text)


@pytest.mark.parametrize("text", [
    "What is my daughter called?", "whats the code for the key box", "how much is our rent",
    "remind me what time we leave", "Name one colour.", "Tell me about trees",
    "wifi password for the cabin", "Is the gate code 4412?", "my rent"])
def test_questions_and_requests_are_not_statements(text: str) -> None:
    assert not is_statement(text)
