"""The ZeroMQ side: bind, the poll loop, framing, the rate limiter, reply forwarding.

The socket loop runs on the main thread and never blocks: it reads requests,
hands each decoded one to ``on_request`` (the dispatcher), and forwards what
the workers send. Workers never touch the ROUTER socket (ZeroMQ sockets are
not thread-safe): each has a PUSH socket into an inproc PULL the loop polls.

Framing: a DEALER sends ``[payload]`` and a REQ ``[b"", payload]``; the ROUTER
adds the connection identity in front. Replies go back with the same prefix.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable, Collection

import zmq

from .. import protocol
from ..config import ServerConfig
from ..errors import BadRequest, RateLimited, RuvError
from ..metrics import Metrics

log = logging.getLogger(__name__)

REPLIES_ENDPOINT = "inproc://replies"
TICK_S = 0.05
READ_BURST = 256        # requests read per poll before replies get forwarded again
FORWARD_BURST = 1000

OnRequest = Callable[[zmq.Socket, bytes, list[bytes], protocol.Request, bool], None]


class TokenBucket:
    """Per-client rate limit: ``rate`` requests/s sustained, ``burst`` at once.

    A refused request is told when to come back (``retry_after_ms``). Refusals
    in a row get successive slots, 1/rate apart, so a client that pipelined a
    burst and retries each request after its own hint is let through without
    being refused again; a refusal costs no token.
    """

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._state: dict[bytes, tuple[float, float, float]] = {}   # tokens, last, promised

    def allow(self, key: bytes, now: float) -> bool:
        return self.take(key, now) == 0.0

    def take(self, key: bytes, now: float) -> float:
        """Spend one token: 0.0 when allowed, else the seconds until this one's slot."""
        tokens, last, promised = self._state.get(key, (float(self.burst), now, 0.0))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        # A client that comes back exactly at its slot finds 1 token up to float
        # rounding (0.9999999...): count that as one, or it is sent to the back.
        if tokens >= 1.0 - 1e-6:
            self._state[key] = (max(tokens - 1.0, 0.0), now, promised)
            return 0.0
        first_free = now + (1.0 - tokens) / self.rate
        slot = max(first_free, promised + 1.0 / self.rate)
        self._state[key] = (tokens, now, slot)
        return slot - now

    def purge(self, now: float, idle_s: float = 60.0) -> None:
        for k in [k for k, (_, last, _) in self._state.items() if now - last > idle_s]:
            del self._state[k]


