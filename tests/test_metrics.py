"""Metrics registry: names the alert rules use, and per-instance isolation."""

from __future__ import annotations

from ruvllm_edge.metrics import Metrics


def test_metric_names_match_the_alert_rules() -> None:
    m = Metrics()
    m.latency.labels("query").observe(0.2)
    m.errors.labels("busy").inc()
    m.quality.set(0.9)
    m.router_confidence.set(0.7)
    m.memory_usage.set(1e8)
    m.memory_limit.set(2e9)
    text = m.render()
    for name in ("ruvllm_request_latency_seconds_bucket", "ruvllm_errors_total",
                 "ruvllm_quality_score", "ruvllm_router_confidence", "ruvllm_memory_usage_bytes",
                 "ruvllm_memory_limit_bytes"):
        assert name in text, name
    assert 'ruvllm_errors_total{code="busy"} 1.0' in text


def test_instances_do_not_share_state() -> None:
    a, b = Metrics(), Metrics()
    a.errors.labels("busy").inc()
    assert 'code="busy"' not in b.render()
