"""Answers a person can trust, on the real daemon and model (issue 9's "done means").

The scenario: a house note added as one multi-line text, as a person would
paste it, then questions asked the way they would ask them. The model
samples (temperature 0.7 by default), so each property is asserted as a
count over the questions or over repeated tries, with the threshold stated.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from ruvllm_edge.answer.policy import DECLINE
from ruvllm_edge.answer.prompt import has_framing

from faultkit import FAST

pytestmark = pytest.mark.slow

NOTE = """Cottage notes - Rowan Lane
The key safe by the back door opens with 5093.
Wifi network is RowanNet and the password is heron-lamp-62.
Recycling goes out on Tuesday evenings, general waste on Friday mornings.
Our vet is Dr. Ines Farrow at Brookside Vets, phone 01632 960 274.
The stopcock is under the kitchen sink, behind the bleach.
Mr. Patel from Ashdown Heating serviced the boiler in March.
The spare car key hangs on the hook inside the pantry door.
"""

# (question, a value the answer must contain)
TAUGHT = [
    ("What's the code for the key safe?", "5093"),
    ("What is the wifi password?", "heron-lamp-62"),
    ("Which day does the recycling go out?", "Tuesday"),
    ("What is the vet's phone number?", "01632 960 274"),
    ("Where is the stopcock?", "sink"),
    ("Who serviced the boiler?", "Patel"),
    ("Where is the spare car key?", "pantry"),
]
# Personal questions the note never answers; some share words with it on purpose.
NEVER = [
    "What is the code for the garage door?",
    "Who is our electrician?",
    "When is my dentist appointment?",
    "What is the wifi password at my office?",
    "What is the vet's email address?",
]
GENERAL = ["What is the capital of France?", "Why is the sky blue?"]
VALUES = ["5093", "heron-lamp-62", "01632 960 274", "RowanNet"]

CONFIG = {**FAST, "router": {"enabled": False}}


def ask(c: Any, q: str) -> dict[str, Any]:
    return c.query(q, max_tokens=48)


def test_a_house_note_is_answered_declined_and_kept_clean(start_daemon: Any) -> None:
    d = start_daemon(CONFIG)
    c = d.client()
    c.memory_add(NOTE)

    taught = [ask(c, q) for q, _ in TAUGHT]
    right = [r for r, (_, v) in zip(taught, TAUGHT) if v.lower() in r["text"].lower()]
    # Threshold: 6 of 7. Each answer must name the value the note gives.
    assert len(right) >= 6, [(q, r["text"]) for (q, _), r in zip(TAUGHT, taught)]
    assert all(r["sources"] for r in right), "an answer from the note lists the note's line"

    never = [ask(c, q) for q in NEVER]
    declined = [r for r in never if r["text"] == DECLINE and r["finish_reason"] == "declined"]
    # Threshold: 5 of 5 declined, and no stored value leaks into any of them.
    assert len(declined) == len(NEVER), [(q, r["text"]) for q, r in zip(NEVER, never)]
    assert not [r["text"] for r in never if any(v in r["text"] for v in VALUES)]

    # `ruvllm-edge ask` shows the records under the answer.
    out = subprocess.run([sys.executable, "-m", "ruvllm_edge.cli", "ask", "--no-stream", "--endpoint",
                          d.endpoint, "What is the wifi password?"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "heron-lamp-62" in out.stdout and "sources:" in out.stdout and "from user" in out.stdout

    general = [ask(c, q) for q in GENERAL]
    assert all(r["text"] and r["finish_reason"] != "declined" for r in general), general
    assert all(r["context"]["plan"] == "general" for r in general)

    every = taught + never + general
    assert not [r["text"] for r in every if has_framing(r["text"])], "memory framing leaked"

    # After a restart, the top memory for each taught question is the user's note line.
    d.stop()
    d2 = start_daemon(CONFIG, data_dir=d.data_dir)
    c2 = d2.client()
    # Nothing ungrounded was written back (the stop flushed the writeback queue):
    # every searchable model qa_pair is grounded or confirmed.
    rows = list(c2.memory_export(include_archived=False))
    model_rows = [n for n in rows if n["kind"] == "qa_pair"]
    assert all(n["metadata"].get("grounded") or n["metadata"].get("confirmed") for n in model_rows)
    tops = [c2.memory_search(q, k=3)[0] for q, _ in TAUGHT]
    users = [t for t in tops if t["source"] == "user"]
    assert len(users) == len(TAUGHT), tops
    hit = [t for t, (_, v) in zip(tops, TAUGHT) if v.lower() in t["preview"].lower()]
    assert len(hit) >= 6, [(q, t["preview"]) for (q, _), t in zip(TAUGHT, tops)]


def test_a_name_told_in_a_session_is_remembered(start_daemon: Any) -> None:
    d = start_daemon(CONFIG)
    c = d.client()
    got = 0
    tries = 5
    for _ in range(tries):
        sid = c.new_session()
        c.query("My name is Zorblax.", session_id=sid, max_tokens=24)
        r = c.query("What is my name?", session_id=sid, max_tokens=24)
        got += "Zorblax" in r["text"]
        assert not has_framing(r["text"]), r["text"]
    # Threshold: 5 of 5 (the statement is quoted back, which does not sample).
    assert got == tries
