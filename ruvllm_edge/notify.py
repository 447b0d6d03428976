"""systemd's sd_notify protocol: a datagram to $NOTIFY_SOCKET.

The protocol is one ``sendto`` of ``KEY=VALUE`` lines on an AF_UNIX datagram
socket (an abstract one when the path starts with '@'); the maintained PyPI
wrappers for it are unmaintained or pull in libsystemd, so it lives here.
Outside systemd (no NOTIFY_SOCKET) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        addr = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        self.address = ("\0" + addr[1:]) if addr.startswith("@") else addr
        self._sock: socket.socket | None = None
        if self.address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        self.watchdog_s: float | None = None
        if usec.isdigit() and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, **fields: str) -> bool:
        if self._sock is None:
            return False
        msg = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        try:
            self._sock.sendto(msg, self.address)
            return True
        except OSError as exc:
            log.warning("sd_notify failed", extra={"error": str(exc)})
            return False

    def ready(self, status: str = "serving") -> bool:
        return self.send(READY="1", STATUS=status, MAINPID=str(os.getpid()))

    def status(self, text: str) -> bool:
        return self.send(STATUS=text)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG="1")

    def reloading(self) -> bool:
        return self.send(RELOADING="1")

    def stopping(self) -> bool:
        return self.send(STOPPING="1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
