"""What a person gets back: taught facts found, never-taught questions declined, memory kept clean.

Runs the real daemon and model over hand-written house notes
(benchmarks/data/notes-*.json): each split's notes are added with
``memory.add`` as a person would paste them, then every question is asked
with ``query``. In the same run, for the same questions:

- ``grounded``: the daemon as shipped (answer.policy = "grounded");
- ``naive``: records in the prompt, whatever the model says is kept and
  written back (answer.policy = "naive"; what the daemon did before);
- ``no_memory``: the same model with no memory (``use_memory: false``),
  i.e. raw llama.cpp behind the same chat template.

Splits (each figure in the JSON names its split):
- ``dev``: notes-dev.json; every rule and floor of the answer policy was
  written or fitted on it;
- ``validation``: notes-heldout.json notes 1-5 and the even general
  questions, looked at once mid-development (not clean);
- ``test``: notes-heldout.json notes 6-10, the odd general questions and
  the session scenarios, never looked at while developing: the headline.

Figures per policy and split:
- taught_correct: share of taught questions whose answer contains a gold value;
- never_declined: share of never-taught personal questions answered
  "I don't have that in my notes.";
- never_leaked: share of never-taught questions whose answer contains a
  value stored in the same note (the garage code given for the gate);
- general_answered / general_declined: general-knowledge questions;
- framing: answers carrying memory framing;
- qa_written / qa_ungrounded: model qa_pairs written back, and those not
  grounded; top_user_after_restart: share of taught questions whose top
  ``memory.search`` hit after a restart is the user's own record;
- sessions (test split): statements told in a session, then asked.

Usage: python benchmarks/bench_answers.py [--split dev|validation|test|all]
       [--policies grounded,naive,no_memory] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import RESULTS_DIR, ROOT, BenchDaemon, save_results

from ruvllm_edge.answer.policy import DECLINE
from ruvllm_edge.answer.prompt import has_framing

DATA = ROOT / "benchmarks" / "data"
POLICIES = ("grounded", "naive", "no_memory")
DEFAULT_MODEL = "smollm2-135m-instruct-q4_1"
MAX_TOKENS = 48


def split_data(split: str) -> dict[str, Any]:
    """notes, general questions and sessions of one split."""
    if split == "dev":
        d = json.loads((DATA / "notes-dev.json").read_text())
        return {"notes": d["notes"], "general": d["general"], "sessions": []}
    d = json.loads((DATA / "notes-heldout.json").read_text())
    return {"notes": [n for n in d["notes"] if n.get("split") == split],
            "general": [g for g in d["general"] if g.get("split") == split],
            "sessions": d.get("sessions", []) if split == "test" else []}


def values_of(note: dict[str, Any]) -> list[str]:
    """The stored values a wrong answer could leak: gold values of the note's taught questions."""
    vals = {v for q in note["questions"] if q["type"] == "taught" for v in q["answer_any"]}
    return sorted(v for v in vals if re.search(r"\d", v) or len(v) >= 5)


def contains_any(text: str, options: list[str]) -> bool:
    low = text.lower()
    return any(o.lower() in low for o in options)


def config_toml(policy: str, model: str) -> str:
    pol = "grounded" if policy == "no_memory" else policy
    return (f'[answer]\npolicy = "{pol}"\n[learning]\nenabled = false\n'
            f'[inference]\nmodel = "{model}"\n'
            f'[server]\nrate_limit_per_s = 100000.0\nrate_limit_burst = 1000000\n')


