"""The store side of compression: candidates, concept writes, catch-up archiving, undo."""

from __future__ import annotations

import time
from typing import Iterator

import numpy as np
import pytest

from memkit import BOILER, BOILER_SUMMARY, D, DAY, add_old, concepts, make_store, node
from ruvllm_edge.embedding import Embedder
from ruvllm_edge.errors import BadRequest, NotFound
from ruvllm_edge.memory.db import Database
from ruvllm_edge.memory.store import MemoryStore
from ruvllm_edge.memory.types import MembersChanged


@pytest.fixture
def store(db: Database, emb: Embedder) -> Iterator[MemoryStore]:
    s = make_store(db, emb)
    yield s
    s.close()


def test_candidates_are_old_unarchived_compressible_and_linked(store: MemoryStore, emb: Embedder) -> None:
    old = add_old(store, emb, BOILER)
    young = add_old(store, emb, ["Q: a?\nA: young one.", "Q: b?\nA: young two."], age_days=0.0)
    facts = add_old(store, emb, ["The boiler code is 1234.", "The boiler is in the cellar."], kind="fact")
    docs = add_old(store, emb, ["Boiler manual page 1.", "Boiler manual page 2."], kind="document")
    loner = add_old(store, emb, ["Q: c?\nA: no links."], link=False)
    weak = add_old(store, emb, ["Q: d?\nA: weak one.", "Q: e?\nA: weak two."])
    with store.db.atomic() as conn:
        conn.execute("UPDATE edges SET weight = 0.1 WHERE src = ?", (weak[0],))
        # a qa_pair linked to a fact: the fact is not eligible, so the link does not count
        conn.execute("INSERT INTO edges VALUES (?, ?, 'same_topic', 0.9, 0, 0)", (loner[0], facts[0]))
    got = store.compression_candidates(created_before=time.time() - DAY, min_edge_weight=0.5, limit=100)
    assert got.ids == old and got.next_after_id == 0
    assert got.vecs.shape == (4, D) and np.allclose(got.vecs, emb.embed_batch(BOILER), atol=1e-6)
    assert sorted((a, b) for a, b, _, _ in got.edges) == list(zip(old, old[1:]))
    assert not set(got.ids) & set(young + facts + docs + loner + weak)
    store.archive([old[0]])
    cut = time.time() - DAY
    assert store.compression_candidates(created_before=cut, min_edge_weight=0.5, limit=100).ids == old[1:]
    # the scan window rotates
    first = store.compression_candidates(created_before=cut, min_edge_weight=0.5, limit=2)
    assert first.ids == old[1:3] and first.next_after_id == old[2]
    rest = store.compression_candidates(created_before=cut, min_edge_weight=0.5, limit=2,
                                        after_id=first.next_after_id)
    assert rest.ids == old[3:] and rest.next_after_id == 0


def test_add_concept_links_members_and_archives_only_old_compressible_ones(
        store: MemoryStore, emb: Embedder) -> None:
    qa = add_old(store, emb, BOILER)
    [fact] = add_old(store, emb, ["The boiler is serviced by Acme Gas every October."], kind="fact",
                     link=False)
    recent = qa[3]
    with store.db.atomic() as conn:
        conn.execute("UPDATE nodes SET last_access_at = ? WHERE id = ?", (time.time(), recent))
    vec = emb.embed(BOILER_SUMMARY)
    w = store.add_concept(BOILER_SUMMARY, vec, qa + [fact], archive_before=time.time() - 30 * DAY,
                          metadata={"cohesion": 0.8})
    assert w.archived_ids == tuple(qa[:3]) and w.member_ids == tuple(qa + [fact])
    cnode = node(store, w.concept_id)
    assert (cnode["kind"], cnode["source"], cnode["trust"], cnode["archived"]) == ("concept", "learning", 0.6, False)
    assert cnode["metadata"] == {"cohesion": 0.8, "members": 5}
    contains = {e["dst"]: e["weight"] for e in cnode["edges"] if e["kind"] == "contains"}
    assert set(contains) == set(qa + [fact]) and all(0.3 < x <= 1.0 for x in contains.values())
    for i in qa[:3]:
        m = node(store, i)                    # archived members are kept and readable
        assert m["archived"] is True and m["metadata"]["compressed_into"] == w.concept_id
    assert node(store, recent)["archived"] is False and node(store, fact)["archived"] is False
    # search: the concept is found, archived members are not (not even over `contains`)
    hits = store.search("When does the boiler get serviced?", k=10)
    ids = [h["id"] for h in hits]
    assert w.concept_id in ids and not set(ids) & set(qa[:3])
    assert {recent, fact} <= set(ids)
    assert store.stats()["archived"] == 3


def test_add_concept_writes_nothing_when_members_changed(store: MemoryStore, emb: Embedder) -> None:
    qa = add_old(store, emb, BOILER)
    vec = emb.embed(BOILER_SUMMARY)
    before = store.stats()["nodes"]
    store.delete(qa[1])
    with pytest.raises(MembersChanged) as ei:
        store.add_concept(BOILER_SUMMARY, vec, qa, archive_before=time.time())
    assert ei.value.code == "bad_request" and ei.value.details["members"] == {str(qa[1]): "missing"}
    store.archive([qa[2]])
    with pytest.raises(MembersChanged, match="changed"):
        store.add_concept(BOILER_SUMMARY, vec, [qa[0], qa[2]], archive_before=time.time())
    w = store.add_concept(BOILER_SUMMARY, vec, [qa[0], qa[3]], archive_before=None)
    assert w.archived_ids == ()
    with pytest.raises(MembersChanged):                  # already in a concept
        store.add_concept(BOILER_SUMMARY, vec, [qa[0]], archive_before=None)
    assert [c for c, _ in concepts(store.db)] == [w.concept_id]
    assert store.stats()["nodes"] == before - 1 + 1
    assert node(store, qa[0])["archived"] is False
    for bad in ([], [qa[0], qa[0]]):
        with pytest.raises(BadRequest):
            store.add_concept(BOILER_SUMMARY, vec, bad)
    with pytest.raises(BadRequest):
        store.add_concept(BOILER_SUMMARY, vec * 2, [qa[3]])
    with pytest.raises(BadRequest):
        store.add_concept("  ", vec, [qa[3]])


def test_archive_compressed_catches_up_and_undo_restores(store: MemoryStore, emb: Embedder) -> None:
    qa = add_old(store, emb, BOILER, age_days=10.0)
    w = store.add_concept(BOILER_SUMMARY, emb.embed(BOILER_SUMMARY), qa,
                          archive_before=time.time() - 30 * DAY)
    assert w.archived_ids == ()                              # nobody 30 days unused yet
    assert store.archive_compressed(time.time() - 30 * DAY) == 0
    assert store.archive_compressed(time.time() - 5 * DAY) == 4
    assert all(node(store, i)["metadata"]["compressed_into"] == w.concept_id for i in qa)
    assert store.archive_compressed(time.time()) == 0        # idempotent
    assert store.undo_concept(w.concept_id) == 4
    assert store.get(w.concept_id) is None
    assert all(node(store, i)["archived"] is False and "compressed_into" not in node(store, i)["metadata"]
               for i in qa)
    assert qa[0] in [h["id"] for h in store.search("boiler service month", k=10)]
    with pytest.raises(NotFound):
        store.undo_concept(w.concept_id)
    with pytest.raises(BadRequest):
        store.undo_concept(qa[0])
