"""Sentence embeddings: int8 MiniLM-L6 on onnxruntime, 384 dims, unit length.

Why this shape:
- Memory search compares the query with every stored node by cosine, so the
  vectors are mean-pooled over real (non-padding) tokens and L2-normalised
  here once; everything downstream can use a plain dot product.
- A chat session repeats itself (the same query is embedded by the pipeline,
  then again by writeback or feedback), so a small LRU cache pays off; cached
  arrays are read-only so no caller can corrupt another's result.
- Batches are sorted by length before padding: a batch pads to its longest
  member, and mixing a 5-token question with a 250-token chunk would make the
  short one pay for the long one.
- The tokenizer file ships with padding and truncation fixed at 128; we
  replace both (pad to the longest in the batch, truncate at
  ``max_seq_tokens``) and keep a second, unconfigured tokenizer for counting
  so that ``count_tokens`` never reports a truncated length.
- Memory (benchmarks/bench_rss.py, docs/performance.md): onnxruntime's graph
  optimiser folds the int8 weights into float32 constants (the MatMuls run in
  float32 either way; folding keeps a short query at ~5 ms instead of ~15-40 ms
  dequantising every run), and the folding leaves ~60 MB of freed heap that
  glibc keeps unless asked: ``release_free_heap`` after building the session.
  The CPU memory arena is off: with it, one batch of 8 x 256 tokens grows the
  process by ~190 MB for good; without it the activations are freed after
  each run, for ~5% more time on one short text and none on a batch of 8.
- The folded model is saved once (``prepared_model``): a small graph plus a
  float32 weights file that onnxruntime maps instead of copying. The session
  then costs ~50 MB instead of ~100 MB (the 47 MB word-embedding table is
  file-backed and only the rows of seen tokens are ever read), builds in
  ~0.25 s instead of ~1 s, and gives bit-identical vectors. It lives beside
  the model (``.ort-prepared/``) or in ``prepared_dir``; where neither is
  writable (a read-only install) the original model is loaded as before.
  A mapped file must never be rewritten in place (a live session would get
  SIGBUS): it is only ever replaced by a directory rename, and stale copies
  are unlinked, which leaves a mapping intact.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import fsutil
from .errors import BadRequest, ModelUnavailable
from .heap import drop_file_pages, release_free_heap

log = logging.getLogger(__name__)

DIM = 384
PREPARED_DIR = ".ort-prepared"   # beside the model, unless Embedder(prepared_dir=...)
PREPARED_WEIGHTS = "weights.bin"


def _session_options(ort: Any, threads: int) -> Any:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.enable_cpu_mem_arena = False   # activations freed after each run (see the docstring)
    opts.log_severity_level = 3
    return opts


def _session(ort: Any, path: Path, threads: int) -> Any:
    """An onnxruntime CPU session with the daemon's options (``_session_options``)."""
    return ort.InferenceSession(str(path), sess_options=_session_options(ort, threads),
                                providers=["CPUExecutionProvider"])


