"""What an op is: a name, a lane, an argument schema and ``execute``.

``execute(ctx, args)`` gets the validated args (defaults filled in, types and
ranges checked by protocol.check_args) and returns plain data for the
``result`` field; it signals failure by raising a ``RuvError`` (or anything:
the dispatcher turns a crash into ``internal``). It never touches a socket:
``ctx.send`` carries extra messages such as stream tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ...protocol import Arg

if TYPE_CHECKING:
    from ..lanes import Job
    from ..services import Services


@dataclass
class OpContext:
    """What one running op sees."""

    s: "Services"                                # the daemon's long-lived parts
    job: "Job"                                   # ids, cancel flag, deadline of this request
    send: Callable[[dict[str, Any]], None]       # an extra message to the client (stream events)


Execute = Callable[[OpContext, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Op:
    name: str
    lane: str                          # "gen" | "aux" | "slow" | "inline" (see lanes.py)
    args: Mapping[str, Arg]
    execute: Execute
    requires: str | None = None        # "memory": not_found when off, model_unavailable when broken
    passive: bool = False              # monitoring: not activity for the idle scheduler, not logged
    new_request_id: bool = False       # the server assigns a request id (feedback refers to it)

    def __post_init__(self) -> None:
        assert self.lane in ("gen", "aux", "slow", "inline"), self.lane
        assert self.requires in (None, "memory"), self.requires
