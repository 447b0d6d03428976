"""The user turn a small model answers from, and the clean-up of what it says.

Why this shape (measured on SmolLM2-135M, see docs/answers.md):
- Records go right before the question, one per line, with nothing around
  them a model could echo: the old "MEMORY: records retrieved from this
  device's memory..." header came back verbatim at the start of answers, and
  was then written back into memory.
- A record keeps its date when it has one ("(8 May 2023) Caroline: ..."),
  so "when" questions can be answered from a conversation.
- Memory is data, never instructions: chat-template markers inside a record
  are defused and control characters dropped, and each record is one line.
- Whatever a model still echoes of this framing is removed from the answer
  (``strip_framing``), and the daemon's tests assert that no answer carries it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

INSTRUCTION = "Answer the question in one short sentence, using only the notes above."
NOTES_HEAD = "Notes:"
# Lines a model may echo from the prompt (or from the old memory format).
_FRAMING = re.compile(
    r"^\s*(?:MEMORY:.*|END MEMORY\s*|\[record[^\]]*\]\s*|Notes:\s*|Question:\s*|Answer:\s*"
    r"|Answer the question in one short sentence, using only the notes above\.?\s*"
    r"|records retrieved from this device's memory.*)",
    re.IGNORECASE)


@dataclass(frozen=True)
class Note:
    """One record as the prompt shows it."""

    id: int
    text: str
    date: str | None = None


def _one_line(text: str) -> str:
    clean = "".join(ch if ch >= " " else " " for ch in text)
    clean = clean.replace("<|", "< |").replace("|>", "| >")
    return re.sub(r"\s+", " ", clean).strip()


def quote_lines(text: str) -> str:
    """Quote every line ("> ") and break chat-template markers like <|im_start|>.

    For prompts that show stored text to a model as data (compression's
    summaries), where keeping the lines matters.
    """
    clean = "".join(ch for ch in text if ch in "\n\t" or ch >= " ")
    clean = clean.replace("<|", "<\u200b|").replace("|>", "|\u200b>")
    return "\n".join("> " + line for line in clean.splitlines() or [""])


def render_note(n: Note) -> str:
    body = _one_line(n.text)
    return f"- ({_one_line(n.date)}) {body}" if n.date else f"- {body}"


def notes_turn(notes: Sequence[Note], question: str) -> str:
    """The user message: the notes, then the instruction and the question."""
    if not notes:
        return question
    lines = [NOTES_HEAD, *(render_note(n) for n in notes), "", f"{INSTRUCTION}\n{question}"]
    return "\n".join(lines)


def fit_notes(notes: Sequence[Note], question: str, budget_tokens: int,
              count_tokens: Callable[[str], int]) -> tuple[list[Note], list[int]]:
    """The longest prefix of ``notes`` whose turn fits the budget; (kept, dropped ids).

    Records are sentence-sized, so a record that does not fit is left out
    whole (and listed), never cut.
    """
    kept: list[Note] = []
    dropped: list[int] = []
    for n in notes:
        if count_tokens(notes_turn([*kept, n], question)) <= budget_tokens:
            kept.append(n)
        else:
            dropped.append(n.id)
    return kept, dropped


def strip_framing(text: str) -> str:
    """Remove echoed prompt framing lines and list markers from a model's answer."""
    lines: list[str] = []
    for line in text.splitlines():
        m = _FRAMING.match(line)
        if m:
            line = line[m.end():]
            if not line.strip():
                continue                                 # the framing line itself
        if not any(x.strip() for x in lines):
            line = re.sub(r"^\s*-\s+(?=\S)", "", line)   # a copied "- note" bullet
        lines.append(line)
    return "\n".join(lines).strip()


FRAMING_MARKERS = ("MEMORY:", "END MEMORY", "[record", "records retrieved", "Notes:",
                   INSTRUCTION)


def has_framing(text: str) -> bool:
    """True when an answer still carries prompt framing (the tests' oracle)."""
    low = text.lower()
    return any(m.lower() in low for m in FRAMING_MARKERS)
