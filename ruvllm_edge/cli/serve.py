"""`ruvllm-edge serve` (the daemon in the foreground) and `ruvllm-edge validate`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .. import config as config_mod
from ..errors import ConfigError
from .common import load_config


def cmd_serve(ns: argparse.Namespace) -> int:
    from .. import logs
    from ..server import StartupError, run

    cfg = load_config(ns)
    logs.setup(cfg.system.log_level, cfg.system.log_json)
    try:
        return run(cfg)
    except StartupError as exc:
        print(f"ruvllm-edge: {exc}", file=sys.stderr)
        return 2


def cmd_validate(ns: argparse.Namespace) -> int:
    if ns.list:
        for key, default, allowed in config_mod.describe_all():
            print(f"{key} = {default!r}    # {allowed}")
        return 0
    path = ns.config or None
    try:
        cfg = load_config(ns)
    except ConfigError as exc:
        print(f"{path or '(defaults)'}: {len(exc.errors)} problem(s)", file=sys.stderr)
        for err in exc.errors:
            print(f"  {err}", file=sys.stderr)
        return 2
    print(f"{path or '(defaults)'}: ok (endpoint {cfg.endpoint()}, data dir {cfg.data_dir})")
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    s = sub.add_parser("serve", parents=[common], help="run the daemon in the foreground")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("validate", parents=[common], help="check a config file")
    s.add_argument("--list", action="store_true", help="list every key, default and range")
    s.set_defaults(func=cmd_validate)
