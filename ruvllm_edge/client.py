"""Python client for the daemon (a DEALER socket speaking docs/protocol.md).

One Client is one connection and is not thread-safe; give each thread its
own. Every call waits for the reply whose id matches its request, so stale
replies (for example from a request that timed out) are skipped, never
mistaken for the current answer.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
import weakref
from typing import Any, Iterator

import zmq

from . import protocol
from .config import ENV_DATA, ENV_ENDPOINT, SOCKET_NAME
from .errors import ClientError, ClientTimeout, from_wire


BATCH_BYTES = 640 * 1024   # text per memory.add items request, under the default 1 MiB message limit


def default_endpoint(data_dir: str | None = None) -> str:
    if os.environ.get(ENV_ENDPOINT):
        return os.environ[ENV_ENDPOINT]
    data = data_dir or os.environ.get(ENV_DATA) or "data"
    return f"ipc://{os.path.abspath(os.path.join(data, SOCKET_NAME))}"


class Stream:
    """An iterator of text pieces; ``result`` holds the final reply once done.

    While the stream is open the client keeps a backlog of its messages that
    arrived during other calls; the backlog goes when the final message (done
    or error) is read, on ``close()``, or when the Stream is garbage-collected.
    """

    def __init__(self, client: "Client", req_id: str, timeout_s: float) -> None:
        self._client = client
        self.id = req_id
        self._timeout_s = timeout_s
        self.result: dict[str, Any] | None = None
        self.tokens = 0
        self._forget = weakref.finalize(self, client._pending.pop, req_id, None)

    def __iter__(self) -> Iterator[str]:
        while True:
            msg = self._client._recv(self.id, self._timeout_s)
            if msg.get("event") == "token":
                self.tokens += 1
                yield str(msg.get("text", ""))
                continue
            self._forget()          # the final message: nothing more comes for this id
            if msg.get("ok"):
                self.result = msg.get("result", {})
                return
            raise from_wire(msg.get("error") or {})

    def close(self) -> None:
        """Stop buffering this stream's messages (later ones are dropped as stale)."""
        self._forget()

    def cancel(self) -> dict[str, Any]:
        """Ask the daemon to stop this stream; the iterator then ends with `cancelled`."""
        return self._client.cancel(self.id)


