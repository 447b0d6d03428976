"""Crash points: a test can make the daemon die at one exact line.

``RUVLLM_EDGE_CRASH_AT=<point>[,<point>...]`` in the daemon's environment makes
the process exit at once (``os._exit``: no cleanup, no flush, like kill -9)
when it reaches a named point. Crash tests use it where a timed kill -9 could
not hit the window (tests/integration/test_feedback_outbox.py). Unset, a
point costs one environment lookup.

Points: ``feedback.stored`` (the feedback row is committed, nothing applied).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

ENV_CRASH_AT = "RUVLLM_EDGE_CRASH_AT"
CRASH_EXIT = 86


def crash_point(name: str) -> None:
    points = os.environ.get(ENV_CRASH_AT)
    if points and name in points.split(","):
        log.critical("crash point reached", extra={"point": name})
        os._exit(CRASH_EXIT)