class Transport:
    def __init__(self, settings: ServerConfig, endpoint: str, metrics: Metrics,
                 known_ops: Collection[str], schemas: protocol.Schemas) -> None:
        self.settings = settings          # replaced on reload (rate limit, message size)
        self.endpoint = endpoint
        self.metrics = metrics
        self.known_ops = known_ops
        self.schemas = schemas
        self.rate = TokenBucket(settings.rate_limit_per_s, settings.rate_limit_burst)
        self.accepting = True             # False while draining: queued ops get busy
        self.on_request: OnRequest | None = None
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self.sock: zmq.Socket | None = None
        self.pull: zmq.Socket | None = None
        self.ipc_path: Path | None = None
        self._local = threading.local()

    # -- bind ----------------------------------------------------------------

    def bind(self) -> None:
        scfg = self.settings
        sock = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, scfg.drop_message_bytes)
        sock.setsockopt(zmq.SNDHWM, 10_000)
        sock.setsockopt(zmq.RCVHWM, 10_000)
        if scfg.curve_secret_key:
            sock.curve_server = True
            sock.curve_secretkey = scfg.curve_secret_key.encode()
            sock.curve_publickey = scfg.curve_public_key.encode()
        if self.endpoint.startswith("ipc://"):
            path = Path(self.endpoint[len("ipc://"):])
            path.parent.mkdir(parents=True, exist_ok=True)
            mode = int(scfg.socket_mode, 8)
            old = os.umask(0o777 & ~mode)   # no window where the socket is wider than mode
            try:
                sock.bind(self.endpoint)
            finally:
                os.umask(old)
            os.chmod(path, mode)
            if scfg.socket_group:
                shutil.chown(path, group=scfg.socket_group)
            self.ipc_path = path
        else:
            sock.bind(self.endpoint)
        pull = self.ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.LINGER, 0)
        pull.bind(REPLIES_ENDPOINT)
        self.sock, self.pull = sock, pull

    # -- sending -------------------------------------------------------------

    def worker_send(self, ident: bytes, prefix: list[bytes], msg: dict[str, Any]) -> None:
        """From a worker thread: through this thread's PUSH socket into the loop."""
        push = getattr(self._local, "push", None)
        if push is None:
            push = self.ctx.socket(zmq.PUSH)
            push.setsockopt(zmq.LINGER, 1000)
            push.connect(REPLIES_ENDPOINT)
            self._local.push = push
        push.send_multipart([ident, *prefix, protocol.pack(msg)])

    def close_worker_socket(self) -> None:
        push = getattr(self._local, "push", None)
        if push is not None:
            push.close()
            self._local.push = None

    def send_error(self, sock: zmq.Socket, ident: bytes, prefix: list[bytes],
                   req_id: str | None, err: RuvError, op: str = "?") -> None:
        self.metrics.errors.labels(err.code).inc()
        self.metrics.requests.labels(op if op in self.known_ops else "?", "error").inc()
        sock.send_multipart([ident, *prefix,
                             protocol.pack(protocol.error_reply(req_id, err.to_wire()))])

    def forward_replies(self, limit: int = FORWARD_BURST) -> None:
        assert self.sock is not None and self.pull is not None
        for _ in range(limit):
            try:
                frames = self.pull.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.sock.send_multipart(frames)

    # -- receiving -------------------------------------------------------------

    def on_message(self, sock: zmq.Socket, frames: list[bytes], accepting: bool) -> None:
        """Parse, check and route one message; never raises."""
        try:
            ident, rest = frames[0], frames[1:]
            if len(rest) == 1:
                prefix: list[bytes] = []
            elif len(rest) == 2 and rest[0] == b"":
                prefix = [b""]
            else:
                self.metrics.malformed.labels("frames").inc()
                # Always answer: REQ-style empty delimiters are echoed back, any
                # other extra frames get a plain one-frame (DEALER) reply.
                delim = rest[:-1] if all(f == b"" for f in rest[:-1]) else []
                self.send_error(sock, ident, delim, None,
                                BadRequest(f"expected one message frame, got {len(rest)}"))
                return
            data = rest[-1]
            wait_s = self.rate.take(ident, time.monotonic())
            if wait_s > 0.0:
                self.send_error(sock, ident, prefix, protocol.peek_id(data),
                                RateLimited("too many requests from this connection",
                                            retry_after_ms=max(1, math.ceil(wait_s * 1000)),
                                            rate_per_s=self.rate.rate, burst=self.rate.burst))
                return
            try:
                req = protocol.decode_request(data, self.settings.max_message_bytes,
                                              self.schemas)
            except RuvError as exc:
                self.metrics.malformed.labels(exc.code).inc()
                self.send_error(sock, ident, prefix, protocol.reply_id(exc, data), exc)
                return
            assert self.on_request is not None
            self.on_request(sock, ident, prefix, req, accepting)
        except Exception:  # noqa: BLE001 - the loop must survive anything
            log.exception("unexpected error handling a message")
            self.metrics.malformed.labels("internal").inc()

    # -- the loop --------------------------------------------------------------

    def serve(self, on_tick: Callable[[float], bool]) -> None:
        """Poll until ``on_tick(now)`` (called after every poll) returns False."""
        assert self.sock is not None and self.pull is not None
        sock, pull = self.sock, self.pull
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(pull, zmq.POLLIN)
        while True:
            events = dict(poller.poll(int(TICK_S * 1000)))
            if pull in events:
                self.forward_replies()
            if sock in events:
                for _ in range(READ_BURST):
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK, copy=True)
                    except zmq.Again:
                        break
                    self.on_message(sock, frames, self.accepting)
            if not on_tick(time.monotonic()):
                break

    def close(self, linger_ms: int = 1000) -> None:
        """Close the sockets; the last replies get ``linger_ms`` to leave (a drained
        request's answer is often sent just before this)."""
        if self.sock is not None:
            self.sock.close(linger_ms)
        if self.pull is not None:
            self.pull.close(0)
        if self.ipc_path is not None:
            try:
                self.ipc_path.unlink()
            except FileNotFoundError:
                pass
