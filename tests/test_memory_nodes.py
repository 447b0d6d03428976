"""Node CRUD on a real SQLite file with the real embedder: add, chunking, dedup, delete, export,
and the counters triggers keep (migration 0005)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from memkit import make_store as make, random_unit
from ruvllm_edge.embedding import Embedder
from ruvllm_edge.errors import BadRequest, StorageError, TooLarge
from ruvllm_edge.memory import db as dbmod, maintenance, nodes
from ruvllm_edge.memory.db import Database
from ruvllm_edge.memory.types import NODE_KINDS


def test_migration_creates_schema(db: Database) -> None:
    assert db.version() >= 2
    names = {r[0] for r in db.read("SELECT name FROM sqlite_master")}
    assert {"nodes", "edges", "node_vectors", "vec_log", "memory_meta"} <= names
    with pytest.raises(Exception, match="CHECK"):
        with db.atomic() as conn:
            conn.execute("INSERT INTO nodes(kind, text, text_hash, created_at, last_access_at, trust) "
                         "VALUES ('nonsense', 't', 'h', 0, 0, 0.5)")


def test_add_get_delete_round_trip(db: Database, emb: Embedder) -> None:
    store = make(db, emb)
    try:
        [nid] = store.add("Ada Lovelace wrote the first published algorithm.", kind="fact",
                          metadata={"origin": "test"}, session_id="s1")
        node = store.get(nid)
        assert node is not None
        assert node["kind"] == "fact" and node["source"] == "user" and node["trust"] == 0.9
        assert node["metadata"] == {"origin": "test"} and node["session_id"] == "s1"
        assert node["archived"] is False and node["edges"] == []
        hits = store.search("Who wrote the first algorithm?", k=3)
        assert hits[0]["id"] == nid and hits[0]["preview"].startswith("Ada")
        assert store.delete(nid) is True
        assert store.get(nid) is None and store.delete(nid) is False
        assert db.read("SELECT count(*) FROM node_vectors").fetchone()[0] == 0
        assert store.search("Who wrote the first algorithm?", k=3) == []
    finally:
        store.close()


def test_exact_duplicates_are_not_inserted_twice(db: Database, emb: Embedder) -> None:
    store = make(db, emb)
    try:
        a = store.add("The boiler is serviced every October.")
        b = store.add("  The boiler is serviced every October.  ")
        c = store.add("The boiler is serviced every October.", kind="fact")   # other kind: new node
        assert a == b and c != a
        assert store.stats()["nodes"] == 2
    finally:
        store.close()


def test_long_text_is_chunked_under_a_parent_with_edges(db: Database, emb: Embedder) -> None:
    store = make(db, emb, chunk_tokens=32)
    try:
        long_line = " ".join(f"paragraph {i} talks about topic number {i} in some detail here" for i in range(12))
        ids = store.add(long_line, metadata={"title": "doc"})
        parent, children = ids[0], ids[1:]
        assert len(children) > 3
        texts = [store.get(i)["text"] for i in children]
        assert all(emb.count_tokens(t) <= 32 for t in texts)
        assert " ".join(texts).split() == long_line.split()                 # nothing lost, order kept
        top = store.get(parent)
        assert top["text"] == long_line and top["parent_id"] is None
        assert top["metadata"] == {"title": "doc", "parts": len(children)} and top["chunk_ids"] == children
        for i, c in enumerate(children):
            assert store.get(c)["parent_id"] == parent
            assert store.get(c)["metadata"] == {"title": "doc", "parent_id": parent, "part": i}
        edges = {(e["src"], e["dst"], e["kind"]) for e in top["edges"]}
        assert {(parent, c, "contains") for c in children} <= edges
        follows = {(e["src"], e["dst"]) for e in store.get(children[1])["edges"] if e["kind"] == "follows"}
        assert follows == {(children[0], children[1]), (children[1], children[2])}
        assert store.add(long_line, metadata={"title": "doc"}) == ids      # idempotent
        # deleting a child removes only it; deleting the parent removes the whole note
        assert store.delete(children[1]) and store.get(children[0]) is not None
        assert store.delete(parent)
        assert store.stats()["nodes"] == 0
        assert db.read("SELECT count(*) FROM edges").fetchone()[0] == 0
        assert db.read("SELECT count(*) FROM node_vectors").fetchone()[0] == 0
    finally:
        store.close()


NOTE = """Our house notes
The front door code is 4821.
Wifi password: tangerine-42. The guest network is HarborGuest.

