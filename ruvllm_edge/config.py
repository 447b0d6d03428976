"""Daemon configuration: frozen dataclasses loaded from TOML.

Every field has a default, carries its unit in its name where it has one, and
declares its allowed range next to it, so ``validate`` can name every bad key
together with what would have been accepted. Unknown keys are errors too: a
typo in a config file must never be silently ignored on a device nobody
watches.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

ENV_CONFIG = "RUVLLM_EDGE_CONFIG"
ENV_DATA = "RUVLLM_EDGE_DATA"
ENV_ENDPOINT = "RUVLLM_EDGE_ENDPOINT"
ENV_MODELS = "RUVLLM_EDGE_MODELS"

SOCKET_NAME = "ruvllm-edge.sock"


def _f(default: Any, lo: Any = None, hi: Any = None, choices: tuple[Any, ...] | None = None,
       doc: str = "") -> Any:
    """A field with its allowed range recorded in metadata."""
    return field(default=default, metadata={"lo": lo, "hi": hi, "choices": choices, "doc": doc})


@dataclass(frozen=True)
class SystemConfig:
    device_class: str = _f("edge", choices=("edge", "server"))
    # The whole process (model, KV cache, embedder, SQLite cache) must fit here.
    max_memory_mb: int = _f(2048, 256, 1_048_576)
    # Never take the last of the machine's RAM: keep this much MemAvailable free.
    min_free_memory_mb: int = _f(256, 0, 65_536)
    # Refuse to start (and fail writes early) below this free disk space.
    min_free_disk_mb: int = _f(64, 0, 1_048_576)
    log_level: str = _f("INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    log_json: bool = _f(True)


@dataclass(frozen=True)
class ServerConfig:
    # Empty means ipc://<data_dir>/ruvllm-edge.sock.
    endpoint: str = _f("")
    # Octal string, e.g. "0660", applied to the ipc socket file.
    socket_mode: str = _f("0660")
    # Group given to the ipc socket ("" keeps the process's group).
    socket_group: str = _f("")
    # Larger messages get a too_large reply without being parsed.
    max_message_bytes: int = _f(1_048_576, 1024, 64 * 1_048_576)
    # ZMQ_MAXMSGSIZE: beyond this ZeroMQ drops the peer's connection outright.
    drop_message_bytes: int = _f(32 * 1_048_576, 1024, 1024 * 1_048_576)
    # Requests waiting in each lane's queue (gen, fast, aux); beyond this we answer
    # busy. Room for an app pipelining a few dozen requests, not a runaway one.
    max_queue: int = _f(256, 1, 4096)
    # Generation workers. One model context serves one request at a time.
    max_concurrent_requests: int = _f(1, 1, 64)
    # Threads of the fast lane (memory reads, queries answered from memory;
    # docs/protocol.md "Flow control"). 0 = no fast lane: they queue on aux/gen.
    fast_workers: int = _f(4, 0, 64)
    # Per-client token bucket: sustained requests per second and burst size.
    # Well above what 2 cores serve (~500 searches/s), so it only stops a runaway client.
    rate_limit_per_s: float = _f(1000.0, 0.1, 100_000.0)
    rate_limit_burst: int = _f(2000, 1, 1_000_000)
    # SIGTERM: how long in-flight work may take before it is cancelled.
    drain_timeout_ms: int = _f(10_000, 0, 600_000)
    # Default deadline for a request that gives none (queue wait included).
    request_timeout_ms: int = _f(120_000, 100, 3_600_000)
    # CURVE keys (Z85 strings). Required for any non-loopback TCP endpoint.
    curve_secret_key: str = _f("")
    curve_public_key: str = _f("")
    watchdog_interval_ms: int = _f(10_000, 100, 600_000)


@dataclass(frozen=True)
class InferenceConfig:
    # A catalogue name (see `ruvllm-edge models list`) or a path to a .gguf.
    model: str = _f("smollm2-135m-instruct-q4_1")
    # sha256 of a model given by path; empty skips the check for it.
    model_sha256: str = _f("")
    n_ctx_tokens: int = _f(2048, 128, 131_072)
    n_threads: int = _f(0, 0, 256, doc="0 = number of physical cores")
    n_batch_tokens: int = _f(256, 8, 8192)
    preload: bool = _f(False)
    # Unload after this long idle: 0 = right after each request, -1 = never.
    keep_alive_s: int = _f(300, -1, 604_800)
    # Estimated fixed overhead of a loaded model besides weights and KV cache.
    overhead_mb: int = _f(64, 0, 65_536)
    max_tokens: int = _f(256, 1, 32_768)
    temperature: float = _f(0.7, 0.0, 2.0)
    top_p: float = _f(0.9, 0.0, 1.0)
    repeat_penalty: float = _f(1.1, 0.5, 2.0)
    seed: int = _f(-1, -1, 2**31 - 1)
    system_prompt: str = _f("You are a helpful assistant running on a small local device. "
                            "Answer briefly and accurately.")
    # Tokens kept free in the context for the answer when trimming history.
    reserve_answer_tokens: int = _f(256, 16, 32_768)
    # KV cache precision: q8_0 halves it (with flash attention, which llama.cpp
    # needs for a quantized V cache); f16 is llama.cpp's default.
    kv_cache_type: str = _f("f16", choices=("f16", "q8_0"))


@dataclass(frozen=True)
class EmbeddingConfig:
    model: str = _f("minilm-l6-int8")
    threads: int = _f(1, 1, 64)
    cache_entries: int = _f(1024, 0, 1_000_000)
    max_seq_tokens: int = _f(256, 16, 512)
    batch_size: int = _f(8, 1, 256)


@dataclass(frozen=True)
class MemoryConfig:
    enabled: bool = _f(True)
    max_nodes: int = _f(100_000, 100, 100_000_000)
    knn_k: int = _f(10, 1, 1000)
    # Candidates kept from the binary coarse pass per requested hit.
    coarse_factor: int = _f(20, 1, 1000)
    graph_hops: int = _f(2, 0, 2)
    hop_decay: float = _f(0.5, 0.0, 1.0)
    # Graph-expanded candidates beyond the hits of both pools.
    max_candidates: int = _f(48, 0, 10_000)
    # Candidate pools: dense KNN hits and BM25 (FTS5) hits, fused before ranking.
    dense_candidates: int = _f(40, 1, 10_000)
    lexical_candidates: int = _f(40, 0, 10_000)
    # The best fused hits the graph step expands from (neighbouring lines and turns).
    expand_seeds: int = _f(8, 0, 1000)
    attention_heads: int = _f(4, 1, 16)
    dedup_cosine: float = _f(0.95, 0.5, 1.0)
    same_topic_cosine: float = _f(0.6, 0.0, 1.0)
    # Floor on the calibrated relevance (ranking.FITTED): low, because the
    # answer policy, not this floor, decides whether a record answers.
    min_relevance: float = _f(0.01, 0.0, 1.0)
    # Ignored since the answer policy ([answer], docs/answers.md) chooses the
    # records; kept so that existing config files still load.
    relative_relevance: float = _f(0.5, 0.0, 1.0)
    # Direct hits more than this much less similar than the best one also stay
    # out (relevance saturates for many near-identical facts; similarity does not).
    similarity_margin: float = _f(0.1, 0.0, 2.0)
    context_budget_tokens: int = _f(512, 0, 32_768)
    chunk_tokens: int = _f(200, 16, 4096)
    max_text_bytes: int = _f(262_144, 64, 64 * 1_048_576)
    writeback_quality_threshold: float = _f(0.75, 0.0, 1.0)
    writeback_batch: int = _f(32, 1, 10_000)
    writeback_flush_ms: int = _f(500, 1, 600_000)
    edge_half_life_days: float = _f(30.0, 0.1, 36_500.0)
    edge_min_weight: float = _f(0.05, 0.0, 1.0)
    sqlite_cache_mb: int = _f(32, 1, 65_536)
    # At most this many same_topic edges from each new qa_pair.
    same_topic_max_edges: int = _f(5, 0, 100)
    # Interactions waiting for writeback; beyond this they are not written (logged).
    writeback_queue_max: int = _f(10_000, 1, 10_000_000)
    # Eviction runs down to this fraction of max_nodes, so it does not run on every write.
    evict_low_water_fraction: float = _f(0.95, 0.5, 1.0)
    # Recency half-life in the eviction score quality x recency x use.
    evict_recency_half_life_days: float = _f(30.0, 0.1, 36_500.0)
    # Graph-attention ranking: SGD step size and L2 pull towards the initial parameters.
    ranking_learning_rate: float = _f(0.05, 0.0, 1.0)
    ranking_l2: float = _f(0.01, 0.0, 10.0)
    # Learning loop C (memory/compress.py): idle-time summaries of dense clusters
    # of old qa_pairs/queries/agent_steps into concept nodes.
    compress_enabled: bool = _f(True)
    # Cluster size bounds (members per concept).
    compress_min_cluster: int = _f(3, 2, 64)
    compress_max_cluster: int = _f(8, 2, 64)
    # Mean pairwise cosine a cluster must keep (MiniLM: paraphrases ~0.7-0.9).
    compress_min_cohesion: float = _f(0.6, 0.0, 1.0)
    # Edges (same_topic, answered_by, follows) weaker than this do not link a cluster.
    compress_min_edge_weight: float = _f(0.5, 0.0, 1.0)
    # Only nodes created at least this long ago are clustered (live topics stay whole).
    compress_min_age_days: float = _f(1.0, 0.0, 36_500.0)
    # Members not accessed for this long are archived (kept, out of default search).
    compress_archive_after_days: float = _f(30.0, 0.0, 36_500.0)
    # Model summaries written per idle run (each is one LLM call).
    compress_max_per_run: int = _f(4, 1, 1000)
    compress_summary_tokens: int = _f(96, 16, 1024)
    # Each member's text is shortened to this in the summary prompt.
    compress_member_chars: int = _f(400, 50, 100_000)
    # Nodes read per run (vectors: 1.5 KB each); the scan window rotates between runs.
    compress_max_candidates: int = _f(5000, 10, 1_000_000)
    # Validation: summary-to-centroid cosine, the worst summary-to-member cosine, and length.
    compress_min_summary_cosine: float = _f(0.7, 0.0, 1.0)
    compress_min_member_cosine: float = _f(0.4, 0.0, 1.0)
    compress_max_summary_chars: int = _f(600, 32, 100_000)


@dataclass(frozen=True)
class RouterConfig:
    enabled: bool = _f(True)
    hidden_dim: int = _f(32, 4, 512)
    low_rank: int = _f(8, 1, 512)
    sparsity: float = _f(0.95, 0.0, 0.999)
    confidence_threshold: float = _f(0.6, 0.0, 1.0)
    # Generation budget of the "short" mode (the "long" mode uses the request's
    # or inference.max_tokens).
    short_max_tokens: int = _f(64, 1, 32_768)
    # Memory nodes put in the prompt when the router falls back (low confidence).
    fallback_context_k: int = _f(4, choices=(0, 2, 4, 8, 16))
    # Seed of the synthetic curriculum that trains the first-start policy.
    init_seed: int = _f(1234, 0, 2**31 - 1)


@dataclass(frozen=True)
class LearningConfig:
    enabled: bool = _f(True)
    idle_after_s: float = _f(30.0, 0.0, 86_400.0)
    cpu_threshold_percent: float = _f(50.0, 1.0, 100.0)
    training_interval_ms: int = _f(300_000, 1000, 86_400_000)
    quality_threshold: float = _f(0.8, 0.0, 1.0)
    replay_capacity: int = _f(1000, 10, 10_000_000)
    ewc_lambda: float = _f(0.4, 0.0, 1e6)
    learning_rate: float = _f(0.01, 1e-6, 1.0)
    epochs: int = _f(20, 1, 10_000)
    batch_size: int = _f(32, 1, 65_536)
    utility_latency_per_s: float = _f(0.05, 0.0, 100.0)
    utility_cost_per_token: float = _f(0.001, 0.0, 10.0)
    holdout_fraction: float = _f(0.2, 0.05, 0.5)
    # Counterfactual replays of past queries per idle run (0 disables).
    explore_per_run: int = _f(8, 0, 10_000)
    # Online EWC: Fisher <- decay * Fisher + new Fisher at each consolidation.
    ewc_decay: float = _f(0.9, 0.0, 1.0)
    # Weight (alpha) of the SmoothL1 temperature/top_p terms in the router loss.
    reg_weight: float = _f(0.5, 0.0, 100.0)
    # Longest run of a session's turns unrolled in one BPTT sequence.
    max_seq_turns: int = _f(8, 1, 256)
    # Below this many replay samples a training run is skipped.
    min_train_samples: int = _f(16, 1, 1_000_000)
    # Bounds on optimiser steps in one idle training run (epochs x batches, clipped).
    min_steps_per_run: int = _f(200, 1, 10_000_000)
    max_steps_per_run: int = _f(2000, 1, 10_000_000)
    # Candidate decisions tried per explored query (the cheapest-first grid is cut here).
    explore_max_candidates: int = _f(12, 2, 64)
    # A trained router replaces the current one only if its held-out loss is no
    # higher and its held-out accuracy at most this much lower.
    accept_acc_tolerance: float = _f(0.02, 0.0, 0.5)
    # Headroom kept below system.max_memory_mb while an idle job runs.
    job_memory_margin_mb: int = _f(64, 0, 65_536)


@dataclass(frozen=True)
class RetentionConfig:
    """How long the logs are kept: the idle job ``retention`` (memory/maintenance.py).

    Each table keeps rows younger than its max age, and at most its max rows
    (oldest go first). Rows something still needs are never deleted: a
    feedback row not yet applied and its request, requests in the replay
    buffer and their feedback, the newest run of each learning job. Memory
    nodes are bounded separately by memory.max_nodes. The defaults keep a year
    of ~200 queries a day near 70 MB of logs, at most ~170 MB.
    """

    enabled: bool = _f(True)
    requests_max_age_days: float = _f(90.0, 1.0, 36_500.0)
    requests_max_rows: int = _f(50_000, 100, 100_000_000)
    # Sessions by last use; their turns go with them.
    sessions_max_age_days: float = _f(90.0, 1.0, 36_500.0)
    sessions_max_rows: int = _f(20_000, 10, 100_000_000)
    turns_max_age_days: float = _f(90.0, 1.0, 36_500.0)
    turns_max_rows: int = _f(100_000, 100, 100_000_000)
    # A feedback row also goes with its request (the foreign key).
    feedback_max_age_days: float = _f(365.0, 1.0, 36_500.0)
    feedback_max_rows: int = _f(50_000, 100, 100_000_000)
    explorations_max_age_days: float = _f(90.0, 1.0, 36_500.0)
    explorations_max_rows: int = _f(100_000, 100, 100_000_000)
    learning_runs_max_age_days: float = _f(30.0, 1.0, 36_500.0)
    learning_runs_max_rows: int = _f(20_000, 100, 100_000_000)
    # Rows deleted per transaction, so the write lock is never held for long.
    batch_rows: int = _f(2_000, 10, 1_000_000)


@dataclass(frozen=True)
class AnswerConfig:
    # grounded: answer personal questions only from records that support them,
    #   decline otherwise, write back only grounded answers (docs/answers.md).
    # naive: the records in the prompt and whatever the model says (the
    #   baseline the benchmarks compare against; it invents and learns it).
    policy: str = _f("grounded", choices=("grounded", "naive"))
    # Support floors fitted on the development notes and rechecked by a grid on
    # dev + validation notes (the best pair; docs/answers.md), never on test.
    min_cosine: float = _f(0.40, 0.0, 1.0)
    min_cover: float = _f(0.20, 0.0, 1.0)
    # Records at most this long are quoted as the answer instead of generating
    # (a 135M model copies a value less reliably than a quote gives it).
    quote_max_words: int = _f(40, 0, 10_000)
    # Supporting records shown to the model when it generates.
    max_records: int = _f(4, 1, 64)


@dataclass(frozen=True)
class BackupConfig:
    # Default target for the nightly backup ("" = <data_dir>/backups).
    dir: str = _f("")
    keep_last: int = _f(7, 1, 10_000)


@dataclass(frozen=True)
class Config:
    system: SystemConfig = field(default_factory=SystemConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    answer: AnswerConfig = field(default_factory=AnswerConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    learning: LearningConfig = field(default_factory=LearningConfig)
    backup: BackupConfig = field(default_factory=BackupConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    # Resolved at load time, not read from TOML.
    data_dir: str = "data"
    models_dir: str = "models"
    source_path: str = ""

    def endpoint(self) -> str:
        return self.server.endpoint or f"ipc://{Path(self.data_dir).resolve() / SOCKET_NAME}"

    def replace(self, **sections: Any) -> "Config":
        return dataclasses.replace(self, **sections)


SECTIONS: dict[str, type] = {
    "system": SystemConfig, "server": ServerConfig, "inference": InferenceConfig,
    "embedding": EmbeddingConfig, "memory": MemoryConfig, "answer": AnswerConfig,
    "router": RouterConfig,
    "learning": LearningConfig, "backup": BackupConfig, "retention": RetentionConfig,
}


def _describe(f: dataclasses.Field[Any]) -> str:
    m = f.metadata
    if m.get("choices"):
        return "one of " + ", ".join(repr(c) for c in m["choices"])
    if m.get("lo") is not None or m.get("hi") is not None:
        return f"{type(f.default).__name__} in [{m.get('lo')}, {m.get('hi')}]"
    return type(f.default).__name__


def _check_value(key: str, f: dataclasses.Field[Any], value: Any) -> tuple[Any, str | None]:
    """Return the coerced value or an error naming the key and allowed range."""
    want = type(f.default)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if want is int and isinstance(value, bool) or not isinstance(value, want):
        return None, f"{key}: expected {_describe(f)}, got {type(value).__name__} {value!r}"
    m = f.metadata
    if m.get("choices") and value not in m["choices"]:
        return None, f"{key}: {value!r} is not {_describe(f)}"
    lo, hi = m.get("lo"), m.get("hi")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        return None, f"{key}: {value!r} is out of range, allowed {_describe(f)}"
    return value, None


def _semantic_errors(cfg: Config) -> list[str]:
    errs: list[str] = []
    try:
        mode = int(cfg.server.socket_mode, 8)
        if not 0 <= mode <= 0o777:
            raise ValueError
    except ValueError:
        errs.append(f"server.socket_mode: {cfg.server.socket_mode!r} is not an octal mode like '0660'")
    ep = cfg.server.endpoint
    if ep and not ep.startswith(("ipc://", "tcp://")):
        errs.append(f"server.endpoint: {ep!r} must start with ipc:// or tcp://")
    if cfg.server.drop_message_bytes < cfg.server.max_message_bytes:
        errs.append("server.drop_message_bytes: must be >= server.max_message_bytes "
                    f"({cfg.server.max_message_bytes})")
    if cfg.memory.compress_min_cluster > cfg.memory.compress_max_cluster:
        errs.append(f"memory.compress_min_cluster: {cfg.memory.compress_min_cluster} must be <= "
                    f"memory.compress_max_cluster ({cfg.memory.compress_max_cluster})")
    if cfg.router.low_rank > cfg.router.hidden_dim:
        errs.append(f"router.low_rank: {cfg.router.low_rank} must be <= router.hidden_dim "
                    f"({cfg.router.hidden_dim})")
    if cfg.inference.reserve_answer_tokens >= cfg.inference.n_ctx_tokens:
        errs.append("inference.reserve_answer_tokens: must be < inference.n_ctx_tokens "
                    f"({cfg.inference.n_ctx_tokens})")
    if bool(cfg.server.curve_secret_key) != bool(cfg.server.curve_public_key):
        errs.append("server.curve_secret_key: set both curve_secret_key and curve_public_key, or neither")
    return errs


def parse(raw: Mapping[str, Any]) -> tuple[Config, list[str]]:
    """Build a Config from a TOML mapping; return it with every error found."""
    errors: list[str] = []
    sections: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in SECTIONS:
            errors.append(f"{name}: unknown section, allowed: {', '.join(SECTIONS)}")
        elif not isinstance(value, Mapping):
            errors.append(f"{name}: expected a table, got {type(value).__name__}")
    for name, cls in SECTIONS.items():
        table = raw.get(name, {})
        if not isinstance(table, Mapping):
            sections[name] = cls()
            continue
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in table.items():
            full = f"{name}.{key}"
            if key not in fields:
                errors.append(f"{full}: unknown key, allowed: {', '.join(fields)}")
                continue
            coerced, err = _check_value(full, fields[key], value)
            if err:
                errors.append(err)
            else:
                kwargs[key] = coerced
        sections[name] = cls(**kwargs)
    cfg = Config(**sections)
    errors.extend(_semantic_errors(cfg))
    return cfg, errors


def load(path: str | os.PathLike[str] | None = None, *, data_dir: str | None = None,
         endpoint: str | None = None, models_dir: str | None = None,
         env: Mapping[str, str] | None = None) -> Config:
    """Load config with precedence: flag > environment > file > defaults.

    Raises ConfigError listing every problem, each naming its key.
    """
    env = os.environ if env is None else env
    path = path or env.get(ENV_CONFIG) or _default_config_path()
    raw: dict[str, Any] = {}
    if path:
        p = Path(path)
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {p}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None
    cfg, errors = parse(raw)
    if errors:
        raise ConfigError(f"invalid config {path or '(defaults)'}:\n  " + "\n  ".join(errors),
                          errors=errors)
    ep = endpoint or env.get(ENV_ENDPOINT) or cfg.server.endpoint
    if ep and not ep.startswith(("ipc://", "tcp://")):
        raise ConfigError(f"endpoint {ep!r} must start with ipc:// or tcp://")
    return dataclasses.replace(
        cfg,
        server=dataclasses.replace(cfg.server, endpoint=ep),
        data_dir=str(Path(data_dir or env.get(ENV_DATA) or "data")),
        models_dir=str(Path(models_dir or env.get(ENV_MODELS) or _default_models_dir())),
        source_path=str(path or ""),
    )


def _default_config_path() -> str | None:
    """The checkout's config/edge.toml: `ruvllm-edge serve` runs the edge profile."""
    here = Path(__file__).resolve().parent.parent / "config" / "edge.toml"
    return str(here) if here.is_file() else None


def _default_models_dir() -> str:
    """Models live beside the checkout by default (install.sh puts them there)."""
    here = Path(__file__).resolve().parent.parent / "models"
    return str(here) if here.is_dir() else "models"


def describe_all() -> list[tuple[str, Any, str]]:
    """(key, default, allowed) rows for docs and `validate --list`."""
    rows = []
    for name, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            rows.append((f"{name}.{f.name}", f.default, _describe(f)))
    return rows
