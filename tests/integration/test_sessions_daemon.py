"""Sessions through the real daemon: what a later turn's prompt holds, and turn order.

The checks are on what reached the model, not on sampled text: the reply's
``sources`` (the records that were in the prompt) and ``usage.prompt_tokens``
compared with the prompt the daemon's own planner builds for the history a
turn should see (same model, same chat template, same config).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from ruvllm_edge import config
from ruvllm_edge.inference import InferenceEngine

from faultkit import FAST

pytestmark = pytest.mark.slow

# No router (a fixed policy that always quotes memory), no learning, and no
# answers written back to memory: the fact is the only record there is.
SESSION_CONFIG = {**FAST, "router": {"enabled": False},
                  "memory": {"writeback_quality_threshold": 1.0}}


def planner(d: Any) -> tuple[InferenceEngine, str]:
    """The daemon's prompt planner (vocab only, no weights) and its system prompt."""
    cfg = config.load(str(d.config_path), env={}, data_dir=str(d.data_dir),
                      models_dir=str(d.models_dir))
    return InferenceEngine(cfg.inference, cfg.system, cfg.models_dir), cfg.inference.system_prompt


def prompt_tokens(engine: InferenceEngine, system: str, history: list[tuple[str, str]],
                  user: str) -> int:
    return len(engine.plan(system, history, user, max_tokens=8).tokens)


def test_a_deleted_fact_does_not_reach_the_model_in_a_later_turn(start_daemon: Any) -> None:
    d = start_daemon(SESSION_CONFIG)
    c = d.client()
    fact = c.memory_add("The gate code of the Linden Street depot is 7341.", kind="fact")["ids"][0]
    sid = c.new_session()
    q1 = "What is the gate code of the Linden Street depot?"
    r1 = c.query(q1, session_id=sid, max_tokens=8, temperature=0.0)
    assert fact in [s["id"] for s in r1["sources"]], "the fact never reached the prompt"

    assert c.memory_delete(fact)["deleted"] is True
    q2 = "Thanks. Which street was that depot on?"
    r2 = c.query(q2, session_id=sid, max_tokens=8, temperature=0.0)
    assert r2["sources"] == [] and r2["context"]["memory_nodes"] == 0
    engine, system = planner(d)
    # The second prompt is the first turn as the user typed it, the answer, and the new
    # question: the memory block quoted in the first turn is not replayed.
    words_only = prompt_tokens(engine, system, [("user", q1), ("assistant", r1["text"])], q2)
    assert r2["usage"]["prompt_tokens"] == words_only, (r2["usage"], words_only)


def test_two_turns_of_one_session_run_one_after_the_other(start_daemon: Any) -> None:
    d = start_daemon({**SESSION_CONFIG, "server": {**FAST["server"],
                                                   "max_concurrent_requests": 2}})
    sid = d.client().new_session()
    questions = ["Name one colour.", "Name one animal."]
    replies: dict[str, dict[str, Any]] = {}
    go = threading.Barrier(2)

    def ask(q: str) -> None:
        c = d.client()
        go.wait()
        replies[q] = c.query(q, session_id=sid, max_tokens=8, temperature=0.0,
                             use_memory=False)

    threads = [threading.Thread(target=ask, args=(q,)) for q in questions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    turns = d.client().history(sid)["turns"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user", "assistant"]
    first_q, second_q = turns[0]["content"], turns[2]["content"]
    assert {first_q, second_q} == set(questions)
    engine, system = planner(d)
    first, second = replies[first_q], replies[second_q]
    assert first["usage"]["prompt_tokens"] == prompt_tokens(engine, system, [], first_q)
    # The later turn saw the earlier one: they did not both start from an empty history.
    assert second["usage"]["prompt_tokens"] == prompt_tokens(
        engine, system, [("user", first_q), ("assistant", first["text"])], second_q), \
        (first["usage"], second["usage"])
