"""answer/text.py: tokens, light stems, noun phrases, names."""

from __future__ import annotations

import pytest

from ruvllm_edge.answer.text import (asked_terms, capitalised_names, content_terms, names, phrases,
                                     stem, tokens)


def test_tokens_keep_codes_and_split_possessives() -> None:
    assert tokens("Chloe's wifi is mango-sunset-77, mail finance@northwind.example") == [
        "chloe", "'s", "wifi", "is", "mango-sunset-77", "mail", "finance@northwind.example"]
    assert "number" in tokens("acct no. PC-20417") and "number" in tokens("flat #14")
    assert "number" not in tokens("no idea")


@pytest.mark.parametrize("a,b", [("planted", "plant"), ("tyres", "tyre"), ("serviced", "service"),
                                 ("tomatoes", "tomato"), ("batteries", "battery"), ("Dr", "doctor")])
def test_stem_meets_inflections(a: str, b: str) -> None:
    assert stem(a.lower()) == stem(b.lower())


@pytest.mark.parametrize("a,b", [("meter", "met"), ("boss", "bos"), ("gate", "garage")])
def test_stem_never_merges_different_words(a: str, b: str) -> None:
    assert stem(a) != stem(b)


def roles(q: str) -> list[tuple[tuple[str, ...], str]]:
    return [(p.words, p.kind) for p in phrases(q)]


def test_phrases_find_the_asked_about_thing() -> None:
    assert roles("What is the code for the front gate?") == [(("code",), "noun"),
                                                              (("front", "gate"), "noun")]
    assert roles("Who fixed the washing machine?") == [(("fixed",), "verb"),
                                                        (("washing", "machine"), "noun")]
    assert roles("What time does the hose water the beds?")[0] == (("time",), "answer_type")
    assert roles("What size shoes does Leo wear?")[-1] == (("leo",), "noun")
    assert roles("Which day are the bins collected?") == [(("day",), "answer_type"), (("bins",), "noun")]
    assert roles("When is the all-hands meeting?") == [(("all-hands", "meeting"), "noun")]
    assert roles("What should the front tyres be inflated to?")[0] == (("front", "tyres"), "noun")


def test_names_and_memory_names() -> None:
    assert names("When is Dad's birthday?") == ["dad"]
    assert names("What breed is Biscuit?") == ["biscuit"]
    assert names("what breed is biscuit") == []               # lower case: the memory must say
    assert "biscuit" in capitalised_names(["Biscuit gets half a cup of kibble."])
    assert asked_terms("What is the code for the front gate?") == ["cod", "front", "gat"]


def test_content_terms_drop_function_words() -> None:
    assert content_terms("What is the wifi password?") == ["wifi", "password"]
