"""The daemon's life under a service manager, with a real process.

- sd_notify: READY=1 once serving, WATCHDOG=1 pings, RELOADING=1 / READY=1
  around SIGHUP, STOPPING=1 on SIGTERM (a datagram socket stands in for
  systemd's NOTIFY_SOCKET).
- SIGHUP reloads the safe settings (rate limit, log level) and refuses a bad
  config without stopping.
- SIGTERM flushes the writeback queue, saves the router and exits 0.
- The ipc socket is mode 0660 with the configured group; logs are JSON lines
  without user text.
- A corrupt database refuses to start with a message naming the restore
  command, and that command brings the data back.
- CURVE over tcp://127.0.0.1 with real keys works end to end; clients
  without the server key get nothing.
(Two daemons on one data dir and a public TCP endpoint without CURVE are
covered by test_daemon.py and test_cli.py.)
"""

from __future__ import annotations

import grp
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import zmq

from conftest import MODELS_DIR, ROOT, DaemonProcess, TEST_CONFIG, write_config
from ruvllm_edge import backup as bk
from ruvllm_edge.client import Client
from ruvllm_edge.config import RouterConfig
from ruvllm_edge.errors import ClientError, ClientTimeout
from ruvllm_edge.memory.db import connect
from faultkit import FAST

pytestmark = pytest.mark.slow


def other_group() -> str | None:
    """A group this process may give the socket to, other than its own."""
    mine = os.getegid()
    gids = [g.gr_gid for g in grp.getgrall()] if os.geteuid() == 0 else os.getgroups()
    names = [grp.getgrgid(g).gr_name for g in gids if g != mine]
    return sorted(names)[0] if names else None


GROUP = other_group()
# The naive answer policy writes every answer back (the grounded one writes
# only answers grounded in the user's records): the SIGTERM test needs one
# queued write to see the drain flush it.
LIFE = {**FAST, "server": {**FAST["server"], "socket_group": GROUP or ""},
        "memory": {"writeback_flush_ms": 600_000, "writeback_batch": 10_000,
                   "writeback_quality_threshold": 0.0},
        "answer": {"policy": "naive"}}


