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
