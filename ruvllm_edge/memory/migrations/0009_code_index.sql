-- Start-up loads every sign code into RAM (index_sync.reload). The 48-byte
-- codes sit in node_vectors rows beside their 1,536-byte float vectors, so
-- that scan read the whole table (1.6 GB at 1M nodes, seconds even from the
-- page cache), and the join on nodes read the node rows too. A covering index
-- on (id, bits) is a ~60-byte-per-row copy SQLite scans instead (~3% of the
-- file), and a partial index makes the archived set a tiny read.
CREATE INDEX node_vectors_codes ON node_vectors(id, bits);
CREATE INDEX nodes_archived ON nodes(id) WHERE archived = 1;
