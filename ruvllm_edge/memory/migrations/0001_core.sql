-- 0001: sessions, turns, the request log and feedback (the daemon backbone).
CREATE TABLE sessions (
    id            TEXT PRIMARY KEY,
    created_at    REAL NOT NULL,
    last_used_at  REAL NOT NULL,
    closed_at     REAL,
    system_prompt TEXT,
    router_state  BLOB            -- FastGRNN hidden state carried across turns
);

CREATE TABLE turns (
    id          INTEGER PRIMARY KEY,
    session_id  TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    role        TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content     TEXT NOT NULL,
    request_id  TEXT,
    n_tokens    INTEGER,
    created_at  REAL NOT NULL
);
CREATE INDEX turns_session ON turns(session_id, id);

-- One row per answered query: what feedback and learning refer back to.
CREATE TABLE requests (
    id                TEXT PRIMARY KEY,
    session_id        TEXT,
    created_at        REAL NOT NULL,
    query             TEXT NOT NULL,
    answer            TEXT NOT NULL,
    sources           TEXT NOT NULL DEFAULT '[]',   -- JSON [{id, kind, relevance}]
    routing           TEXT NOT NULL DEFAULT '{}',   -- JSON routing_info
    features          BLOB,                         -- float32 router features
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    latency_ms        REAL NOT NULL DEFAULT 0,
    truncated         INTEGER NOT NULL DEFAULT 0,
    status            TEXT NOT NULL DEFAULT 'ok'
);
CREATE INDEX requests_created ON requests(created_at);
CREATE INDEX requests_session ON requests(session_id);

CREATE TABLE feedback (
    id          INTEGER PRIMARY KEY,
    request_id  TEXT NOT NULL REFERENCES requests(id),
    rating      INTEGER CHECK (rating BETWEEN 1 AND 5),
    correction  TEXT,
    created_at  REAL NOT NULL,
    applied_at  REAL                                -- set once learning consumed it
);
CREATE INDEX feedback_request ON feedback(request_id);