def prepared_model(model_path: Path, cache_dir: Path) -> Path | None:
    """The optimised (constant-folded) model with its weights in a mappable file; made once.

    Keyed by onnxruntime's version and the model file's size and mtime, so an
    upgrade or a re-fetched model prepares again (and the stale copy is
    removed). onnxruntime writes the two files itself, into a private
    temporary directory that is fsynced and renamed into place: a crash leaves
    a ``.tmp-`` directory, never a half-written model. Saved at the
    ``EXTENDED`` level, which has no hardware-specific layouts. None when the
    directory is not writable or preparing fails: the caller loads the
    original model then.
    """
    import onnxruntime as ort

    st = model_path.stat()
    key = f"{model_path.stem}-ort{ort.__version__}-{st.st_size}-{st.st_mtime_ns}"
    final = cache_dir / key
    try:
        if (final / "model.onnx").is_file() and (final / PREPARED_WEIGHTS).is_file():
            return final / "model.onnx"
        # Readable by all, like the model it is derived from: install.sh (or
        # install-system.sh, as root) prepares it and the service user reads it.
        cache_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{fsutil.TMP_PREFIX}{key}-", dir=cache_dir))
    except OSError:
        return None   # not ours to read or write (a read-only or private models dir)
    try:
        opts = _session_options(ort, 1)
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = str(tmp / "model.onnx")
        opts.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", PREPARED_WEIGHTS)
        opts.add_session_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        ort.InferenceSession(str(model_path), sess_options=opts, providers=["CPUExecutionProvider"])
        for name in ("model.onnx", PREPARED_WEIGHTS):
            os.chmod(tmp / name, 0o644)
            fsutil.fsync_path(tmp / name)
        os.chmod(tmp, 0o755)
        fsutil.fsync_dir(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "model.onnx").is_file():   # not another process's win: a real error
                raise
        fsutil.fsync_dir(cache_dir)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises untyped errors; optional step
        log.warning("embedding model not prepared; loading the original",
                    extra={"error": str(exc)[:200]})
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in cache_dir.glob(f"{model_path.stem}-ort*"):
        if old != final and not old.name.startswith(fsutil.TMP_PREFIX):
            shutil.rmtree(old, ignore_errors=True)
    release_free_heap()   # the folding's transient float32 copies
    return final / "model.onnx"


