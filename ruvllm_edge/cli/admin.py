"""`ruvllm-edge status`, `health`, `stats`, `metrics` and `learn`: operating a running daemon.

``status`` is the one screen an operator looks at first (like ``systemctl
status`` or ``ollama ps``): health, the model, memory, the queue, the last
backup and the last learning runs. It is built from the daemon's ``health``,
``stats`` and ``memory.stats`` ops, plus the newest backup's manifest in the
configured backup directory (a file on this device; the daemon keeps no
backup history). ``render_status`` is pure, so the layout is tested without
a daemon and the command is tested against a real one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from ..errors import ClientError, ClientTimeout
from .common import Command, client, load_config, print_json

MB = 1_048_576


def cmd_simple(op: str) -> Command:
    def run(ns: argparse.Namespace) -> int:
        with client(ns) as c:
            res = c.call(op, {})
        if op == "metrics":
            print(res["text"], end="")
        else:
            print_json(res)
        if op == "health":
            return 0 if res.get("status") == "healthy" else 1
        return 0
    return run


def cmd_learn(ns: argparse.Namespace) -> int:
    with client(ns) as c:
        print_json(c.learn(wait=ns.now, timeout_s=max(ns.timeout, 600.0) if ns.now else None))
    return 0


# ---------------------------------------------------------------------------- status


def last_backup(target: Path) -> dict[str, Any] | None:
    """The newest backup's manifest facts in ``target`` (None when there is none)."""
    from .. import backup as bk

    try:
        folder = bk.resolve_backup_dir(target)
        manifest = json.loads((folder / bk.MANIFEST).read_text(encoding="utf-8"))
    except (bk.BackupError, OSError, ValueError):
        return None
    files = manifest.get("files") or {}
    return {"path": str(folder), "created_at_epoch": manifest.get("created_at_epoch"),
            "created_at": manifest.get("created_at"),
            "size_bytes": sum(int(f.get("size_bytes", 0)) for f in files.values()),
            "counts": manifest.get("counts") or {}}


def _ago(then: float, now: float) -> str:
    s = max(0.0, now - then)
    if s < 90:
        return f"{s:.0f} s ago"
    if s < 5400:
        return f"{s / 60:.0f} min ago"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h ago"
    return f"{s / 86400:.1f} days ago"


def _when(epoch: float, now: float) -> str:
    return f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(epoch))} ({_ago(epoch, now)})"


def _duration(s: float) -> str:
    s = int(s)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return f"{d}d {h}h {m:02d}m" if d else f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s"


def _size(n: float) -> str:
    return f"{n / MB:.1f} MB" if n < 1024 * MB else f"{n / (1024 * MB):.2f} GB"


def _model_line(m: Mapping[str, Any]) -> str:
    state = str(m.get("state", "?"))
    bits = [f"{m.get('model', '?')}: {state}"]
    if m.get("idle_s") is not None:
        bits.append(f"idle {m['idle_s']:.0f} s")
    keep = m.get("keep_alive_s")
    if keep is not None:
        bits.append("kept loaded" if keep < 0 else f"unloads after {keep} s idle")
    bits.append(f"n_ctx {m.get('n_ctx', '?')}, {m.get('n_threads', '?')} threads, "
                f"{m.get('loads', 0)} loads")
    line = ", ".join(bits)
    return f"{line}; error: {m['error']}" if m.get("error") else line


def _memory_line(mem: Mapping[str, Any] | None, comp: Mapping[str, Any] | None) -> str:
    if mem is None:
        if comp and comp.get("error"):
            return f"unavailable: {comp['error']}"
        return "off"
    wb = mem.get("writeback") or {}
    return (f"{mem.get('nodes', 0):,} nodes ({mem.get('archived', 0):,} archived, "
            f"{mem.get('corrections', 0):,} corrections), {mem.get('edges', 0):,} edges, "
            f"database {_size(mem.get('db_bytes', 0))}, writeback queue {wb.get('queued', 0)}")


def _learning_lines(learning: Mapping[str, Any] | None, now: float) -> list[str]:
    if learning is None:
        return ["off"]
    ran = [(name, st) for name, st in learning.items() if st.get("runs")]
    if not ran:
        return [f"no run since the daemon started ({', '.join(learning) or 'no jobs'})"]
    out = []
    for name, st in sorted(ran, key=lambda kv: -float(kv[1].get("last_at", 0.0))):
        line = (f"{name}: {st.get('last_status', '?')} {_when(float(st.get('last_at', 0)), now)}, "
                f"{float(st.get('last_s', 0)):.1f} s; {st.get('runs', 0)} runs, "
                f"{st.get('failed', 0)} failed")
        version = (st.get("last_report") or {}).get("router_version")
        out.append(line + (f"; router version {version}" if version is not None else ""))
    return out


