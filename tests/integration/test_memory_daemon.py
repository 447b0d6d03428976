"""Living memory through the real daemon: teach, restart, recall; documents; CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ruvllm_edge.errors import ClientError
from ruvllm_edge.memory.db import connect

ROOT = Path(__file__).resolve().parents[2]


def test_correction_survives_restart_and_answers_a_paraphrase(start_daemon, tmp_path: Path) -> None:
    d = start_daemon()
    c = d.client()
    first = c.query("What is the access code for the north gate?", max_tokens=32,
                    temperature=0.0)
    assert "7341" not in first["text"]
    fb = c.feedback(first["request_id"], rating=1,
                    correction="The access code for the north gate is 7341.")
    assert fb["stored"] and fb["memory"]["fact_id"]
    d.close_clients()
    assert d.stop() == 0
    d.start()
    c = d.client()
    res = c.query("Which code opens the gate on the north side?", max_tokens=32, temperature=0.0)
    assert "7341" in res["text"], res
    assert any(s["id"] == fb["memory"]["fact_id"] for s in res["sources"]), res["sources"]
    # Without memory the model cannot know it: the memory made the difference.
    bare = c.query("Which code opens the gate on the north side?", max_tokens=32,
                   temperature=0.0, use_memory=False)
    assert "7341" not in bare["text"] and bare["sources"] == []


def test_added_document_answers_a_question_only_it_answers(daemon) -> None:
    c = daemon.client()
    added = c.memory_add("Harbor Lab note: the office wifi password is tangerine-42. "
                         "Guests use the network called HarborGuest.",
                         metadata={"source": "test"})
    assert added["chunks"] == 1
    res = c.query("What is the wifi password at the Harbor Lab office?", max_tokens=32,
                  temperature=0.0)
    assert "tangerine-42" in res["text"], res
    assert res["sources"][0]["id"] == added["ids"][0]
    assert res["latency_ms"]["retrieval"] > 0 and res["latency_ms"]["embedding"] > 0
    hits = c.memory_search("guest network name", k=3)
    assert hits[0]["id"] == added["ids"][0]
    node = c.memory_get(added["ids"][0])
    assert node["kind"] == "document" and "tangerine-42" in node["text"]


def test_memory_ops_errors_and_delete(daemon) -> None:
    c = daemon.client()
    ids = c.memory_add("A short fact about teal kites.", kind="fact")["ids"]
    assert c.memory_delete(ids[0])["deleted"] is True
    with pytest.raises(ClientError) as err:
        c.memory_get(ids[0])
    assert err.value.code == "not_found"
    with pytest.raises(ClientError) as err:
        c.memory_delete(ids[0])
    assert err.value.code == "not_found"
    with pytest.raises(ClientError) as err:
        c.call("memory.add", {"text": "x", "kind": "qa_pair"})
    assert err.value.code == "bad_request"
    stats = c.memory_stats()
    assert stats["nodes"] >= 1 and "edges" in stats and stats["db_bytes"] > 0


def test_answers_are_written_back_and_linked_in_a_session(daemon) -> None:
    c = daemon.client()
    sid = c.new_session()
    r1 = c.query("What is the capital of France?", session_id=sid, max_tokens=64,
                 temperature=0.0)
    r2 = c.query("And the capital of Italy?", session_id=sid, max_tokens=64, temperature=0.0)
    assert r1["finish_reason"] == r2["finish_reason"] == "stop"  # passes the quality gate
    conn = connect(daemon.data_dir / "memory.db", readonly=True)
    try:
        deadline = time.time() + 20
        rows: list = []
        while time.time() < deadline:   # writeback is asynchronous (batched commits)
            rows = conn.execute("SELECT id, request_id FROM nodes WHERE kind = 'qa_pair' AND "
                                "session_id = ? ORDER BY id", (sid,)).fetchall()
            if len(rows) == 2:
                break
            time.sleep(0.2)
        assert [r[1] for r in rows] == [r1["request_id"], r2["request_id"]]
        edge = conn.execute("SELECT weight FROM edges WHERE src = ? AND dst = ? AND "
                            "kind = 'follows'", (rows[0][0], rows[1][0])).fetchone()
        assert edge is not None
        logged = conn.execute("SELECT count(*) FROM requests WHERE session_id = ?",
                              (sid,)).fetchone()
        assert logged[0] == 2
    finally:
        conn.close()
    tables = c.memory_stats()["tables"]        # sizes per table (counters kept by triggers)
    assert tables["requests"]["rows"] >= 2 and tables["turns"]["rows"] >= 4
    assert tables["sessions"]["rows"] >= 1 and tables["requests"]["bytes"] > 0


def _cli(daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ruvllm_edge.cli", *args, "--endpoint",
                           daemon.endpoint], capture_output=True, text=True, timeout=120,
                          cwd=str(ROOT))


def test_cli_import_export_round_trip(daemon, tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("The boiler room key hangs behind the blue door.")
    (folder / "b.md").write_text("Recycling is collected every second Thursday.")
    (folder / "skip.bin").write_bytes(b"\x00\x01")
    r = _cli(daemon, "memory", "import", str(folder))
    assert r.returncode == 0, r.stderr
    assert "imported 2 items" in r.stderr
    jsonl = tmp_path / "facts.jsonl"
    jsonl.write_text(json.dumps({"text": "The spare bike lock code is 5512.", "kind": "fact",
                                 "metadata": {"by": "test"}}) + "\n")
    r = _cli(daemon, "memory", "import", str(jsonl))
    assert r.returncode == 0, r.stderr
    out = tmp_path / "export.jsonl"
    r = _cli(daemon, "memory", "export", "--out", str(out))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    texts = {row["text"] for row in rows}
    assert "The spare bike lock code is 5512." in texts
    assert any("boiler room key" in t for t in texts)
    r = _cli(daemon, "memory", "search", "bike lock", "-k", "2")
    assert r.returncode == 0 and "5512" in r.stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    r = _cli(daemon, "memory", "import", str(bad))
    assert r.returncode != 0 and "not JSON" in r.stderr
