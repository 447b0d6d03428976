"""JSON log lines carry extra fields as keys."""

from __future__ import annotations

import json
import logging

from ruvllm_edge.logs import JsonFormatter


def test_json_formatter_includes_extra_fields() -> None:
    rec = logging.LogRecord("x", logging.INFO, __file__, 1, "request %s", ("done",), None)
    rec.op = "query"
    rec.ms = 12.5
    out = json.loads(JsonFormatter().format(rec))
    assert out["msg"] == "request done" and out["op"] == "query" and out["ms"] == 12.5
    assert out["level"] == "INFO" and out["ts"].endswith("Z")
