"""FastGRNN: numba kernels == numpy reference; reference gradient == finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from ruvllm_edge.router import fastgrnn as fg

LAYOUT = fg.Layout(n_in=12, hidden=6, rank=3)


def _batch(rng: np.random.Generator, B: int = 4, T: int = 3, layout: fg.Layout = LAYOUT,
           lengths: list[int] | None = None) -> fg.Batch:
    lengths_a = np.asarray(lengths if lengths is not None else [T] * B, dtype=np.int64)
    X = rng.standard_normal((B, T, layout.n_in))
    y_ctx = rng.integers(-1, layout.n_ctx, (B, T))
    y_mode = rng.integers(-1, layout.n_mode, (B, T))
    w_cls = rng.uniform(0.2, 1.0, (B, T))
    w_reg = rng.uniform(0.0, 1.0, (B, T)) * (rng.random((B, T)) < 0.7)
    for b, n in enumerate(lengths_a):  # padding: zero inputs, no labels
        X[b, n:] = 0.0
        y_ctx[b, n:] = -1
        y_mode[b, n:] = -1
        w_cls[b, n:] = 0.0
        w_reg[b, n:] = 0.0
    return fg.Batch(X, rng.standard_normal((B, layout.hidden)) * 0.5, y_ctx, y_mode,
                    rng.uniform(0, 2, (B, T)), rng.uniform(0, 1, (B, T)), w_cls, w_reg, lengths_a)


def _theta(rng: np.random.Generator, layout: fg.Layout = LAYOUT, sparsity: float = 0.5) -> np.ndarray:
    theta = fg.init_params(layout, rng, sparsity)
    theta += rng.standard_normal(theta.shape) * 0.3 * (theta != 0)  # move off the init values
    for name in ("bz", "bh", "bc", "bm", "bt", "bp"):
        layout.view(theta, name)[:] = rng.standard_normal(layout.shapes[name]) * 0.3
    return theta


def test_layout_blocks_tile_the_vector() -> None:
    sizes = [int(np.prod(s)) for s in LAYOUT.shapes.values()]
    assert sum(sizes) == LAYOUT.size
    theta = np.arange(LAYOUT.size, dtype=np.float64)
    seen = np.concatenate([LAYOUT.view(theta, n).ravel() for n in LAYOUT.shapes])
    np.testing.assert_array_equal(np.sort(seen), theta)


def test_reference_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(0)
    theta = _theta(rng, sparsity=0.0)
    batch = _batch(rng, lengths=[3, 1, 2, 3])
    _, grad = fg.loss_and_grad_ref(theta, LAYOUT, batch, alpha=0.7)
    eps = 1e-6
    for i in range(LAYOUT.size):  # every parameter, zeta and nu included
        tp, tm = theta.copy(), theta.copy()
        tp[i] += eps
        tm[i] -= eps
        fd = (fg.loss_and_grad_ref(tp, LAYOUT, batch, 0.7)[0]
              - fg.loss_and_grad_ref(tm, LAYOUT, batch, 0.7)[0]) / (2 * eps)
        assert grad[i] == pytest.approx(fd, abs=1e-6, rel=1e-4), f"parameter {i}"


def test_kernel_loss_and_gradient_equal_reference() -> None:
    rng = np.random.default_rng(1)
    for lengths in ([3, 3, 3, 3], [1, 3, 2, 1]):
        theta = _theta(rng)
        batch = _batch(rng, lengths=lengths)
        l_ref, g_ref = fg.loss_and_grad_ref(theta, LAYOUT, batch, 0.5)
        l_k, g_k = fg.loss_and_grad(theta, LAYOUT, batch, 0.5)
        assert l_k == pytest.approx(l_ref, rel=1e-12)
        np.testing.assert_allclose(g_k, g_ref, rtol=1e-9, atol=1e-12)


def test_padding_does_not_change_loss_or_gradient() -> None:
    rng = np.random.default_rng(2)
    theta = _theta(rng)
    short = _batch(rng, B=1, T=2)
    padded = fg.Batch(np.concatenate([short.X, np.zeros((1, 3, LAYOUT.n_in))], 1), short.h0,
                      np.pad(short.y_ctx, ((0, 0), (0, 3)), constant_values=-1),
                      np.pad(short.y_mode, ((0, 0), (0, 3)), constant_values=-1),
                      np.pad(short.y_temp, ((0, 0), (0, 3))), np.pad(short.y_top_p, ((0, 0), (0, 3))),
                      np.pad(short.w_cls, ((0, 0), (0, 3))), np.pad(short.w_reg, ((0, 0), (0, 3))),
                      np.array([2]))
    a = fg.loss_and_grad(theta, LAYOUT, short, 0.5)
    b = fg.loss_and_grad(theta, LAYOUT, padded, 0.5)
    assert a[0] == pytest.approx(b[0])
    np.testing.assert_allclose(a[1], b[1])


def test_forward_kernel_equals_reference() -> None:
    rng = np.random.default_rng(3)
    theta = _theta(rng)
    batch = _batch(rng, B=5, T=4)
    ref = fg.forward_ref(theta, LAYOUT, batch.X, batch.h0)
    k = fg.forward(theta, LAYOUT, batch.X, batch.h0)
    for a, b in zip(ref, k):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert np.allclose(ref.p_ctx.sum(-1), 1.0) and np.allclose(ref.p_mode.sum(-1), 1.0)
    assert (ref.temp > 0).all() and (ref.temp < 2).all()
    assert (ref.top_p > 0).all() and (ref.top_p < 1).all()


def test_hidden_state_carries_across_steps() -> None:
    """h after two steps equals one step fed with the h from the first step."""
    rng = np.random.default_rng(4)
    theta = _theta(rng)
    X = rng.standard_normal((1, 2, LAYOUT.n_in))
    h0 = np.zeros((1, LAYOUT.hidden))
    two = fg.forward_ref(theta, LAYOUT, X, h0)
    one = fg.forward_ref(theta, LAYOUT, X[:, :1], h0)
    again = fg.forward_ref(theta, LAYOUT, X[:, 1:], one.h[:, 0])
    np.testing.assert_allclose(two.h[:, 1], again.h[:, 0])
    assert not np.allclose(two.h[:, 1], fg.forward_ref(theta, LAYOUT, X[:, 1:], h0).h[:, 0])


def test_inference_kernel_with_csr_equals_reference() -> None:
    rng = np.random.default_rng(5)
    layout = fg.Layout(n_in=50, hidden=32, rank=8)
    theta = _theta(rng, layout, sparsity=0.95)
    th, idx, meta = fg.pack_inference(theta, layout)
    for _ in range(20):
        x = rng.standard_normal(layout.n_in).astype(np.float32)
        h = (rng.standard_normal(layout.hidden) * 0.5).astype(np.float32)
        out = np.empty(layout.hidden + fg.INFER_EXTRA, dtype=np.float32)
        fg.infer_step(x, h, th, idx, meta, out)
        ref = fg.step_ref(theta, layout, x, h)
        n = layout.hidden + layout.n_ctx + layout.n_mode + 2
        np.testing.assert_allclose(out[:n], ref, atol=2e-5)
        p_ctx = ref[layout.hidden:layout.hidden + 5]
        p_mode = ref[layout.hidden + 5:layout.hidden + 8]
        assert out[n] == p_ctx.argmax() and out[n + 1] == p_mode.argmax()
        assert out[n + 2] == pytest.approx(p_ctx.max() * p_mode.max(), abs=1e-5)


def test_hard_threshold_keeps_the_largest_entries() -> None:
    rng = np.random.default_rng(6)
    layout = fg.Layout(n_in=50, hidden=32, rank=8)
    theta = rng.standard_normal(layout.size)
    before = layout.view(theta, "W").copy()
    mask = fg.hard_threshold(theta, layout, 0.95)
    w = layout.view(theta, "W")
    k = fg.n_keep(layout, 0.95)
    assert k == 80 and np.count_nonzero(w) == k == mask.sum()
    assert np.abs(before[mask]).min() >= np.abs(before[~mask]).max()
    np.testing.assert_array_equal(w[mask], before[mask])
    rest = slice(layout.block("W").stop, None)
    assert np.count_nonzero(theta[rest]) == theta[rest].size  # only W is thresholded


def test_csr_round_trip() -> None:
    rng = np.random.default_rng(7)
    theta = _theta(rng, sparsity=0.7)
    csr = fg.to_csr(theta, LAYOUT)
    dense = np.zeros(LAYOUT.shapes["W"])
    for i in range(LAYOUT.hidden):
        dense[i, csr.indices[csr.indptr[i]:csr.indptr[i + 1]]] = csr.data[csr.indptr[i]:csr.indptr[i + 1]]
    np.testing.assert_allclose(dense, LAYOUT.view(theta, "W"), rtol=1e-6)