def mean_pool_normalise(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mask-weighted mean over tokens, then unit L2 norm.

    hidden: (n, L, d) float32, mask: (n, L) int -> (n, d) float32.
    """
    assert hidden.ndim == 3 and mask.shape == hidden.shape[:2]
    m = mask.astype(np.float32)[:, :, None]                       # (n, L, 1)
    summed = (hidden * m).sum(axis=1)                             # (n, d)
    counts = np.maximum(m.sum(axis=1), 1.0)                       # (n, 1)
    pooled = summed / counts                                      # (n, d)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)         # (n, 1)
    return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)


class Embedder:
    """Thread-safe text -> unit vector service with an LRU cache."""

    dim: int = DIM

    def __init__(self, model_path: Path, tokenizer_path: Path, *, threads: int = 1,
                 cache_entries: int = 1024, max_seq_tokens: int = 256, batch_size: int = 8,
                 prepare: bool = True, prepared_dir: Path | None = None) -> None:
        """``prepare``: load the saved folded model (see ``prepared_model``), kept in
        ``prepared_dir`` (default: ``.ort-prepared`` beside the model)."""
        import onnxruntime as ort
        from tokenizers import Tokenizer

        model_path, tokenizer_path = Path(model_path), Path(tokenizer_path)
        for p, what in ((model_path, "embedding model"), (tokenizer_path, "embedding tokenizer")):
            if not p.is_file():
                raise ModelUnavailable(f"{what} file not found: {p}; run `ruvllm-edge models fetch` "
                                       "or fix embedding.model in the config", path=str(p))
        try:
            tok = Tokenizer.from_file(str(tokenizer_path))
            counter = Tokenizer.from_file(str(tokenizer_path))
        except Exception as exc:  # noqa: BLE001 - the tokenizers library raises plain Exception
            raise ModelUnavailable(f"embedding tokenizer {tokenizer_path} is not a valid "
                                   f"tokenizer.json: {exc}", path=str(tokenizer_path)) from None
        pad_id = tok.token_to_id("[PAD]")
        tok.enable_truncation(max_length=max_seq_tokens)
        tok.enable_padding(pad_id=pad_id if pad_id is not None else 0, pad_token="[PAD]")
        counter.no_truncation()
        counter.no_padding()
        sess = None
        self.prepared: str | None = None   # the prepared model file in use, if any
        if prepare:
            ready = prepared_model(model_path, Path(prepared_dir or model_path.parent / PREPARED_DIR))
            if ready is not None:
                try:
                    sess = _session(ort, ready, threads)
                    self.prepared = str(ready)
                except Exception as exc:  # noqa: BLE001 - e.g. a damaged copy: use the original
                    log.warning("prepared embedding model unusable; loading the original",
                                extra={"error": str(exc)[:200]})
        if sess is None:
            try:
                sess = _session(ort, model_path, threads)
            except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
                raise ModelUnavailable(f"embedding model {model_path} cannot be loaded "
                                       f"(corrupt or not ONNX): {exc}", path=str(model_path)) from None
            release_free_heap()   # the folding's transient float32 copies
        names = {i.name for i in sess.get_inputs()}
        if not {"input_ids", "attention_mask"} <= names:
            raise ModelUnavailable(f"embedding model {model_path} lacks input_ids/attention_mask "
                                   f"inputs (has {sorted(names)})", path=str(model_path))
        out_dim = sess.get_outputs()[0].shape[-1]
        if out_dim != DIM:
            raise ModelUnavailable(f"embedding model {model_path} outputs {out_dim} dims, "
                                   f"expected {DIM}", path=str(model_path))
        self._sess = sess
        self._inputs = names
        self._tok = tok
        self._counter = counter
        self.max_seq_tokens = max_seq_tokens
        self.batch_size = batch_size
        self.cache_entries = cache_entries
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    # -- public API ---------------------------------------------------------

    def embed(self, text: str) -> np.ndarray:
        """(384,) float32, unit norm. Cached; the returned array is read-only."""
        return self.embed_batch([text])[0]

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        """(n, 384) float32 rows of unit norm, in the order given."""
        if isinstance(texts, str):
            raise BadRequest("embed_batch takes a sequence of strings, not one string")
        out = np.empty((len(texts), DIM), dtype=np.float32)         # (n, d)
        todo: dict[str, list[int]] = {}
        with self._lock:
            for i, t in enumerate(texts):
                if not isinstance(t, str):
                    raise BadRequest(f"text {i} is {type(t).__name__}, expected a string")
                hit = self._cache.get(t)
                if hit is not None:
                    self._cache.move_to_end(t)
                    out[i] = hit
                    self.hits += 1
                else:
                    todo.setdefault(t, []).append(i)
                    self.misses += 1
        if todo:
            uniq = sorted(todo, key=len)  # similar lengths share a batch: less padding
            for s in range(0, len(uniq), self.batch_size):
                part = uniq[s:s + self.batch_size]
                vecs = self._run(part)                              # (b, d)
                with self._lock:
                    for t, v in zip(part, vecs):
                        for i in todo[t]:
                            out[i] = v
                        self._remember(t, v)
        return out

    def count_tokens(self, text: str) -> int:
        """Tokenizer tokens in ``text`` without [CLS]/[SEP] and without truncation."""
        return len(self._counter.encode(text, add_special_tokens=False).ids)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of every token (no special tokens); chunking cuts on these."""
        return list(self._counter.encode(text, add_special_tokens=False).offsets)

    def release_idle_pages(self) -> int:
        """Drop the resident pages of the mapped weights file while idle; bytes dropped.

        For the daemon's idle trim: the word-embedding rows that traffic
        touched (~40 MB after a few hundred varied texts) leave the process's
        RSS and stay in the page cache, so the next text costs minor faults
        only. 0 when the original model is loaded (its weights are heap).
        """
        if self.prepared is None:
            return 0
        return drop_file_pages(str(Path(self.prepared).with_name(PREPARED_WEIGHTS)))

    def cache_info(self) -> dict[str, int]:
        with self._lock:
            return {"entries": len(self._cache), "capacity": self.cache_entries,
                    "hits": self.hits, "misses": self.misses}

    # -- internals ----------------------------------------------------------

    def _remember(self, text: str, vec: np.ndarray) -> None:
        if self.cache_entries <= 0:
            return
        v = vec.copy()
        v.flags.writeable = False
        self._cache[text] = v
        self._cache.move_to_end(text)
        while len(self._cache) > self.cache_entries:
            self._cache.popitem(last=False)

    def _run(self, texts: list[str]) -> np.ndarray:
        encs = self._tok.encode_batch(texts)
        ids = np.array([e.ids for e in encs], dtype=np.int64)            # (b, L)
        mask = np.array([e.attention_mask for e in encs], dtype=np.int64)  # (b, L)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._sess.run(None, feeds)[0]                          # (b, L, d)
        return mean_pool_normalise(np.asarray(hidden, dtype=np.float32), mask)
