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

Usage: python benchmarks/bench_retention.py [--n 60] [--seed 7]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import BenchDaemon, save_results  # noqa: E402
from ruvllm_edge.client import Client  # noqa: E402

DATASET = "pycountry==26.2.16"
DATASET_SHA256 = "115c4baf7cceaa30f59a4694d79483c9167dbce7a9de4d3d571c5f3ea77c305a"
MEMBER = "pycountry/databases/iso3166-1.json"
CACHE = ROOT / "benchmarks" / ".cache"

TEACH_FACT = "The ISO 3166-1 numeric code of {name} is {code}."
TEACH_QUESTION = "What is the ISO numeric country code of {name}?"
TEACH_CORRECTION = "{name} has the ISO 3166-1 numeric code {code}."
ASK = [
    "Which three-digit number does the ISO 3166 standard assign to {name}?",
    "Tell me the numeric ISO country code for {name}.",
]


def load_facts() -> list[dict[str, str]]:
    CACHE.mkdir(parents=True, exist_ok=True)
    wheels = sorted(CACHE.glob("pycountry-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d",
                        str(CACHE), DATASET], check=True)
        wheels = sorted(CACHE.glob("pycountry-*.whl"))
    data = wheels[-1].read_bytes()
    got = hashlib.sha256(data).hexdigest()
    if got != DATASET_SHA256:
        raise SystemExit(f"{wheels[-1]}: sha256 {got} != {DATASET_SHA256}")
    with zipfile.ZipFile(wheels[-1]) as zf:
        rows = json.loads(zf.read(MEMBER))["3166-1"]
    return [{"name": r["name"], "code": r["numeric"]} for r in rows]


def correct(text: str, code: str) -> bool:
    return re.search(rf"(?<!\d)0*{int(code)}(?!\d)", text) is not None


def config_toml(router: bool) -> str:
    return ("[inference]\nkeep_alive_s = -1\n[learning]\nidle_after_s = 86400.0\n"
            f"[router]\nenabled = {'true' if router else 'false'}\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=60, help="facts to teach")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--models-dir", default=str(ROOT / "models"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_retention.json"))
    args = ap.parse_args()
    facts = load_facts()
    random.Random(args.seed).shuffle(facts)
    facts = facts[:args.n]
    results: dict[str, Any] = {"dataset": f"{DATASET} {MEMBER}", "n": len(facts),
                               "seed": args.seed}
    with tempfile.TemporaryDirectory(prefix="bench-retention-") as tmp:
        d = BenchDaemon(Path(tmp) / "data", Path(args.models_dir), config_toml(router=True))
        try:
            d.start()
            t0 = time.time()
            with Client(d.endpoint, timeout_s=300) as c:
                for i, f in enumerate(facts):
                    if i % 2 == 0:
                        c.memory_add(TEACH_FACT.format(**f), kind="fact")
                        f["taught_by"] = "memory.add"
                    else:
                        r = c.query(TEACH_QUESTION.format(**f), max_tokens=24, temperature=0.0,
                                    use_memory=False)
                        f["knew_before"] = correct(r["text"], f["code"])
                        c.feedback(r["request_id"], rating=1,
                                   correction=TEACH_CORRECTION.format(**f))
                        f["taught_by"] = "correction"
            results["teach_s"] = round(time.time() - t0, 1)
            d.stop()
            d.start()   # restart: everything must come back from the SQLite file
            lat: list[float] = []
            with Client(d.endpoint, timeout_s=300) as c:
                for i, f in enumerate(facts):
                    q = ASK[i % len(ASK)].format(**f)
                    r = c.query(q, max_tokens=32, temperature=0.0)
                    lat.append(r["latency_ms"]["total"])
                    f["with_memory"] = correct(r["text"], f["code"])
                    f["answer"] = r["text"][:120]
                    f["mode"] = r["routing_info"].get("mode")
                    b = c.query(q, max_tokens=32, temperature=0.0, use_memory=False)
                    f["baseline"] = correct(b["text"], f["code"])
                    print(f"  {i + 1:>3}/{len(facts)} {f['name'][:28]:<28} {f['code']:>3} "
                          f"memory={'ok ' if f['with_memory'] else 'NO '} "
                          f"baseline={'ok' if f['baseline'] else 'no'}  [{f['mode']}] "
                          f"{f['answer'][:50]!r}", flush=True)
            d.stop()
            # The generation path: router off, so every answer is generated by the
            # model with the retrieved records in its prompt (no answer-from-memory).
            d.configure(config_toml(router=False))
            d.start()
            with Client(d.endpoint, timeout_s=300) as c:
                for i, f in enumerate(facts):
                    r = c.query(ASK[i % len(ASK)].format(**f), max_tokens=32, temperature=0.0)
                    f["generated_with_memory"] = correct(r["text"], f["code"])
            d.stop()
        finally:
            d.stop()   # also when a query fails: no daemon left behind

    def share(key: str, subset: list[dict[str, Any]] | None = None) -> float:
        rows = facts if subset is None else subset
        return round(sum(bool(f.get(key)) for f in rows) / max(len(rows), 1), 4)

    by_add = [f for f in facts if f["taught_by"] == "memory.add"]
    by_corr = [f for f in facts if f["taught_by"] == "correction"]
    results.update({
        "retention_with_memory": share("with_memory"),
        "baseline_memory_off": share("baseline"),
        "retention_generated_router_off": share("generated_with_memory"),
        "retention_taught_by_memory_add": share("with_memory", by_add),
        "retention_taught_by_correction": share("with_memory", by_corr),
        "knew_before_teaching": share("knew_before", by_corr),
        "answer_modes": {m: sum(f["mode"] == m for f in facts)
                         for m in sorted({str(f["mode"]) for f in facts})},
        "query_latency_ms_p50": round(statistics.median(lat), 1),
        "goal": "retention >= 0.90 with memory",
        "misses": [{k: f[k] for k in ("name", "code", "answer", "taught_by", "mode")}
                   for f in facts if not f["with_memory"]][:20],
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    })
    save_results(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
