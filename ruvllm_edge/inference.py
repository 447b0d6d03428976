"""One GGUF model through llama-cpp-python: load, fit, generate, unload.

Why it is built this way:
- We format the prompt with the model's own chat template and tokenize it
  ourselves, so we can count tokens exactly, trim a session's history to the
  context *before* generating (and say how many turns were dropped), and
  compute how much of the prompt the KV cache already holds.
- We prefill in ``n_batch`` chunks and sample token by token through
  ``Llama.generate``, checking a stop callback between chunks and between
  tokens: that is what makes ``cancel`` and ``max_latency_ms`` take effect
  within one token (or one prefill chunk) instead of at the end.
- Loading is lazy and guarded by a memory estimate (weights + KV cache +
  overhead) checked against the configured budget and MemAvailable, so a model
  that does not fit is refused with numbers instead of being OOM-killed or
  pushed into swap. After ``keep_alive_s`` idle the model is unloaded.
- A vocab-only instance (a few MB, ~0.2 s) stays resident for tokenizing and
  for reading GGUF metadata without loading weights.
- Memory (benchmarks/bench_rss.py): the weights are mmapped (file-backed,
  shared, reclaimable pages); the KV cache is the largest private part of a
  loaded model, so ``kv_cache_type = "q8_0"`` halves it (greedy output was
  token-identical on the default model); and an unload trims glibc's free
  heap, which otherwise keeps ~17 MB of the closed context.
"""

from __future__ import annotations

import codecs
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import psutil

from . import models as catalogue
from .config import InferenceConfig, SystemConfig
from .errors import ModelIntegrityError, ModelUnavailable, TooLarge
from .heap import release_free_heap

log = logging.getLogger(__name__)

MB = 1024 * 1024
StopCheck = Callable[[], str | None]   # returns a reason ("cancelled", "deadline") to stop
TokenSink = Callable[[str], None]

# Used only for models whose GGUF carries no chat template (e.g. base models).
FALLBACK_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'user' %}User: {{ m['content'] }}\n"
    "{% else %}Assistant: {{ m['content'] }}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}")
FALLBACK_STOPS = ("\nUser:", "\n\nUser")

# Bytes per cached K or V value: q8_0 stores 32 values in 34 bytes.
KV_BYTES = {"f16": 2.0, "q8_0": 34 / 32}
GGML_TYPE = {"f16": 1, "q8_0": 8}   # ggml_type ids (llama_cpp.GGML_TYPE_F16 / _Q8_0)


# --------------------------------------------------------------------------
# Pure helpers


def kv_cache_mb(n_layer: int, n_ctx: int, n_head_kv: int, head_dim: int,
                bytes_per_value: float = 2.0) -> float:
    """K and V caches: layers x context x kv-width x 2 (K, V) x bytes (2 for f16)."""
    assert min(n_layer, n_ctx, n_head_kv, head_dim) > 0
    return n_layer * n_ctx * n_head_kv * head_dim * 2 * bytes_per_value / MB


@dataclass(frozen=True)
class MemoryEstimate:
    file_mb: float
    kv_mb: float
    overhead_mb: float
    need_mb: float
    rss_mb: float
    budget_mb: float
    available_mb: float
    min_free_mb: float

    @property
    def fits_budget(self) -> bool:
        return self.rss_mb + self.need_mb <= self.budget_mb

    @property
    def fits_ram(self) -> bool:
        return self.need_mb <= self.available_mb - self.min_free_mb

    def explain(self) -> str:
        return (f"model needs ~{self.need_mb:.0f} MB (file {self.file_mb:.0f} + KV cache "
                f"{self.kv_mb:.0f} + overhead {self.overhead_mb:.0f}); process RSS is "
                f"{self.rss_mb:.0f} MB of a {self.budget_mb:.0f} MB budget, MemAvailable "
                f"{self.available_mb:.0f} MB with {self.min_free_mb:.0f} MB kept free")

    def as_dict(self) -> dict[str, float]:
        return {k: round(getattr(self, k), 1) for k in (
            "file_mb", "kv_mb", "overhead_mb", "need_mb", "rss_mb", "budget_mb", "available_mb",
            "min_free_mb")}


@dataclass(frozen=True)
class ModelInfo:
    path: str
    name: str
    file_mb: float
    n_layer: int
    n_head_kv: int
    head_dim: int
    n_ctx_train: int
    chat_template: str
    has_template: bool
    bos: str
    eos: str


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    finish_reason: str          # stop | length | deadline | cancelled | timeout
    trimmed_turns: int = 0
    max_tokens_clipped: bool = False
    prefill_ms: float = 0.0
    decode_ms: float = 0.0

    @property
    def truncated(self) -> bool:
        return self.finish_reason in ("length", "deadline", "cancelled", "timeout")


