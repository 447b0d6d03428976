"""Prometheus metrics for the daemon, in one private registry.

A private registry (not prometheus_client's global one) keeps each daemon
instance - and each test - self-contained. Metric names follow the alert rules
in docs/operations.md (``ruvllm_request_latency_seconds``,
``ruvllm_quality_score``, ``ruvllm_memory_usage_bytes`` ...), so the rules
from the design work unchanged, and follow Prometheus's conventions: counters
end in ``_total``, durations are ``_seconds``, sizes ``_bytes`` (checked with
prometheus_client's own parser in tests/test_metrics.py).
"""

from __future__ import annotations

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram,
                               disable_created_metrics, generate_latest)

# In the text format every counter and histogram would also export a
# ``<name>_created`` gauge: a second, unit-less family per metric that breaks the
# naming conventions (tests/test_metrics.py) and that no alert rule uses.
disable_created_metrics()

_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
                    60.0)


class Metrics:
    """All daemon metrics; attributes are prometheus_client metric objects."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("ruvllm_requests_total", "Requests handled, by op and outcome",
                                ["op", "status"], registry=r)
        self.errors = Counter("ruvllm_errors_total", "Error replies sent, by error code", ["code"],
                              registry=r)
        self.latency = Histogram("ruvllm_request_latency_seconds", "End-to-end request latency",
                                 ["op"], buckets=_LATENCY_BUCKETS, registry=r)
        self.stage_latency = Histogram("ruvllm_stage_latency_seconds",
                                       "Query pipeline stage latency", ["stage"],
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.malformed = Counter("ruvllm_malformed_messages_total",
                                 "Messages that could not be parsed, by reason", ["reason"],
                                 registry=r)
        self.prompt_tokens = Counter("ruvllm_prompt_tokens_total", "Prompt tokens evaluated",
                                     registry=r)
        self.cached_prompt_tokens = Counter("ruvllm_cached_prompt_tokens_total",
                                            "Prompt tokens reused from the KV cache", registry=r)
        self.completion_tokens = Counter("ruvllm_tokens_generated_total", "Tokens generated",
                                         registry=r)
        self.processing = Gauge("ruvllm_requests_processing", "Requests being processed now",
                                registry=r)
        self.deferred = Gauge("ruvllm_requests_deferred", "Requests waiting in the queue",
                              registry=r)
        self.quality = Gauge("ruvllm_quality_score", "Moving average of judged answer quality (0..1)",
                             registry=r)
        self.router_confidence = Gauge("ruvllm_router_confidence",
                                       "Moving average of router confidence", registry=r)
        self.router_fallbacks = Counter("ruvllm_router_fallbacks_total",
                                        "Decisions that fell back to config defaults", registry=r)
        self.memory_usage = Gauge("ruvllm_memory_usage_bytes", "Resident set size of the daemon",
                                  registry=r)
        self.memory_limit = Gauge("ruvllm_memory_limit_bytes", "Configured memory budget",
                                  registry=r)
        self.model_loaded = Gauge("ruvllm_model_loaded", "1 while the LLM is loaded", registry=r)
        self.model_loads = Counter("ruvllm_model_loads_total", "Model loads, by outcome",
                                   ["status"], registry=r)
        self.memory_nodes = Gauge("ruvllm_memory_nodes", "Memory nodes, by kind", ["kind"],
                                  registry=r)
        self.table_rows = Gauge("ruvllm_table_rows", "Rows per table of the SQLite file (logs and nodes)",
                                ["table"], registry=r)
        self.writeback_queue = Gauge("ruvllm_writeback_queue", "Interactions waiting for writeback",
                                     registry=r)
        self.learning_jobs = Counter("ruvllm_learning_jobs_total", "Idle-time jobs run, by outcome",
                                     ["job", "status"], registry=r)
        self.learning_job_seconds = Histogram("ruvllm_learning_job_seconds",
                                              "Idle-time job duration", ["job"],
                                              buckets=_LATENCY_BUCKETS, registry=r)
        self.backups = Counter("ruvllm_backups_total", "Backups written, by outcome", ["status"],
                               registry=r)
        self.uptime = Gauge("ruvllm_uptime_seconds", "Seconds since the daemon started", registry=r)

    def render(self) -> str:
        return generate_latest(self.registry).decode("utf-8")
