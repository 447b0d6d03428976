"""The daemon's life: the data-dir lock, signals, reload, drain and shutdown.

- Start-up checks: one daemon per data dir (an ``flock`` on
  ``ruvllm-edge.lock``, which a restore checks too), room on the disk, and no
  public TCP endpoint without CURVE.
- Signal handlers only set flags; the socket loop acts on them between polls,
  so no handler ever runs while a lock is held.
- SIGHUP re-reads the config file and applies the settings that are safe live
  (docs/operations.md lists them). Whatever goes wrong - an invalid file, one
  that cannot be read - is logged and the running settings stay.
- SIGTERM drains: queued and running requests get ``drain_timeout_ms`` to
  finish, new queued work gets ``busy``, then state is flushed and files closed.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import ipaddress
import logging
import os
import shutil
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError, StorageError

if TYPE_CHECKING:
    from ..notify import Notifier
    from .services import Services
    from .transport import Transport

log = logging.getLogger(__name__)

LOCK_NAME = "ruvllm-edge.lock"
# [inference] settings a running model can take without a reload of the weights.
LIVE_INFERENCE = ("keep_alive_s", "max_tokens", "temperature", "top_p", "repeat_penalty",
                  "system_prompt", "reserve_answer_tokens")


class StartupError(Exception):
    """The daemon refuses to start; the message says why and what to do."""


def check_endpoint_security(endpoint: str, has_curve: bool) -> None:
    """TCP must be loopback unless CURVE keys are configured."""
    if not endpoint.startswith("tcp://"):
        return
    host = endpoint[len("tcp://"):].rsplit(":", 1)[0].strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not has_curve:
        raise StartupError(f"refusing to listen on {endpoint}: a non-loopback address needs "
                           "server.curve_secret_key and server.curve_public_key")



class DataDirLock:
    """The data dir exists, is writable, has room, and only this daemon uses it."""

    def __init__(self, data_dir: Path, min_free_disk_mb: int) -> None:
        self.data_dir = data_dir
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartupError(f"cannot create data dir {data_dir}: {exc}") from None
        if not os.access(data_dir, os.W_OK):
            raise StartupError(f"data dir {data_dir} is not writable")
        free_mb = shutil.disk_usage(data_dir).free / 1_048_576
        if free_mb < min_free_disk_mb:
            raise StartupError(f"only {free_mb:.0f} MB free in {data_dir}; need at least "
                               f"{min_free_disk_mb} MB (system.min_free_disk_mb)")
        fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise StartupError(f"another ruvllm-edge daemon is using {data_dir}") from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Signals:
    """Plain flags, not threading.Event: a signal handler that takes a lock
    deadlocks when a second signal lands while the first one holds it."""

    def __init__(self) -> None:
        self.stop_requested = False
        self.reload_requested = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)

    def _on_stop(self, *_: object) -> None:
        self.stop_requested = True   # only an assignment: safe however signals nest

    def _on_reload(self, *_: object) -> None:
        self.reload_requested = True


def reload(s: "Services", transport: "Transport", notifier: "Notifier") -> None:
    """SIGHUP: re-read the config file and apply the settings that are safe live."""
    from .. import config as config_mod

    notifier.reloading()
    try:
        new = config_mod.load(s.cfg.source_path or None, data_dir=s.cfg.data_dir,
                              endpoint=s.cfg.server.endpoint, models_dir=s.cfg.models_dir)
    except ConfigError as exc:
        log.error("reload refused: invalid config", extra={"errors": exc.errors})
        notifier.ready("serving (reload refused)")
        return
    logging.getLogger().setLevel(new.system.log_level)
    transport.rate.rate = new.server.rate_limit_per_s
    transport.rate.burst = new.server.rate_limit_burst
    s.engine.cfg = dataclasses.replace(
        s.engine.cfg, **{k: getattr(new.inference, k) for k in LIVE_INFERENCE})
    s.cfg = dataclasses.replace(
        s.cfg, system=dataclasses.replace(s.cfg.system, log_level=new.system.log_level),
        server=dataclasses.replace(s.cfg.server,
                                   rate_limit_per_s=new.server.rate_limit_per_s,
                                   rate_limit_burst=new.server.rate_limit_burst,
                                   request_timeout_ms=new.server.request_timeout_ms),
        inference=s.engine.cfg, learning=new.learning)
    transport.settings = s.cfg.server
    s.pipeline.cfg = s.cfg
    log.info("config reloaded", extra={"path": s.cfg.source_path})
    notifier.ready("serving (reloaded)")


class Drain:
    """SIGTERM: stop taking queued work, give what is queued or running
    ``drain_timeout_ms`` to finish, then cancel the rest."""

    def __init__(self, s: "Services", transport: "Transport", notifier: "Notifier",
                 now: float) -> None:
        self.s = s
        self.transport = transport
        self.deadline = now + s.cfg.server.drain_timeout_ms / 1000
        transport.accepting = False
        notifier.stopping()
        log.info("draining", extra={"active": len(s.lanes.jobs), "queued": s.lanes.queued()})
        if s.scheduler is not None:
            s.scheduler.stop(timeout=0.0)

    def done(self, now: float) -> bool:
        """True once nothing is left (or the drain time is up and the rest was cancelled)."""
        lanes = self.s.lanes
        idle = not len(lanes.jobs) and lanes.queued() == 0
        if not idle and now < self.deadline:
            return False
        if not idle:
            lanes.jobs.cancel_all()
            log.warning("cancelled in-flight requests", extra={"reason": "shutting down"})
            lanes.join(2.0)
        self.transport.forward_replies(limit=1_000_000)   # whatever the workers sent last
        return True


def shutdown(s: "Services", transport: "Transport", lock: DataDirLock,
             notifier: "Notifier") -> None:
    """Stop learning, let the workers finish, flush state, close every file."""
    log.info("shutting down")
    try:
        if s.scheduler is not None:
            s.scheduler.stop(timeout=5.0)
        s.lanes.join(s.cfg.server.drain_timeout_ms / 1000 + 2)
        s.pipeline.close()
        s.components.save()
    except Exception:  # noqa: BLE001
        log.exception("error while flushing state")
    finally:
        transport.close()
        s.engine.unload()
        try:
            s.db.checkpoint()
        except StorageError:
            pass
        s.db.close()
        lock.release()
        notifier.close()
        log.info("stopped")

