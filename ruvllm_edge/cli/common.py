"""What every command group shares: the global flags, config loading, the client, printing.

Command modules import only this module (and the rest of the package), never
``cli/__init__`` or each other, so the CLI has no import cycle: ``__init__``
imports the groups, the groups import ``common``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Callable

from .. import config as config_mod
from ..client import Client

Command = Callable[[argparse.Namespace], int]

# Applied after parsing (see cli.main): subparser copies of the global flags
# default to SUPPRESS so a value given before the subcommand is never overwritten.
GLOBAL_DEFAULTS: dict[str, Any] = {"config": None, "data_dir": None, "endpoint": None,
                                   "models_dir": None, "timeout": 120.0}


def global_flags() -> argparse.ArgumentParser:
    """The flags accepted before or after any subcommand (a parent parser)."""
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("--config", help=f"TOML config (env {config_mod.ENV_CONFIG})")
    common.add_argument("--data-dir", help=f"data directory (env {config_mod.ENV_DATA})")
    common.add_argument("--endpoint", help=f"ipc:// or tcp:// (env {config_mod.ENV_ENDPOINT})")
    common.add_argument("--models-dir", help=f"model files (env {config_mod.ENV_MODELS})")
    common.add_argument("--timeout", type=float, help="client timeout, seconds (default 120)")
    return common


def load_config(ns: argparse.Namespace) -> config_mod.Config:
    """The config file (or defaults) with the command line's overrides applied."""
    return config_mod.load(ns.config, data_dir=ns.data_dir, endpoint=ns.endpoint,
                           models_dir=ns.models_dir)


def client(ns: argparse.Namespace, timeout_s: float | None = None) -> Client:
    """A client for the configured daemon endpoint (use it as a context manager)."""
    cfg = load_config(ns)
    return Client(cfg.endpoint(), timeout_s=ns.timeout if timeout_s is None else timeout_s)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False, default=str))
