"""`ruvllm-edge models list|fetch|verify`: the model catalogue on this device."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .. import models as catalogue
from ..errors import ModelIntegrityError
from .common import load_config


def cmd_models(ns: argparse.Namespace) -> int:
    cfg = load_config(ns)
    mdir = Path(cfg.models_dir)
    if ns.action == "list":
        for row in catalogue.status(mdir, check_hash=False):
            mark = "present" if row["present"] else "missing"
            opt = " (optional)" if row["optional"] else ""
            print(f"{row['name']:<28} {row['kind']:<9} {float(str(row['size_bytes'])) / 1e6:7.1f} MB "
                  f"{row['licence']:<11} {mark}{opt}  [{row['packages']}]")
        return 0
    names = ns.names or ([n for n in catalogue.CATALOGUE] if ns.all else list(catalogue.REQUIRED))
    unknown = [n for n in names if n not in catalogue.CATALOGUE]
    if unknown:
        print(f"unknown model(s): {', '.join(unknown)}; see `ruvllm-edge models list`",
              file=sys.stderr)
        return 2
    failed = 0
    for name in names:
        try:
            if ns.action == "fetch":
                path = catalogue.fetch(name, mdir, force=ns.force)
                print(f"{name}: ok ({path})")
            else:
                catalogue.verify_file(catalogue.path_of(name, mdir), catalogue.CATALOGUE[name].sha256)
                print(f"{name}: sha256 ok")
        except ModelIntegrityError as exc:
            print(f"{name}: FAILED: {exc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    s = sub.add_parser("models", parents=[common], help="list, fetch or verify model files")
    s.add_argument("action", choices=("list", "fetch", "verify"))
    s.add_argument("names", nargs="*", help="catalogue names (default: the required ones)")
    s.add_argument("--all", action="store_true", help="include optional models")
    s.add_argument("--force", action="store_true", help="fetch even if present and valid")
    s.set_defaults(func=cmd_models)
