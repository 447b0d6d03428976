-- 0006: a full-text (BM25) index of every node's text, in the same file.
--
-- Why: dense similarity alone misses the words a question shares with a
-- record (LoCoMo turn recall@10: 0.52 dense against 0.62 BM25 on the same
-- turns, benchmarks/results/bench_locomo.json), and the answer policy needs
-- to know how many records contain a word (fts5vocab) to tell a known thing
-- from an unknown one. FTS5 with an external content table stores only the
-- index; the text stays in nodes. Triggers keep it in step inside the same
-- transaction as every insert, update of text and delete (cascades included).
-- Porter stemming: "planted" matches "plant". Archived nodes stay indexed and
-- are filtered out at query time, so archiving never touches the index.
CREATE VIRTUAL TABLE nodes_fts USING fts5(
    text,
    content = 'nodes',
    content_rowid = 'id',
    tokenize = 'porter unicode61 remove_diacritics 2'
);
INSERT INTO nodes_fts(nodes_fts) VALUES ('rebuild');

CREATE TRIGGER nodes_fts_insert AFTER INSERT ON nodes BEGIN
    INSERT INTO nodes_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER nodes_fts_delete AFTER DELETE ON nodes BEGIN
    INSERT INTO nodes_fts(nodes_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
CREATE TRIGGER nodes_fts_update AFTER UPDATE OF text ON nodes BEGIN
    INSERT INTO nodes_fts(nodes_fts, rowid, text) VALUES ('delete', old.id, old.text);
    INSERT INTO nodes_fts(rowid, text) VALUES (new.id, new.text);
END;

-- Document frequency of each indexed term (after stemming), for idf.
CREATE VIRTUAL TABLE nodes_fts_vocab USING fts5vocab(nodes_fts, 'row');
