"""What numba did for this process's kernels: loaded from its cache, or compiled.

Why: the first answer after start must never wait on JIT compilation
(issue 12), and ``install.sh`` warms numba's cache so it does not have to.
Whether that worked is a fact of the running process, read from each numba
dispatcher's own counters (``Dispatcher.stats``: a cache hit is a signature
loaded from the on-disk cache, a miss one compiled in this process). The
daemon reports the totals in health (component ``kernels``) and
``ruvllm-edge warm`` reports them per kernel.

Plain data out; numba is never imported here (a process that has not
imported it has no kernels to report).
"""

from __future__ import annotations

import sys
from typing import Any


_FOUND: tuple[int, list[tuple[str, Any]]] = (-1, [])


def _dispatchers() -> list[tuple[str, Any]]:
    """(qualified name, dispatcher) for every numba kernel in the loaded ruvllm_edge modules.

    Memoised until another module is imported: health calls this, on the socket thread.
    """
    global _FOUND
    n_modules = len(sys.modules)
    if _FOUND[0] != n_modules:
        _FOUND = (n_modules, _scan())
    return _FOUND[1]


def _scan() -> list[tuple[str, Any]]:
    numba_dispatcher = sys.modules.get("numba.core.dispatcher")
    if numba_dispatcher is None:
        return []
    kind = numba_dispatcher.Dispatcher
    out: list[tuple[str, Any]] = []
    seen: set[int] = set()
    for mod_name, mod in list(sys.modules.items()):
        if not (mod_name == "ruvllm_edge" or mod_name.startswith("ruvllm_edge.")) or mod is None:
            continue
        for attr, value in list(vars(mod).items()):
            if isinstance(value, kind) and id(value) not in seen \
                    and getattr(value, "__module__", mod_name) == mod_name:
                seen.add(id(value))
                out.append((f"{mod_name}.{attr}", value))
    return sorted(out, key=lambda kv: kv[0])


def per_kernel() -> dict[str, dict[str, int]]:
    """{kernel: {"from_cache": signatures loaded, "compiled": signatures JIT-compiled}}.

    Only kernels that were used (at least one signature) are listed.
    """
    out: dict[str, dict[str, int]] = {}
    for name, disp in _dispatchers():
        st = disp.stats
        hits, misses = sum(st.cache_hits.values()), sum(st.cache_misses.values())
        if hits or misses:
            out[name] = {"from_cache": int(hits), "compiled": int(misses)}
    return out


def totals() -> dict[str, Any]:
    """{"from_cache": n, "compiled": n, "compiled_kernels": [names]} over every kernel."""
    per = per_kernel()
    return {"from_cache": sum(v["from_cache"] for v in per.values()),
            "compiled": sum(v["compiled"] for v in per.values()),
            "compiled_kernels": sorted(k for k, v in per.items() if v["compiled"])}
