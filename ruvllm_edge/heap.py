"""Give freed heap back to the kernel: glibc's ``malloc_trim(0)``.

Why: glibc keeps freed memory in its arenas, so after a large transient
allocation (onnxruntime folding the embedder's int8 weights into float32, a
llama.cpp model unloaded after keep_alive_s) RSS stays at the peak although
the memory is free. Measured in benchmarks/bench_rss.py: ~60 MB after the
embedder's session is built, ~17 MB after a model is unloaded. Call it after
such events only: a trim walks the heap (a few ms), it is not for hot paths.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Any, Callable

_LIBC: Any = False   # False: not looked up yet; None: no C library to call


def _libc_function(name: str) -> Any | None:
    """``name`` from the C library (loaded once, errno kept), or None where it has none
    (malloc_trim and mallopt are glibc's; musl and macOS lack them)."""
    global _LIBC
    if _LIBC is False:
        path = ctypes.util.find_library("c")
        try:
            _LIBC = ctypes.CDLL(path, use_errno=True) if path else None
        except OSError:
            _LIBC = None
    return getattr(_LIBC, name, None) if _LIBC is not None else None


def release_free_heap() -> bool:
    """Trim glibc's free heap pages; False where there is no glibc (musl, macOS)."""
    trim = _libc_function("malloc_trim")
    if trim is None:
        return False
    trim(0)
    return True


MADV_DONTNEED = 4
_PAGE = 4096


def _madvise() -> Callable[[int, int, int], int] | None:
    fn = _libc_function("madvise")
    if fn is not None:
        fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        fn.restype = ctypes.c_int
    return fn


def mapped_file_regions(path: str, smaps: str = "/proc/self/smaps") -> list[tuple[int, int, int, int]]:
    """(start, end, Rss bytes, Anonymous bytes) of every mapping of ``path`` in this process.

    Read from ``/proc/self/smaps``; empty where there is none (not Linux).
    """
    target = os.path.realpath(path)
    out: list[tuple[int, int, int, int]] = []
    cur: list[int] | None = None
    try:
        with open(smaps, encoding="utf-8", errors="replace") as f:
            for line in f:
                head = line.split(None, 5)
                if len(head) >= 5 and "-" in head[0] and ":" not in head[0]:
                    if cur is not None:
                        out.append((cur[0], cur[1], cur[2], cur[3]))
                    cur = None
                    if len(head) == 6 and head[5].rstrip("\n") == target:
                        lo, _, hi = head[0].partition("-")
                        cur = [int(lo, 16), int(hi, 16), 0, 0]
                elif cur is not None and line.startswith(("Rss:", "Anonymous:")):
                    kb = int(line.split()[1]) * 1024
                    cur[2 if line.startswith("Rss:") else 3] = kb
    except OSError:
        return []
    if cur is not None:
        out.append((cur[0], cur[1], cur[2], cur[3]))
    return out


def drop_file_pages(path: str, min_bytes: int = 1 << 20) -> int:
    """Unmap the resident pages of this process's clean mappings of ``path``; bytes dropped.

    Why: onnxruntime maps the prepared embedder's weights file, and every token
    looked up in the 47 MB word-embedding table faults in its page plus the
    kernel's fault-around (64 KB), so after a few hundred varied texts ~40 MB
    of it is resident for good (docs/performance.md, "Serving"). The pages stay
    in the page cache: a later lookup is a minor fault, not a disk read.
    ``MADV_DONTNEED`` on a private file mapping throws away private copies
    too, so only mappings with no anonymous (copied-on-write) pages are
    touched; onnxruntime never writes its initializers. Mappings smaller than
    ``min_bytes`` are left alone (not worth a syscall).
    """
    regions = [r for r in mapped_file_regions(path) if r[2] > 0 and r[3] == 0 and r[1] - r[0] >= min_bytes]
    if not regions:
        return 0
    madvise = _madvise()
    if madvise is None:
        return 0
    dropped = 0
    for start, end, rss, _ in regions:
        if madvise(start, end - start, MADV_DONTNEED) == 0:
            dropped += rss
    return dropped


M_ARENA_MAX = -8


def limit_arenas(n: int) -> bool:
    """Cap glibc's malloc arenas at ``n`` (``mallopt(M_ARENA_MAX, n)``); False where not glibc.

    Why: glibc gives threads arenas of their own (up to 8 per core), and each
    keeps its freed memory apart, so the daemon's ~10 worker threads hold
    more free heap than one or two arenas would (measured: ~10 MB at 100K
    nodes after serving, docs/performance.md). Call it at start, before the
    worker threads exist: arenas already made stay. ``MALLOC_ARENA_MAX`` in
    the environment (an operator's choice) wins: then nothing is changed.
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_ARENA_MAX, int(n)))
