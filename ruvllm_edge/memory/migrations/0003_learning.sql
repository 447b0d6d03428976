-- 0003: what the router's learning loop (loop B) keeps in the one SQLite file.

-- The replay buffer: a reservoir sample of past requests as the router saw them.
-- slot is the reservoir index (0 .. capacity-1); a new sample either fills the
-- next free slot or replaces a random one (kept with probability capacity / t).
CREATE TABLE replay (
    slot                INTEGER PRIMARY KEY,
    request_id          TEXT NOT NULL UNIQUE,
    session_id          TEXT,
    turn_index          INTEGER NOT NULL DEFAULT 0,
    features            BLOB NOT NULL,                  -- float32 router features
    context_class       INTEGER NOT NULL,               -- the decision taken
    mode_class          INTEGER NOT NULL,
    temperature         REAL NOT NULL,
    top_p               REAL NOT NULL,
    quality             REAL,                           -- 0..1, NULL until judged/rated
    latency_s           REAL NOT NULL DEFAULT 0,
    completion_tokens   INTEGER NOT NULL DEFAULT 0,
    utility             REAL,
    target_context      INTEGER,                        -- best decision, once known
    target_mode         INTEGER,
    target_temperature  REAL,
    target_top_p        REAL,
    label_source        TEXT NOT NULL DEFAULT 'logged'
                        CHECK (label_source IN ('logged', 'explored', 'feedback', 'curriculum')),
    created_at          REAL NOT NULL,
    explored_at         REAL                            -- last counterfactual run
);
CREATE INDEX replay_session ON replay(session_id, turn_index);
CREATE INDEX replay_explored ON replay(explored_at);

-- Small counters that must survive restarts (e.g. replay_seen: t of the reservoir).
CREATE TABLE learning_state (
    key    TEXT PRIMARY KEY,
    value  REAL NOT NULL
);

-- Counterfactual outcomes: each alternative decision tried for a past query.
CREATE TABLE explorations (
    id                 INTEGER PRIMARY KEY,
    request_id         TEXT NOT NULL,
    context_class      INTEGER NOT NULL,
    mode_class         INTEGER NOT NULL,
    temperature        REAL NOT NULL,
    top_p              REAL NOT NULL,
    quality            REAL NOT NULL,
    latency_s          REAL NOT NULL,
    completion_tokens  INTEGER NOT NULL,
    utility            REAL NOT NULL,
    created_at         REAL NOT NULL
);
CREATE INDEX explorations_request ON explorations(request_id);

-- One row per idle-time job run: what ran, how long, and what came of it.
CREATE TABLE learning_runs (
    id           INTEGER PRIMARY KEY,
    job          TEXT NOT NULL,
    started_at   REAL NOT NULL,
    duration_s   REAL NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('ok', 'preempted', 'failed', 'skipped')),
    report       TEXT NOT NULL DEFAULT '{}'             -- JSON
);
CREATE INDEX learning_runs_started ON learning_runs(started_at);