class NotifyListener:
    """What systemd sees: every sd_notify datagram, in order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[dict[str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            self.messages.append(dict(line.split("=", 1) for line in data.decode().splitlines()))

    def wait_for(self, key: str, value: str = "1", after: int = 0, count: int = 1,
                 timeout_s: float = 30.0) -> int:
        """Index of the count-th message (from ``after``) with key=value."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            hits = [i for i, m in enumerate(self.messages) if i >= after and m.get(key) == value]
            if len(hits) >= count:
                return hits[count - 1]
            time.sleep(0.05)
        raise AssertionError(f"no {count}x {key}={value} after #{after}: {self.messages[-10:]}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def log_text(d: DaemonProcess) -> str:
    return d.log_path.read_text(errors="replace")


def wait_log(d: DaemonProcess, needle: str, count: int, timeout_s: float = 30.0) -> None:
    end = time.monotonic() + timeout_s
    while log_text(d).count(needle) < count:
        assert time.monotonic() < end, f"log has no {count}x {needle!r}:\n{d.log()}"
        time.sleep(0.05)


def burst(endpoint: str, n: int) -> list[str]:
    """n back-to-back health calls on a fresh connection: the outcome of each."""
    out = []
    with Client(endpoint, timeout_s=10) as c:
        for _ in range(n):
            try:
                c.health()
                out.append("ok")
            except ClientError as exc:
                out.append(exc.code)
    return out


@pytest.fixture(scope="module")
def life(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("life")
    data = base / "data"
    data.mkdir()
    listener = NotifyListener(base / "notify.sock")
    saved = {k: os.environ.get(k) for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    os.environ.update(NOTIFY_SOCKET=str(listener.path), WATCHDOG_USEC="2000000")
    try:
        dp = DaemonProcess(data, MODELS_DIR, LIFE, base / "daemon.log").start()
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    yield {"dp": dp, "notify": listener}
    listener.close()
    dp.close_clients()
    if dp.proc and dp.proc.poll() is None:
        dp.stop()


def test_ready_and_watchdog_reach_the_service_manager(life: dict[str, Any]) -> None:
    n, pid = life["notify"], life["dp"].proc.pid
    ready = n.wait_for("READY")
    first = n.messages[ready]
    assert first["MAINPID"] == str(pid) and first["STATUS"].startswith("serving on ipc://")
    assert not any(m.get("WATCHDOG") for m in n.messages[:ready]), "pinged before READY"
    n.wait_for("WATCHDOG", after=ready, count=3)     # every WATCHDOG_USEC / 2 = 1 s


def test_ipc_socket_is_0660_with_the_configured_group(life: dict[str, Any]) -> None:
    st = os.stat(life["dp"].data_dir / "ruvllm-edge.sock")
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    if GROUP:
        assert grp.getgrgid(st.st_gid).gr_name == GROUP
    else:
        assert st.st_gid == os.getegid()


def test_logs_are_json_lines_without_user_text(life: dict[str, Any]) -> None:
    d = life["dp"]
    secret = f"zebra-{uuid.uuid4().hex[:12]}"
    c = d.client()
    c.memory_add(f"The vault phrase is {secret}.", kind="fact")
    c.query(f"Repeat after me: {secret}", max_tokens=8)
    c.memory_search(f"what is {secret}")
    wait_log(d, '"op": "memory.search"', 1)
    text = log_text(d)
    assert secret not in text
    ours = [line for line in text.splitlines() if line.startswith("{")]
    assert len(ours) >= 5
    for line in ours:
        rec = json.loads(line)
        assert {"ts", "level", "logger", "msg"} <= set(rec), rec


def test_sighup_reloads_safe_settings_and_refuses_a_bad_config(life: dict[str, Any]) -> None:
    d, n = life["dp"], life["notify"]
    merged = {k: dict(v) for k, v in TEST_CONFIG.items()}
    for section, values in LIFE.items():
        merged.setdefault(section, {}).update(values)
    assert burst(d.endpoint, 5) == ["ok"] * 5

    strict = {**merged, "server": {**merged["server"], "rate_limit_per_s": 0.2,
                                   "rate_limit_burst": 2},
              "system": {**merged["system"], "log_level": "DEBUG"}}
    write_config(d.config_path, strict)
    before = len(n.messages)
    d.proc.send_signal(signal.SIGHUP)
    wait_log(d, '"msg": "config reloaded"', 1)
    reloading = n.wait_for("RELOADING", after=before)
    assert n.messages[n.wait_for("READY", after=reloading)]["STATUS"] == "serving (reloaded)"
    assert burst(d.endpoint, 4) == ["ok", "ok", "rate_limited", "rate_limited"]

    d.config_path.write_text('[server]\nrate_limit_per_s = "fast"\n')
    d.proc.send_signal(signal.SIGHUP)
    wait_log(d, '"msg": "reload refused: invalid config"', 1)
    assert "server.rate_limit_per_s" in log_text(d)
    assert burst(d.endpoint, 3) == ["ok", "ok", "rate_limited"]     # old settings kept

    write_config(d.config_path, merged)
    d.proc.send_signal(signal.SIGHUP)
    wait_log(d, '"msg": "config reloaded"', 2)
    assert burst(d.endpoint, 20) == ["ok"] * 20
    assert d.proc.poll() is None


def test_sighup_with_an_unreadable_config_keeps_serving_and_the_old_settings(
        life: dict[str, Any]) -> None:
    """An OSError on reload (here the file became a directory: root reads any file mode,
    so this stands for PermissionError too) is logged; the daemon and its settings stay."""
    d = life["dp"]
    reloaded = log_text(d).count('"msg": "config reloaded"')
    aside = d.config_path.with_name(d.config_path.name + ".aside")
    d.config_path.rename(aside)
    d.config_path.mkdir()
    try:
        d.proc.send_signal(signal.SIGHUP)
        wait_log(d, '"msg": "reload refused: config unreadable"', 1)
        assert "IsADirectoryError" in log_text(d)
        assert d.proc.poll() is None
        assert burst(d.endpoint, 20) == ["ok"] * 20          # the running limits stayed
    finally:
        d.config_path.rmdir()
        aside.rename(d.config_path)
    d.proc.send_signal(signal.SIGHUP)
    wait_log(d, '"msg": "config reloaded"', reloaded + 1)
    assert d.proc.poll() is None


def test_sigterm_flushes_writeback_saves_router_and_exits_0(life: dict[str, Any]) -> None:
    d, n = life["dp"], life["notify"]
    c = d.client()
    version = c.health()["components"]["router"]["version"]
    rid = c.query("Name one planet.", max_tokens=8)["request_id"]
    db = d.data_dir / "memory.db"

    def qa_rows() -> int:
        conn = connect(db, readonly=True)
        try:
            return int(conn.execute("SELECT count(*) FROM nodes WHERE kind = 'qa_pair' AND "
                                    "request_id = ?", (rid,)).fetchone()[0])
        finally:
            conn.close()

    assert qa_rows() == 0, "written before SIGTERM: the test would prove nothing"
    (d.data_dir / "router.npz").unlink()
    before = len(n.messages)
    d.close_clients()
    assert d.stop(timeout_s=60) == 0, d.log()
    n.wait_for("STOPPING", after=before)
    assert qa_rows() == 1
    from ruvllm_edge.router.policy import Router
    assert Router.load(d.data_dir / "router.npz", RouterConfig()).version == version
    assert not (d.data_dir / "ruvllm-edge.sock").exists()
    assert not bk.daemon_holds_lock(d.data_dir)
    assert '"msg": "stopped"' in log_text(d)


# --------------------------------------------------------------------------- corrupt database


def test_a_corrupt_database_names_restore_and_restore_brings_it_back(
        start_daemon: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    d = start_daemon(FAST, data_dir=data)
    c = d.client()
    facts = {}
    for i in range(40):
        text = f"Corruption canary {i}: locker {100 + i} holds the {i}th spare battery."
        facts[c.memory_add(text, kind="fact")["ids"][0]] = text
    d.close_clients()
    assert d.stop() == 0
    backup_dir = tmp_path / "bk"
    cli = [sys.executable, "-m", "ruvllm_edge.cli"]
    assert subprocess.run([*cli, "backup", "--to", str(backup_dir), "--data-dir", str(data)],
                          cwd=ROOT, capture_output=True).returncode == 0

    db = data / "memory.db"
    raw = bytearray(db.read_bytes())
    pages = len(raw) // 4096
    assert pages > 20
    for p in range(2, pages - 1, 2):            # every other page past the header page
        raw[p * 4096 + 8:(p + 1) * 4096] = os.urandom(4096 - 8)
    db.write_bytes(bytes(raw))
    serve = subprocess.run([*cli, "serve", "--config", str(d.config_path), "--data-dir", str(data),
                            "--models-dir", str(MODELS_DIR)], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
    assert serve.returncode == 2, serve.stderr[-3000:]
    assert f"ruvllm-edge restore --from BACKUP_DIR --data-dir {data}" in serve.stderr

    res = subprocess.run([*cli, "restore", "--from", str(backup_dir), "--data-dir", str(data)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert list(tmp_path.glob("data.prev-*")), "the corrupt data dir is kept aside"
    d.start()
    c = d.client()
    for nid, text in facts.items():
        assert c.memory_get(nid)["text"] == text


# --------------------------------------------------------------------------- CURVE


class CurveDaemon(DaemonProcess):
    """A daemon on tcp://127.0.0.1 that only CURVE clients with its key can reach."""

    def __init__(self, *args: Any, endpoint: str, server_public: str, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.endpoint = endpoint
        self.server_public = server_public

    def new_client(self, timeout_s: float) -> Client:
        return Client(self.endpoint, timeout_s=timeout_s, curve_server_key=self.server_public)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_curve_over_loopback_tcp_end_to_end(tmp_path: Path) -> None:
    public, secret = (k.decode() for k in zmq.curve_keypair())
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    data = tmp_path / "data"
    data.mkdir()
    cfg = {**FAST, "server": {**FAST["server"], "endpoint": endpoint,
                              "curve_secret_key": secret, "curve_public_key": public}}
    d = CurveDaemon(data, MODELS_DIR, cfg, tmp_path / "daemon.log", endpoint=endpoint,
                    server_public=public).start()
    try:
        with d.client(timeout_s=30) as c:
            nid = c.memory_add("The CURVE test fact: the red kayak is in shed four.")["ids"][0]
            assert c.memory_search("where is the red kayak", k=3)[0]["id"] == nid
            assert c.health()["status"] in ("healthy", "degraded")
        assert not (data / "ruvllm-edge.sock").exists()
        with Client(endpoint, timeout_s=2) as plain:            # no CURVE at all
            with pytest.raises(ClientTimeout):
                plain.health()
        wrong = zmq.curve_keypair()[0].decode()
        with Client(endpoint, timeout_s=2, curve_server_key=wrong) as impostor:
            with pytest.raises(ClientTimeout):
                impostor.health()
    finally:
        code = d.stop()
    assert code == 0, d.log()


# --------------------------------------------------------------------------- reload of [learning]


def learn_report(c: Client) -> dict[str, Any]:
    return c.learn(wait=True, timeout_s=300)["jobs"]


def test_sighup_reaches_the_learning_jobs_and_names_what_needs_a_restart(
        start_daemon: Any) -> None:
    base = {"server": FAST["server"], "inference": {"n_threads": 1},
            "learning": {"enabled": True, "explore_per_run": 0}}
    d = start_daemon(base)
    c = d.client()
    assert learn_report(c)["router_training"]["report"]["train"]["reason"] == \
        "too few training samples (0 < 16)"

    def reload_with(**changes: dict[str, Any]) -> None:
        merged = {k: dict(v) for k, v in TEST_CONFIG.items()}
        for section, values in (*base.items(), *changes.items()):
            merged.setdefault(section, {}).update(values)
        write_config(d.config_path, merged)
        count = log_text(d).count('"msg": "config reloaded"')
        d.proc.send_signal(signal.SIGHUP)
        wait_log(d, '"msg": "config reloaded"', count + 1)

    # The router's trainer settings (router.train_config) follow [learning] ...
    reload_with(learning={"min_train_samples": 5, "replay_capacity": 500},
                memory={"knn_k": 12})
    assert learn_report(c)["router_training"]["report"]["train"]["reason"] == \
        "too few training samples (0 < 5)"
    restart = [json.loads(line) for line in log_text(d).splitlines()
               if '"msg": "reload: kept the running value of settings that need a restart"'
               in line]
    assert restart and restart[-1]["keys"] == ["learning.replay_capacity", "memory.knn_k"]

    # ... and so do the scheduler's (job_memory_margin_mb: no job fits any more).
    reload_with(learning={"min_train_samples": 5, "replay_capacity": 500,
                          "job_memory_margin_mb": 65_536}, memory={"knn_k": 12})
    jobs = learn_report(c)
    assert {j["status"] for j in jobs.values()} == {"skipped"}, jobs
    assert all(j["report"]["reason"] == "memory budget" for j in jobs.values())


def modes_under(root: Path) -> dict[str, int]:
    """Permission bits of every file and directory under root (sockets and links skipped)."""
    out = {".": stat.S_IMODE(root.stat().st_mode)}
    for p in root.rglob("*"):
        st = p.lstat()
        if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
            out[str(p.relative_to(root))] = stat.S_IMODE(st.st_mode)
    return out


def test_private_by_default_under_umask_022(tmp_path: Path) -> None:
    """The README's quick start with the usual umask: nothing the daemon writes is readable
    by others. A data dir and router left 0755/0644 by an older version are narrowed
    with a warning; memory.db, its -wal/-shm, the lock, router.npz and a backup are
    created private."""
    data = tmp_path / "data"
    data.mkdir()
    os.chmod(data, 0o755)
    old = os.umask(0o022)
    try:
        dp = DaemonProcess(data, MODELS_DIR, FAST, tmp_path / "daemon.log")
        # the seeded router.npz is copied under umask 022: 0644, like an old install's
        dp.start()
    finally:
        os.umask(old)
    try:
        c = dp.client(timeout_s=60)
        c.memory_add("The door code is 4711.", kind="fact")
        target = tmp_path / "usb"
        c.backup(str(target))
        live = modes_under(data)
        assert live["."] == 0o700
        for name in ("memory.db", "memory.db-wal", "memory.db-shm", "router.npz",
                     "ruvllm-edge.lock"):
            assert live.get(name) == 0o600, (name, oct(live.get(name, 0)), live)
        assert "permissions tightened" in dp.log() and "router.npz" in dp.log()
        backup_modes = modes_under(target)
        assert any(k.endswith("memory.db") for k in backup_modes), backup_modes
        loose = {k: oct(m) for k, m in backup_modes.items() if m & 0o077 and k != "."}
        assert not loose, loose
    finally:
        dp.close_clients()
        assert dp.stop() == 0, dp.log()
    after = modes_under(data)                      # router saved and DB closed on SIGTERM
    loose = {k: oct(m) for k, m in after.items() if m & 0o077}
    assert not loose, loose


def test_with_a_socket_group_the_data_dir_is_0750_and_nothing_is_world_readable(
        life: dict[str, Any]) -> None:
    if not GROUP:
        pytest.skip("no second group to give the socket to")
    modes = modes_under(life["dp"].data_dir)
    assert modes["."] == 0o750
    assert not {k: oct(m) for k, m in modes.items() if m & 0o007}
    for name in ("memory.db", "memory.db-wal", "ruvllm-edge.lock"):   # created by the daemon:
        assert modes[name] == 0o600, (name, oct(modes[name]))   # the group reaches the socket only
    assert modes["router.npz"] & 0o037 == 0    # the seed was copied 0644: narrowed to 0640 at most
