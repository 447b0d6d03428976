"""heap.release_free_heap: glibc gives freed heap pages back to the kernel."""

from __future__ import annotations

import platform

import pytest

from ruvllm_edge.heap import release_free_heap


def _anon_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:"))


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="malloc_trim is glibc's")
def test_trim_returns_freed_heap_pages_that_glibc_kept() -> None:
    # 2 KB buffers come from malloc's heap (not pymalloc, not mmap). Keeping
    # every 64th pins the heap, so freeing the rest cannot shrink it from the
    # top: ~100 MB stays resident until the free pages inside are trimmed.
    blocks = [bytearray(b"x" * 2048) for _ in range(50_000)]
    kept = blocks[::64]
    del blocks
    freed_but_kept = _anon_kb()
    assert release_free_heap() is True
    after = _anon_kb()
    assert freed_but_kept - after > 50_000, (freed_but_kept, after)
    assert len(kept) == 782
