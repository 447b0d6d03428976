"""The daemon process: socket loop, worker lanes, ops and lifecycle.

Layout (docs/architecture.md has the picture):
- ``daemon.py``     composition: builds the parts, runs the loop (``Daemon``, ``run``)
- ``transport.py``  bind, poll loop, framing, rate limit, reply forwarding
- ``lanes.py``      jobs, worker lanes, the job table (and its lock)
- ``dispatch.py``   the one dispatcher: validate, execute, map exceptions to error replies
- ``lifecycle.py``  start-up checks and data-dir lock, signals, reload, shutdown
- ``components.py`` the optional parts (memory, router, learning) from config
- ``services.py``   the long-lived parts ops see
- ``tasks.py``      periodic work the socket thread queues on a lane
- ``ops/``          one module per op group; ``ops.OPS`` is the registry
"""

from .daemon import Daemon, run
from .lifecycle import StartupError, check_endpoint_security
from .transport import TokenBucket

__all__ = ["Daemon", "StartupError", "TokenBucket", "check_endpoint_security", "run"]
