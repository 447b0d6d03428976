"""Metrics registry: names the alert rules use, Prometheus naming conventions (checked with
prometheus_client's own parser), the operations guide's list, and per-instance isolation."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

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


def touched() -> Metrics:
    """A registry where every metric, labelled or not, has at least one sample."""
    m = Metrics()
    for metric in vars(m).values():
        if metric is m.registry:
            continue
        names = getattr(metric, "_labelnames", ())
        child = metric.labels(*["x"] * len(names)) if names else metric
        if hasattr(child, "observe"):
            child.observe(0.5)
        elif hasattr(child, "set"):
            child.set(1)
        else:
            child.inc()
    return m


# Base units (https://prometheus.io/docs/practices/naming/): a name that measures
# time or size ends in one of these; none of the scaled units appear anywhere.
BASE_UNITS = ("_seconds", "_bytes")
SCALED = re.compile(r"_(ms|milliseconds|us|ns|minutes|hours|kb|mb|gb|kib|mib|percent)(_|$)")
TIME_OR_SIZE = re.compile(r"latency|duration|uptime|seconds|time|bytes|usage|limit|size")


def check_conventions(text: str) -> list[str]:
    """Every family of a Prometheus text exposition against the naming conventions."""
    problems = []
    families = list(text_string_to_metric_families(text))
    assert families, "nothing parsed"
    for fam in families:
        name = fam.name
        if not re.fullmatch(r"ruvllm_[a-z][a-z0-9_]*", name):
            problems.append(f"{name}: not ruvllm_snake_case")
        if not fam.documentation:
            problems.append(f"{name}: no HELP")
        if SCALED.search(name):
            problems.append(f"{name}: scaled unit; use seconds or bytes")
        if fam.type == "counter":
            totals = [s for s in fam.samples if not s.name.endswith("_created")]
            if any(s.name != f"{name}_total" for s in totals):   # none yet: unlabelled use
                problems.append(f"{name}: counter samples must be {name}_total")
        else:
            if name.endswith(("_total", "_count", "_sum", "_bucket")):
                problems.append(f"{name}: {fam.type} with a reserved suffix")
        if fam.type == "histogram" and not name.endswith(BASE_UNITS):
            problems.append(f"{name}: histogram without a base unit")
        if TIME_OR_SIZE.search(name) and not name.endswith(BASE_UNITS) and fam.type != "counter":
            problems.append(f"{name}: measures time or size but has no base unit suffix")
    return problems


def test_metric_names_follow_prometheus_conventions() -> None:
    """Parsed with prometheus_client's own text parser: `_total` counters, base units."""
    text = touched().render()
    assert check_conventions(text) == []
    for fam in text_string_to_metric_families(text):   # every family has samples to check
        assert fam.samples, fam.name
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"ruvllm_requests", "ruvllm_request_latency_seconds", "ruvllm_uptime_seconds",
            "ruvllm_memory_usage_bytes"} <= names


def test_the_checker_catches_bad_names() -> None:
    bad = ("# HELP ruvllm_latency_ms x\n# TYPE ruvllm_latency_ms gauge\nruvllm_latency_ms 1\n"
           "# HELP ruvllm_hits x\n# TYPE ruvllm_hits gauge\nruvllm_hits_total 1\n")
    problems = check_conventions(bad)
    assert any("scaled unit" in p for p in problems)
    assert any("reserved suffix" in p for p in problems)


def test_operations_doc_lists_every_metric() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text()
    for fam in text_string_to_metric_families(touched().render()):
        shown = f"{fam.name}_total" if fam.type == "counter" else fam.name
        assert f"`{shown}" in doc, shown
