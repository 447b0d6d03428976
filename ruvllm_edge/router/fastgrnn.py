"""The FastGRNN cell with its decision heads: numpy reference and numba kernels.

Cell (Kusupati et al., NeurIPS 2018), per turn of a session:

    a  = W x + U1 (U2 h)                    W sparse (CSR at inference), U low rank
    z  = sigmoid(a + b_z)
    h~ = tanh(a + b_h)
    h' = (zeta (1 - z) + nu) * h~ + z * h   zeta = sigmoid(zeta_raw), nu = sigmoid(nu_raw)

Heads read h':
    context logits (5) -> softmax, mode logits (3) -> softmax,
    temperature = 2 sigmoid(w_t . h' + b_t), top_p = sigmoid(w_p . h' + b_p).

Why one flat parameter vector: Adam, the EWC Fisher/anchor, hard thresholding
and the saved file all treat the model as one array, and the numba kernels get
one argument instead of fifteen (each argument costs dispatch time on the hot
routing path). ``Layout`` names the slices.

Why the numpy reference: the kernels are loops written for speed; the reference
is the readable statement of the maths. Tests check kernel == reference and
reference gradient == finite differences, so the kernels inherit correctness.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import numpy as np
from numba import njit

N_CONTEXT = 5
N_MODE = 3
SMOOTH_L1_BETA = 0.1
# Raw (pre-sigmoid) starting values: zeta ~ 0.95, nu ~ 0.02 (reference.md).
ZETA_RAW_INIT = 3.0
NU_RAW_INIT = -4.0

_NAMES = ("W", "U1", "U2", "bz", "bh", "zeta", "nu", "Wc", "bc", "Wm", "bm", "wt", "bt", "wp", "bp")


@dataclass(frozen=True)
class Layout:
    """Shapes and offsets of every parameter block inside the flat vector."""

    n_in: int
    hidden: int
    rank: int
    n_ctx: int = N_CONTEXT
    n_mode: int = N_MODE

    def __post_init__(self) -> None:
        assert self.n_in > 0 and self.hidden > 0 and 0 < self.rank <= self.hidden

    @cached_property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        d, h, r, c, m = self.n_in, self.hidden, self.rank, self.n_ctx, self.n_mode
        return {"W": (h, d), "U1": (h, r), "U2": (r, h), "bz": (h,), "bh": (h,),
                "zeta": (1,), "nu": (1,), "Wc": (c, h), "bc": (c,), "Wm": (m, h),
                "bm": (m,), "wt": (h,), "bt": (1,), "wp": (h,), "bp": (1,)}

    @cached_property
    def offsets(self) -> np.ndarray:
        """(16,) int64: start of each block in ``_NAMES`` order, then the total size."""
        out = [0]
        for name in _NAMES:
            out.append(out[-1] + int(np.prod(self.shapes[name])))
        return np.asarray(out, dtype=np.int64)

    @cached_property
    def size(self) -> int:
        return int(self.offsets[-1])

    @cached_property
    def dims(self) -> np.ndarray:
        return np.asarray([self.n_in, self.hidden, self.rank, self.n_ctx, self.n_mode],
                          dtype=np.int64)

    def block(self, name: str) -> slice:
        return self._blocks[name]

    @cached_property
    def _blocks(self) -> dict[str, slice]:
        offs = self.offsets
        return {n: slice(int(offs[i]), int(offs[i + 1])) for i, n in enumerate(_NAMES)}

    def view(self, theta: np.ndarray, name: str) -> np.ndarray:
        """A writable view of one block, in its natural shape."""
        return theta[self.block(name)].reshape(self.shapes[name])

    def views(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        return {name: self.view(theta, name) for name in _NAMES}


def n_keep(layout: Layout, sparsity: float) -> int:
    """Non-zeros kept in W at the given sparsity (at least one per hidden unit's worth)."""
    total = layout.hidden * layout.n_in
    return max(layout.hidden, int(round((1.0 - sparsity) * total)))


def hard_threshold(theta: np.ndarray, layout: Layout, sparsity: float) -> np.ndarray:
    """Zero all but the largest-magnitude entries of W, in place; returns the mask.

    This is the iterative hard thresholding of the FastGRNN paper, applied after
    every optimiser step so the sparsity never drifts during on-device training.
    """
    w = theta[layout.block("W")]  # (H*D,) view
    k = n_keep(layout, sparsity)
    mask = np.zeros(w.shape[0], dtype=bool)
    if k >= w.shape[0]:
        mask[:] = True
    else:
        keep = np.argpartition(np.abs(w), w.shape[0] - k)[w.shape[0] - k:]
        mask[keep] = True
    w[~mask] = 0.0
    return mask.reshape(layout.shapes["W"])


def init_params(layout: Layout, rng: np.random.Generator, sparsity: float) -> np.ndarray:
    """Small random weights (Glorot-like) with W already thresholded; (size,) float64."""
    theta = np.zeros(layout.size, dtype=np.float64)
    v = layout.views(theta)
    d, h, r = layout.n_in, layout.hidden, layout.rank
    v["W"][:] = rng.standard_normal((h, d)) * math.sqrt(2.0 / (d + h))
    v["U1"][:] = rng.standard_normal((h, r)) * math.sqrt(1.0 / (h + r))
    v["U2"][:] = rng.standard_normal((r, h)) * math.sqrt(1.0 / (h + r))
    v["bz"][:] = 1.0  # start gates half-open towards keeping the previous state
    v["zeta"][:] = ZETA_RAW_INIT
    v["nu"][:] = NU_RAW_INIT
    v["Wc"][:] = rng.standard_normal((layout.n_ctx, h)) * math.sqrt(1.0 / h)
    v["Wm"][:] = rng.standard_normal((layout.n_mode, h)) * math.sqrt(1.0 / h)
    v["wt"][:] = rng.standard_normal(h) * math.sqrt(1.0 / h)
    v["wp"][:] = rng.standard_normal(h) * math.sqrt(1.0 / h)
    hard_threshold(theta, layout, sparsity)
    return theta


class CSR(NamedTuple):
    data: np.ndarray     # (nnz,) float32
    indices: np.ndarray  # (nnz,) int32 column of each value
    indptr: np.ndarray   # (H+1,) int32 row starts


def to_csr(theta: np.ndarray, layout: Layout) -> CSR:
    """W as CSR for the inference kernel and the compact saved model."""
    w = layout.view(theta, "W")  # (H, D)
    rows, cols = np.nonzero(w)
    indptr = np.zeros(layout.hidden + 1, dtype=np.int32)
    np.add.at(indptr, rows + 1, 1)
    np.cumsum(indptr, out=indptr)
    return CSR(w[rows, cols].astype(np.float32), cols.astype(np.int32), indptr)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _sl1(e: np.ndarray, beta: float) -> np.ndarray:
    a = np.abs(e)
    return np.where(a < beta, 0.5 * e * e / beta, a - 0.5 * beta)


def _dsl1(e: np.ndarray, beta: float) -> np.ndarray:
    return np.where(np.abs(e) < beta, e / beta, np.sign(e))


# --------------------------------------------------------------------------
# numpy reference


class Heads(NamedTuple):
    h: np.ndarray      # (B, T, H) hidden state after each step
    p_ctx: np.ndarray  # (B, T, C)
    p_mode: np.ndarray  # (B, T, M)
    temp: np.ndarray   # (B, T) in (0, 2)
    top_p: np.ndarray  # (B, T) in (0, 1)


def forward_ref(theta: np.ndarray, layout: Layout, X: np.ndarray, h0: np.ndarray) -> Heads:
    """Reference forward pass over padded sequences X (B, T, D) from h0 (B, H)."""
    v = layout.views(theta)
    B, T, _ = X.shape
    zeta = float(_sigmoid(v["zeta"][0]))
    nu = float(_sigmoid(v["nu"][0]))
    h = h0.astype(np.float64)
    hs, pcs, pms, ts, ps = [], [], [], [], []
    for t in range(T):
        u = h @ v["U2"].T                                # (B, r)
        a = X[:, t] @ v["W"].T + u @ v["U1"].T           # (B, H)
        z = _sigmoid(a + v["bz"])
        c = np.tanh(a + v["bh"])
        h = (zeta * (1.0 - z) + nu) * c + z * h          # (B, H)
        hs.append(h)
        pcs.append(_softmax(h @ v["Wc"].T + v["bc"]))
        pms.append(_softmax(h @ v["Wm"].T + v["bm"]))
        ts.append(2.0 * _sigmoid(h @ v["wt"] + v["bt"][0]))
        ps.append(_sigmoid(h @ v["wp"] + v["bp"][0]))
    return Heads(np.stack(hs, 1), np.stack(pcs, 1), np.stack(pms, 1), np.stack(ts, 1),
                 np.stack(ps, 1))


@dataclass
class Batch:
    """Padded training sequences; a weight of 0 marks padding or a missing label."""

    X: np.ndarray       # (B, T, D) float64
    h0: np.ndarray      # (B, H) float64
    y_ctx: np.ndarray   # (B, T) int64, -1 = no label
    y_mode: np.ndarray  # (B, T) int64, -1 = no label
    y_temp: np.ndarray  # (B, T) float64
    y_top_p: np.ndarray  # (B, T) float64
    w_cls: np.ndarray   # (B, T) float64 weight of the class terms
    w_reg: np.ndarray   # (B, T) float64 weight of the regression terms
    lengths: np.ndarray | None = None  # (B,) int64 real steps; the kernels skip the padding

    def __post_init__(self) -> None:
        if self.lengths is None:
            self.lengths = np.full(self.X.shape[0], self.X.shape[1], dtype=np.int64)

    def take(self, idx: np.ndarray) -> "Batch":
        """The sub-batch of the given sequences, cut to its own longest sequence."""
        lengths = self.lengths[idx]  # type: ignore[index]
        T = int(lengths.max()) if len(idx) else 1
        return Batch(self.X[idx, :T], self.h0[idx], self.y_ctx[idx, :T], self.y_mode[idx, :T],
                     self.y_temp[idx, :T], self.y_top_p[idx, :T], self.w_cls[idx, :T],
                     self.w_reg[idx, :T], lengths)

    def norm(self) -> float:
        """Loss normaliser: the number of steps that carry any label."""
        return float(max(1, int(((self.w_cls > 0) | (self.w_reg > 0)).sum())))


def loss_and_grad_ref(theta: np.ndarray, layout: Layout, batch: Batch,
                      alpha: float) -> tuple[float, np.ndarray]:
    """Task loss (CE + CE + alpha SmoothL1) and its gradient by BPTT, in numpy."""
    v = layout.views(theta)
    X, h0 = batch.X, batch.h0
    B, T, _ = X.shape
    n = batch.norm()
    zeta = float(_sigmoid(v["zeta"][0]))
    nu = float(_sigmoid(v["nu"][0]))
    hs, zs, cs, us = [h0.astype(np.float64)], [], [], []
    h = hs[0]
    for t in range(T):
        u = h @ v["U2"].T
        a = X[:, t] @ v["W"].T + u @ v["U1"].T
        z = _sigmoid(a + v["bz"])
        c = np.tanh(a + v["bh"])
        h = (zeta * (1.0 - z) + nu) * c + z * h
        us.append(u)
        zs.append(z)
        cs.append(c)
        hs.append(h)
    grad = np.zeros_like(theta)
    g = layout.views(grad)
    loss = 0.0
    dh_carry = np.zeros_like(h0, dtype=np.float64)
    rows = np.arange(B)
    for t in range(T - 1, -1, -1):
        hn, hp, z, c, u = hs[t + 1], hs[t], zs[t], cs[t], us[t]
        dhn = dh_carry.copy()
        for yname, wname, bname in (("y_ctx", "Wc", "bc"), ("y_mode", "Wm", "bm")):
            y = getattr(batch, yname)[:, t]
            w = np.where(y >= 0, batch.w_cls[:, t], 0.0)      # (B,)
            p = _softmax(hn @ v[wname].T + v[bname])           # (B, K)
            yi = np.maximum(y, 0)
            loss += float((w * -np.log(np.maximum(p[rows, yi], 1e-300))).sum()) / n
            dl = p.copy()
            dl[rows, yi] -= 1.0
            dl *= (w / n)[:, None]
            g[wname] += dl.T @ hn
            g[bname] += dl.sum(0)
            dhn += dl @ v[wname]
        wr = batch.w_reg[:, t]
        for wname, bname, y, scale in (("wt", "bt", batch.y_temp[:, t], 2.0),
                                       ("wp", "bp", batch.y_top_p[:, t], 1.0)):
            s = _sigmoid(hn @ v[wname] + v[bname][0])          # (B,)
            e = scale * s - y
            loss += float((alpha * wr * _sl1(e, SMOOTH_L1_BETA)).sum()) / n
            ds = alpha * wr * _dsl1(e, SMOOTH_L1_BETA) * scale * s * (1.0 - s) / n
            g[wname] += ds @ hn
            g[bname][0] += ds.sum()
            dhn += ds[:, None] * v[wname][None, :]
        gate = zeta * (1.0 - z) + nu
        dc = dhn * gate
        dz = dhn * (hp - zeta * c)
        g["zeta"][0] += float((dhn * (1.0 - z) * c).sum())
        g["nu"][0] += float((dhn * c).sum())
        daz = dz * z * (1.0 - z)
        dac = dc * (1.0 - c * c)
        g["bz"] += daz.sum(0)
        g["bh"] += dac.sum(0)
        da = daz + dac                                          # (B, H)
        g["W"] += da.T @ X[:, t]
        g["U1"] += da.T @ u
        du = da @ v["U1"]                                       # (B, r)
        g["U2"] += du.T @ hp
        dh_carry = dhn * z + du @ v["U2"]
    g["zeta"][0] *= zeta * (1.0 - zeta)
    g["nu"][0] *= nu * (1.0 - nu)
    return loss, grad


def step_ref(theta: np.ndarray, layout: Layout, x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """One inference step; returns the kernel's output layout [h', p_ctx, p_mode, temp, top_p]."""
    r = forward_ref(theta, layout, x[None, None, :].astype(np.float64),
                    h[None, :].astype(np.float64))
    return np.concatenate([r.h[0, 0], r.p_ctx[0, 0], r.p_mode[0, 0], r.temp[0], r.top_p[0]])


# --------------------------------------------------------------------------
# numba kernels


@njit(cache=True, inline="always")
def _sig(x: float) -> float:
    return 0.5 * (1.0 + math.tanh(0.5 * x))


INFER_EXTRA = N_CONTEXT + N_MODE + 5  # p_ctx, p_mode, temp, top_p, ctx argmax, mode argmax, conf


def pack_inference(theta: np.ndarray, layout: Layout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(th, idx, meta) for ``infer_step``: few arguments, because each costs dispatch time.

    th   float32 parameters, with W's CSR values stored at the start of W's block;
    idx  int32 [indptr (H+1), column indices (nnz)];
    meta int64 [block offsets (16), dims (5)].
    """
    csr = to_csr(theta, layout)
    th = theta.astype(np.float32)
    w = layout.block("W")
    th[w] = 0.0
    th[w.start:w.start + len(csr.data)] = csr.data
    idx = np.concatenate([csr.indptr, csr.indices]).astype(np.int32)
    meta = np.concatenate([layout.offsets, layout.dims]).astype(np.int64)
    return th, idx, meta


@njit(cache=True)
def infer_step(x: np.ndarray, h: np.ndarray, th: np.ndarray, idx: np.ndarray, meta: np.ndarray,
               out: np.ndarray) -> None:
    """One routing step with CSR W (see ``pack_inference``).

    out = [h' (H), p_ctx (C), p_mode (M), temp, top_p, argmax ctx, argmax mode,
    confidence = max p_ctx * max p_mode].
    """
    H, R, C, M = meta[17], meta[18], meta[19], meta[20]
    oW, oU1, oU2, obz, obh = meta[0], meta[1], meta[2], meta[3], meta[4]
    zeta = _sig(th[meta[5]])
    nu = _sig(th[meta[6]])
    u = np.empty(R)
    for k in range(R):
        acc = 0.0
        for j in range(H):
            acc += th[oU2 + k * H + j] * h[j]
        u[k] = acc
    for i in range(H):
        acc = 0.0
        for p in range(idx[i], idx[i + 1]):
            acc += th[oW + p] * x[idx[H + 1 + p]]
        for k in range(R):
            acc += th[oU1 + i * R + k] * u[k]
        z = _sig(acc + th[obz + i])
        c = math.tanh(acc + th[obh + i])
        out[i] = (zeta * (1.0 - z) + nu) * c + z * h[i]
    conf = 1.0
    for head in range(2):
        if head == 0:
            base, ow, ob, K = H, meta[7], meta[8], C
        else:
            base, ow, ob, K = H + C, meta[9], meta[10], M
        mx = -1e300
        best = 0
        for k in range(K):
            acc = th[ob + k]
            for j in range(H):
                acc += th[ow + k * H + j] * out[j]
            out[base + k] = acc
            if acc > mx:
                mx = acc
                best = k
        s = 0.0
        for k in range(K):
            e = math.exp(out[base + k] - mx)
            out[base + k] = e
            s += e
        for k in range(K):
            out[base + k] /= s
        out[H + C + M + 2 + head] = best
        conf *= 1.0 / s  # the arg-max class has probability exp(0) / s
    at = th[meta[12]]
    ap = th[meta[14]]
    for j in range(H):
        at += th[meta[11] + j] * out[j]
        ap += th[meta[13] + j] * out[j]
    out[H + C + M] = 2.0 * _sig(at)
    out[H + C + M + 1] = _sig(ap)
    out[H + C + M + 4] = conf


@njit(cache=True)
def _cell_forward(theta: np.ndarray, offs: np.ndarray, H: int, R: int, D: int, x: np.ndarray,
                  hp: np.ndarray, zeta: float, nu: float, u: np.ndarray, z: np.ndarray,
                  c: np.ndarray, hn: np.ndarray) -> None:
    oW, oU1, oU2, obz, obh = offs[0], offs[1], offs[2], offs[3], offs[4]
    for k in range(R):
        acc = 0.0
        for j in range(H):
            acc += theta[oU2 + k * H + j] * hp[j]
        u[k] = acc
    for i in range(H):
        acc = 0.0
        for j in range(D):
            w = theta[oW + i * D + j]
            if w != 0.0:
                acc += w * x[j]
        for k in range(R):
            acc += theta[oU1 + i * R + k] * u[k]
        zi = _sig(acc + theta[obz + i])
        ci = math.tanh(acc + theta[obh + i])
        z[i] = zi
        c[i] = ci
        hn[i] = (zeta * (1.0 - zi) + nu) * ci + zi * hp[i]


@njit(cache=True)
def _head_probs(theta: np.ndarray, ow: int, ob: int, K: int, H: int, h: np.ndarray,
                p: np.ndarray) -> None:
    mx = -1e300
    for k in range(K):
        acc = theta[ob + k]
        for j in range(H):
            acc += theta[ow + k * H + j] * h[j]
        p[k] = acc
        if acc > mx:
            mx = acc
    s = 0.0
    for k in range(K):
        p[k] = math.exp(p[k] - mx)
        s += p[k]
    for k in range(K):
        p[k] /= s


@njit(cache=True)
def forward_kernel(theta: np.ndarray, offs: np.ndarray, dims: np.ndarray, X: np.ndarray,
                   h0: np.ndarray, lengths: np.ndarray, p_ctx: np.ndarray, p_mode: np.ndarray,
                   temp: np.ndarray, top_p: np.ndarray, h_out: np.ndarray) -> None:
    """Batched forward over padded sequences (dense masked W), filling the output arrays."""
    D, H, R, C, M = dims[0], dims[1], dims[2], dims[3], dims[4]
    B = X.shape[0]
    zeta = _sig(theta[offs[5]])
    nu = _sig(theta[offs[6]])
    u = np.empty(R)
    z = np.empty(H)
    c = np.empty(H)
    hp = np.empty(H)
    hn = np.empty(H)
    for b in range(B):
        for j in range(H):
            hp[j] = h0[b, j]
        for t in range(lengths[b]):
            _cell_forward(theta, offs, H, R, D, X[b, t], hp, zeta, nu, u, z, c, hn)
            _head_probs(theta, offs[7], offs[8], C, H, hn, p_ctx[b, t])
            _head_probs(theta, offs[9], offs[10], M, H, hn, p_mode[b, t])
            at = theta[offs[12]]
            ap = theta[offs[14]]
            for j in range(H):
                at += theta[offs[11] + j] * hn[j]
                ap += theta[offs[13] + j] * hn[j]
            temp[b, t] = 2.0 * _sig(at)
            top_p[b, t] = _sig(ap)
            for j in range(H):
                hp[j] = hn[j]
                h_out[b, t, j] = hn[j]


@njit(cache=True)
def loss_and_grad_kernel(theta: np.ndarray, offs: np.ndarray, dims: np.ndarray, X: np.ndarray,
                         h0: np.ndarray, lengths: np.ndarray, y_ctx: np.ndarray, y_mode: np.ndarray,
                         y_temp: np.ndarray, y_top_p: np.ndarray, w_cls: np.ndarray,
                         w_reg: np.ndarray, alpha: float, beta: float, n: float,
                         grad: np.ndarray) -> float:
    """Same maths as ``loss_and_grad_ref``, one sequence at a time; grad is zeroed first."""
    D, H, R, C, M = dims[0], dims[1], dims[2], dims[3], dims[4]
    oW, oU1, oU2, obz, obh = offs[0], offs[1], offs[2], offs[3], offs[4]
    oz, on = offs[5], offs[6]
    B = X.shape[0]
    T = X.shape[1]
    zeta = _sig(theta[oz])
    nu = _sig(theta[on])
    for i in range(grad.shape[0]):
        grad[i] = 0.0
    hs = np.empty((T + 1, H))
    zs = np.empty((T, H))
    cs = np.empty((T, H))
    us = np.empty((T, R))
    dhn = np.empty(H)
    dcarry = np.empty(H)
    da = np.empty(H)
    du = np.empty(R)
    pc = np.empty(C)
    pm = np.empty(M)
    gzeta = 0.0
    gnu = 0.0
    loss = 0.0
    for b in range(B):
        Tb = lengths[b]
        for j in range(H):
            hs[0, j] = h0[b, j]
        for t in range(Tb):
            _cell_forward(theta, offs, H, R, D, X[b, t], hs[t], zeta, nu, us[t], zs[t], cs[t],
                          hs[t + 1])
        for j in range(H):
            dcarry[j] = 0.0
        for t in range(Tb - 1, -1, -1):
            hn = hs[t + 1]
            for j in range(H):
                dhn[j] = dcarry[j]
            # class heads
            for head in range(2):
                if head == 0:
                    y = y_ctx[b, t]
                    ow, ob, K, p = offs[7], offs[8], C, pc
                else:
                    y = y_mode[b, t]
                    ow, ob, K, p = offs[9], offs[10], M, pm
                w = w_cls[b, t]
                if y < 0 or w == 0.0:
                    continue
                _head_probs(theta, ow, ob, K, H, hn, p)
                loss += w * -math.log(max(p[y], 1e-300)) / n
                for k in range(K):
                    dl = p[k] - (1.0 if k == y else 0.0)
                    dl *= w / n
                    grad[ob + k] += dl
                    for j in range(H):
                        grad[ow + k * H + j] += dl * hn[j]
                        dhn[j] += dl * theta[ow + k * H + j]
            # regression heads
            wr = w_reg[b, t]
            if wr != 0.0:
                for head in range(2):
                    if head == 0:
                        ow, ob, scale, y_r = offs[11], offs[12], 2.0, y_temp[b, t]
                    else:
                        ow, ob, scale, y_r = offs[13], offs[14], 1.0, y_top_p[b, t]
                    acc = theta[ob]
                    for j in range(H):
                        acc += theta[ow + j] * hn[j]
                    s = _sig(acc)
                    e = scale * s - y_r
                    ae = abs(e)
                    if ae < beta:
                        loss += alpha * wr * 0.5 * e * e / beta / n
                        de = e / beta
                    else:
                        loss += alpha * wr * (ae - 0.5 * beta) / n
                        de = 1.0 if e > 0 else (-1.0 if e < 0 else 0.0)
                    ds = alpha * wr * de * scale * s * (1.0 - s) / n
                    grad[ob] += ds
                    for j in range(H):
                        grad[ow + j] += ds * hn[j]
                        dhn[j] += ds * theta[ow + j]
            # cell
            hp = hs[t]
            for i in range(H):
                zi = zs[t, i]
                ci = cs[t, i]
                gate = zeta * (1.0 - zi) + nu
                gzeta += dhn[i] * (1.0 - zi) * ci
                gnu += dhn[i] * ci
                daz = dhn[i] * (hp[i] - zeta * ci) * zi * (1.0 - zi)
                dac = dhn[i] * gate * (1.0 - ci * ci)
                grad[obz + i] += daz
                grad[obh + i] += dac
                da[i] = daz + dac
                dcarry[i] = dhn[i] * zi
            xt = X[b, t]
            for i in range(H):
                if da[i] == 0.0:
                    continue
                for j in range(D):
                    grad[oW + i * D + j] += da[i] * xt[j]
                for k in range(R):
                    grad[oU1 + i * R + k] += da[i] * us[t, k]
            for k in range(R):
                acc = 0.0
                for i in range(H):
                    acc += da[i] * theta[oU1 + i * R + k]
                du[k] = acc
            for k in range(R):
                for j in range(H):
                    grad[oU2 + k * H + j] += du[k] * hp[j]
                    dcarry[j] += du[k] * theta[oU2 + k * H + j]
    grad[oz] += gzeta * zeta * (1.0 - zeta)
    grad[on] += gnu * nu * (1.0 - nu)
    return loss


def forward(theta: np.ndarray, layout: Layout, X: np.ndarray, h0: np.ndarray,
            lengths: np.ndarray | None = None) -> Heads:
    """Kernel-backed ``forward_ref``; outputs past a sequence's length are left at 0."""
    B, T, _ = X.shape
    out = Heads(np.zeros((B, T, layout.hidden)), np.zeros((B, T, layout.n_ctx)),
                np.zeros((B, T, layout.n_mode)), np.zeros((B, T)), np.zeros((B, T)))
    if lengths is None:
        lengths = np.full(B, T, dtype=np.int64)
    forward_kernel(np.ascontiguousarray(theta, dtype=np.float64), layout.offsets, layout.dims,
                   np.ascontiguousarray(X, dtype=np.float64),
                   np.ascontiguousarray(h0, dtype=np.float64),
                   np.ascontiguousarray(lengths, dtype=np.int64),
                   out.p_ctx, out.p_mode, out.temp, out.top_p, out.h)
    return out


def loss_and_grad(theta: np.ndarray, layout: Layout, batch: Batch,
                  alpha: float) -> tuple[float, np.ndarray]:
    """Kernel-backed equivalent of ``loss_and_grad_ref``."""
    grad = np.empty(layout.size, dtype=np.float64)
    loss = loss_and_grad_kernel(
        np.ascontiguousarray(theta, dtype=np.float64), layout.offsets, layout.dims,
        np.ascontiguousarray(batch.X, dtype=np.float64),
        np.ascontiguousarray(batch.h0, dtype=np.float64),
        np.ascontiguousarray(batch.lengths, dtype=np.int64),
        np.ascontiguousarray(batch.y_ctx, dtype=np.int64),
        np.ascontiguousarray(batch.y_mode, dtype=np.int64),
        np.ascontiguousarray(batch.y_temp, dtype=np.float64),
        np.ascontiguousarray(batch.y_top_p, dtype=np.float64),
        np.ascontiguousarray(batch.w_cls, dtype=np.float64),
        np.ascontiguousarray(batch.w_reg, dtype=np.float64),
        float(alpha), SMOOTH_L1_BETA, batch.norm(), grad)
    return float(loss), grad