class Client:
    def __init__(self, endpoint: str | None = None, timeout_s: float = 120.0, *,
                 data_dir: str | None = None, curve_server_key: str | None = None) -> None:
        self.endpoint = endpoint or default_endpoint(data_dir)
        self.timeout_s = timeout_s
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        if curve_server_key:
            pub, sec = zmq.curve_keypair()
            self._sock.curve_serverkey = curve_server_key.encode()
            self._sock.curve_publickey = pub
            self._sock.curve_secretkey = sec
        self._sock.connect(self.endpoint)
        self._ids = itertools.count(1)
        self._prefix = uuid.uuid4().hex[:8]
        self._pending: dict[str, list[dict[str, Any]]] = {}

    # -- plumbing ----------------------------------------------------------

    def _next_id(self) -> str:
        return f"{self._prefix}-{next(self._ids)}"

    def send(self, op: str, args: dict[str, Any] | None = None) -> str:
        req_id = self._next_id()
        self._sock.send(protocol.pack(protocol.make_request(req_id, op, args or {})))
        return req_id

    def send_raw(self, data: bytes) -> None:
        """For tests and tools: put arbitrary bytes on the wire."""
        self._sock.send(data)

    def recv_any(self, timeout_s: float | None = None) -> dict[str, Any]:
        """The next message, whatever its id (tests of malformed input use this)."""
        if not self._sock.poll(int((timeout_s or self.timeout_s) * 1000)):
            raise ClientTimeout(f"no reply from {self.endpoint} within {timeout_s or self.timeout_s} s")
        return protocol.unpack_reply(self._sock.recv())

    def _recv(self, req_id: str, timeout_s: float | None) -> dict[str, Any]:
        backlog = self._pending.get(req_id)
        if backlog:
            return backlog.pop(0)
        end = time.monotonic() + (timeout_s if timeout_s is not None else self.timeout_s)
        while True:
            left = end - time.monotonic()
            if left <= 0 or not self._sock.poll(int(left * 1000) + 1):
                raise ClientTimeout(f"no reply to request {req_id} from {self.endpoint} within "
                                    f"{timeout_s if timeout_s is not None else self.timeout_s} s")
            msg = protocol.unpack_reply(self._sock.recv())
            mid = msg.get("id")
            if mid == req_id:
                return msg
            if isinstance(mid, str) and mid in self._pending:
                self._pending[mid].append(msg)
            # anything else is a stale reply to a request we gave up on

    def call(self, op: str, args: dict[str, Any] | None = None, /, *,
             timeout_s: float | None = None, **kwargs: Any) -> dict[str, Any]:
        """Any op by name: ``call("memory.get", id=7)`` or ``call("memory.get", {"id": 7})``.

        The generic path: an op the daemon gained needs no client change. The
        result map is returned; an error reply raises its typed ClientError.
        """
        req_id = self.send(op, {**(args or {}), **kwargs})
        msg = self._recv(req_id, timeout_s)
        if msg.get("ok"):
            return dict(msg.get("result") or {})
        raise from_wire(msg.get("error") or {})

    # -- ops -----------------------------------------------------------------

    @staticmethod
    def _query_args(text: str, session_id: str | None, use_memory: bool | None,
                    constraints: dict[str, Any]) -> dict[str, Any]:
        args: dict[str, Any] = {"query": text}
        if session_id:
            args["session_id"] = session_id
        if use_memory is not None:
            args["use_memory"] = use_memory
        cons = {k: v for k, v in constraints.items() if v is not None}
        if cons:
            args["constraints"] = cons
        return args

    def query(self, text: str, session_id: str | None = None, *, use_memory: bool | None = None,
              timeout_s: float | None = None, **constraints: Any) -> dict[str, Any]:
        """One-shot answer. constraints: max_tokens, temperature, top_p, max_latency_ms."""
        return self.call("query", self._query_args(text, session_id, use_memory, constraints),
                         timeout_s=timeout_s)

    def stream(self, text: str, session_id: str | None = None, *, use_memory: bool | None = None,
               timeout_s: float | None = None, **constraints: Any) -> Stream:
        args = self._query_args(text, session_id, use_memory, constraints)
        args["stream"] = True
        req_id = self.send("query", args)
        self._pending[req_id] = []
        return Stream(self, req_id, timeout_s if timeout_s is not None else self.timeout_s)

    def cancel(self, request_id: str) -> dict[str, Any]:
        return self.call("cancel", {"request_id": request_id})

    def feedback(self, request_id: str, rating: int | None = None,
                 correction: str | None = None) -> dict[str, Any]:
        args: dict[str, Any] = {"request_id": request_id}
        if rating is not None:
            args["rating"] = rating
        if correction is not None:
            args["correction"] = correction
        return self.call("feedback", args)

    def health(self, timeout_s: float | None = None) -> dict[str, Any]:
        return self.call("health", timeout_s=timeout_s)

    def stats(self) -> dict[str, Any]:
        return self.call("stats")

    def metrics(self) -> str:
        return str(self.call("metrics")["text"])

    def new_session(self, system_prompt: str | None = None) -> str:
        args = {"system_prompt": system_prompt} if system_prompt else {}
        return str(self.call("session.new", args)["session_id"])

    def close_session(self, session_id: str) -> dict[str, Any]:
        return self.call("session.close", {"session_id": session_id})

    def history(self, session_id: str) -> dict[str, Any]:
        return self.call("session.history", {"session_id": session_id})

    def memory_add(self, text: str, kind: str = "document",
                   metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        args: dict[str, Any] = {"text": text, "kind": kind}
        if metadata:
            args["metadata"] = metadata
        return self.call("memory.add", args)

    def memory_add_many(self, items: list[dict[str, Any] | str], *, kind: str = "document",
                        metadata: dict[str, Any] | None = None, link: bool = False,
                        batch: int = 512) -> list[list[int]]:
        """Add many texts or {text, kind?, metadata?} maps; returns each item's ids, in order.

        Sent ``batch`` items per request (the daemon's limit is 512): each
        request is one embedding batch and one transaction. ``kind`` and
        ``metadata`` are defaults for every item. ``link`` chains consecutive
        items with ``follows`` edges (conversation turns), across batches too.
        """
        if not 1 <= batch <= 512:
            raise ValueError("batch must be in 1..512")
        rows = [{"text": it} if isinstance(it, str) else dict(it) for it in items]
        out: list[list[int]] = []
        i = 0
        while i < len(rows):
            # With link, a later request repeats the previous one's last item (an
            # exact duplicate is reused, not stored again), so the chain has no gap.
            lead = 1 if link and i > 0 else 0
            part = rows[i - lead:i - lead + 1]
            size = len(str(part[0].get("text", "")).encode("utf-8", "replace"))
            for row in rows[i - lead + 1:max(i + 1, i - lead + batch)]:
                size += len(str(row.get("text", "")).encode("utf-8", "replace")) + 64
                if size > BATCH_BYTES and len(part) > lead:   # under the 1 MiB message limit
                    break
                part.append(row)
            args: dict[str, Any] = {"items": part, "kind": kind, "link": link}
            if metadata:
                args["metadata"] = metadata
            out.extend(self.call("memory.add", args)["ids"][lead:])
            i += len(part) - lead
        return out

    add_many = memory_add_many

    def memory_update(self, node_id: int, text: str,
                      metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        """Replace a node's text (and metadata when given), keeping its id; the old text goes to history."""
        args: dict[str, Any] = {"id": node_id, "text": text}
        if metadata is not None:
            args["metadata"] = metadata
        return self.call("memory.update", args)

    def memory_history(self, node_id: int) -> list[dict[str, Any]]:
        """The node's past texts, oldest first: [{"text", "source", "changed_at"}]."""
        return list(self.call("memory.history", {"id": node_id})["history"])

    def memory_search(self, query: str, k: int = 10, *, kind: str | list[str] | None = None,
                      metadata: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Search memory; ``kind`` (one or several node kinds) and ``metadata`` (key = value) filter."""
        args: dict[str, Any] = {"query": query, "k": k}
        if kind:
            args["kind"] = kind
        if metadata:
            args["metadata"] = metadata
        return list(self.call("memory.search", args)["hits"])

    def memory_get(self, node_id: int) -> dict[str, Any]:
        return self.call("memory.get", {"id": node_id})

    def memory_delete(self, node_id: int) -> dict[str, Any]:
        return self.call("memory.delete", {"id": node_id})

    def memory_stats(self) -> dict[str, Any]:
        return self.call("memory.stats")

    def memory_export(self, include_archived: bool = True, page: int = 1000
                      ) -> Iterator[dict[str, Any]]:
        after = 0
        while True:
            res = self.call("memory.export", {"after_id": after, "limit": page,
                                              "include_archived": include_archived})
            yield from res["nodes"]
            after = int(res.get("next_after_id") or 0)
            if not after:
                return

    def learn(self, wait: bool = False, timeout_s: float | None = None) -> dict[str, Any]:
        return self.call("learn", wait=wait, timeout_s=timeout_s)

    def backup(self, to: str, timeout_s: float | None = None) -> dict[str, Any]:
        return self.call("backup", to=to, timeout_s=timeout_s)

    def close(self) -> None:
        self._sock.close(0)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Client", "ClientError", "ClientTimeout", "Stream", "default_endpoint"]
