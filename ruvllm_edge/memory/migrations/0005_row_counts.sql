-- 0005: row counts kept by triggers, so a metrics scrape reads a few rows
-- instead of counting (or GROUP BY-ing) whole tables on the socket thread.
-- Triggers fire for cascaded deletes too (a document's chunks, a session's
-- turns). Both tables start from a full count of what is already there.

-- Nodes by (kind, archived): one row per combination, kinds as in 0002's CHECK.
CREATE TABLE node_counts (
    kind      TEXT NOT NULL,
    archived  INTEGER NOT NULL,
    n         INTEGER NOT NULL,
    PRIMARY KEY (kind, archived)
) WITHOUT ROWID;
INSERT INTO node_counts(kind, archived, n)
    WITH k(kind) AS (VALUES ('query'), ('qa_pair'), ('fact'), ('document'), ('concept'), ('agent_step')),
         a(archived) AS (VALUES (0), (1))
    SELECT k.kind, a.archived,
           (SELECT count(*) FROM nodes x WHERE x.kind = k.kind AND x.archived = a.archived)
    FROM k, a;

CREATE TRIGGER node_counts_insert AFTER INSERT ON nodes BEGIN
    UPDATE node_counts SET n = n + 1 WHERE kind = new.kind AND archived = new.archived;
END;
CREATE TRIGGER node_counts_delete AFTER DELETE ON nodes BEGIN
    UPDATE node_counts SET n = n - 1 WHERE kind = old.kind AND archived = old.archived;
END;
CREATE TRIGGER node_counts_update AFTER UPDATE OF kind, archived ON nodes
WHEN old.kind != new.kind OR old.archived != new.archived BEGIN
    UPDATE node_counts SET n = n - 1 WHERE kind = old.kind AND archived = old.archived;
    UPDATE node_counts SET n = n + 1 WHERE kind = new.kind AND archived = new.archived;
END;

-- The logs that retention prunes (config [retention]). Retention keeps the
-- newest run of each job; this index finds them without a scan.
CREATE INDEX learning_runs_job ON learning_runs(job, id);

CREATE TABLE table_rows (
    name  TEXT PRIMARY KEY,
    n     INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO table_rows(name, n)
    SELECT 'requests', count(*) FROM requests UNION ALL
    SELECT 'sessions', count(*) FROM sessions UNION ALL
    SELECT 'turns', count(*) FROM turns UNION ALL
    SELECT 'feedback', count(*) FROM feedback UNION ALL
    SELECT 'explorations', count(*) FROM explorations UNION ALL
    SELECT 'learning_runs', count(*) FROM learning_runs;

CREATE TRIGGER table_rows_requests_insert AFTER INSERT ON requests BEGIN
    UPDATE table_rows SET n = n + 1 WHERE name = 'requests'; END;
CREATE TRIGGER table_rows_requests_delete AFTER DELETE ON requests BEGIN
    UPDATE table_rows SET n = n - 1 WHERE name = 'requests'; END;
CREATE TRIGGER table_rows_sessions_insert AFTER INSERT ON sessions BEGIN
    UPDATE table_rows SET n = n + 1 WHERE name = 'sessions'; END;
CREATE TRIGGER table_rows_sessions_delete AFTER DELETE ON sessions BEGIN
    UPDATE table_rows SET n = n - 1 WHERE name = 'sessions'; END;
CREATE TRIGGER table_rows_turns_insert AFTER INSERT ON turns BEGIN
    UPDATE table_rows SET n = n + 1 WHERE name = 'turns'; END;
CREATE TRIGGER table_rows_turns_delete AFTER DELETE ON turns BEGIN
    UPDATE table_rows SET n = n - 1 WHERE name = 'turns'; END;
CREATE TRIGGER table_rows_feedback_insert AFTER INSERT ON feedback BEGIN
    UPDATE table_rows SET n = n + 1 WHERE name = 'feedback'; END;
CREATE TRIGGER table_rows_feedback_delete AFTER DELETE ON feedback BEGIN
    UPDATE table_rows SET n = n - 1 WHERE name = 'feedback'; END;
CREATE TRIGGER table_rows_explorations_insert AFTER INSERT ON explorations BEGIN
    UPDATE table_rows SET n = n + 1 WHERE name = 'explorations'; END;
CREATE TRIGGER table_rows_explorations_delete AFTER DELETE ON explorations BEGIN
    UPDATE table_rows SET n = n - 1 WHERE name = 'explorations'; END;
CREATE TRIGGER table_rows_learning_runs_insert AFTER INSERT ON learning_runs BEGIN
    UPDATE table_rows SET n = n + 1 WHERE name = 'learning_runs'; END;
CREATE TRIGGER table_rows_learning_runs_delete AFTER DELETE ON learning_runs BEGIN
    UPDATE table_rows SET n = n - 1 WHERE name = 'learning_runs'; END;
