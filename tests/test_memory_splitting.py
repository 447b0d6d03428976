"""How a note becomes stored units (memory/splitting.py): lines, sentences, token chunks."""

from __future__ import annotations

import re

import pytest

from ruvllm_edge.memory.splitting import split_sentences, split_units
from memkit import COTTAGE


def words(text: str) -> list[tuple[int, int]]:
    """Token offsets where every whitespace-separated word is one token."""
    return [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]


@pytest.mark.parametrize("line, want", [
    ("The door code is 4821.", ["The door code is 4821."]),
    ("Dr. Patel is our GP. Call him on 0123 456 789.", ["Dr. Patel is our GP.", "Call him on 0123 456 789."]),
    ("Bins go out at 7.30 on Tuesdays. Glass e.g. jars goes Fridays.",
     ["Bins go out at 7.30 on Tuesdays.", "Glass e.g. jars goes Fridays."]),
    ("The tank holds 3.5 litres. Refill it monthly!", ["The tank holds 3.5 litres.", "Refill it monthly!"]),
    ("We live at no. 12 on St. Anne's Road. J. Smith is next door.",
     ["We live at no. 12 on St. Anne's Road.", "J. Smith is next door."]),
    ("I said no. Then he left.", ["I said no.", "Then he left."]),
    ('She said "Call me." Then she hung up? Yes.', ['She said "Call me."', "Then she hung up?", "Yes."]),
    ("version 2.0.1 of the app (see e.g. the docs) is fine", ["version 2.0.1 of the app (see e.g. the docs) is fine"]),
    ("the meeting ended. then lunch", ["the meeting ended. then lunch"]),      # no capital: not a sentence end
    ("猫は黒い。犬は白い。", ["猫は黒い。", "犬は白い。"]),
])
def test_sentences(line: str, want: list[str]) -> None:
    assert split_sentences(line) == want


def test_lines_then_sentences_blank_lines_dropped_text_kept_exactly() -> None:
    note = ("House notes\n\n  - Front door code: 4821  \n"
            "Wifi: tangerine-42. Guests use HarborGuest.\r\n\n\nBoiler serviced by Dr. Heat Ltd.\n")
    units = split_units(note, 200, words)
    assert units == ["House notes", "- Front door code: 4821", "Wifi: tangerine-42.",
                     "Guests use HarborGuest.", "Boiler serviced by Dr. Heat Ltd."]
    # One short line (a conversation turn) stays whole; a long one-line paragraph is split.
    turn = "Caroline: I went to the support group yesterday. It was so powerful!"
    assert split_units(turn, 200, words) == [turn]
    para = " ".join(["The boiler is in the loft and was serviced in March by Ashdown Heating."] * 2 +
                    ["Its pressure should sit near 1.5 bar, and the manual is in the drawer under the hob."])
    assert len(para.split()) > 40 and split_units(para, 200, words) == split_sentences(para)
    assert all(u in note for u in units)                  # exact substrings, never rewritten


def test_one_unit_texts_come_back_whole() -> None:
    assert split_units("  The spare key is under the blue pot.  ", 200, words) == [
        "The spare key is under the blue pot."]
    assert split_units(" \n\n \n", 200, words) == []


def test_long_units_are_cut_by_tokens_and_cover_the_text() -> None:
    line = " ".join(f"w{i}" for i in range(70))
    units = split_units(f"Title\n{line}", 16, words)
    assert units[0] == "Title"
    assert all(len(words(u)) <= 16 for u in units)
    assert " ".join(units[1:]).split() == line.split()
    assert len(units) == 1 + 5                             # ceil(70 / 16)


def test_real_tokenizer_limits_hold(emb) -> None:
    long_sentence = "The garden shed " + "and the tall hedge " * 60 + "need care."
    units = split_units(f"Garden\n{long_sentence}", 32, emb.token_offsets)
    assert len(units) > 3 and all(emb.count_tokens(u) <= 32 for u in units)


QUESTIONS = {"What is the code for the key safe?": 1, "What do I do before lighting the wood burner?": 2,
             "Where do we get eggs?": 3, "When do the bins go out?": 4, "Where does glass go?": 5,
             "Where is the fuse board?": 6}


def test_why_split_the_sentence_meets_its_question_the_whole_note_does_not(emb) -> None:
    """The reason for splitting, measured with the real embedder (deterministic).

    Measured here: whole note 0.22-0.37, the answering sentence 0.57-0.83.
    """
    units = split_units(COTTAGE, 200, emb.token_offsets)
    assert len(units) == 7
    whole, parts = emb.embed(COTTAGE), emb.embed_batch(units)
    for question, answer in QUESTIONS.items():
        q = emb.embed(question)
        sims = parts @ q
        assert int(sims.argmax()) == answer, (question, sims)
        assert float(sims[answer]) > float(whole @ q) + 0.15, question


def test_a_reference_after_no_holds_the_sentence_together() -> None:
    line = "Clay supplier: Potclays, acct no. PC-20417, rep is Derek 01782 745 210"
    assert split_sentences(line) == [line]