@dataclass
class PromptPlan:
    tokens: list[int]
    trimmed_turns: int
    max_tokens: int
    max_tokens_clipped: bool
    stops: tuple[str, ...] = field(default_factory=tuple)


def history_to_messages(system: str, history: Sequence[tuple[str, str]], user: str
                        ) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": system}] if system else []
    msgs += [{"role": r, "content": c} for r, c in history]
    msgs.append({"role": "user", "content": user})
    return msgs


# --------------------------------------------------------------------------
# The engine


class InferenceEngine:
    """Owns the one llama.cpp model; every call is serialised on one lock."""

    def __init__(self, icfg: InferenceConfig, scfg: SystemConfig, models_dir: str | Path,
                 on_load: Callable[[str], None] | None = None) -> None:
        self.cfg = icfg
        self.sys = scfg
        self.models_dir = Path(models_dir)
        self.path, self.expected_sha = catalogue.resolve(icfg.model, self.models_dir)
        if icfg.model_sha256:
            self.expected_sha = icfg.model_sha256
        self._lock = threading.RLock()
        self._llm: Any = None
        self._vocab: Any = None
        self._info: ModelInfo | None = None
        self._formatter: Any = None
        self._verified: tuple[int, int, int] | None = None  # (inode, size, mtime_ns)
        self._on_load = on_load
        self.state = "unloaded"          # unloaded | loading | loaded | unavailable
        self.last_error: str | None = None
        self.last_used = time.monotonic()
        self.loads = 0
        self.n_threads = icfg.n_threads or psutil.cpu_count(logical=False) or os.cpu_count() or 1

    # -- integrity and metadata -------------------------------------------

    def verify(self) -> None:
        """sha256 check of the model file; skipped while the file is unchanged."""
        try:
            st = self.path.stat()
        except OSError:
            raise ModelIntegrityError(f"model file {self.path} is missing; run "
                                      "`ruvllm-edge models fetch`") from None
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        if self._verified == key:
            return
        catalogue.verify_file(self.path, self.expected_sha)
        self._verified = key

    def info(self) -> ModelInfo:
        """GGUF metadata through a vocab-only load: no weights touched.

        Once read it is returned without the lock: a generation holds the lock
        for its whole length, and a question answered from memory counts its
        tokens on the fast lane meanwhile (the vocab-only instance is separate
        from the generating one and tokenizing only reads it).
        """
        info = self._info
        if info is not None:
            return info
        with self._lock:
            if self._info is not None:
                return self._info
            try:
                self.verify()
                import llama_cpp
                from llama_cpp.llama_chat_format import Jinja2ChatFormatter

                vocab = llama_cpp.Llama(model_path=str(self.path), vocab_only=True, verbose=False)
            except ModelIntegrityError as exc:
                self._unavailable(str(exc))
                raise ModelUnavailable(str(exc)) from None
            except (ValueError, RuntimeError, OSError) as exc:
                msg = f"model file {self.path} cannot be read by llama.cpp: {exc}"
                self._unavailable(msg)
                raise ModelUnavailable(msg) from None
            md = vocab.metadata
            arch = md.get("general.architecture", "llama")

            def num(key: str, default: int) -> int:
                try:
                    return int(float(md.get(f"{arch}.{key}", default)))
                except ValueError:
                    return default

            n_head = num("attention.head_count", 1)
            embd = num("embedding_length", 1)
            head_dim = num("attention.key_length", embd // max(n_head, 1))
            template = md.get("tokenizer.chat_template", "")
            bos = vocab.detokenize([vocab.token_bos()], special=True).decode("utf-8", "replace")
            eos = vocab.detokenize([vocab.token_eos()], special=True).decode("utf-8", "replace")
            self._info = ModelInfo(
                path=str(self.path), name=self.cfg.model,
                file_mb=self.path.stat().st_size / MB, n_layer=num("block_count", 1),
                n_head_kv=num("attention.head_count_kv", n_head), head_dim=head_dim,
                n_ctx_train=num("context_length", 0), chat_template=template or FALLBACK_TEMPLATE,
                has_template=bool(template), bos=bos, eos=eos)
            self._formatter = Jinja2ChatFormatter(self._info.chat_template, eos_token=eos,
                                                  bos_token=bos)
            self._vocab = vocab
            if self.state == "unavailable":
                self.state = "unloaded"
            return self._info

    def estimate(self) -> MemoryEstimate:
        info = self.info()
        vm = psutil.virtual_memory()
        rss = psutil.Process().memory_info().rss / MB
        kv = kv_cache_mb(info.n_layer, self.cfg.n_ctx_tokens, info.n_head_kv, info.head_dim,
                         KV_BYTES[self.cfg.kv_cache_type])
        need = info.file_mb + kv + self.cfg.overhead_mb
        if self._llm is not None:  # already loaded: its memory is inside RSS
            need = 0.0
        return MemoryEstimate(file_mb=info.file_mb, kv_mb=kv, overhead_mb=self.cfg.overhead_mb,
                              need_mb=need, rss_mb=rss, budget_mb=self.sys.max_memory_mb,
                              available_mb=vm.available / MB,
                              min_free_mb=self.sys.min_free_memory_mb)

    def _unavailable(self, msg: str) -> None:
        self.state = "unavailable"
        self.last_error = msg
        log.error("model unavailable", extra={"model": self.cfg.model, "reason": msg})

    # -- load / unload -----------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._llm is not None

    def ensure_loaded(self) -> None:
        with self._lock:
            self.last_used = time.monotonic()
            if self._llm is not None:
                return
            est = self.estimate()
            if not (est.fits_budget and est.fits_ram):
                msg = "model does not fit in memory: " + est.explain()
                self.last_error = msg
                raise ModelUnavailable(msg, **est.as_dict())
            self.verify()
            import llama_cpp

            self.state = "loading"
            t0 = time.perf_counter()
            kv: dict[str, Any] = {}
            if self.cfg.kv_cache_type != "f16":   # a quantized V cache needs flash attention
                t = GGML_TYPE[self.cfg.kv_cache_type]
                kv = {"type_k": t, "type_v": t, "flash_attn": True}
            try:
                self._llm = llama_cpp.Llama(
                    model_path=str(self.path), n_ctx=self.cfg.n_ctx_tokens,
                    n_batch=self.cfg.n_batch_tokens, n_threads=self.n_threads,
                    n_threads_batch=self.n_threads,
                    seed=self.cfg.seed if self.cfg.seed >= 0 else llama_cpp.LLAMA_DEFAULT_SEED,
                    verbose=False, **kv)
            except (ValueError, RuntimeError, OSError) as exc:
                msg = f"llama.cpp failed to load {self.path}: {exc}"
                self._unavailable(msg)
                if self._on_load:
                    self._on_load("error")
                raise ModelUnavailable(msg) from None
            self.loads += 1
            self.state = "loaded"
            self.last_error = None
            log.info("model loaded", extra={"model": self.cfg.model,
                                            "load_s": round(time.perf_counter() - t0, 3),
                                            "n_ctx": self.cfg.n_ctx_tokens,
                                            "kv_cache_type": self.cfg.kv_cache_type})
            if self._on_load:
                self._on_load("ok")

    def unload(self) -> bool:
        with self._lock:
            if self._llm is None:
                return False
            self._llm.close()
            self._llm = None
            release_free_heap()   # the closed context's buffers, else kept by glibc
            self.state = "unloaded"
            log.info("model unloaded", extra={"model": self.cfg.model})
            return True

    def maybe_unload(self, now: float | None = None) -> bool:
        """Unload after keep_alive_s idle; never waits for a running generation."""
        ka = self.cfg.keep_alive_s
        if self._llm is None or ka < 0:
            return False
        now = time.monotonic() if now is None else now
        if now - self.last_used < ka:
            return False
        if not self._lock.acquire(blocking=False):
            return False
        try:
            return self.unload()
        finally:
            self._lock.release()

    # -- prompts -----------------------------------------------------------

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        self.info()
        return list(self._vocab.tokenize(text.encode("utf-8"), add_bos=False, special=special))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text, special=False))

    def format(self, messages: Sequence[dict[str, str]]) -> str:
        self.info()
        return self._formatter(messages=list(messages)).prompt

    def plan(self, system: str, history: Sequence[tuple[str, str]], user: str,
             max_tokens: int) -> PromptPlan:
        """Fit system + history + user into the context, dropping oldest turns.

        Turns are dropped in whole user/assistant pairs, oldest first, and the
        count is reported, so truncation is never silent.
        """
        n_ctx = self.cfg.n_ctx_tokens
        reserve = min(self.cfg.reserve_answer_tokens, max_tokens)
        hist = list(history)
        trimmed = 0
        while True:
            tokens = self.tokenize(self.format(history_to_messages(system, hist, user)))
            if len(tokens) + reserve <= n_ctx or not hist:
                break
            drop = 2 if len(hist) >= 2 and hist[0][0] == "user" else 1
            hist = hist[drop:]
            trimmed += drop
        if len(tokens) + reserve > n_ctx:
            raise TooLarge(f"the prompt needs {len(tokens)} tokens; the context holds {n_ctx} "
                           f"with {reserve} kept for the answer", prompt_tokens=len(tokens),
                           n_ctx=n_ctx)
        room = n_ctx - len(tokens)
        info = self.info()
        return PromptPlan(tokens=tokens, trimmed_turns=trimmed, max_tokens=min(max_tokens, room),
                          max_tokens_clipped=max_tokens > room,
                          stops=() if info.has_template else FALLBACK_STOPS)

    # -- generation --------------------------------------------------------

    def generate(self, plan: PromptPlan, *, temperature: float, top_p: float,
                 on_token: TokenSink | None = None, should_stop: StopCheck | None = None
                 ) -> Generation:
        """Prefill in chunks, then sample token by token until a stop."""
        import llama_cpp

        should_stop = should_stop or (lambda: None)
        with self._lock:
            self.ensure_loaded()
            llm = self._llm
            tokens = plan.tokens
            t0 = time.perf_counter()
            # KV-cache reuse: keep the longest prefix the context already holds.
            cached = 0
            held = llm.input_ids[: llm.n_tokens]
            limit = min(len(held), len(tokens) - 1)
            while cached < limit and held[cached] == tokens[cached]:
                cached += 1
            llm.n_tokens = cached
            reason: str | None = None
            step = self.cfg.n_batch_tokens
            for i in range(cached, len(tokens) - 1, step):
                reason = should_stop()
                if reason:
                    break
                llm.eval(tokens[i:min(i + step, len(tokens) - 1)])
            text_parts: list[str] = []
            n_out = 0
            finish = reason or "length"
            t1 = time.perf_counter()
            if reason is None:
                decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
                vocab = llm._model.vocab
                gen = llm.generate(tokens, temp=temperature, top_p=top_p, top_k=40, min_p=0.05,
                                   repeat_penalty=self.cfg.repeat_penalty, reset=True)
                try:
                    for tok in gen:
                        if llama_cpp.llama_vocab_is_eog(vocab, tok):
                            finish = "stop"
                            break
                        n_out += 1
                        piece = decoder.decode(llm.detokenize([tok]))
                        if piece:
                            text_parts.append(piece)
                            if on_token:
                                on_token(piece)
                        if plan.stops and any(s in "".join(text_parts[-8:]) for s in plan.stops):
                            finish = "stop"
                            break
                        if n_out >= plan.max_tokens:
                            finish = "length"
                            break
                        reason = should_stop()
                        if reason:
                            finish = reason
                            break
                finally:
                    gen.close()
                tail = decoder.decode(b"", final=True)
                if tail:
                    text_parts.append(tail)
                    if on_token:
                        on_token(tail)
            t2 = time.perf_counter()
            self.last_used = time.monotonic()
            text = "".join(text_parts)
            for s in plan.stops:
                if s in text:
                    text = text[: text.index(s)]
            return Generation(text=text.strip(), prompt_tokens=len(tokens), cached_tokens=cached,
                              completion_tokens=n_out, finish_reason=finish,
                              trimmed_turns=plan.trimmed_turns,
                              max_tokens_clipped=plan.max_tokens_clipped,
                              prefill_ms=(t1 - t0) * 1000, decode_ms=(t2 - t1) * 1000)

    def complete(self, messages: list[dict[str, str]], max_tokens: int, temperature: float,
                 should_stop: StopCheck | None = None) -> str:
        """Plain text in, text out: the ``generate`` callable the judge uses."""
        system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
        rest = messages[1:] if system else messages
        history = [(m["role"], m["content"]) for m in rest[:-1]]
        plan = self.plan(system, history, rest[-1]["content"], max_tokens)
        return self.generate(plan, temperature=temperature, top_p=1.0,
                             should_stop=should_stop).text

    # -- status ------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.cfg.model, "path": str(self.path),
                               "state": self.state, "loads": self.loads,
                               "n_ctx": self.cfg.n_ctx_tokens, "n_threads": self.n_threads,
                               "keep_alive_s": self.cfg.keep_alive_s}
        if self.last_error:
            out["error"] = self.last_error
        if self._llm is not None:
            out["idle_s"] = round(time.monotonic() - self.last_used, 1)
        return out
