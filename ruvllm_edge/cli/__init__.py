"""The ``ruvllm-edge`` command: run the daemon, talk to it, manage models.

One module per command group, each with a ``register(sub, common)`` that adds
its subcommands; this module only builds the main parser from them and maps
exceptions to exit codes (circus's one dispatcher):

- ``serve``    serve, validate
- ``models``   models list/fetch/verify
- ``query``    ask, chat, feedback
- ``memory``   memory add/search/get/delete/stats/export/import
- ``backup``   backup, restore
- ``admin``    status, health, stats, metrics, learn
- ``warm``     warm (install time: numba cache, first-start router)

Exit codes: 0 ok, 1 the daemon answered with an error, 2 bad usage or config,
3 the daemon could not be reached in time.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .. import __version__
from ..errors import ClientError, ClientTimeout, ConfigError
from . import admin, backup, memory, models, query, serve, warm
from .common import GLOBAL_DEFAULTS, global_flags

GROUPS = (serve, models, query, memory, backup, admin, warm)


def build_parser() -> argparse.ArgumentParser:
    # The global flags are accepted before or after the subcommand. Subparser
    # copies default to SUPPRESS so they never overwrite a value given earlier.
    common = global_flags()
    p = argparse.ArgumentParser(prog="ruvllm-edge", parents=[common],
                                description="Self-learning local LLM daemon")
    p.add_argument("--version", action="version", version=f"ruvllm-edge {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(sub, common)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    # Not set_defaults(): parent parsers share their action objects, so that
    # would change the subcommands' SUPPRESS defaults too.
    for key, value in GLOBAL_DEFAULTS.items():
        if not hasattr(ns, key):
            setattr(ns, key, value)
    try:
        return int(ns.func(ns))
    except ConfigError as exc:
        print(f"ruvllm-edge: {exc}", file=sys.stderr)
        return 2
    except ClientTimeout as exc:
        print(f"ruvllm-edge: {exc.message} (is the daemon running? `ruvllm-edge serve`)",
              file=sys.stderr)
        return 3
    except ClientError as exc:
        print(f"ruvllm-edge: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `ruvllm-edge metrics | head`
        sys.stderr.close()
        return 0


__all__ = ["build_parser", "main"]