Dr. Okafor's surgery number is 0161 555 0192.
Bins go out at 7.30 on Tuesday mornings."""
NOTE_UNITS = ["Our house notes", "The front door code is 4821.", "Wifi password: tangerine-42.",
              "The guest network is HarborGuest.", "Dr. Okafor's surgery number is 0161 555 0192.",
              "Bins go out at 7.30 on Tuesday mornings."]


def test_a_note_becomes_a_parent_and_one_child_per_sentence(db: Database, emb: Embedder) -> None:
    store = make(db, emb)
    try:
        ids = store.add(NOTE, metadata={"file": "house.txt"})
        parent, children = ids[0], ids[1:]
        assert [store.get(c)["text"] for c in children] == NOTE_UNITS
        top = store.get(parent)
        assert top["text"] == NOTE and top["metadata"] == {"file": "house.txt", "parts": 6}
        vecs = store.vectors(ids)
        assert np.allclose(vecs[0], emb.embed(NOTE), atol=1e-6)            # the parent: the whole text
        assert np.allclose(vecs[2], emb.embed(NOTE_UNITS[1]), atol=1e-6)
        # the sentence is much closer to a one-fact question than the whole note
        q = emb.embed("What is the wifi password?")
        assert float(vecs[3] @ q) > float(vecs[0] @ q)
        # a unit already stored on its own is reused; another note's child is not
        alone, = store.add("Bins go out at 7.30 on Tuesday mornings.")
        assert alone != children[-1] and store.get(alone)["parent_id"] is None
        other = store.add("Bins go out at 7.30 on Tuesday mornings.\nThe shed key is on the hook.")
        assert other[1] == alone and other[2] not in children
        assert store.delete(parent)
        assert all(store.get(c) is None for c in children) and store.get(alone) is not None
    finally:
        store.close()


def test_add_many_one_batch_one_transaction_and_link(db: Database, emb: Embedder,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    store = make(db, emb)
    try:
        batches: list[int] = []
        real = emb.embed_batch
        monkeypatch.setattr(emb, "embed_batch", lambda texts: batches.append(len(texts)) or real(texts))
        commits: list[int] = []
        real_atomic = db.atomic
        monkeypatch.setattr(db, "atomic", lambda: commits.append(1) or real_atomic())
        items = [{"text": f"Turn {i}: we talked about topic {i}."} for i in range(5)]
        items.append({"text": "A two line turn.\nIts second line.", "kind": "fact", "metadata": {"s": "1"}})
        items.append({"text": "Turn 0: we talked about topic 0."})             # a duplicate: reused
        ids = store.add_many(items, link=True, session_id="conv")
        assert batches == [5 + 3 + 1] and commits == [1]         # one embedding batch, one transaction
        monkeypatch.undo()
        assert [len(x) for x in ids] == [1, 1, 1, 1, 1, 3, 1] and ids[6] == ids[0]
        two = store.get(ids[5][0])
        assert two["kind"] == "fact" and two["metadata"] == {"s": "1", "parts": 2}
        assert store.get(ids[5][1])["session_id"] == "conv"
        follows = {(s, d) for s, d in db.read("SELECT src, dst FROM edges WHERE kind = 'follows'")}
        chain = [ids[0][0], ids[1][0], ids[2][0], ids[3][0], ids[4][0], ids[5][1]]
        assert {(a, b) for a, b in zip(chain, chain[1:])} <= follows
        assert (ids[5][1], ids[5][2]) in follows and (ids[5][2], ids[0][0]) in follows
        # one bad item: nothing at all is written
        n = store.stats()["nodes"]
        with pytest.raises(BadRequest, match=r"items\[1\]"):
            store.add_many([{"text": "fine text"}, {"text": "  "}])
        with pytest.raises(BadRequest, match="reserved"):
            store.add_many([{"text": "x", "metadata": {"parts": 2}}])
        with pytest.raises(BadRequest, match="at most"):
            store.add_many([{"text": f"t{i}"} for i in range(nodes.MAX_ITEMS + 1)])
        assert store.stats()["nodes"] == n
    finally:
        store.close()


def test_update_keeps_the_id_reindexes_and_records_history(db: Database, emb: Embedder) -> None:
    store = make(db, emb)
    try:
        nid, = store.add("The garage code is 1234.", kind="fact", metadata={"room": "garage"})
        other, = store.add("The cellar light switch is behind the door.")
        res = store.update(nid, "The garage code is 9876.")
        assert res == {"id": nid, "ids": [nid], "text_changed": True}
        node = store.get(nid)
        assert node["text"] == "The garage code is 9876." and node["metadata"] == {"room": "garage"}
        assert np.allclose(store.vectors([nid])[0], emb.embed("The garage code is 9876."), atol=1e-6)
        assert store.search("garage code 9876", k=1)[0]["id"] == nid       # the index mirror saw it
        fts = [r[0] for r in db.read("SELECT rowid FROM nodes_fts WHERE nodes_fts MATCH '9876'")]
        assert fts == [nid]
        assert not list(db.read("SELECT rowid FROM nodes_fts WHERE nodes_fts MATCH '1234'"))
        # the dedup hash follows the text: adding the new text again finds this node
        assert store.add("The garage code is 9876.", kind="fact") == [nid]
        store.update(nid, "The garage code is 5555.", metadata={"room": "garage", "by": "me"})
        hist = store.history(nid)
        assert [(h["text"], h["source"]) for h in hist] == [("The garage code is 1234.", "user"),
                                                          ("The garage code is 9876.", "user")]
        assert hist[0]["changed_at"] <= hist[1]["changed_at"]
        assert store.get(nid)["metadata"] == {"room": "garage", "by": "me"}
        assert store.update(nid, "The garage code is 5555.")["text_changed"] is False
        assert len(store.history(nid)) == 2 and store.history(other) == []
        assert store.history(99_999) is None
        from ruvllm_edge.errors import NotFound
        with pytest.raises(NotFound):
            store.update(99_999, "nothing")
        with pytest.raises(BadRequest, match="reserved"):
            store.update(nid, "x", metadata={"part": 1})
        store.delete(nid)                                                   # history goes with the node
        assert db.read("SELECT count(*) FROM node_history WHERE node_id = ?", (nid,)).fetchone()[0] == 0
    finally:
        store.close()


def test_update_resplits_a_parent_and_patches_a_parent_from_a_child(db: Database, emb: Embedder) -> None:
    store = make(db, emb)
    try:
        ids = store.add("Kitchen\nThe kettle is descaled monthly.\nThe oven is gas.")
        parent, children = ids[0], ids[1:]
        # a child: stays one node, its parent's text is patched and re-embedded
        res = store.update(children[2], "The oven is electric.")
        assert res["ids"] == [children[2]]
        assert store.get(parent)["text"] == "Kitchen\nThe kettle is descaled monthly.\nThe oven is electric."
        assert np.allclose(store.vectors([parent])[0], emb.embed(store.get(parent)["text"]), atol=1e-6)
        assert store.get(children[2])["metadata"] == {"parent_id": parent, "part": 2}
        assert [h["text"] for h in store.history(parent)] == [
            "Kitchen\nThe kettle is descaled monthly.\nThe oven is gas."]
        # the parent: split again, old children replaced
        res = store.update(parent, "Kitchen\nThe fridge is new.\nThe oven is electric.\nThe sink drips.")
        new_children = res["ids"][1:]
        assert res["id"] == parent and len(new_children) == 4 and not set(new_children) & set(children)
        assert all(store.get(c) is None for c in children)
        assert store.get(parent)["metadata"] == {"parts": 4} and store.get(parent)["chunk_ids"] == new_children
        assert [store.get(c)["text"] for c in new_children] == ["Kitchen", "The fridge is new.",
                                                                "The oven is electric.", "The sink drips."]
        # a parent updated to one sentence becomes a plain node
        assert store.update(parent, "The kitchen is being rebuilt.")["ids"] == [parent]
        assert store.get(parent)["metadata"] == {} and store.get(parent)["chunk_ids"] == []
        assert store.stats()["nodes"] == 1 and len(store.history(parent)) == 3
        # a plain node updated to several lines becomes a parent
        assert len(store.update(parent, "Kitchen\nIt is new.")["ids"]) == 3

    finally:
        store.close()


def test_record_history_checks_its_source(db: Database, emb: Embedder) -> None:
    store = make(db, emb)
    try:
        nid, = store.add("A fact that will be merged.")
        with db.atomic() as conn:
            for src in nodes.HISTORY_SOURCES:
                nodes.record_history(conn, nid, f"old {src}", src, time.time())
        assert [h["source"] for h in store.history(nid)] == list(nodes.HISTORY_SOURCES)
        with pytest.raises(BadRequest, match="source"):
            with db.atomic() as conn:
                nodes.record_history(conn, nid, "old", "model", time.time())
    finally:
        store.close()


def test_delete_cascades_edges_and_vectors(db: Database, emb: Embedder) -> None:
    store = make(db, emb)
    try:
        a, = store.add("alpha node text")
        b, = store.add("beta node text")
        with db.atomic() as conn:
            nodes.upsert_edge(conn, a, b, "cites", 0.7, time.time())
        assert store.get(b)["edges"][0]["src"] == a
        store.delete(a)
        assert store.get(b)["edges"] == []
        assert db.read("SELECT count(*) FROM node_vectors WHERE id = ?", (a,)).fetchone()[0] == 0
        with db.atomic() as conn:           # an edge to a vanished node is skipped, not an FK error
            nodes.upsert_edge(conn, a, b, "cites", 0.7, time.time())
        assert store.get(b)["edges"] == []
    finally:
        store.close()


def test_bad_input_is_rejected_clearly(db: Database, emb: Embedder) -> None:
    store = make(db, emb, max_text_bytes=100)
    try:
        with pytest.raises(BadRequest):
            store.add("   ")
        with pytest.raises(BadRequest, match="kind"):
            store.add("text", kind="poem")
        with pytest.raises(TooLarge):
            store.add("x" * 101)
        with pytest.raises(BadRequest, match="JSON"):
            store.add("text", metadata={"f": object()})
        with pytest.raises(BadRequest):
            store.add_embedded(["t"], np.ones((1, 384), np.float32))          # not unit norm
        assert store.stats()["nodes"] == 0
    finally:
        store.close()


def test_export_pages_through_everything(db: Database, emb: Embedder) -> None:
    store = make(db, emb)
    try:
        rng = np.random.default_rng(1)
        v = rng.standard_normal((25, 384)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        ids = store.add_embedded([f"n{i}" for i in range(25)], v)
        store.archive(ids[:5])
        seen, after = [], 0
        while True:
            rows, after = store.export(after_id=after, limit=10)
            seen += rows
            if after == 0:
                break
        assert [r["id"] for r in seen] == ids
        assert all(r["archived"] for r in seen[:5]) and json.dumps(seen)   # JSON-ready
        rows, nxt = store.export(limit=100, include_archived=False)
        assert [r["id"] for r in rows] == ids[5:] and nxt == 0
    finally:
        store.close()


def test_disk_full_raises_storage_error_and_keeps_committed(db: Database, emb: Embedder) -> None:
    store = make(db, emb)
    try:
        kept, = store.add("This fact was committed before the disk filled up.", kind="fact")
        pages = db._writer.execute("PRAGMA page_count").fetchone()[0]
        db._writer.execute(f"PRAGMA max_page_count = {pages}")        # the "disk" is now full
        rng = np.random.default_rng(2)
        v = rng.standard_normal((50, 384)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        with pytest.raises(StorageError) as info:                     # ~80 KB of vectors: needs new pages
            store.add_embedded([f"filler {i}" for i in range(50)], v)
        assert info.value.details.get("reason") == "disk_full"
        db._writer.execute("PRAGMA max_page_count = 1073741823")
        assert store.get(kept)["text"].startswith("This fact")
        assert store.stats()["nodes"] == 1                             # nothing half-written
        assert db.check_integrity() == "ok"
        assert store.add("Writes work again once space is back.")
    finally:
        store.close()


# -- counters kept by triggers (migration 0005) ------------------------------

def assert_counters_exact(db: Database) -> None:
    got = {(k, a): n for k, a, n in db.read("SELECT kind, archived, n FROM node_counts") if n}
    want = {(k, a): n for k, a, n in db.read("SELECT kind, archived, count(*) FROM nodes GROUP BY kind, archived")}
    assert got == want
    assert nodes.counts_by_kind(db) == {k: sum(n for (kk, _), n in want.items() if kk == k) for k in NODE_KINDS}
    rows = maintenance.table_rows(db)
    for table in ("requests", "sessions", "turns", "feedback", "explorations", "learning_runs", "nodes"):
        assert rows[table] == db.read(f"SELECT count(*) FROM {table}").fetchone()[0], table


def test_node_counts_follow_inserts_deletes_archive_and_eviction(db: Database, emb: Embedder) -> None:
    store = make(db, emb, max_nodes=100, evict_low_water_fraction=0.9, chunk_tokens=32)
    try:
        v = random_unit(140, seed=4)
        store.add_embedded([f"fact {i}" for i in range(10)], v[:10], kind="fact")
        qas = store.add_embedded([f"qa {i}" for i in range(60)], v[10:70], kind="qa_pair", quality=0.5)
        doc = store.add(" ".join(f"Paragraph {i} says something about topic {i} at length." for i in range(12)))
        assert len(doc) > 3
        assert_counters_exact(db)
        store.archive(qas[:7])
        store.archive(qas[:3], archived=False)
        store.archive(qas[:7])                                   # already archived: no double count
        assert_counters_exact(db)
        assert store.counts_by_kind()["qa_pair"] == 60 and store.stats()["archived"] == 7
        store.delete(doc[0])                                     # the chunks go by cascade
        store.delete(qas[10])
        store.delete(99_999)
        assert_counters_exact(db)
        with db.atomic() as conn:                                # a kind change moves the count
            conn.execute("UPDATE nodes SET kind = 'query' WHERE id = ?", (qas[11],))
        assert_counters_exact(db)
        store.add_embedded([f"more {i}" for i in range(70)], v[70:140], kind="qa_pair", quality=0.5)
        assert store.node_count() == 90                          # eviction ran down to the low-water mark
        assert_counters_exact(db)
        with pytest.raises(Exception):                           # a rolled-back write leaves the counts alone
            with db.atomic() as conn:
                conn.execute("DELETE FROM nodes")
                raise RuntimeError("roll back")
        assert_counters_exact(db)
        assert store.table_rows()["nodes"] == 90
    finally:
        store.close()


def test_counters_start_from_existing_rows_when_the_migration_runs(tmp_path: Path) -> None:
    """A file at schema 4 with data gets correct counters when 0005 is applied."""
    path = tmp_path / "memory.db"
    conn = dbmod.connect(path)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                 "applied_at REAL NOT NULL)")
    for version, name, sql in dbmod.migrations()[:4]:
        conn.executescript(f"BEGIN;\n{sql}\n;INSERT INTO schema_migrations VALUES ({version}, '{name}', 0);\nCOMMIT;")
    conn.executescript(
        "BEGIN;"
        "INSERT INTO nodes(kind, text, text_hash, created_at, last_access_at, trust, archived) VALUES "
        "('fact', 'a', 'h1', 0, 0, 0.9, 0), ('fact', 'b', 'h2', 0, 0, 0.9, 1), ('qa_pair', 'c', 'h3', 0, 0, 0.4, 0);"
        "INSERT INTO sessions(id, created_at, last_used_at) VALUES ('s', 0, 0);"
        "INSERT INTO turns(session_id, role, content, created_at) VALUES ('s', 'user', 'hi', 0), ('s', 'assistant', 'yo', 0);"
        "INSERT INTO requests(id, created_at, query, answer) VALUES ('r', 0, 'q', 'a');"
        "COMMIT;")
    conn.close()
    db = Database(path)
    try:
        assert db.version() == dbmod.schema_version() >= 5
        assert_counters_exact(db)
        assert nodes.counts_by_kind(db)["fact"] == 2 and nodes.counts_by_kind(db, archived=False)["fact"] == 1
        assert maintenance.table_rows(db)["turns"] == 2
    finally:
        db.close()
