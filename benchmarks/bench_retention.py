"""Knowledge retention: teach facts, restart the daemon, ask paraphrases.

The facts come from a data set nobody here wrote: the ISO 3166-1 numeric
country codes shipped in the PyPI package ``pycountry`` (fetched with
``pip download --no-deps``, checked by sha256, read from the wheel, never
installed). A 135M model does not know these numbers, so the baseline (the
same model and daemon with memory off) shows what memory adds.

Half the facts are taught with ``memory.add`` (kind fact), half the way a
user would: ask, get a wrong answer, send ``feedback`` with a correction.
Then the daemon is restarted (SIGTERM, new process, same data dir) and every
fact is asked with a differently worded question. An answer counts as correct
when it contains the code (leading zeros optional).

Two paths, told apart (issue 10):
- **generated** (the headline): router off, so the model writes every answer
  with the retrieved records in its prompt. This is the figure that involves
  the model.
- **verbatim memory path**: router on; a trusted record that matches well is
  returned as the answer itself. The check then matches the stored sentence
  (``echo_share`` says how many answers were the stored sentence verbatim), so
  it measures retrieval, not the model.
Plus, on both paths:
- **untemplated paraphrases**: each taught fact asked once more in phrasings
  that appear nowhere in the teaching or ASK templates;
- **hard negatives**: same entity, other attribute (taught the numeric code of
  X, asked X's alpha-3 code) and same attribute, an entity nobody taught. The
  figure is how often the answer repeats a taught code that does not answer
  the question ("leaks"), beside declines and right answers.

Usage: python benchmarks/bench_retention.py [--n 60] [--seed 7] [--negatives 10]
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import BenchDaemon, save_results  # noqa: E402
from _datasets import PYCOUNTRY, iso_tables  # noqa: E402
from ruvllm_edge.client import Client  # noqa: E402
from ruvllm_edge.learning.utility import is_decline  # noqa: E402

TEACH_FACT = "The ISO 3166-1 numeric code of {name} is {code}."
TEACH_QUESTION = "What is the ISO numeric country code of {name}?"
TEACH_CORRECTION = "{name} has the ISO 3166-1 numeric code {code}."
ASK = [
    "Which three-digit number does the ISO 3166 standard assign to {name}?",
    "Tell me the numeric ISO country code for {name}.",
]
# Written once for the held-out check, used nowhere else (not in TEACH_* or ASK).
PARAPHRASE = [
    "I noted a number for {name} from the ISO country list. What was it?",
    "{name} - numeric code?",
    "On a customs form, the ISO number for {name} is what?",
]
OTHER_ATTRIBUTE = "What is the ISO 3166-1 alpha-3 code of {name}?"
OTHER_ENTITY = "What is the ISO 3166-1 numeric code of {name}?"


def correct(text: str, code: str) -> bool:
    return re.search(rf"(?<!\d)0*{int(code)}(?!\d)", text) is not None


def config_toml(router: bool) -> str:
    return ("[inference]\nkeep_alive_s = -1\n[learning]\nidle_after_s = 86400.0\n"
            f"[router]\nenabled = {'true' if router else 'false'}\n")


def _taught_text(f: dict[str, Any]) -> str:
    return (TEACH_FACT if f["taught_by"] == "memory.add" else TEACH_CORRECTION).format(**f)


def _leaks(text: str, taught: list[dict[str, Any]], own_code: str | None) -> bool:
    """The answer repeats a taught numeric code that is not the answer to this question."""
    return any(correct(text, f["code"]) for f in taught if f["code"] != own_code)


def ask_all(d: BenchDaemon, facts: list[dict[str, Any]], negs: list[dict[str, Any]],
            path: str, baseline: bool) -> list[float]:
    """Ask every fact (an ASK phrasing and an untemplated PARAPHRASE) and every hard negative
    on one path; results go into the dicts under keys prefixed with ``path``."""
    lat: list[float] = []
    with Client(d.endpoint, timeout_s=600) as c:
        for i, f in enumerate(facts):
            q = ASK[i % len(ASK)].format(**f)
            r = c.query(q, max_tokens=32, temperature=0.0)
            lat.append(r["latency_ms"]["total"])
            f[f"{path}"] = correct(r["text"], f["code"])
            f[f"{path}_echo"] = _taught_text(f).rstrip(".") in r["text"]
            f[f"{path}_answer"] = r["text"][:120]
            f[f"{path}_mode"] = r["routing_info"].get("mode")
            p = c.query(PARAPHRASE[i % len(PARAPHRASE)].format(**f), max_tokens=32,
                        temperature=0.0)
            f[f"{path}_paraphrase"] = correct(p["text"], f["code"])
            if baseline:
                b = c.query(q, max_tokens=32, temperature=0.0, use_memory=False)
                f["baseline"] = correct(b["text"], f["code"])
            print(f"  [{path}] {i + 1:>3}/{len(facts)} {f['name'][:26]:<26} {f['code']:>3} "
                  f"{'ok ' if f[path] else 'NO '} paraphrase "
                  f"{'ok ' if f[path + '_paraphrase'] else 'NO '} {r['text'][:50]!r}", flush=True)
        for n in negs:
            r = c.query(n["question"], max_tokens=32, temperature=0.0)
            n[f"{path}_answer"] = r["text"][:120]
            n[f"{path}_leak"] = _leaks(r["text"], facts, n.get("own_code"))
            n[f"{path}_declined"] = is_decline(r["text"], r.get("finish_reason", ""))
            n[f"{path}_right"] = re.search(n["gold_regex"], r["text"]) is not None
    return lat


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=60, help="facts to teach")
    ap.add_argument("--negatives", type=int, default=10, help="hard negatives of each kind")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--models-dir", default=str(ROOT / "models"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_retention.json"))
    args = ap.parse_args()
    table = iso_tables("iso3166-1")["iso3166-1"]
    rng = random.Random(args.seed)
    rows = [{"name": r["name"], "code": r["numeric"], "alpha_3": r["alpha_3"]} for r in table]
    rng.shuffle(rows)
    facts = rows[:args.n]
    others = rows[args.n:args.n + args.negatives]
    negs = ([{"kind": "other_attribute", "name": f["name"],
              "question": OTHER_ATTRIBUTE.format(**f), "own_code": None,
              "gold_regex": rf"\b{f['alpha_3']}\b"} for f in facts[:args.negatives]]
            + [{"kind": "other_entity", "name": o["name"], "question": OTHER_ENTITY.format(**o),
                "own_code": o["code"], "gold_regex": rf"(?<!\d)0*{int(o['code'])}(?!\d)"}
               for o in others])
    results: dict[str, Any] = {"dataset": f"{PYCOUNTRY} pycountry/databases/iso3166-1.json",
                               "n": len(facts), "n_negatives": len(negs), "seed": args.seed}
    with tempfile.TemporaryDirectory(prefix="bench-retention-") as tmp:
        d = BenchDaemon(Path(tmp) / "data", Path(args.models_dir), config_toml(router=True))
        try:
            d.start()
            t0 = time.time()
            with Client(d.endpoint, timeout_s=300) as c:
                for i, f in enumerate(facts):
                    if i % 2 == 0:
                        f["taught_by"] = "memory.add"
                        c.memory_add(_taught_text(f), kind="fact")
                    else:
                        f["taught_by"] = "correction"
                        r = c.query(TEACH_QUESTION.format(**f), max_tokens=24, temperature=0.0,
                                    use_memory=False)
                        f["knew_before"] = correct(r["text"], f["code"])
                        c.feedback(r["request_id"], rating=1, correction=_taught_text(f))
            results["teach_s"] = round(time.time() - t0, 1)
            d.stop()
            d.start()   # restart: everything must come back from the SQLite file
            lat = ask_all(d, facts, negs, "memory_path", baseline=True)
            d.stop()
            # The generated path: router off, so every answer is generated by the
            # model with the retrieved records in its prompt (no answer-from-memory).
            d.configure(config_toml(router=False))
            d.start()
            gen_lat = ask_all(d, facts, negs, "generated", baseline=False)
            d.stop()
        finally:
            d.stop()   # also when a query fails: no daemon left behind

    def share(key: str, rows: list[dict[str, Any]] | None = None) -> float:
        rows = facts if rows is None else rows
        return round(sum(bool(f.get(key)) for f in rows) / max(len(rows), 1), 4)

    by_add = [f for f in facts if f["taught_by"] == "memory.add"]
    by_corr = [f for f in facts if f["taught_by"] == "correction"]

    def negatives(path: str) -> dict[str, Any]:
        out = {}
        for kind in ("other_attribute", "other_entity"):
            rs = [n for n in negs if n["kind"] == kind]
            out[kind] = {"n": len(rs), "leaks_taught_code": share(f"{path}_leak", rs),
                         "declined": share(f"{path}_declined", rs),
                         "right": share(f"{path}_right", rs)}
        return out

    results.update({
        "split": "taught facts asked after a restart in the ASK phrasings (used since the first "
                 "version of this benchmark) and in PARAPHRASE phrasings written for this check "
                 "only; hard negatives on taught and untaught countries",
        "headline": {"metric": "retention_generated",
                     "why": "the model answers with the record in its prompt; the verbatim "
                            "memory path returns the stored sentence itself"},
        "retention_generated": share("generated"),
        "retention_generated_paraphrase": share("generated_paraphrase"),
        "retention_verbatim_memory_path": share("memory_path"),
        "retention_verbatim_memory_path_paraphrase": share("memory_path_paraphrase"),
        "memory_path_echo_share": share("memory_path_echo"),
        "baseline_memory_off": share("baseline"),
        "retention_generated_taught_by_memory_add": share("generated", by_add),
        "retention_generated_taught_by_correction": share("generated", by_corr),
        "retention_memory_path_taught_by_memory_add": share("memory_path", by_add),
        "retention_memory_path_taught_by_correction": share("memory_path", by_corr),
        "knew_before_teaching": share("knew_before", by_corr),
        "hard_negatives": {"generated": negatives("generated"),
                           "memory_path": negatives("memory_path")},
        "memory_path_modes": {m: sum(f["memory_path_mode"] == m for f in facts)
                              for m in sorted({str(f["memory_path_mode"]) for f in facts})},
        "query_latency_ms_p50": {"memory_path": round(statistics.median(lat), 1),
                                 "generated": round(statistics.median(gen_lat), 1)},
        "goal": "retention >= 0.90 (generated path is the headline)",
        "misses_generated": [{k: f.get(k) for k in ("name", "code", "generated_answer",
                                                    "taught_by")}
                             for f in facts if not f["generated"]][:20],
        "negatives": negs,
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    })
    save_results(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
