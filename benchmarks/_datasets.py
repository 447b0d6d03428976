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
# LoCoMo (Maharana et al., ACL 2024), development half: CC BY-NC 4.0, so it is
# read from outside the repository (env RUVLLM_EDGE_LOCOMO, else
# ../shared/data/locomo-dev.json relative to the repo root) and never copied in.

LOCOMO_ENV = "RUVLLM_EDGE_LOCOMO"
LOCOMO_DEFAULT = ROOT.parent / "shared" / "data" / "locomo-dev.json"
_DIA_ID = re.compile(r"D:?(\d+):(\d+)")


def _main_checkout(root: Path) -> Path | None:
    """The main checkout of a git worktree (whose ``.git`` is a file naming its gitdir), else None."""
    dotgit = root / ".git"
    if not dotgit.is_file():
        return None
    line = dotgit.read_text(encoding="utf-8").strip()
    if not line.startswith("gitdir:"):
        return None
    gitdir = Path(line.split(":", 1)[1].strip())   # <main>/.git/worktrees/<name>
    return gitdir.parent.parent.parent if gitdir.parent.name == "worktrees" else None


def locomo_path() -> Path:
    """Where the LoCoMo file is (it may be absent: callers skip then).

    env RUVLLM_EDGE_LOCOMO, else ../shared/data/locomo-dev.json beside the
    repository; from a git worktree, also beside the main checkout.
    """
    import os
    if os.environ.get(LOCOMO_ENV):
        return Path(os.environ[LOCOMO_ENV])
    main = _main_checkout(ROOT)
    if not LOCOMO_DEFAULT.is_file() and main is not None:
        beside_main = main.parent / "shared" / "data" / "locomo-dev.json"
        if beside_main.is_file():
            return beside_main
    return LOCOMO_DEFAULT


def norm_dia_ids(raw: object) -> list[str]:
    """Evidence references as canonical ``D<session>:<turn>`` ids, in order, without duplicates.

    The published evidence lists are not uniform: ``"D8:6; D9:17"`` holds two
    ids, ``"D30:05"`` has a leading zero, ``"D:11:26"`` a stray colon and
    ``"D"`` none at all (dropped).
    """
    items = raw if isinstance(raw, list) else [raw]
    out: list[str] = []
    for item in items:
        for s, t in _DIA_ID.findall(str(item)):
            dia = f"D{int(s)}:{int(t)}"
            if dia not in out:
                out.append(dia)
    return out


def locomo_turn_text(speaker: str, text: str, caption: str | None) -> str:
    """A turn as it is stored: ``"<speaker>: <text>"``, plus the shared photo's caption."""
    out = f"{speaker}: {text}".strip()
    if caption:
        out += f" (shared {caption.strip()})"
    return out


def load_locomo(path: Path) -> list[dict]:
    """The conversations, sorted by sample id, in a plain shape.

    Each: ``{"id", "speakers": [a, b], "sessions": [{"n", "date", "turns":
    [{"dia_id", "speaker", "text", "caption"}]}], "qa": [{"question",
    "answer", "category", "evidence"}]}``; ``answer`` is the adversarial
    answer for category 5 (kept apart as ``adversarial``: there is no true
    answer), ``evidence`` is normalised by ``norm_dia_ids``.
    """
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    convs = []
    for sample in raw:
        c = sample["conversation"]
        nums = sorted(int(m.group(1)) for k in c if (m := re.fullmatch(r"session_(\d+)", k))
                      and isinstance(c[k], list))
        sessions = []
        for n in nums:
            turns = [{"dia_id": norm_dia_ids(t["dia_id"])[0], "speaker": t["speaker"],
                      "text": str(t.get("text", "")), "caption": t.get("blip_caption")}
                     for t in c[f"session_{n}"] if norm_dia_ids(t.get("dia_id", ""))]
            sessions.append({"n": n, "date": str(c.get(f"session_{n}_date_time", "")), "turns": turns})
        qa = [{"question": q["question"], "answer": str(q.get("answer", "")),
               "adversarial": q.get("adversarial_answer"), "category": int(q["category"]),
               "evidence": norm_dia_ids(q.get("evidence", []))} for q in sample["qa"]]
        convs.append({"id": sample["sample_id"], "speakers": [c.get("speaker_a"), c.get("speaker_b")],
                      "sessions": sessions, "qa": qa})
    return sorted(convs, key=lambda x: x["id"])
# LoCoMo (development half): read in place, never copied into the repository.
# The data's README (../shared/data/README.md) states its licence (CC BY-NC 4.0)
# and that only this half may be tuned on.

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
