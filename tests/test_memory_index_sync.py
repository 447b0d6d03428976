"""The in-RAM code mirror follows the database: archive, delete, other processes, a trimmed log."""

from __future__ import annotations

from pathlib import Path

from memkit import make_store, random_unit
from ruvllm_edge.config import MemoryConfig
from ruvllm_edge.embedding import Embedder
from ruvllm_edge.memory import nodes
from ruvllm_edge.memory.db import Database
from ruvllm_edge.memory.index_sync import IndexSync


def test_mirror_follows_archive_delete_and_other_processes(tmp_path: Path, emb: Embedder) -> None:
    db = Database(tmp_path / "memory.db")
    store = make_store(db, emb)
    try:
        x = random_unit(300, seed=8)
        ids = store.add_embedded([f"node {i}" for i in range(len(x))], x)
        assert store.knn(x[0], 1)[0][0] == ids[0] and len(store.index) == 300
        # archived and deleted nodes leave the search; unarchived come back
        store.archive([ids[0]])
        assert ids[0] not in {i for i, _ in store.knn(x[0], 10)}
        store.archive([ids[0]], archived=False)
        assert store.knn(x[0], 1)[0][0] == ids[0]
        store.delete(ids[0])
        assert ids[0] not in {i for i, _ in store.knn(x[0], 10)}
        # a write by another connection (another process) is picked up via vec_log
        other = Database(tmp_path / "memory.db")
        new_id = nodes.add_embedded(other, store.cfg, ["from elsewhere"], x[:1])[0]
        other.close()
        assert store.knn(x[0], 1)[0][0] == new_id
        # a rolled-back write leaves no phantom
        try:
            with db.atomic() as conn:
                nodes.insert_node(conn, kind="fact", source="user", text="never", metadata={}, vec=x[5],
                                  now=0.0, quality=1.0, trust=0.9)
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        store.refresh_index()
        assert len(store.index) == 300
    finally:
        store.close()
        db.close()


def test_trimmed_log_means_a_full_reload(db: Database) -> None:
    x = random_unit(20, seed=3)
    ids = nodes.add_embedded(db, MemoryConfig(), [f"n{i}" for i in range(20)], x)
    sync = IndexSync(db)
    assert sync.reloads == 1 and len(sync.index) == 20
    nodes.delete(db, ids[1])
    sync.refresh()                                   # incremental: no reload
    assert sync.reloads == 1 and len(sync.index) == 19
    new_id = nodes.add_embedded(db, MemoryConfig(), ["late"], x[:1])[0]
    nodes.delete(db, ids[2])
    with db.atomic() as conn:                        # trim past what the mirror has seen
        conn.execute("DELETE FROM vec_log WHERE seq < (SELECT max(seq) FROM vec_log)")
    sync.refresh()
    assert sync.reloads == 2
    assert sorted(sync.index.ids().tolist()) == sorted(set(ids) - {ids[1], ids[2]} | {new_id})
