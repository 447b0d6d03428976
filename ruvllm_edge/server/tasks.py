"""The daemon's own periodic work, run on worker lanes, never on the socket thread.

The socket thread only notices that a task is due and queues it as an
internal job; a worker runs it. A task is never queued twice, so a slow run
does not pile up copies behind itself, and its next run is timed from the end
of the last one. A full lane is retried on the next tick.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from .lanes import Job, Lanes


@dataclass
class Periodic:
    name: str
    lane: str
    every_s: float
    fn: Callable[[], None]
    next_at: float = 0.0        # monotonic; 0 = due at start-up
    queued: bool = False        # set on the socket thread, cleared by the worker


class Tasks:
    def __init__(self, lanes: Lanes) -> None:
        self.lanes = lanes
        self.periodic: dict[str, Periodic] = {}

    def every(self, name: str, lane: str, every_s: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` on ``lane`` at start-up, then ``every_s`` after each run ends."""
        assert name not in self.periodic, name
        self.periodic[name] = Periodic(name, lane, every_s, fn)

    def tick(self, now: float) -> None:
        """On the socket thread: queue whatever is due."""
        for task in self.periodic.values():
            if not task.queued and now >= task.next_at:
                task.queued = self.lanes.post(task.lane, Job.internal(task.name,
                                                                      self._runner(task)))

    @staticmethod
    def _runner(task: Periodic) -> Callable[[], None]:
        def run() -> None:
            try:
                task.fn()
            finally:
                task.next_at = time.monotonic() + task.every_s
                task.queued = False
        return run
