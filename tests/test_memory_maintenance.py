"""Keeping the file bounded: eviction order and protection, edge decay, retention of the logs."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pytest

from memkit import DAY, make_store as make
from ruvllm_edge.config import RetentionConfig
from ruvllm_edge.embedding import Embedder
from ruvllm_edge.memory import graph
from ruvllm_edge.memory.db import Database
from ruvllm_edge.memory.maintenance import apply_retention, table_rows, table_sizes
from ruvllm_edge.router.features import N_FEATURES


def test_eviction_protects_facts_and_documents(db: Database, emb: Embedder) -> None:
    store = make(db, emb, max_nodes=100, evict_low_water_fraction=0.9)
    try:
        rng = np.random.default_rng(0)
        v = rng.standard_normal((132, 384)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        docs = store.add_embedded([f"doc {i}" for i in range(30)], v[:30], kind="document")
        facts = store.add_embedded([f"fact {i}" for i in range(10)], v[30:40], kind="fact")
        corr = store.add_embedded(["correction"], v[40:41], kind="fact", source="feedback")
        qas = store.add_embedded([f"qa {i}" for i in range(80)], v[41:121], kind="qa_pair", quality=0.8)
        # writes past capacity evict down to the low-water mark (90 nodes)
        assert store.node_count() == 90
        alive = {r[0] for r in db.read("SELECT id FROM nodes")}
        assert set(docs) | set(facts) | set(corr) <= alive
        # the order is quality x recency x use: a low-quality, stale, unused qa goes first
        qa_alive = sorted(set(qas) & alive)
        now = time.time()
        with db.atomic() as conn:
            conn.execute("UPDATE nodes SET quality = 0.1 WHERE id = ?", (qa_alive[-1],))
            conn.execute("UPDATE nodes SET last_access_at = ? WHERE id = ?", (now - 400 * DAY, qa_alive[-2]))
            conn.execute("UPDATE nodes SET access_count = 50 WHERE id = ?", (qa_alive[0],))
        store.add_embedded([f"more {i}" for i in range(11)], v[121:132], kind="qa_pair", quality=0.8)
        assert store.node_count() == 90
        alive = {r[0] for r in db.read("SELECT id FROM nodes")}
        assert qa_alive[-1] not in alive and qa_alive[-2] not in alive and qa_alive[0] in alive
        # only protected nodes left: nothing more can go
        store2 = make(db, emb, max_nodes=45, evict_low_water_fraction=0.5)
        assert store2.evict() == 90 - 41
        assert set(docs) | set(facts) | set(corr) == {r[0] for r in db.read("SELECT id FROM nodes")}
        store2.close()
    finally:
        store.close()


def test_node_value_sql_equals_python(db: Database) -> None:
    now = 1_000_000.0
    rows = [(0.9, now - 3 * DAY, 0), (0.5, now, 7), (0.2, now - 90 * DAY, 100)]
    sql = graph.NODE_VALUE_SQL
    for q, last, n in rows:
        got = db.read(f"SELECT {sql} FROM (SELECT :q AS quality, :last AS last_access_at, :n AS access_count)",
                      {"now": now, "half_life_days": 30.0, "q": q, "last": last, "n": n})
        assert got.fetchone()[0] == pytest.approx(graph.node_value(q, now - last, n, 30.0))


def test_edge_decay_drops_weak_learned_edges_only(db: Database, emb: Embedder) -> None:
    store = make(db, emb, edge_half_life_days=10.0, edge_min_weight=0.1)
    try:
        a, = store.add("first node")
        b, = store.add("second node")
        c, = store.add("third node")
        t0 = 1_000_000.0
        with db.atomic() as conn:
            for src, dst, kind, w in [(a, b, "same_topic", 0.8), (b, c, "answered_by", 0.3),
                                      (a, c, "contains", 0.3), (c, a, "derived", 0.3)]:
                conn.execute("INSERT INTO edges VALUES (?, ?, ?, ?, ?, ?)", (src, dst, kind, w, t0, t0))
        assert store.decay_edges(now=t0 + 20 * DAY) == 1          # 0.3 -> 0.075 < 0.1: dropped
        w = dict(((s, d, k), w) for s, d, k, w in db.read("SELECT src, dst, kind, weight FROM edges"))
        assert w[(a, b, "same_topic")] == pytest.approx(0.2)       # two half-lives
        assert w[(a, c, "contains")] == 0.3 and w[(c, a, "derived")] == 0.3   # structure does not decay
        assert (b, c, "answered_by") not in w
        # decay is memoryless: two runs equal one run over the same span
        store.decay_edges(now=t0 + 30 * DAY)
        w2 = db.read("SELECT weight FROM edges WHERE kind = 'same_topic'").fetchone()[0]
        assert w2 == pytest.approx(0.1)
    finally:
        store.close()


# -- retention of the logs: a simulated year ---------------------------------

QUERIES_PER_DAY = 200
SESSIONS_PER_DAY = 4            # 30 queries each; the rest are one-shot
EXPLORATIONS_PER_DAY = 400      # explorer: 8 per idle run
RUNS_PER_DAY = 300              # 4 idle jobs, one record each per run
YEAR = 365
# Bytes of the six logs after a year of the traffic above, under the defaults:
# ~90 days of requests and turns, a year of feedback, a month of runs.
LOG_BOUND_BYTES = 100 * 1_048_576
FILE_BOUND_BYTES = 200 * 1_048_576


def _text(n: int, seed: int) -> str:
    words = ("the boiler garden north gate code cat milo fed october service key blue jar spare "
             "tuesday bin recycling glass green lighthouse keeper harbour pier rebuilt").split()
    rng = np.random.default_rng(seed)
    return " ".join(words[i] for i in rng.integers(0, len(words), n // 6 + 1))[:n]


ANSWER = _text(520, 1)                  # ~130 tokens
QUERY = _text(80, 2)
MEMORY_PROMPT = _text(760, 3)           # the user turn with its memory block
SOURCES = json.dumps([{"id": 1000 + i, "kind": "fact", "relevance": 0.71} for i in range(4)])
ROUTING = json.dumps({"context_class": 4, "mode": "memory", "temperature": 0.2, "top_p": 0.9,
                      "confidence": 0.83, "fallback": False, "model": "smollm2-135m-instruct-q4_1",
                      "ms": {"route": 0.2, "retrieve": 4.1, "embed": 9.3}})
FEATURES = np.full(N_FEATURES, 0.5, np.float32).tobytes()
REPORT = json.dumps({"samples": 812, "steps": 400, "loss": 0.4132, "holdout_acc": 0.81,
                     "accepted": True, "explored": 8, "judged": 8, "edges_changed": 14, "evicted": 0,
                     "concepts": 0, "skipped": {}, "archived": 0})


def rid(day: int, i: int) -> str:
    """The request id of query i of a day: 32 characters, like a uuid4 hex."""
    return f"{day:03d}-{i:03d}-{'0' * 24}"


def simulate_day(db: Database, day: int, t0: float, long_session: str) -> None:
    """One day of traffic at realistic sizes, written as the daemon writes it."""
    base = t0 + day * DAY
    ts = [base + 3600 * 8 + i * 240.0 for i in range(QUERIES_PER_DAY)]        # 8:00 onwards, every 4 min
    rids = [rid(day, i) for i in range(QUERIES_PER_DAY)]
    sessions = [f"s{day:03d}-{j}" for j in range(SESSIONS_PER_DAY)]
    sid = [sessions[i // 30] if i // 30 < SESSIONS_PER_DAY else None for i in range(QUERIES_PER_DAY)]
    sid[0] = long_session                                                   # one session used every day
    with db.atomic() as c:
        c.executemany("INSERT INTO sessions(id, created_at, last_used_at) VALUES (?, ?, ?)",
                      [(s, ts[j * 30], ts[j * 30 + 29]) for j, s in enumerate(sessions)])
        c.execute("UPDATE sessions SET last_used_at = ? WHERE id = ?", (ts[0], long_session))
        c.executemany("INSERT INTO requests(id, session_id, created_at, query, answer, sources, routing, features, "
                      "prompt_tokens, completion_tokens, latency_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                      [(r, s, t, QUERY, ANSWER, SOURCES, ROUTING, FEATURES, 420, 130, 2100.0)
                       for r, s, t in zip(rids, sid, ts)])
        turns = []
        for r, s, t in zip(rids, sid, ts):
            if s is not None:
                turns.append((s, "user", QUERY, MEMORY_PROMPT, r, t))
                turns.append((s, "assistant", ANSWER, None, r, t))
        c.executemany("INSERT INTO turns(session_id, role, content, prompt, request_id, created_at) "
                      "VALUES (?,?,?,?,?,?)", turns)
        c.executemany("INSERT INTO feedback(request_id, rating, correction, created_at, applied_at) "
                      "VALUES (?, ?, ?, ?, ?)",
                      [(rids[i], 2, "The code for the north gate is 7341.", ts[i] + 60, ts[i] + 61)
                       for i in range(0, QUERIES_PER_DAY, 40)])
        c.executemany("INSERT INTO explorations(request_id, context_class, mode_class, temperature, top_p, "
                      "quality, latency_s, completion_tokens, utility, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                      [(rids[i % QUERIES_PER_DAY], 2, 1, 0.3, 0.9, 0.7, 3.1, 90, 0.55, base + 79_200 + i)
                       for i in range(EXPLORATIONS_PER_DAY)])
        c.executemany("INSERT INTO learning_runs(job, started_at, duration_s, status, report) VALUES (?,?,?,?,?)",
                      [(("router", "edge_decay", "eviction", "compression")[i % 4], base + 79_200 + 30 * i,
                        2.5, "ok", REPORT) for i in range(RUNS_PER_DAY)])
    return rids


@pytest.mark.slow                     # ~25 s: a year of rows at real sizes
def test_a_year_of_traffic_stays_bounded_and_keeps_what_is_needed(tmp_path: Path) -> None:
    db = Database(tmp_path / "memory.db")
    policy = RetentionConfig()
    now = time.time()
    t0 = now - YEAR * DAY
    try:
        # The replay reservoir holds samples from the whole year (ids are known ahead: see simulate_day).
        rng = np.random.default_rng(0)
        replay = sorted({rid(int(d), int(i)) for d, i in zip(rng.integers(0, YEAR, 300),
                                                              rng.integers(0, QUERIES_PER_DAY, 300))}
                        | {rid(5, 0)})                                 # rated (every 40th query is)
        with db.atomic() as c:
            c.execute("INSERT INTO sessions(id, created_at, last_used_at) VALUES ('daily', ?, ?)", (t0, t0))
            c.executemany("INSERT INTO replay(slot, request_id, features, context_class, mode_class, temperature, "
                          "top_p, created_at) VALUES (?, ?, ?, 2, 1, 0.3, 0.9, 0)",
                          [(i, r, FEATURES) for i, r in enumerate(replay)])
        unapplied = rid(20, 7)
        for day in range(YEAR):
            simulate_day(db, day, t0, "daily")
            if day == 20:        # stored but never applied (the outbox will): it and its request stay
                with db.atomic() as c:
                    c.execute("INSERT INTO feedback(request_id, rating, created_at) VALUES (?, 1, ?)",
                              (unapplied, t0 + 20 * DAY))
                    c.execute("INSERT INTO learning_runs(job, started_at, duration_s, status) "
                              "VALUES ('rare_job', ?, 1.0, 'ok')", (t0 + 20 * DAY,))
            if day % 30 == 29:   # the idle job runs far more often; monthly is the worst case here
                apply_retention(db, policy, now=t0 + (day + 1) * DAY)
        report = apply_retention(db, policy, now=now)
        assert report["requests"]["deleted"] > 0 and not report.get("stopped")

        # within the bound: rows, live bytes and the file
        rows = table_rows(db)
        for table in ("requests", "sessions", "turns", "feedback", "explorations", "learning_runs"):
            assert rows[table] == db.read(f"SELECT count(*) FROM {table}").fetchone()[0]
            assert rows[table] <= getattr(policy, f"{table}_max_rows"), table
        sizes = table_sizes(db)
        logs = sum(sizes[t]["bytes"] for t in ("requests", "sessions", "turns", "feedback", "explorations",
                                                "learning_runs"))
        assert logs <= LOG_BOUND_BYTES, sizes
        assert db.path.stat().st_size <= FILE_BOUND_BYTES
        # nothing past its age but what must stay
        cut = {t: now - getattr(policy, f"{t}_max_age_days") * DAY for t in ("requests", "turns", "feedback",
                                                                            "explorations", "learning_runs")}
        old_requests = {r for (r,) in db.read("SELECT id FROM requests WHERE created_at < ?", (cut["requests"],))}
        assert old_requests == (set(replay) & old_requests) | {unapplied}
        assert db.read("SELECT count(*) FROM feedback WHERE applied_at IS NULL").fetchone()[0] == 1
        assert db.read("SELECT count(*) FROM turns WHERE created_at < ?", (cut["turns"],)).fetchone()[0] == 0
        assert db.read("SELECT count(*) FROM explorations WHERE created_at < ?",
                       (cut["explorations"],)).fetchone()[0] == 0
        assert {j for (j,) in db.read("SELECT job FROM learning_runs WHERE started_at < ?",
                                      (cut["learning_runs"],))} == {"rare_job"}
        old_fb = db.read("SELECT count(*) FROM feedback WHERE created_at < ? AND applied_at IS NOT NULL "
                         "AND request_id NOT IN (SELECT request_id FROM replay)", (cut["feedback"],)).fetchone()[0]
        assert old_fb == 0
        # recent rows are all kept
        since = t0 + (YEAR - 80) * DAY
        assert db.read("SELECT count(*) FROM requests WHERE created_at >= ?", (since,)).fetchone()[0] \
            == 80 * QUERIES_PER_DAY
        assert db.read("SELECT count(*) FROM turns WHERE created_at >= ?", (since,)).fetchone()[0] \
            == 80 * 2 * SESSIONS_PER_DAY * 30
        assert db.read("SELECT count(*) FROM explorations WHERE created_at >= ?", (since,)).fetchone()[0] \
            == 80 * EXPLORATIONS_PER_DAY
        assert db.read("SELECT count(*) FROM sessions WHERE id = 'daily'").fetchone()[0] == 1
        # references hold: no orphan turns or feedback, replay requests present
        assert db.read("PRAGMA foreign_key_check").fetchall() == []
        assert db.read("SELECT count(*) FROM replay WHERE request_id NOT IN (SELECT id FROM requests)"
                       ).fetchone()[0] == 0
        assert db.read("SELECT count(*) FROM feedback WHERE request_id = ?", (rid(5, 0),)).fetchone()[0] == 1
        again = apply_retention(db, policy, now=now)                        # idempotent
        assert all(v["deleted"] == 0 for k, v in again.items() if isinstance(v, dict))
    finally:
        db.close()


def test_row_caps_prune_oldest_first_and_a_stop_request_is_honoured(db: Database) -> None:
    now = time.time()
    with db.atomic() as c:
        c.executemany("INSERT INTO explorations(request_id, context_class, mode_class, temperature, top_p, "
                      "quality, latency_s, completion_tokens, utility, created_at) VALUES ('r',0,0,0,0,0,0,0,0,?)",
                      [(now - i,) for i in range(1000)])                  # newest first by time
        c.executemany("INSERT INTO sessions(id, created_at, last_used_at) VALUES (?, ?, ?)",
                      [(f"s{i}", now - 1000, now - (i if i != 3 else 0)) for i in range(20)])
    capped = dataclasses.replace(RetentionConfig(), explorations_max_rows=100, sessions_max_rows=10, batch_rows=50)
    stops = iter([False, False, True])
    first = apply_retention(db, capped, now=now, should_stop=lambda: next(stops, True))
    assert first["stopped"] and first["sessions"]["deleted"] == 10
    assert {s for (s,) in db.read("SELECT id FROM sessions")} == {f"s{i}" for i in range(10)}
    apply_retention(db, capped, now=now)
    assert table_rows(db)["explorations"] == 100
    # the row cap goes by insertion order: the first 900 inserted are gone
    assert db.read("SELECT min(id) FROM explorations").fetchone()[0] == 901
    off = dataclasses.replace(capped, enabled=False)
    assert apply_retention(db, off) == {"enabled": False}
