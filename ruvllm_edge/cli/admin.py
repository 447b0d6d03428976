"""`ruvllm-edge health`, `stats`, `metrics` and `learn`: operating a running daemon."""

from __future__ import annotations

import argparse
from typing import Any

from .common import Command, client, print_json


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


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    for op in ("health", "stats", "metrics"):
        s = sub.add_parser(op, parents=[common], help=f"print the daemon's {op}")
        s.set_defaults(func=cmd_simple(op))

    s = sub.add_parser("learn", parents=[common], help="run the idle-time learning jobs")
    s.add_argument("--now", action="store_true", help="run now and wait for the report")
    s.set_defaults(func=cmd_learn)
