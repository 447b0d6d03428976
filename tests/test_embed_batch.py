"""The embedding micro-batcher: concurrent callers share embed_many runs, each gets its row."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest

from ruvllm_edge.embed_batch import EmbedBatcher


def vec_of(text: str) -> np.ndarray:
    """A deterministic row per text, so a mixed-up answer shows."""
    rng = np.random.default_rng(abs(hash(text)) % 2**32)
    return rng.standard_normal(4).astype(np.float32)


class Fake:
    """embed_many that records its batches; ``gate`` holds the first call until released."""

    def __init__(self, hold_first: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.hold_first = hold_first
        self.lock = threading.Lock()

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        with self.lock:
            self.calls.append(list(texts))
            first = len(self.calls) == 1
        if first and self.hold_first:
            self.entered.set()
            assert self.gate.wait(10)
        return np.stack([vec_of(t) for t in texts])


def run_callers(b: EmbedBatcher, texts: list[str]
                ) -> tuple[dict[str, np.ndarray], list[BaseException], list[threading.Thread]]:
    """One thread per text calling ``b.embed``: (rows by text, errors, threads to join)."""
    out: dict[str, np.ndarray] = {}
    errs: list[BaseException] = []

    def call(t: str) -> None:
        try:
            out[t] = b.embed(t)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted on
            errs.append(exc)

    threads = [threading.Thread(target=call, args=(t,)) for t in texts]
    for th in threads:
        th.start()
    return out, errs, threads


def test_a_lone_caller_gets_its_row_without_waiting_for_company() -> None:
    fake = Fake()
    b = EmbedBatcher(fake, window_s=10.0, expected=lambda: 1)   # a wait would hang the test
    assert np.array_equal(b.embed("alpha"), vec_of("alpha"))
    assert fake.calls == [["alpha"]]
    assert b.stats.as_dict() == {"batches": 1, "texts": 1, "largest": 1, "mean": 1.0}


def behind_a_held_run(b: EmbedBatcher, fake: Fake, first: str, texts: list[str],
                      join_s: float = 10.0) -> tuple[dict[str, np.ndarray], list[BaseException],
                                                     dict[str, np.ndarray], list[BaseException]]:
    """``first`` runs alone and ``fake`` holds it; every text queues behind it; then release.

    Returns (rows of ``texts``, their errors, the row of ``first``, its errors).
    """
    first_out, first_errs, t1 = run_callers(b, [first])
    assert fake.entered.wait(10)                       # ``first`` is running, alone
    out, errs, threads = run_callers(b, texts)
    for _ in range(10_000):                            # all of them wait for that run
        if len(b._pending) >= len(texts):
            break
        threading.Event().wait(0.001)
    assert len(b._pending) == len(texts), len(b._pending)
    fake.gate.set()
    for th in [*t1, *threads]:
        th.join(join_s)
    return out, errs, first_out, first_errs


def test_callers_arriving_during_a_run_share_the_next_batch() -> None:
    fake = Fake(hold_first=True)
    b = EmbedBatcher(fake, window_s=0.0, max_batch=16)
    texts = [f"q{i}" for i in range(6)]
    out, errs, first, errs1 = behind_a_held_run(b, fake, "first", texts)
    assert not errs and not errs1
    assert fake.calls[0] == ["first"]
    assert sorted(fake.calls[1]) == texts and len(fake.calls) == 2   # one run for all six
    for t in texts:
        assert np.array_equal(out[t], vec_of(t))        # each caller its own row
    assert np.array_equal(first["first"], vec_of("first"))


def test_a_batch_never_exceeds_max_batch() -> None:
    fake = Fake(hold_first=True)
    b = EmbedBatcher(fake, window_s=0.0, max_batch=3)
    texts = [f"q{i}" for i in range(7)]
    out, errs, _, _ = behind_a_held_run(b, fake, "first", texts)
    assert not errs
    assert [len(c) for c in fake.calls] == [1, 3, 3, 1]
    assert sorted(t for c in fake.calls[1:] for t in c) == texts
    assert all(np.array_equal(out[t], vec_of(t)) for t in texts)


def test_the_leader_waits_its_window_for_the_callers_it_expects() -> None:
    fake = Fake()
    b = EmbedBatcher(fake, window_s=10.0, max_batch=16, expected=lambda: 2)
    out: dict[str, np.ndarray] = {}

    def lead() -> None:
        out["a"] = b.embed("a")

    t = threading.Thread(target=lead)
    t.start()
    while not b._gathering:                            # "a" leads and waits for one more
        threading.Event().wait(0.001)
    assert fake.calls == []
    out["b"] = b.embed("b")                            # the expected second caller
    t.join(10)
    assert fake.calls == [["a", "b"]]
    assert np.array_equal(out["a"], vec_of("a")) and np.array_equal(out["b"], vec_of("b"))


def test_an_error_reaches_every_caller_of_its_batch_and_the_next_batch_works() -> None:
    calls: list[list[str]] = []

    def boom(texts: Sequence[str]) -> np.ndarray:
        calls.append(list(texts))
        if len(calls) == 1:
            raise RuntimeError("onnx failed")
        return np.stack([vec_of(t) for t in texts])

    b = EmbedBatcher(boom, window_s=0.0)
    with pytest.raises(RuntimeError, match="onnx failed"):
        b.embed("x")
    assert np.array_equal(b.embed("y"), vec_of("y"))


def test_a_wrong_row_count_is_an_error_not_a_mixup() -> None:
    b = EmbedBatcher(lambda texts: np.zeros((len(texts) + 1, 4), np.float32), window_s=0.0)
    with pytest.raises(RuntimeError, match="2 rows for 1 texts"):
        b.embed("x")


def test_bad_settings_are_refused() -> None:
    for kw in ({"max_batch": 0}, {"window_s": -1.0}, {"max_running": 0}):
        with pytest.raises(ValueError):
            EmbedBatcher(lambda t: np.zeros((len(t), 4)), **kw)   # type: ignore[arg-type]


def test_batched_vectors_equal_single_call_vectors(embedder_paths: tuple[Path, Path]) -> None:
    """The real MiniLM: rows from shared runs match one-text runs (padding is masked)."""
    from ruvllm_edge.embedding import Embedder

    emb = Embedder(*embedder_paths, cache_entries=0)
    texts = ["Where is the blue kayak?", "gate code for unit 4",
             "My sister Ana lives in Porto and works as a nurse at the city hospital.",
             "tent", "What did I say about the dentist appointment next Tuesday afternoon?"]
    single = np.stack([emb.embed(t) for t in texts])
    fake_run = Fake(hold_first=True)
    b = EmbedBatcher(lambda ts: fake_run(ts) if not fake_run.calls else emb.embed_batch(ts),
                     window_s=0.0)
    # "warm" holds the lane so the rest batch up
    out, errs, _, _ = behind_a_held_run(b, fake_run, "warm", texts, join_s=30)
    assert not errs and b.stats.largest == len(texts)
    batched = np.stack([out[t] for t in texts])
    cos = np.sum(batched * single, axis=1)
    assert np.all(cos > 0.999), cos
    assert np.allclose(batched, single, atol=2e-2)


def test_prefetched_texts_join_the_next_batch_and_share_a_slot() -> None:
    fake = Fake()
    b = EmbedBatcher(fake, window_s=0.0, max_batch=16)
    for t in ("p1", "p2", "p1"):                       # queued requests; p1 twice
        b.prefetch(t)
    assert fake.calls == []                           # nothing runs until a worker embeds
    v = b.embed("p2")                                 # a worker: one run for all of them
    assert fake.calls == [["p1", "p2"]]
    assert np.array_equal(v, vec_of("p2")) and not v.flags.writeable
    assert np.array_equal(b.embed("p1"), vec_of("p1"))   # delivered: a new run for it
    assert fake.calls == [["p1", "p2"], ["p1"]]
    assert b._slots == {} and b._pending == []
