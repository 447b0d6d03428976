-- 0007: the past texts of a node (mem0's history), written when its text is
-- replaced: memory.update (source 'user'), a correction merged into it
-- ('correction'), a writeback merge ('writeback') or a compression rewrite
-- ('compression'). The node keeps its id; the history goes with the node
-- (ON DELETE CASCADE), so a deleted memory leaves no text behind.
CREATE TABLE node_history (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    node_id     INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    text        TEXT NOT NULL,
    source      TEXT NOT NULL CHECK (source IN ('user', 'correction', 'writeback', 'compression')),
    changed_at  REAL NOT NULL
);
CREATE INDEX node_history_node ON node_history(node_id, id);
