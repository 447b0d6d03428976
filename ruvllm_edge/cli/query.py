"""`ruvllm-edge ask`, `chat` and `feedback`: asking the daemon and rating its answers."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .common import client, print_json


def sources_lines(res: dict[str, Any]) -> list[str]:
    """The records an answer came from, one line each, for under the answer."""
    out = []
    for s in res.get("sources") or []:
        out.append(f"  [{s.get('id')}] {s.get('kind')} from {s.get('source', 'user')}: "
                   f"{' '.join(str(s.get('preview', '')).split())}")
    return (["sources:", *out] if out else [])


def cmd_ask(ns: argparse.Namespace) -> int:
    cons = {"max_tokens": ns.max_tokens, "temperature": ns.temperature, "top_p": ns.top_p,
            "max_latency_ms": ns.max_latency_ms}
    use_memory = False if ns.no_memory else None
    with client(ns) as c:
        if ns.json or ns.no_stream:
            res = c.query(ns.text, ns.session, use_memory=use_memory, **cons)
            if ns.json:
                print_json(res)
            else:
                print(res["text"])
                for line in sources_lines(res):
                    print(line)
            return 0
        stream = c.stream(ns.text, ns.session, use_memory=use_memory, **cons)
        for piece in stream:
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        res = stream.result or {}
        for line in sources_lines(res):
            print(line)
        if res.get("truncated"):
            print(f"[truncated: {res.get('finish_reason')}]", file=sys.stderr)
        print(f"[request {res.get('request_id')}]", file=sys.stderr)
    return 0


def cmd_chat(ns: argparse.Namespace) -> int:
    with client(ns) as c:
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
    with client(ns) as c:
        print_json(c.feedback(ns.request_id, rating=ns.rating, correction=ns.correction))
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
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
