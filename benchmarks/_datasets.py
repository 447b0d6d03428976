"""Data sets the benchmarks share, each fetched or read the same way everywhere.

- pycountry's ISO tables: the ``pycountry`` wheel from PyPI (``pip download
  --no-deps``, checked by sha256, read from the zip, never installed), cached
  in benchmarks/.cache/. Nobody here wrote these codes and a small model does
  not know them, which makes them good facts to teach.
- Sentences from the Python documentation bundled with CPython (pydoc_data).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "benchmarks" / ".cache"

PYCOUNTRY = "pycountry==26.2.16"
PYCOUNTRY_SHA256 = "115c4baf7cceaa30f59a4694d79483c9167dbce7a9de4d3d571c5f3ea77c305a"
# table key -> the member's top-level key in pycountry/databases/<key>.json
ISO_TABLES = {"iso3166-1": "3166-1", "iso3166-2": "3166-2", "iso4217": "4217", "iso639-3": "639-3"}


def pycountry_wheel() -> Path:
    """The verified pycountry wheel (downloaded once into the cache)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    wheels = sorted(CACHE.glob("pycountry-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d",
                        str(CACHE), PYCOUNTRY], check=True)
        wheels = sorted(CACHE.glob("pycountry-*.whl"))
    got = hashlib.sha256(wheels[-1].read_bytes()).hexdigest()
    if got != PYCOUNTRY_SHA256:
        raise SystemExit(f"{wheels[-1]}: sha256 {got} != {PYCOUNTRY_SHA256}")
    return wheels[-1]


def iso_tables(*keys: str) -> dict[str, list[dict[str, str]]]:
    """ISO tables by key (default: all of ``ISO_TABLES``), as pycountry ships them."""
    with zipfile.ZipFile(pycountry_wheel()) as zf:
        return {k: json.loads(zf.read(f"pycountry/databases/{k}.json"))[ISO_TABLES[k]]
                for k in (keys or tuple(ISO_TABLES))}


def iso3166_numeric_facts() -> list[dict[str, str]]:
    """{"name", "code"} for every country: its ISO 3166-1 numeric code."""
    return [{"name": r["name"], "code": r["numeric"]} for r in iso_tables("iso3166-1")["iso3166-1"]]


def python_doc_sentences(limit: int) -> list[str]:
    """Distinct sentences of 40-300 characters from CPython's pydoc topics, in order."""
    from pydoc_data.topics import topics
    text = re.sub(r"\s+", " ", " ".join(topics.values()))
    out = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text)]
    out = [s for s in out if 40 <= len(s) <= 300 and not s.startswith((">>>", "..."))]
    return list(dict.fromkeys(out))[:limit]


# ---------------------------------------------------------------------------
# LoCoMo (development half): read in place, never copied into the repository.
# The data's README (../shared/data/README.md) states its licence (CC BY-NC 4.0)
# and that only this half may be tuned on.

LOCOMO_ENV = "RUVLLM_EDGE_LOCOMO"


def locomo_path() -> Path | None:
    """$RUVLLM_EDGE_LOCOMO, else ../shared/data/locomo-dev.json next to the repo; None if absent."""
    import os
    env = os.environ.get(LOCOMO_ENV)
    for p in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data" / "locomo-dev.json",
                                             ROOT.parent.parent / "shared" / "data"
                                             / "locomo-dev.json"]:
        if p.is_file():
            return p
    return None


def locomo_samples(path: Path) -> list[dict]:
    """One dict per conversation: sample_id, speakers, turns (dia_id, session, date, speaker,
    text) in order, and qa (question, answer as text, category, evidence dia_ids) for
    categories 1-4 (category 5 has no gold answer)."""
    out = []
    for s in json.loads(path.read_text()):
        conv = s["conversation"]
        turns = []
        n = 1
        while f"session_{n}" in conv:
            date = conv.get(f"session_{n}_date_time", "")
            for t in conv[f"session_{n}"]:
                text = t["text"] + (f" [shares a photo: {t['blip_caption']}]"
                                    if t.get("blip_caption") else "")
                turns.append({"dia_id": t["dia_id"], "session": n, "date": date,
                              "speaker": t["speaker"], "text": text})
            n += 1
        qa = []
        for q in s["qa"]:
            if q.get("category") not in (1, 2, 3, 4) or "answer" not in q:
                continue
            ev = []
            for e in q.get("evidence", []):
                for part in re.split(r"[;,\s]+", str(e)):
                    m = re.match(r"D(\d+):0*(\d+)$", part.strip())
                    if m:
                        ev.append(f"D{m.group(1)}:{m.group(2)}")
            qa.append({"question": q["question"], "answer": str(q["answer"]),
                       "category": int(q["category"]), "evidence": ev})
        out.append({"sample_id": s["sample_id"], "speakers": [conv.get("speaker_a"),
                                                              conv.get("speaker_b")],
                    "turns": turns, "qa": qa})
    return out


_ARTICLES = re.compile(r"\b(a|an|the|and)\b")


def _f1_tokens(text: str) -> list[str]:
    """LoCoMo's normalisation: lower case, no punctuation, no articles, split on spaces."""
    t = re.sub(r"[^\w\s]", " ", str(text).lower().replace(",", ""))
    return _ARTICLES.sub(" ", t).split()


def token_f1(prediction: str, gold: str) -> float:
    """Token-overlap F1 of a prediction against the gold answer (the LoCoMo paper's metric)."""
    p, g = _f1_tokens(prediction), _f1_tokens(gold)
    if not p or not g:
        return float(p == g)
    common: dict[str, int] = {}
    for w in g:
        common[w] = common.get(w, 0) + 1
    hit = 0
    for w in p:
        if common.get(w, 0) > 0:
            hit += 1
            common[w] -= 1
    if hit == 0:
        return 0.0
    prec, rec = hit / len(p), hit / len(g)
    return 2 * prec * rec / (prec + rec)
