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


@pytest.mark.skipif(platform.system() != "Linux", reason="reads /proc/self/smaps")
def test_drop_file_pages_unmaps_clean_pages_and_keeps_the_data(tmp_path) -> None:
    import mmap

    from ruvllm_edge.heap import drop_file_pages, mapped_file_regions

    path = tmp_path / "w.bin"
    data = bytes(range(256)) * (16 * 4096)          # 16 MB
    path.write_bytes(data)
    with open(path, "rb") as f:
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)   # private, writable: as onnxruntime maps
    try:
        assert sum(m[i + 1] for i in range(0, len(m), 4096)) == len(m) // 4096   # touch every page
        (region,) = mapped_file_regions(str(path))
        assert region[2] >= 15 << 20 and region[3] == 0          # resident, nothing copied
        assert drop_file_pages(str(path)) >= 15 << 20
        assert mapped_file_regions(str(path))[0][2] < 1 << 20    # no longer resident
        assert m[:4096 * 3] == data[:4096 * 3] and m[-5:] == data[-5:]   # read back from the file
        m[0] = 255                                               # a private copy now exists
        assert drop_file_pages(str(path)) == 0                   # so the mapping is left alone
        assert m[0] == 255
    finally:
        m.close()
    assert drop_file_pages(str(tmp_path / "not-mapped")) == 0
