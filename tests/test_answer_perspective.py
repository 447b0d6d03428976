"""answer/perspective.py: the user's notes read back to them."""

from __future__ import annotations

import pytest

from ruvllm_edge.answer.perspective import to_second_person


@pytest.mark.parametrize("src,want", [
    ("My manager is Priya Raman.", "Your manager is Priya Raman."),
    ("I take 10 mg of amlodipine every morning.", "You take 10 mg of amlodipine every morning."),
    ("I'm allergic to peanuts.", "You're allergic to peanuts."),
    ("Our flat is number 14. We park in bay 22.", "Your flat is number 14. You park in bay 22."),
    ("The front door code is 7341.", "The front door code is 7341."),
])
def test_second_person(src: str, want: str) -> None:
    assert to_second_person(src) == want
