"""The daemon's life: the data-dir lock, signals, reload, drain and shutdown.

- Start-up checks: one daemon per data dir (an ``flock`` on
  ``ruvllm-edge.lock``, which a restore checks too), room on the disk, and no
  public TCP endpoint without CURVE.
- Signal handlers only set flags; the socket loop acts on them between polls,
  so no handler ever runs while a lock is held.
- SIGHUP re-reads the config file and applies the settings that are safe live
  (``LIVE``; docs/operations.md lists them) to every part that holds them:
  logging, the rate limiter, the engine, the idle scheduler, the router's
  trainer and the learning job. Whatever goes wrong - an invalid file, one
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

from .. import fsutil
from ..config import Config, LearningConfig
from ..errors import ConfigError, StorageError

if TYPE_CHECKING:
    from ..notify import Notifier
    from .services import Services
    from .transport import Transport

log = logging.getLogger(__name__)

LOCK_NAME = "ruvllm-edge.lock"
# What SIGHUP applies (docs/operations.md lists the same). [inference]: what a
# loaded model takes without reloading its weights. [learning]: all but the two
# that shape what was built at start-up (whether the scheduler exists at all,
# the replay buffer's size).
LIVE: dict[str, tuple[str, ...]] = {
    "system": ("log_level",),
    "server": ("rate_limit_per_s", "rate_limit_burst", "request_timeout_ms"),
    "inference": ("keep_alive_s", "max_tokens", "temperature", "top_p", "repeat_penalty",
                  "system_prompt", "reserve_answer_tokens"),
    "learning": tuple(f.name for f in dataclasses.fields(LearningConfig)
                      if f.name not in ("enabled", "replay_capacity")),
}


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
    """The data dir exists, is private, is writable, has room, and only this daemon uses it.

    Private the way ssh and gpg do it: the directory 0700 (0750 when
    ``group_readable``, i.e. ``server.socket_group`` is set, so the group can
    reach a socket inside it) and the files it creates 0600, whatever the
    umask. A data dir or file that others can read is narrowed, with a
    warning (to 0600, or 0640 with a socket group: an operator's choice kept).
    """

    def __init__(self, data_dir: Path, min_free_disk_mb: int,
                 group_readable: bool = False) -> None:
        self.data_dir = data_dir
        try:
            tightened = fsutil.make_private_dir(data_dir, group_readable)
            tightened += fsutil.tighten_tree(data_dir, group_readable)
        except OSError as exc:
            raise StartupError(f"cannot create data dir {data_dir}: {exc}") from None
        if tightened:
            log.warning("data dir was readable by others; permissions tightened",
                        extra={"data_dir": str(data_dir), "changed": tightened})
        if not os.access(data_dir, os.W_OK):
            raise StartupError(f"data dir {data_dir} is not writable")
        free_mb = shutil.disk_usage(data_dir).free / 1_048_576
        if free_mb < min_free_disk_mb:
            raise StartupError(f"only {free_mb:.0f} MB free in {data_dir}; need at least "
                               f"{min_free_disk_mb} MB (system.min_free_disk_mb)")
        fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, fsutil.FILE_MODE)
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


def changed_keys(old: Config, new: Config) -> list[str]:
    """``section.key`` of every setting that differs between two configs."""
    out = []
    for sec in dataclasses.fields(old):
        a, b = getattr(old, sec.name), getattr(new, sec.name)
        if dataclasses.is_dataclass(a):
            out += [f"{sec.name}.{f.name}" for f in dataclasses.fields(a)
                    if getattr(a, f.name) != getattr(b, f.name)]
    return sorted(out)


def with_live_settings(old: Config, new: Config) -> Config:
    """``old`` with every setting in LIVE taken from ``new``; the rest stays."""
    return dataclasses.replace(old, **{
        section: dataclasses.replace(getattr(old, section),
                                     **{k: getattr(getattr(new, section), k) for k in keys})
        for section, keys in LIVE.items()})


def reload(s: "Services", transport: "Transport", notifier: "Notifier") -> None:
    """SIGHUP: re-read the config file and apply the settings that are safe live.

    Nothing that goes wrong here may stop the daemon: an invalid file is
    refused with every bad key named, any other failure (the file unreadable,
    a directory, gone) is logged, and either way the running settings stay.
    Changed settings outside LIVE keep their running value and are named in
    the log: they need a restart.
    """
    from .. import config as config_mod

    notifier.reloading()
    try:
        new = config_mod.load(s.cfg.source_path or None, data_dir=s.cfg.data_dir,
                              endpoint=s.cfg.server.endpoint, models_dir=s.cfg.models_dir)
        changed = changed_keys(s.cfg, new)
        live = with_live_settings(s.cfg, new)
        logging.getLogger().setLevel(live.system.log_level)
        transport.rate.rate = live.server.rate_limit_per_s
        transport.rate.burst = live.server.rate_limit_burst
        transport.settings = live.server
        s.engine.cfg = live.inference
        s.components.apply_learning(live.learning, s.scheduler)
        s.cfg = s.pipeline.cfg = live
    except ConfigError as exc:
        log.error("reload refused: invalid config", extra={"errors": exc.errors or [str(exc)]})
        notifier.ready("serving (reload refused)")
        return
    except Exception as exc:  # noqa: BLE001 - a reload must never take the daemon down
        log.error("reload refused: config unreadable",
                  extra={"path": s.cfg.source_path, "error": f"{type(exc).__name__}: {exc}"})
        notifier.ready("serving (reload refused)")
        return
    restart = [k for k in changed if k.split(".", 1)[1] not in LIVE.get(k.split(".", 1)[0], ())]
    if restart:
        log.warning("reload: kept the running value of settings that need a restart",
                    extra={"keys": restart})
    log.info("config reloaded", extra={"path": s.cfg.source_path,
                                       "applied": [k for k in changed if k not in restart]})
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
        # A finished job leaves the job table just before its worker pushes the
        # reply, so the drain can see "idle" a moment before the last reply
        # reaches the loop: forward what the joined workers sent, then close.
        transport.forward_replies(limit=1_000_000)
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

