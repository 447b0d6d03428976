"""Split long text into chunks of at most ``chunk_tokens`` embedding tokens.

Why: the embedder truncates at ``max_seq_tokens``, so text past that would be
invisible to search, and one huge node would crowd every other memory out of
the context budget. Chunks follow sentence (then paragraph-free whitespace)
boundaries where they can, and never cut inside a token; the concatenation of
all chunks covers the whole text (only whitespace between chunks is dropped).
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

# Ends of sentences / lines: a chunk boundary is preferred right after these.
_BOUNDARY = re.compile(r"(?<=[.!?。！？])\s+|\n\s*")


def chunk_text(text: str, chunk_tokens: int,
               offsets: Callable[[str], Sequence[tuple[int, int]]]) -> list[str]:
    """Chunks of ``text`` with at most ``chunk_tokens`` tokens each.

    ``offsets(text)`` gives the (start, end) character span of every token
    (Embedder.token_offsets). Returns [text.strip()] when it already fits.
    """
    assert chunk_tokens >= 1
    text = text.strip()
    spans = list(offsets(text))
    if len(spans) <= chunk_tokens:
        return [text] if text else []
    # Candidate cut positions (character index where a new chunk may start).
    cuts = sorted({m.end() for m in _BOUNDARY.finditer(text)})
    chunks: list[str] = []
    start_tok = 0
    n = len(spans)
    while start_tok < n:
        end_tok = min(n, start_tok + chunk_tokens)          # exclusive token index
        if end_tok < n:
            char_start = spans[start_tok][0]
            limit = spans[end_tok][0]                      # first char not allowed
            # Prefer the last sentence boundary inside the window ...
            best = None
            for c in cuts:
                if char_start < c <= limit:
                    best = c
                elif c > limit:
                    break
            if best is None:
                # ... else the last whitespace between tokens in the window.
                for t in range(end_tok, start_tok + 1, -1):
                    if spans[t][0] > spans[t - 1][1]:
                        best = spans[t][0]
                        break
            if best is not None:
                # first token starting at or after the cut
                t = end_tok
                while t > start_tok + 1 and spans[t - 1][0] >= best:
                    t -= 1
                end_tok = t
        a = spans[start_tok][0]
        b = spans[end_tok][0] if end_tok < n else len(text)
        piece = text[a:b].strip()
        if piece:
            chunks.append(piece)
        start_tok = end_tok
    return chunks
