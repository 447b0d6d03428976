"""What an op is: a name, a lane, an argument schema and ``execute``.

``execute(ctx, args)`` gets the validated args (defaults filled in, types and
ranges checked by protocol.check_args) and returns plain data for the
``result`` field; it signals failure by raising a ``RuvError`` (or anything:
the dispatcher turns a crash into ``internal``). It never touches a socket:
``ctx.send`` carries extra messages such as stream tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, NoReturn

import numpy as np

from ...protocol import Arg

if TYPE_CHECKING:
    from ...embed_batch import EmbedBatcher
    from ..lanes import Job
    from ..services import Services


@dataclass
class OpContext:
    """What one running op sees."""

    s: "Services"                                # the daemon's long-lived parts
    job: "Job"                                   # ids, cancel flag, deadline of this request
    send: Callable[[dict[str, Any]], None]       # an extra message to the client (stream events)
    batcher: "EmbedBatcher | None" = None        # embeddings batched with concurrent ops

    @property
    def embed(self) -> Callable[[str], np.ndarray] | None:
        """The batching embed (embed_batch.py), or None: the embedder's own."""
        return self.batcher.embed if self.batcher is not None else None

    def move_to(self, lane: str, resume: Callable[[], dict[str, Any]]) -> NoReturn:
        """Finish this request on ``lane``: ``resume()`` runs there and returns the result.

        The dispatcher queues it (``busy`` when that lane is full); the request
        keeps its id, deadline and cancel flag.
        """
        raise Moved(lane, resume)


class Moved(Exception):
    """Raised by ``OpContext.move_to``; the dispatcher catches it (not an error)."""

    def __init__(self, lane: str, resume: Callable[[], dict[str, Any]]) -> None:
        super().__init__(lane)
        self.lane = lane
        self.resume = resume


Execute = Callable[[OpContext, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Op:
    name: str
    lane: str                          # "gen" | "fast" | "aux" | "slow" | "inline" (lanes.py)
    args: Mapping[str, Arg]
    execute: Execute
    requires: str | None = None        # "memory": not_found when off, model_unavailable when broken
    passive: bool = False              # monitoring: not activity for the idle scheduler, not logged
    new_request_id: bool = False       # the server assigns a request id (feedback refers to it)
    # The lane a request starts on when it differs from ``lane`` (None: ``lane``):
    # a query without a session is planned on "fast" and moves to "gen" only
    # when it needs the model.
    starts_on: Callable[[Mapping[str, Any]], str | None] | None = None
    # The argument whose text the op embeds first (memory.search, query): queued
    # requests hand it to the embed batcher at once (embed_batch.prefetch).
    embeds: str | None = None

    def __post_init__(self) -> None:
        assert self.lane in ("gen", "fast", "aux", "slow", "inline"), self.lane
        assert self.requires in (None, "memory"), self.requires