def render_status(health: Mapping[str, Any] | None, stats: Mapping[str, Any] | None,
                  mem: Mapping[str, Any] | None, backup: Mapping[str, Any] | None,
                  now: float, endpoint: str = "", backup_dir: str = "") -> str:
    """The status screen as text (no I/O: every input is plain data)."""
    rows: list[tuple[str, str]] = []
    if health is None:
        rows.append(("daemon", f"not reachable at {endpoint} (is it running? "
                               "`ruvllm-edge serve` or `systemctl status ruvllm-edge`)"))
    else:
        comps: Mapping[str, Any] = health.get("components") or {}
        st = stats or {}
        rows.append(("daemon", f"{health.get('status', '?')}, version {health.get('version', '?')}, "
                               f"up {_duration(float(health.get('uptime_s', 0)))}, "
                               f"{st.get('endpoint') or endpoint}"))
        if st.get("data_dir"):
            rows.append(("data dir", str(st["data_dir"])))
        rows.append(("model", _model_line(st.get("model") or comps.get("inference") or {})))
        rows.append(("memory", _memory_line(mem, comps.get("memory"))))
        if "router" in comps:
            r = comps["router"]
            rows.append(("router", f"version {r['version']}, {r.get('size_bytes', 0):,} bytes"
                         if r.get("status") == "healthy" else f"{r.get('status')}: {r.get('error')}"))
        res = comps.get("resources") or {}
        if res:
            rows.append(("resources", f"RSS {res.get('rss_mb', 0):.0f} MB of a "
                                      f"{res.get('budget_mb', 0)} MB budget, "
                                      f"{res.get('mem_available_mb', 0):.0f} MB RAM available, "
                                      f"{res.get('disk_free_mb', 0):.0f} MB disk free"))
        q = comps.get("queue") or st.get("queue") or {}
        rows.append(("queue", f"{q.get('active', 0)} active; queued: generation {q.get('gen', 0)}"
                              f" (of {q.get('max', '?')}), memory/feedback {q.get('aux', 0)}, "
                              f"learn/backup {q.get('slow', 0)}"))
        req = st.get("requests") or {}
        ok = sum(v for k, v in req.items() if k.endswith("/ok"))
        errors = sum((st.get("errors") or {}).values())
        tok = st.get("tokens") or {}
        rows.append(("requests", f"{ok:,.0f} ok, {errors:,.0f} errors; tokens: "
                                 f"{tok.get('prompt', 0):,.0f} prompt ({tok.get('cached', 0):,.0f} "
                                 f"cached), {tok.get('completion', 0):,.0f} completion"))
        bad = [f"{name} {c.get('status')}" + (f" ({c['error']})" if c.get("error") else "")
               for name, c in comps.items() if c.get("status") not in (None, "healthy")]
        if bad:
            rows.append(("problems", "; ".join(bad)))
    if backup is None:
        rows.append(("last backup", f"none found in {backup_dir}" if backup_dir else "none found"))
    else:
        when = (_when(float(backup["created_at_epoch"]), now) if backup.get("created_at_epoch")
                else str(backup.get("created_at")))
        nodes = (backup.get("counts") or {}).get("nodes")
        rows.append(("last backup", f"{when}, {_size(backup.get('size_bytes', 0))}"
                                    + (f", {nodes:,} nodes" if nodes is not None else "")
                                    + f", in {backup.get('path')}"))
    if health is not None:
        for i, line in enumerate(_learning_lines((stats or {}).get("learning"), now)):
            rows.append(("last learning" if i == 0 else "", line))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def cmd_status(ns: argparse.Namespace) -> int:
    cfg = load_config(ns)
    health = stats = mem = None
    endpoint = cfg.endpoint()
    try:
        with client(ns, timeout_s=min(ns.timeout, 5.0)) as c:
            health = c.health()
            stats = c.stats()
            try:
                mem = c.memory_stats()
            except ClientError as exc:
                if isinstance(exc, ClientTimeout):
                    raise
                mem = None   # memory off or unavailable: health says why
    except ClientTimeout:
        health = None
    data_dir = Path((stats or {}).get("data_dir") or cfg.data_dir)
    target = Path(cfg.backup.dir).expanduser() if cfg.backup.dir else data_dir / "backups"
    backup = last_backup(target)
    if ns.json:
        print_json({"health": health, "stats": stats, "memory": mem, "last_backup": backup,
                    "backup_dir": str(target)})
    else:
        print(render_status(health, stats, mem, backup, time.time(), endpoint, str(target)))
    if health is None:
        return 3
    if health.get("status") != "healthy":
        print(f"ruvllm-edge: the daemon is {health.get('status')}", file=sys.stderr)
        return 1
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    s = sub.add_parser("status", parents=[common],
                       help="one screen: health, model, memory, queue, last backup and learning")
    s.add_argument("--json", action="store_true", help="the gathered facts as JSON")
    s.set_defaults(func=cmd_status)

    for op in ("health", "stats", "metrics"):
        s = sub.add_parser(op, parents=[common], help=f"print the daemon's {op}")
        s.set_defaults(func=cmd_simple(op))

    s = sub.add_parser("learn", parents=[common], help="run the idle-time learning jobs")
    s.add_argument("--now", action="store_true", help="run now and wait for the report")
    s.set_defaults(func=cmd_learn)
