-- 0002: the memory graph (nodes, edges, vectors) and its small key/value state.
--
-- Vectors live in a plain table, not a vec0 virtual table: on this machine
-- sqlite-vec's bit KNN costs grow with k (5.5 ms at k=10, 54 ms at k=200 over
-- 100K rows) and vec0 point lookups cost ~0.26 ms each, so the coarse pass runs
-- over an in-RAM copy of the 48-byte codes (1 ms) and rescoring reads the
-- float32 blobs by primary key (~1.3 ms for 200). Both blobs use sqlite-vec's
-- formats (float32 little-endian; bit[384] packed LSB-first as
-- vec_quantize_binary writes it), so vec_distance_cosine(embedding, ?) and
-- vec_distance_hamming(vec_bit(bits), vec_bit(?)) work on them in SQL.
CREATE TABLE nodes (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: sources/exports stay unambiguous
    kind            TEXT NOT NULL CHECK (kind IN ('query', 'qa_pair', 'fact', 'document', 'concept', 'agent_step')),
    -- who vouches for it: user (memory.add), feedback (a correction), model (writeback), learning (compression)
    source          TEXT NOT NULL DEFAULT 'user' CHECK (source IN ('user', 'feedback', 'model', 'learning')),
    text            TEXT NOT NULL,
    metadata        TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
    text_hash       TEXT NOT NULL,                      -- sha256(kind, text): exact dedup
    created_at      REAL NOT NULL,
    last_access_at  REAL NOT NULL,
    access_count    INTEGER NOT NULL DEFAULT 0,
    quality         REAL NOT NULL DEFAULT 0.5 CHECK (quality BETWEEN 0.0 AND 1.0),
    trust           REAL NOT NULL CHECK (trust BETWEEN 0.0 AND 1.0),
    session_id      TEXT,
    request_id      TEXT,                               -- the request that last wrote it (qa_pair, fact)
    parent_id       INTEGER REFERENCES nodes(id) ON DELETE CASCADE,  -- first chunk of a chunked document
    archived        INTEGER NOT NULL DEFAULT 0 CHECK (archived IN (0, 1))
);
CREATE INDEX nodes_hash ON nodes(text_hash);
CREATE INDEX nodes_session ON nodes(session_id, kind, id) WHERE session_id IS NOT NULL;
CREATE INDEX nodes_request ON nodes(request_id) WHERE request_id IS NOT NULL;
CREATE INDEX nodes_parent ON nodes(parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX nodes_kind ON nodes(kind, archived);

CREATE TABLE node_vectors (
    id         INTEGER PRIMARY KEY REFERENCES nodes(id) ON DELETE CASCADE,
    embedding  BLOB NOT NULL CHECK (length(embedding) = 1536),  -- float32[384], unit norm
    bits       BLOB NOT NULL CHECK (length(bits) = 48)          -- bit[384], sign of each dim
);

CREATE TABLE edges (
    src         INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    dst         INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    kind        TEXT NOT NULL CHECK (kind IN ('follows', 'same_topic', 'answered_by', 'cites', 'contains', 'derived')),
    weight      REAL NOT NULL CHECK (weight BETWEEN 0.0 AND 1.0),
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,                          -- last strengthened, weakened or decayed
    PRIMARY KEY (src, dst, kind),
    CHECK (src != dst)
) WITHOUT ROWID;
CREATE INDEX edges_dst ON edges(dst);

-- Every change that affects the searchable vector set appends the node id here,
-- so each process's in-RAM coarse index catches up incrementally (and sees
-- writes made by other processes) with one indexed range read per query.
CREATE TABLE vec_log (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    node_id  INTEGER NOT NULL
);
CREATE TRIGGER node_vectors_log_insert AFTER INSERT ON node_vectors
BEGIN INSERT INTO vec_log(node_id) VALUES (new.id); END;
CREATE TRIGGER node_vectors_log_update AFTER UPDATE ON node_vectors
BEGIN INSERT INTO vec_log(node_id) VALUES (new.id); END;
CREATE TRIGGER node_vectors_log_delete AFTER DELETE ON node_vectors
BEGIN INSERT INTO vec_log(node_id) VALUES (old.id); END;
CREATE TRIGGER nodes_log_archive AFTER UPDATE OF archived ON nodes WHEN old.archived != new.archived
BEGIN INSERT INTO vec_log(node_id) VALUES (new.id); END;

-- Small persistent state of the memory subsystem (ranking parameters, ...).
CREATE TABLE memory_meta (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    updated_at  REAL NOT NULL
);
