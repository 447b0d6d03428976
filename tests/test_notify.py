"""sd_notify against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import socket
from pathlib import Path

from ruvllm_edge.notify import Notifier


def test_messages_reach_the_notify_socket(tmp_path: Path, monkeypatch) -> None:
    path = str(tmp_path / "notify.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    srv.settimeout(2)
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    n = Notifier(path)
    assert n.enabled and n.watchdog_s == 20.0
    assert n.ready("serving")
    msg = srv.recv(4096).decode()
    assert "READY=1" in msg and "STATUS=serving" in msg and "MAINPID=" in msg
    n.watchdog()
    assert srv.recv(4096) == b"WATCHDOG=1"
    n.stopping()
    assert srv.recv(4096) == b"STOPPING=1"
    n.close()
    srv.close()


def test_abstract_socket_and_disabled_mode(monkeypatch) -> None:
    name = "@ruvllm-test-notify"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind("\0" + name[1:])
    srv.settimeout(2)
    n = Notifier(name)
    assert n.status("x") and srv.recv(100) == b"STATUS=x"
    srv.close()
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    off = Notifier()
    assert not off.enabled and off.ready() is False
