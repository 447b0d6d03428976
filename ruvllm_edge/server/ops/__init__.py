"""The op registry: every op the daemon answers, one module per group.

A new op is one ``Op(...)`` entry in a group module (or a new module listed in
``GROUPS``), one test, and its section in docs/protocol.md. The wire schema
table (``SCHEMAS``) is derived from here and handed to
``protocol.decode_request``; the client needs no change (``Client.call``).
"""

from __future__ import annotations

from ...protocol import Arg
from . import backup, feedback, learn, memory, query, session, status
from .base import Op, OpContext

GROUPS = (query, feedback, session, status, learn, backup, memory)


def _registry() -> dict[str, Op]:
    ops: dict[str, Op] = {}
    for group in GROUPS:
        for op in group.OPS:
            assert op.name not in ops, f"op {op.name} is declared twice"
            ops[op.name] = op
    return ops


OPS: dict[str, Op] = _registry()
SCHEMAS: dict[str, dict[str, Arg]] = {name: dict(op.args) for name, op in OPS.items()}

__all__ = ["OPS", "SCHEMAS", "Op", "OpContext"]
