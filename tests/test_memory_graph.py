"""Graph rules: expansion, decay and node value (pure functions)."""

from __future__ import annotations

import math

import pytest

from ruvllm_edge.memory.graph import adjust_weight, decay_factor, expand, node_value, rating_target

EDGES = [(1, 2, "answered_by", 0.8), (2, 3, "same_topic", 0.5), (4, 1, "cites", 0.4), (3, 5, "follows", 1.0),
         (9, 1, "follows", 1.0)]


def neighbours(ids):
    s = set(ids)
    return [e for e in EDGES if e[0] in s or e[1] in s]


def test_two_hops_both_directions_with_decay() -> None:
    got = expand({1: 0.9, 9: 0.2}, neighbours, hops=2, hop_decay=0.5, limit=10)
    assert set(got) == {2, 3, 4}                      # 5 is three hops away
    assert got[2].hop == 1 and got[2].path_weight == pytest.approx(0.8 * 0.5) and got[2].relation == "answered_by"
    assert got[4].hop == 1 and got[4].via == 1        # reached against the edge direction
    assert got[3].hop == 2 and got[3].path_weight == pytest.approx(0.8 * 0.5 * 0.5 * 0.5)
    assert got[3].parent_sim == 0.9


def test_hits_are_not_returned_and_zero_hops_is_empty() -> None:
    assert expand({1: 0.9, 2: 0.8}, neighbours, 2, 0.5, 10).keys().isdisjoint({1, 2})
    assert expand({1: 0.9}, neighbours, 0, 0.5, 10) == {}


def test_limit_keeps_the_best_paths() -> None:
    got = expand({1: 0.9}, neighbours, 2, 0.5, 1)
    assert list(got) == [9]                           # follows 1.0 beats answered_by 0.8 and cites 0.4
    got2 = expand({1: 0.9}, neighbours, 2, 0.5, 2)
    assert list(got2) == [9, 2]


def test_best_path_wins() -> None:
    edges = [(1, 3, "cites", 0.2), (2, 3, "cites", 0.9)]
    got = expand({1: 0.9, 2: 0.8}, lambda ids: [e for e in edges if e[0] in ids or e[1] in ids], 1, 0.5, 10)
    assert got[3].via == 2 and got[3].path_weight == pytest.approx(0.45)


def test_decay_and_value() -> None:
    assert decay_factor(0, 30) == 1.0 and decay_factor(-5, 30) == 1.0
    assert decay_factor(30 * 86400, 30) == pytest.approx(0.5)
    assert node_value(0.8, 0, 0, 30) == pytest.approx(0.8)
    assert node_value(0.8, 30 * 86400, 0, 30) == pytest.approx(0.4)
    assert node_value(0.8, 0, 10, 30) == pytest.approx(0.8 * (1 + math.log(11)))
    assert adjust_weight(0.5, 5, 0.2) == pytest.approx(0.7) and adjust_weight(0.1, 1, 0.2) == 0.0
    assert adjust_weight(0.95, 5, 0.2) == 1.0 and adjust_weight(0.5, 3, 0.2) == 0.5
    assert [rating_target(r) for r in (1, 3, 5)] == [0.0, 0.5, 1.0]
