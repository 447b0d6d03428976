"""The ``ruvllm-edge`` command: run the daemon, talk to it, manage models.

Exit codes: 0 ok, 1 the daemon answered with an error, 2 bad usage or config,
3 the daemon could not be reached in time.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from . import __version__
from . import config as config_mod
from . import models as catalogue
from .client import Client
from .errors import ClientError, ClientTimeout, ConfigError, ModelIntegrityError

Command = Callable[[argparse.Namespace], int]
GLOBAL_DEFAULTS: dict[str, Any] = {"config": None, "data_dir": None, "endpoint": None,
                                   "models_dir": None, "timeout": 120.0}


def _load_config(ns: argparse.Namespace) -> config_mod.Config:
    return config_mod.load(ns.config, data_dir=ns.data_dir, endpoint=ns.endpoint,
                           models_dir=ns.models_dir)


def _client(ns: argparse.Namespace) -> Client:
    cfg = _load_config(ns)
    return Client(cfg.endpoint(), timeout_s=ns.timeout)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


# ---------------------------------------------------------------------------- daemon


def cmd_serve(ns: argparse.Namespace) -> int:
    from . import logs
    from .server import StartupError, run

    cfg = _load_config(ns)
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
        cfg = _load_config(ns)
    except ConfigError as exc:
        print(f"{path or '(defaults)'}: {len(exc.errors)} problem(s)", file=sys.stderr)
        for err in exc.errors:
            print(f"  {err}", file=sys.stderr)
        return 2
    print(f"{path or '(defaults)'}: ok (endpoint {cfg.endpoint()}, data dir {cfg.data_dir})")
    return 0


# ---------------------------------------------------------------------------- models


def cmd_models(ns: argparse.Namespace) -> int:
    cfg = _load_config(ns)
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


# ---------------------------------------------------------------------------- client commands


def cmd_ask(ns: argparse.Namespace) -> int:
    cons = {"max_tokens": ns.max_tokens, "temperature": ns.temperature, "top_p": ns.top_p,
            "max_latency_ms": ns.max_latency_ms}
    use_memory = False if ns.no_memory else None
    with _client(ns) as c:
        if ns.json or ns.no_stream:
            res = c.query(ns.text, ns.session, use_memory=use_memory, **cons)
            if ns.json:
                _print_json(res)
            else:
                print(res["text"])
            return 0
        stream = c.stream(ns.text, ns.session, use_memory=use_memory, **cons)
        for piece in stream:
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        res = stream.result or {}
        if res.get("truncated"):
            print(f"[truncated: {res.get('finish_reason')}]", file=sys.stderr)
        print(f"[request {res.get('request_id')}]", file=sys.stderr)
    return 0


def cmd_chat(ns: argparse.Namespace) -> int:
    with _client(ns) as c:
        sid = ns.session or c.new_session()
        print(f"session {sid} - empty line or /quit to leave, /good or /bad to rate the last "
              "answer, /fix TEXT to correct it", file=sys.stderr)
        last: str | None = None
        while True:
            try:
                line = input("> ").strip()
            except EOFError:
                break
            if not line or line == "/quit":
                break
            if line in ("/good", "/bad") and last:
                c.feedback(last, rating=5 if line == "/good" else 1)
                continue
            if line.startswith("/fix ") and last:
                c.feedback(last, rating=1, correction=line[5:].strip())
                continue
            stream = c.stream(line, sid, max_tokens=ns.max_tokens)
            for piece in stream:
                sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n")
            last = (stream.result or {}).get("request_id")
        if not ns.session:
            c.close_session(sid)
    return 0


def cmd_feedback(ns: argparse.Namespace) -> int:
    with _client(ns) as c:
        _print_json(c.feedback(ns.request_id, rating=ns.rating, correction=ns.correction))
    return 0


def cmd_simple(op: str) -> Command:
    def run(ns: argparse.Namespace) -> int:
        with _client(ns) as c:
            res = c.call(op, {})
        if op == "metrics":
            print(res["text"], end="")
        else:
            _print_json(res)
        if op == "health":
            return 0 if res.get("status") == "healthy" else 1
        return 0
    return run


def cmd_learn(ns: argparse.Namespace) -> int:
    with _client(ns) as c:
        _print_json(c.learn(wait=ns.now, timeout_s=max(ns.timeout, 600.0) if ns.now else None))
    return 0


# ---------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    # The global flags are accepted before or after the subcommand. Subparser
    # copies default to SUPPRESS so they never overwrite a value given earlier.
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("--config", help=f"TOML config (env {config_mod.ENV_CONFIG})")
    common.add_argument("--data-dir", help=f"data directory (env {config_mod.ENV_DATA})")
    common.add_argument("--endpoint", help=f"ipc:// or tcp:// (env {config_mod.ENV_ENDPOINT})")
    common.add_argument("--models-dir", help=f"model files (env {config_mod.ENV_MODELS})")
    common.add_argument("--timeout", type=float, help="client timeout, seconds (default 120)")

    p = argparse.ArgumentParser(prog="ruvllm-edge", parents=[common],
                                description="Self-learning local LLM daemon")
    p.add_argument("--version", action="version", version=f"ruvllm-edge {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", parents=[common], help="run the daemon in the foreground")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("validate", parents=[common], help="check a config file")
    s.add_argument("--list", action="store_true", help="list every key, default and range")
    s.set_defaults(func=cmd_validate)

    s = sub.add_parser("models", parents=[common], help="list, fetch or verify model files")
    s.add_argument("action", choices=("list", "fetch", "verify"))
    s.add_argument("names", nargs="*", help="catalogue names (default: the required ones)")
    s.add_argument("--all", action="store_true", help="include optional models")
    s.add_argument("--force", action="store_true", help="fetch even if present and valid")
    s.set_defaults(func=cmd_models)

    s = sub.add_parser("ask", parents=[common], help="ask one question (streams by default)")
    s.add_argument("text")
    s.add_argument("--json", action="store_true", help="print the whole result as JSON")
    s.add_argument("--no-stream", action="store_true")
    s.add_argument("--session")
    s.add_argument("--no-memory", action="store_true", help="answer without retrieved memory")
    s.add_argument("--max-tokens", type=int)
    s.add_argument("--temperature", type=float)
    s.add_argument("--top-p", type=float)
    s.add_argument("--max-latency-ms", type=int)
    s.set_defaults(func=cmd_ask)

    s = sub.add_parser("chat", parents=[common], help="multi-turn chat in one session")
    s.add_argument("--session", help="continue an existing session")
    s.add_argument("--max-tokens", type=int)
    s.set_defaults(func=cmd_chat)

    s = sub.add_parser("feedback", parents=[common], help="rate or correct an answer")
    s.add_argument("request_id")
    s.add_argument("--rating", type=int, choices=range(1, 6))
    s.add_argument("--correction")
    s.set_defaults(func=cmd_feedback)

    for op in ("health", "stats", "metrics"):
        s = sub.add_parser(op, parents=[common], help=f"print the daemon's {op}")
        s.set_defaults(func=cmd_simple(op))

    s = sub.add_parser("learn", parents=[common], help="run the idle-time learning jobs")
    s.add_argument("--now", action="store_true", help="run now and wait for the report")
    s.set_defaults(func=cmd_learn)

    _add_extra_commands(sub, common)
    return p


def _add_extra_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Command groups that live in their own modules."""
    from . import cli_backup, cli_memory

    cli_memory.register(sub, common)
    cli_backup.register(sub, common)


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


if __name__ == "__main__":
    sys.exit(main())
