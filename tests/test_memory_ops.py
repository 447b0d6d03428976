"""The memory.* ops on a real store, through the wire schema (protocol.check_args) and execute."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Iterator

import pytest

from memkit import make_store
from ruvllm_edge import protocol
from ruvllm_edge.embedding import Embedder
from ruvllm_edge.errors import BadRequest, NotFound
from ruvllm_edge.memory.db import Database
from ruvllm_edge.memory.store import MemoryStore
from ruvllm_edge.server.ops import OPS


@pytest.fixture
def store(db: Database, emb: Embedder) -> Iterator[MemoryStore]:
    s = make_store(db, emb)
    yield s
    s.close()


def run(store: Any, op: str, **args: Any) -> dict[str, Any]:
    """Validate args as the daemon does, then execute the op against ``store``."""
    checked = protocol.check_args(op, args, OPS[op].args)
    ctx = SimpleNamespace(s=SimpleNamespace(components=SimpleNamespace(memory=store, memory_error=None)),
                          embed=None)   # no batcher: the store embeds itself
    return OPS[op].execute(ctx, checked)  # type: ignore[arg-type]


def test_add_text_keeps_its_reply_shape(store: MemoryStore) -> None:
    one = run(store, "memory.add", text="The spare key is under the blue pot.")
    assert one == {"ids": one["ids"], "chunks": 1, "parent_id": None} and len(one["ids"]) == 1
    note = run(store, "memory.add", text="Garden\nThe hose is in the shed.\nThe tap leaks.", kind="fact")
    assert note["chunks"] == 3 and note["parent_id"] == note["ids"][0] and len(note["ids"]) == 4
    assert store.get(note["ids"][2])["kind"] == "fact"


def test_add_items_defaults_and_errors(store: MemoryStore) -> None:
    res = run(store, "memory.add", items=[{"text": "First turn."}, {"text": "Second turn.\nMore.", "kind": "fact",
                                                                    "metadata": {"speaker": "b"}}],
              metadata={"conv": "c1", "speaker": "a"}, link=True)
    assert res["items"] == 2 and res["nodes"] == 4 and [len(x) for x in res["ids"]] == [1, 3]
    first, second = store.get(res["ids"][0][0]), store.get(res["ids"][1][0])
    assert first["kind"] == "document" and first["metadata"] == {"conv": "c1", "speaker": "a"}
    assert second["kind"] == "fact" and second["metadata"] == {"conv": "c1", "speaker": "b", "parts": 2}
    assert any(e["kind"] == "follows" and e["dst"] == res["ids"][1][1] for e in first["edges"])
    for args, field in [({}, "args.text"),
                        ({"text": "a", "items": [{"text": "b"}]}, "args.text"),
                        ({"text": "a", "link": True}, "args.link"),
                        ({"items": ["plain string"]}, "args.items[0]"),
                        ({"items": [{"text": "ok"}, {"txt": "typo"}]}, None),
                        ({"items": [{"text": "ok", "kind": "qa_pair"}]}, "args.items[0].kind"),
                        ({"items": []}, "args.items"),
                        ({"items": [{"text": "x"}] * 513}, "args.items")]:
        with pytest.raises(BadRequest) as err:
            run(store, "memory.add", **args)
        if field:
            assert err.value.details.get("field") == field, (args, err.value)
    assert store.stats()["nodes"] == 4


def test_update_and_history(store: MemoryStore) -> None:
    nid = run(store, "memory.add", text="The gate code is 1111.")["ids"][0]
    res = run(store, "memory.update", id=nid, text="The gate code is 2222.", metadata={"by": "me"})
    assert res == {"id": nid, "ids": [nid], "text_changed": True}
    hist = run(store, "memory.history", id=nid)
    assert hist["id"] == nid and [(h["text"], h["source"]) for h in hist["history"]] == [
        ("The gate code is 1111.", "user")]
    assert run(store, "memory.get", id=nid)["metadata"] == {"by": "me"}
    with pytest.raises(NotFound):
        run(store, "memory.update", id=nid + 100, text="x")
    with pytest.raises(NotFound):
        run(store, "memory.history", id=nid + 100)
    with pytest.raises(BadRequest):
        run(store, "memory.update", id=nid)                                # text is required


class Recorder:
    """Stands in for the store to see what memory.search hands to store.search."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def search(self, *a: Any, **kw: Any) -> list[dict[str, Any]]:
        self.calls.append((a, kw))
        return []


def test_search_passes_kind_and_metadata_filters() -> None:
    rec = Recorder()
    run(rec, "memory.search", query="q")
    run(rec, "memory.search", query="q", k=3, kind="fact", metadata={"conv": "c1"})
    run(rec, "memory.search", query="q", kind=["fact", "document"])
    none = {"embed": None}     # the server passes its batching embed; run() has none
    assert rec.calls == [(("q", 10), none),
                         (("q", 3), {"kinds": ["fact"], "metadata": {"conv": "c1"}, **none}),
                         (("q", 10), {"kinds": ["fact", "document"], **none})]
    for kind, field in [("poem", "args.kind"), (["fact", "poem"], "args.kind[1]"),
                        ([], "args.kind"), (3, "args.kind")]:
        with pytest.raises(BadRequest) as err:
            run(rec, "memory.search", query="q", kind=kind)
        assert err.value.details.get("field") == field, kind
    with pytest.raises(BadRequest):
        run(rec, "memory.search", query="q", metadata={"k": [1, 2]})
    assert len(rec.calls) == 3
