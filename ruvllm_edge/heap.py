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
from typing import Any, Callable

_trim: Callable[[int], Any] | None | bool = False   # False: not looked up yet


def release_free_heap() -> bool:
    """Trim glibc's free heap pages; False where there is no glibc (musl, macOS)."""
    global _trim
    if _trim is False:
        name = ctypes.util.find_library("c")
        try:
            _trim = ctypes.CDLL(name).malloc_trim if name else None
        except (OSError, AttributeError):
            _trim = None
    if _trim is None:
        return False
    _trim(0)   # type: ignore[operator]
    return True
