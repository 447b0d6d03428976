"""Config loading: defaults, ranges, unknown keys, precedence of flags and env."""

from __future__ import annotations

from pathlib import Path

import pytest

from ruvllm_edge import config
from ruvllm_edge.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_validate_and_fit_the_edge_budget() -> None:
    cfg, errors = config.parse({})
    assert errors == []
    assert cfg.system.max_memory_mb == 2048
    assert cfg.router.sparsity == 0.95 and cfg.router.confidence_threshold == 0.6


@pytest.mark.parametrize("name", ["edge.toml", "server-cpu.toml"])
def test_shipped_profiles_are_valid(name: str) -> None:
    cfg = config.load(ROOT / "config" / name, env={})
    assert cfg.source_path.endswith(name)


def test_every_bad_key_is_named_with_its_range(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text('[system]\nmax_memory_mb = 10\ntypo = 1\n[inference]\ntemperature = "hot"\n'
                 '[router]\nhidden_dim = 8\nlow_rank = 16\n[nope]\nx = 1\n')
    with pytest.raises(ConfigError) as err:
        config.load(p, env={})
    msgs = "\n".join(err.value.errors)
    assert "system.max_memory_mb: 10 is out of range, allowed int in [256, 1048576]" in msgs
    assert "system.typo: unknown key" in msgs
    assert "inference.temperature: expected float in [0.0, 2.0], got str" in msgs
    assert "router.low_rank" in msgs
    assert "nope: unknown section" in msgs
    assert len(err.value.errors) == 5


def test_bool_is_not_an_int_and_int_widens_to_float() -> None:
    cfg, errors = config.parse({"server": {"max_queue": True}, "inference": {"temperature": 1}})
    assert any("server.max_queue" in e for e in errors)
    assert cfg.inference.temperature == 1.0 and isinstance(cfg.inference.temperature, float)


def test_corrupt_toml_is_a_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_bytes(b"[system\nmax_memory_mb = = 3\xff")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(p, env={})
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "missing.toml", env={})


def test_precedence_flag_over_env_over_file(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('[server]\nendpoint = "tcp://127.0.0.1:5000"\n')
    env = {config.ENV_CONFIG: str(p), config.ENV_DATA: "/env/data",
           config.ENV_ENDPOINT: "tcp://127.0.0.1:6000"}
    cfg = config.load(env=env)
    assert cfg.server.endpoint == "tcp://127.0.0.1:6000" and cfg.data_dir == "/env/data"
    cfg = config.load(env=env, data_dir="/flag", endpoint="ipc:///tmp/x.sock")
    assert cfg.endpoint() == "ipc:///tmp/x.sock" and cfg.data_dir == "/flag"
    with pytest.raises(ConfigError, match="ipc:// or tcp://"):
        config.load(env=env, endpoint="http://x")


def test_default_endpoint_is_an_ipc_socket_in_the_data_dir(tmp_path: Path) -> None:
    cfg = config.load(env={}, data_dir=str(tmp_path))
    assert cfg.endpoint() == f"ipc://{tmp_path.resolve()}/ruvllm-edge.sock"


def test_describe_all_lists_every_field_with_a_range() -> None:
    rows = config.describe_all()
    keys = {k for k, _, _ in rows}
    assert "inference.keep_alive_s" in keys and "memory.max_nodes" in keys
    assert all(allowed for _, _, allowed in rows)
