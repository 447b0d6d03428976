"""The decision layer: FastGRNN heads -> a Decision, fallback, first-start policy, persistence.

Confidence is derived, not a separate head: confidence = max p(context) x max
p(mode), the probability the model gives to the joint decision it is about to
take. Why: both class heads are trained with cross-entropy, a proper scoring
rule, so their probabilities are the calibrated quantity we already have; a
separate confidence head would need its own labels ("was this decision the
best?"), which exist only for explored queries, and would be least reliable
exactly when it matters (on unfamiliar inputs). The product is also honest on
first start: a router that has not learned something spreads its probability
and falls back to the config defaults.

First start: the initial weights come from ``learning/curriculum.py`` (a small
synthetic curriculum of hand-written rules, trained in); this module never
imports ``learning/``. The composition root asks ``Router.load_usable`` for
the saved router and falls back to ``curriculum.initial_router``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .. import fsutil
from ..config import RouterConfig
from . import fastgrnn as fg
from .features import EMBED_DIM, FEATURE_NAMES, N_FEATURES, FeatureInputs, build_features
from .state import TrainState

log = logging.getLogger(__name__)

CONTEXT_CLASSES: tuple[int, ...] = (0, 2, 4, 8, 16)
MODES: tuple[str, ...] = ("memory", "short", "long")
MEMORY, SHORT, LONG = 0, 1, 2
FILE_FORMAT = 1
MODEL_MAGIC = b"RVRT"
_FEATURES_HASH = hashlib.sha256("\n".join(FEATURE_NAMES).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Decision:
    """How to answer one request (``to_info`` goes into the reply's routing_info).

    ``max_tokens`` in memory mode is the budget to use if the pipeline finds no
    trusted memory to answer from after all (it then generates short).
    """

    context_k: int
    mode: str
    max_tokens: int
    temperature: float
    top_p: float
    confidence: float
    fallback: bool
    context_class: int
    mode_class: int
    router_version: int = 0

    def to_info(self) -> dict[str, Any]:
        return {"context_k": self.context_k, "mode": self.mode, "max_tokens": self.max_tokens,
                "temperature": round(self.temperature, 3), "top_p": round(self.top_p, 3),
                "confidence": round(self.confidence, 3), "fallback": self.fallback,
                "context_class": self.context_class, "mode_class": self.mode_class,
                "router_version": self.router_version}


def context_class_of(k: int) -> int:
    """The class whose size is nearest to k (ties go to the smaller)."""
    return min(range(len(CONTEXT_CLASSES)), key=lambda i: abs(CONTEXT_CLASSES[i] - k))


def encode_hidden(h: np.ndarray) -> bytes:
    """A session's hidden state for sessions.router_state."""
    return np.ascontiguousarray(h, dtype=np.float32).tobytes()


def decode_hidden(blob: bytes | None, hidden: int) -> np.ndarray | None:
    """None when absent or from a router of another size (the session then restarts at 0)."""
    if not blob or len(blob) != 4 * hidden:
        return None
    h = np.frombuffer(blob, dtype=np.float32).copy()
    return h if np.isfinite(h).all() else None


# --------------------------------------------------------------------------
# the router


class Router:
    """Holds the current FastGRNN and turns its outputs into Decisions.

    Thread-safe for concurrent ``decide`` calls: the inference arrays are
    swapped as one tuple when a newly trained state is installed.
    """

    def __init__(self, layout: fg.Layout, state: TrainState, cfg: RouterConfig,
                 version: int = 0, ready: bool = True) -> None:
        assert layout.n_in == N_FEATURES, (layout.n_in, N_FEATURES)
        self.layout = layout
        self.cfg = cfg
        self.version = version
        # False while the first-start weights are still being trained in the background
        # (``install_initial`` sets it): every decision is then the config's fallback, and
        # the placeholder weights are never saved nor trained on.
        self.ready = ready
        self._state = state
        self._infer = self._inference_arrays(state.theta)
        self._state_lock = threading.Lock()   # _state and version change together
        self._save_lock = threading.Lock()    # one file write at a time, newest state last

    # -- construction ------------------------------------------------------

    @staticmethod
    def layout_for(cfg: RouterConfig) -> fg.Layout:
        return fg.Layout(N_FEATURES, cfg.hidden_dim, cfg.low_rank)

    @classmethod
    def load_usable(cls, path: Path, cfg: RouterConfig) -> "Router | None":
        """The saved router, or None when there is none usable (build the first-start one then).

        An unreadable or incompatible file is kept aside (renamed) rather than
        overwritten, so nothing learned is lost to a config mistake.
        """
        path = Path(path)
        if not path.exists():
            return None
        try:
            return cls.load(path, cfg)
        except (ValueError, OSError, KeyError) as exc:
            aside = path.with_name(f"{path.name}.unusable-{int(time.time())}")
            log.warning("router file unusable; starting from the initial policy",
                        extra={"path": str(path), "error": str(exc), "kept_as": str(aside)})
            try:
                os.replace(path, aside)
            except OSError:
                pass
        return None

    @classmethod
    def load(cls, path: Path, cfg: RouterConfig) -> "Router":
        layout = cls.layout_for(cfg)
        with np.load(Path(path), allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode("utf-8"))
            arrays = {k: np.array(z[k], dtype=np.float64)
                      for k in ("theta", "adam_m", "adam_v", "fisher", "anchor")}
        if meta.get("format") != FILE_FORMAT:
            raise ValueError(f"router file format {meta.get('format')} is not {FILE_FORMAT}")
        if meta.get("features_hash") != _FEATURES_HASH:
            raise ValueError("router file was trained on a different feature set")
        if (meta.get("hidden"), meta.get("rank")) != (layout.hidden, layout.rank):
            raise ValueError(f"router file has hidden={meta.get('hidden')} rank={meta.get('rank')}, "
                             f"config wants {layout.hidden}/{layout.rank}")
        for name, arr in arrays.items():
            if arr.shape != (layout.size,) or not np.isfinite(arr).all():
                raise ValueError(f"router file array {name} is malformed")
        state = TrainState(arrays["theta"], arrays["adam_m"], arrays["adam_v"],
                                   int(meta["adam_t"]), arrays["fisher"], arrays["anchor"],
                                   int(meta.get("consolidations", 0)))
        if np.count_nonzero(layout.view(state.theta, "W")) > fg.n_keep(layout, cfg.sparsity):
            fg.hard_threshold(state.theta, layout, cfg.sparsity)  # config asked for sparser
        return cls(layout, state, cfg, version=int(meta["version"]))

    # -- state -------------------------------------------------------------

    def _inference_arrays(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return fg.pack_inference(theta, self.layout)

    @property
    def state(self) -> TrainState:
        """A copy: training works on its own copy and installs it with ``install``."""
        return self._state.copy()

    def install(self, state: TrainState) -> int:
        """Make a newly trained state current; bumps and returns the version.

        The installed state is a private copy that is never changed in place
        (the next install replaces it), so readers may hold it without a lock.
        """
        if not self.ready:   # trained from the placeholder: the first-start weights replace it
            log.warning("router training result dropped: the first-start router is not ready")
            return self.version
        new, infer = self._private_copy(state)
        with self._state_lock:
            self._state, self._infer = new, infer
            self.version += 1
            return self.version

    def install_initial(self, state: TrainState) -> None:
        """The first-start weights, trained in the background, replace the placeholder.

        Atomic for ``decide`` (one tuple swap, then ``ready``); the version stays 0.
        """
        new, infer = self._private_copy(state)
        with self._state_lock:
            self._state, self._infer = new, infer
            self.ready = True

    def _private_copy(self, state: TrainState
                      ) -> tuple[TrainState, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The state to install (a copy no one else holds) and its inference arrays."""
        assert state.theta.shape == (self.layout.size,)
        new = state.copy()
        return new, self._inference_arrays(new.theta)

    def warm_up(self) -> None:
        """Load (or compile) the routing kernels now, so the first request never waits on them.

        numba loads a kernel from its cache (or compiles it) on the first call
        with a given signature; this makes that call at start-up, with the
        argument types of the request path (``build_features`` then ``predict``).
        """
        vec = np.zeros(EMBED_DIM, dtype=np.float32)
        vec[0] = 1.0
        self.predict(build_features(FeatureInputs(query="warm up", query_tokens=3,
                                                  query_vec=vec)))

    def initial_hidden(self) -> np.ndarray:
        return np.zeros(self.layout.hidden, dtype=np.float32)

    # -- deciding ----------------------------------------------------------

    def predict(self, x: np.ndarray, h: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Raw heads for one step: (out, h').

        out = [p_ctx (5), p_mode (3), temp, top_p, argmax ctx, argmax mode, confidence].
        """
        H = self.layout.hidden
        if x.shape != (N_FEATURES,):
            raise ValueError(f"features must have shape ({N_FEATURES},), got {x.shape}")
        if h is None:
            h = np.zeros(H, dtype=np.float32)
        elif h.shape != (H,):
            raise ValueError(f"hidden state must have shape ({H},), got {h.shape}")
        out = np.empty(H + fg.INFER_EXTRA, dtype=np.float32)
        th, idx, meta = self._infer
        fg.infer_step(x, h, th, idx, meta, out)
        return out[H:], out[:H]

    def decide(self, x: np.ndarray, h: np.ndarray | None,
               defaults: Mapping[str, Any]) -> tuple[Decision, np.ndarray]:
        """One request's decision and the session's next hidden state.

        ``defaults``: max_tokens, temperature, top_p (the request's or config's
        values, used on fallback and as the long-mode budget); optional
        context_k and mode override the fallback context/mode.
        """
        try:
            max_tokens = int(defaults["max_tokens"])
        except KeyError:
            raise ValueError("decide() defaults lack 'max_tokens'") from None
        if not self.ready:   # first-start weights still training: the config's defaults
            h_same = self.initial_hidden() if h is None else h
            return self._fallback(defaults, max_tokens, 0.0), h_same
        out, h_next = self.predict(x, h)
        temp, top_p, ctx_f, mode_f, conf = out[fg.N_CONTEXT + fg.N_MODE:].tolist()
        ctx, mode = int(ctx_f), int(mode_f)
        if not self.cfg.enabled or not conf >= self.cfg.confidence_threshold:
            return self._fallback(defaults, max_tokens, conf), h_next
        return self.decision_for(ctx, mode, temp, top_p, max_tokens, conf), h_next

    def _fallback(self, defaults: Mapping[str, Any], max_tokens: int, conf: float) -> Decision:
        """The config's safe defaults, used below the confidence threshold."""
        try:
            d_temp = float(defaults["temperature"])
            d_top_p = float(defaults["top_p"])
        except KeyError as exc:
            raise ValueError(f"decide() defaults lack {exc.args[0]!r}") from None
        k = int(defaults.get("context_k", self.cfg.fallback_context_k))
        mode_name = str(defaults.get("mode", "long"))
        if mode_name not in MODES:
            raise ValueError(f"defaults mode must be one of {MODES}, got {mode_name!r}")
        return Decision(context_k=k, mode=mode_name, max_tokens=max_tokens, temperature=d_temp,
                        top_p=d_top_p, confidence=conf if math.isfinite(conf) else 0.0,
                        fallback=True, context_class=context_class_of(k),
                        mode_class=MODES.index(mode_name), router_version=self.version)

    def decision_for(self, context_class: int, mode_class: int, temperature: float, top_p: float,
                     max_tokens: int, confidence: float = 1.0) -> Decision:
        """A Decision for given classes (also used by exploration to build alternatives)."""
        if not 0 <= context_class < len(CONTEXT_CLASSES) or not 0 <= mode_class < len(MODES):
            raise ValueError(f"no such decision class ({context_class}, {mode_class})")
        budget = max_tokens if mode_class == LONG else min(self.cfg.short_max_tokens, max_tokens)
        return Decision(CONTEXT_CLASSES[context_class], MODES[mode_class], budget,
                        min(max(temperature, 0.0), 2.0), min(max(top_p, 0.05), 1.0), confidence,
                        False, context_class, mode_class, self.version)

    # -- persistence -------------------------------------------------------

    def model_bytes(self) -> bytes:
        """The deployable model alone (CSR W + float32 dense blocks): what size_bytes counts."""
        theta = self._state.theta
        csr = fg.to_csr(theta, self.layout)
        rest = np.concatenate([theta[self.layout.block(n)] for n in
                               ("U1", "U2", "bz", "bh", "zeta", "nu", "Wc", "bc", "Wm", "bm",
                                "wt", "bt", "wp", "bp")]).astype("<f4")
        header = struct.pack("<4sHHHHHI", MODEL_MAGIC, FILE_FORMAT, self.layout.n_in,
                             self.layout.hidden, self.layout.rank, 0, len(csr.data))
        return b"".join([header, csr.indptr.astype("<u2").tobytes(),
                         csr.indices.astype("<u2").tobytes(), csr.data.astype("<f4").tobytes(),
                         rest.tobytes()])

    def size_bytes(self) -> int:
        return len(self.model_bytes())

    def state_bytes(self) -> bytes:
        """The full training state file: weights, Adam moments, Fisher, anchor, version."""
        return self._state_file()[0]

    def _state_file(self) -> tuple[bytes, int]:
        with self._state_lock:             # a state and its version, from the same install
            s, version = self._state, self.version
        meta = {"format": FILE_FORMAT, "version": version, "features_hash": _FEATURES_HASH,
                "n_features": N_FEATURES, "hidden": self.layout.hidden, "rank": self.layout.rank,
                "adam_t": s.t, "consolidations": s.consolidations, "saved_at": time.time()}
        buf = io.BytesIO()
        np.savez(buf, theta=s.theta, adam_m=s.m, adam_v=s.v, fisher=s.fisher, anchor=s.anchor,
                 meta=np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8))
        return buf.getvalue(), version

    def save(self, path: Path, mode: int = fsutil.FILE_MODE) -> None:
        """Write the state file atomically (``fsutil.atomic_write``), newest state last.

        Saves can run at the same time (the idle training job after installing,
        a backup's ``before()``, shutdown). Each writes its own temporary file
        and renames it over ``path``, so a reader only ever sees a whole file;
        the save lock makes the snapshot and the rename one step, so the file
        left last holds the newest installed state, never an older snapshot
        that happened to finish later.
        """
        path = Path(path)
        if not self.ready:   # never persist the placeholder in place of the first-start weights
            log.info("router not saved: the first-start router is still training")
            return
        with self._save_lock:
            data, version = self._state_file()
            fsutil.atomic_write(path, data, mode)
        fsutil.remove_stale_tmp(path.parent, path.name)   # a crashed writer's, never a live one
        log.info("router saved", extra={"path": str(path), "version": version,
                                        "bytes": len(data)})


def params_from_model_bytes(data: bytes) -> tuple[fg.Layout, np.ndarray]:
    """Inverse of ``Router.model_bytes`` (theta as float64, W dense)."""
    hdr = struct.calcsize("<4sHHHHHI")
    magic, fmt, d, h, r, _, nnz = struct.unpack("<4sHHHHHI", data[:hdr])
    if magic != MODEL_MAGIC or fmt != FILE_FORMAT:
        raise ValueError("not a router model blob")
    layout = fg.Layout(d, h, r)
    pos = hdr
    indptr = np.frombuffer(data, "<u2", h + 1, pos).astype(np.int64)
    pos += 2 * (h + 1)
    indices = np.frombuffer(data, "<u2", nnz, pos).astype(np.int64)
    pos += 2 * nnz
    vals = np.frombuffer(data, "<f4", nnz, pos).astype(np.float64)
    pos += 4 * nnz
    rest = np.frombuffer(data, "<f4", offset=pos).astype(np.float64)
    theta = np.zeros(layout.size)
    w = layout.view(theta, "W")
    for i in range(h):
        w[i, indices[indptr[i]:indptr[i + 1]]] = vals[indptr[i]:indptr[i + 1]]
    theta[layout.block("W").stop:] = rest
    return layout, theta