def run_policy(policy: str, data: dict[str, Any], work: Path, models: Path,
               model: str = DEFAULT_MODEL) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    d = BenchDaemon(work / policy, models, config_toml(policy, model)).start(until_loaded=False)
    use_memory = policy != "no_memory"
    taught: list[dict[str, Any]] = []
    never: list[dict[str, Any]] = []
    general: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    try:
        with d.client() as c:
            for note in data["notes"]:
                c.memory_add(note["text"])
            for note in data["notes"]:
                vals = values_of(note)
                for q in note["questions"]:
                    r = c.query(q["q"], use_memory=use_memory, max_tokens=MAX_TOKENS)
                    row = {"note": note["id"], "q": q["q"], "text": r["text"],
                           "finish_reason": r["finish_reason"],
                           "plan": r["context"].get("plan"), "sources": len(r["sources"])}
                    if q["type"] == "taught":
                        row["correct"] = contains_any(r["text"], q["answer_any"])
                        taught.append(row)
                    else:
                        row["declined"] = r["text"] == DECLINE
                        row["leaked"] = contains_any(r["text"], vals)
                        never.append(row)
            for g in data["general"]:
                r = c.query(g["q"], use_memory=use_memory, max_tokens=MAX_TOKENS)
                general.append({"q": g["q"], "text": r["text"], "declined": r["text"] == DECLINE,
                                "correct": contains_any(r["text"], g["answer_any"])})
            sessions = []
            for s in data["sessions"]:
                sid = c.new_session()
                for st in s["statements"]:
                    c.query(st, session_id=sid, use_memory=use_memory, max_tokens=24)
                for q in s["questions"]:
                    r = c.query(q["q"], session_id=sid, use_memory=use_memory, max_tokens=MAX_TOKENS)
                    sessions.append({"q": q["q"], "text": r["text"],
                                     "correct": contains_any(r["text"], q["answer_any"])})
        elapsed = time.perf_counter() - t0
    finally:
        d.stop()
    # Restart: what memory kept, and what now ranks first for each taught question.
    d.start()
    try:
        with d.client() as c:
            nodes = list(c.memory_export(include_archived=False))
            qa = [n for n in nodes if n["kind"] == "qa_pair" and n["source"] == "model"]
            ungrounded = [n for n in qa if not (n["metadata"].get("grounded")
                                                or n["metadata"].get("confirmed"))]
            top_user = 0
            for row in taught:
                hits = c.memory_search(row["q"], k=1)
                top_user += bool(hits) and hits[0]["source"] == "user"
    finally:
        d.stop()
    answers = taught + never + general + sessions

    def share(rows: list[dict[str, Any]], key: str) -> float | None:
        return round(sum(bool(r[key]) for r in rows) / len(rows), 3) if rows else None

    return {
        "n": {"taught": len(taught), "never": len(never), "general": len(general),
              "sessions": len(sessions)},
        "taught_correct": share(taught, "correct"),
        "never_declined": share(never, "declined"),
        "never_leaked": share(never, "leaked"),
        "general_answered": share(general, "correct"),
        "general_declined": share(general, "declined"),
        "sessions_correct": share(sessions, "correct"),
        "framing": sum(has_framing(r["text"]) for r in answers),
        "qa_written": len(qa), "qa_ungrounded": len(ungrounded) if use_memory else None,
        "top_user_after_restart": round(top_user / len(taught), 3) if taught and use_memory else None,
        "seconds": round(elapsed, 1),
        "misses": {"taught": [(r["q"], r["text"]) for r in taught if not r["correct"]],
                   "never": [(r["q"], r["text"]) for r in never if not r["declined"]]},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", default="all", help="dev, validation, test, a comma list, or all")
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--models-dir", default=str(ROOT / "models"))
    ap.add_argument("--model", default=DEFAULT_MODEL, help="catalogue name of the LLM")
    ap.add_argument("--out", default=str(RESULTS_DIR / "bench_answers.json"))
    a = ap.parse_args()
    splits = ("test", "validation", "dev") if a.split == "all" else tuple(a.split.split(","))
    policies = [p for p in a.policies.split(",") if p]
    bad = [p for p in policies if p not in POLICIES]
    if bad:
        sys.exit(f"unknown policy {bad}; choose from {POLICIES}")
    results: dict[str, Any] = {
        "about": "bench_answers: house notes through the real daemon; every figure is keyed "
                 "by split then policy. Splits: dev (policy fitted here), validation (looked at "
                 "once), test (never looked at while developing: the headline).",
        "max_tokens": MAX_TOKENS, "model": a.model, "splits": {}}
    with tempfile.TemporaryDirectory(prefix="bench-answers-") as tmp:
        for split in splits:
            data = split_data(split)
            results["splits"][split] = {}
            for p in policies:
                r = run_policy(p, data, Path(tmp) / split, Path(a.models_dir), a.model)
                results["splits"][split][p] = r
                save_results(results, a.out, echo=False)       # a long run keeps what it has
                print(f"{split:10s} {p:9s} taught {r['taught_correct']} never_declined "
                      f"{r['never_declined']} leaked {r['never_leaked']} general "
                      f"{r['general_answered']} sessions {r['sessions_correct']} "
                      f"qa_written {r['qa_written']} top_user {r['top_user_after_restart']}",
                      flush=True)
    save_results(results, a.out, echo=False)


if __name__ == "__main__":
    main()
