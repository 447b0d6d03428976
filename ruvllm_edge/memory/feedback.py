"""Feedback: a rating or a correction changes memory durably, and ranking learns.

- A rating pulls the answer's own qa_pair half-way to the rating, the
  memories it used a fifth of the way, and strengthens (4-5) or weakens (1-2)
  the edges among them by up to EDGE_STEP.
- A correction becomes a ``fact`` (source ``feedback``, trust 1.0) whose
  stored text is the correction and whose vector embeds "question +
  correction", so both a full-sentence correction ("The code is 7341") and a
  terse one ("No, 7341") are found by paraphrases of the question. The
  qa_pair it corrects gets a ``derived`` edge from it and is archived (kept,
  out of search): a wrong answer must not keep competing with its correction.
  Correcting the same question again updates that fact: the newest wins.
- Then one listwise training step of the graph-attention ranking, towards the
  correction, the used memories (good rating) or the sink (bad rating); the
  parameters are stored in ``memory_meta`` and survive restarts.

``apply`` must not be called inside an open ``db.atomic()`` block: it drains
the writeback queue first (so the answer's qa_pair exists), and that thread
needs the write lock.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable, Sequence

import numpy as np

from .. import ranking
from ..config import MemoryConfig
from ..embedding import Embedder
from ..errors import BadRequest, Timeout
from .db import Connection, Database
from .graph import adjust_weight, rating_target
from .nodes import check_text, exists, insert_node, marks, meta_get, meta_set, set_vector, text_hash, upsert_edge
from .retrieval import Retriever, features
from .types import Count, default_trust
from .writeback import qa_text

log = logging.getLogger(__name__)

QA_FEEDBACK_RATE = 0.5
USED_FEEDBACK_RATE = 0.2
EDGE_STEP = 0.2
FEEDBACK_FLUSH_S = 5.0
PARAMS_KEY = "ranking_params"


def fact_embed_text(question: str, correction: str) -> str:
    """What a correction is embedded as: the question it answers, then the correction."""
    return f"{question.strip()}\n{correction.strip()}" if question.strip() else correction.strip()


class RankingState:
    """The graph-attention parameters: loaded from memory_meta, one step per feedback."""

    def __init__(self, db: Database, cfg: MemoryConfig) -> None:
        self.db = db
        self.cfg = cfg
        self.lock = threading.Lock()
        self.anchor = ranking.initial_params(cfg.attention_heads)
        self.params = self._load()

    def _load(self) -> ranking.RankingParams:
        stored = meta_get(self.db, PARAMS_KEY)
        if stored is None:
            return ranking.initial_params(self.cfg.attention_heads)
        try:
            return ranking.RankingParams.from_json(stored, self.cfg.attention_heads)
        except (ValueError, KeyError, TypeError):
            log.warning("stored ranking parameters unreadable, using initial ones")
            return ranking.initial_params(self.cfg.attention_heads)

    def train(self, retriever: Retriever, query: str, qvec: np.ndarray, rating: int | None,
              fact_id: int | None, used: list[int], qa_id: int | None) -> float | None:
        """One listwise step: towards the correction, the used memories (good rating) or the sink."""
        if fact_id is not None:
            positive, weight = [fact_id], 1.0
        elif rating is not None and rating != 3:
            positive, weight = (used if rating > 3 else []), abs(rating - 3) / 2.0
        else:
            return None
        # The same candidates and evidence features a live query of this text sees.
        g = retriever.gather(qvec, self.cfg.knn_k, force_ids=positive, query=query)
        if not g.ids:
            return None
        mask = np.array([i != qa_id for i in g.ids], bool)   # the answer being rated is not evidence
        pos_idx = [j for j, i in enumerate(g.ids) if i in set(positive)]
        if positive and not pos_idx:
            return None
        target = ranking.target_for(mask, pos_idx)
        E = features(g, time.time())
        with self.lock:
            new, loss = ranking.train_step(self.params, g.sims, E, mask, target,
                                           lr=self.cfg.ranking_learning_rate, l2=self.cfg.ranking_l2,
                                           anchor=self.anchor, weight=weight)
            meta_set(self.db, PARAMS_KEY, new.to_json())
            self.params = new
        return loss


class Feedback:
    """Applies ratings and corrections to the memory graph."""

    def __init__(self, db: Database, cfg: MemoryConfig, embedder: Embedder, retriever: Retriever,
                 flush: Callable[[float], None], count: Count) -> None:
        self.db = db
        self.cfg = cfg
        self.embedder = embedder
        self.retriever = retriever
        self.flush = flush
        self.count = count
        self.ranking = RankingState(db, cfg)

    def apply(self, request_id: str, used_node_ids: list[int], rating: int | None,
              correction: str | None, query: str, answer: str, session_id: str | None, *,
              finish_reason: str | None = None) -> dict[str, Any]:
        """Apply a rating and/or correction durably; returns what changed.

        A good rating (4-5) on a generated answer confirms it: its qa_pair is
        marked ``confirmed`` (it now ranks with the user's own records), and
        an answer that was not written back because nothing grounded it is
        written now. Quotes of memory and declines are not answers to store.
        """
        if rating is not None and (isinstance(rating, bool) or not isinstance(rating, int)
                                   or not 1 <= rating <= 5):
            raise BadRequest(f"rating must be an integer 1-5, got {rating!r}")
        if correction is not None:
            correction = check_text(correction, self.cfg.max_text_bytes, "correction").strip()
        if rating is None and correction is None:
            raise BadRequest("feedback needs a rating, a correction or both")
        try:
            self.flush(FEEDBACK_FLUSH_S)
        except Timeout:
            # The answer's qa_pair may be unwritten; the near-duplicate lookup below
            # still finds an earlier copy, and the rating/correction are applied anyway.
            log.warning("writeback not drained before feedback", extra={"request_id": request_id})
        query = query or ""
        embed = self.embedder.embed
        qvec = embed(query) if query.strip() else None
        fact_vec = embed(fact_embed_text(query, correction)) if correction else None
        qa_vec = embed(qa_text(query, answer)) if query.strip() and answer else None
        # Candidates for the lookups are found on the committed state, outside the write lock.
        qa_guess = self.retriever.knn(qa_vec, 3)[0:2] if qa_vec is not None else ([], np.zeros(0))
        fact_guess = self.retriever.knn(fact_vec, 3)[0:2] if fact_vec is not None else ([], np.zeros(0))
        now = time.time()
        out: dict[str, Any] = {"qa_node_id": None, "fact_id": None, "nodes_updated": 0, "edges_updated": 0}
        with self.db.atomic() as conn:
            row = conn.execute("SELECT id FROM nodes WHERE request_id = ? AND kind = 'qa_pair' "
                               "ORDER BY id DESC LIMIT 1", (request_id,)).fetchone()
            qa_id = int(row[0]) if row else first_of_kind(conn, *qa_guess, kind="qa_pair", source=None)
            out["qa_node_id"] = qa_id
            used = [int(u) for u in used_node_ids if exists(conn, int(u))]
            if (rating is not None and rating >= CONFIRM_RATING and qa_vec is not None
                    and finish_reason not in NOT_ANSWERS):
                qa_id = _confirm(conn, qa_id, query, answer, qa_vec, request_id, session_id, now)
                out["qa_node_id"] = qa_id
                out["confirmed"] = True
            if rating is not None:
                nodes_n, edges_n = apply_rating(conn, rating, qa_id, used, now)
                out["nodes_updated"] += nodes_n
                out["edges_updated"] += edges_n
            if correction:
                assert fact_vec is not None
                fact_id = self._store_correction(conn, correction, query, request_id, session_id,
                                                 fact_vec, fact_guess, now)
                out["fact_id"] = fact_id
                if qa_id is not None:
                    upsert_edge(conn, fact_id, qa_id, "derived", 1.0, now)
                    conn.execute("UPDATE nodes SET archived = 1, quality = 0.0, metadata = "
                                 "json_set(metadata, '$.superseded_by', ?) WHERE id = ?", (fact_id, qa_id))
                    out["edges_updated"] += 1
        self.count("feedback", 1)
        if qvec is not None:
            out["ranking_loss"] = self.ranking.train(self.retriever, query, qvec, rating, out["fact_id"],
                                                     used, qa_id)
        log.info("feedback applied", extra={"request_id": request_id, "rating": rating,
                                            "correction": correction is not None,
                                            "fact_id": out["fact_id"], "qa_node_id": qa_id})
        return out

    def _store_correction(self, conn: Connection, correction: str, question: str, request_id: str,
                          session_id: str | None, vec: np.ndarray, guess: tuple, now: float) -> int:
        """Exact or near-duplicate corrections update the existing fact: the newest wins."""
        md = {"question": question.strip()[:2000], "request_id": request_id}
        row = conn.execute("SELECT id FROM nodes WHERE text_hash = ? AND kind = 'fact' AND source = 'feedback' "
                           "AND archived = 0 ORDER BY id LIMIT 1", (text_hash("fact", correction),)).fetchone()
        fid = int(row[0]) if row else first_of_kind(conn, *guess, kind="fact", source="feedback",
                                                     min_sim=self.cfg.dedup_cosine)
        if fid is not None:
            conn.execute("UPDATE nodes SET text = ?, text_hash = ?, metadata = ?, request_id = ?, "
                         "last_access_at = ?, quality = 1.0 WHERE id = ?",
                         (correction, text_hash("fact", correction), json.dumps(md, ensure_ascii=False),
                          request_id, now, fid))
            set_vector(conn, fid, vec)
            return fid
        self.count("facts", 1)
        return insert_node(conn, kind="fact", source="feedback", text=correction, metadata=md, vec=vec,
                           now=now, quality=1.0, trust=default_trust("fact", "feedback"),
                           session_id=session_id, request_id=request_id)


CONFIRM_RATING = 4
NOT_ANSWERS = ("memory", "declined")   # a quote of a record, or "I don't have that in my notes"


def _confirm(conn: Connection, qa_id: int | None, query: str, answer: str, qa_vec: np.ndarray,
             request_id: str, session_id: str | None, now: float) -> int:
    """Mark the rated answer's qa_pair confirmed, writing it first if it was never stored."""
    if qa_id is not None:
        conn.execute("UPDATE nodes SET metadata = json_set(metadata, '$.confirmed', json('true')), "
                     "archived = 0 WHERE id = ?", (qa_id,))
        return qa_id
    return insert_node(conn, kind="qa_pair", source="model", text=qa_text(query, answer),
                       metadata={"confirmed": True, "request_id": request_id}, vec=qa_vec, now=now,
                       quality=1.0, trust=default_trust("qa_pair", "model"), session_id=session_id,
                       request_id=request_id)


def apply_rating(conn: Connection, rating: int, qa_id: int | None, used: list[int],
                 now: float) -> tuple[int, int]:
    """Move qualities and edge weights towards a 1-5 rating; (nodes, edges) updated."""
    tgt = rating_target(rating)
    nodes_n = edges_n = 0
    if qa_id is not None:
        conn.execute("UPDATE nodes SET quality = quality + ? * (? - quality) WHERE id = ?",
                     (QA_FEEDBACK_RATE, tgt, qa_id))
        nodes_n += 1
    for u in used:
        nodes_n += conn.execute("UPDATE nodes SET quality = quality + ? * (? - quality) WHERE id = ? "
                                "AND source != 'feedback'", (USED_FEEDBACK_RATE, tgt, u)).rowcount
    group = sorted(set(used) | ({qa_id} if qa_id is not None else set()))
    if len(group) > 1:
        m = marks(len(group))
        for s, d, k, w in conn.execute(f"SELECT src, dst, kind, weight FROM edges WHERE src IN ({m}) "
                                       f"AND dst IN ({m})", (*group, *group)).fetchall():
            conn.execute("UPDATE edges SET weight = ?, updated_at = ? WHERE src = ? AND dst = ? "
                         "AND kind = ?", (adjust_weight(w, rating, EDGE_STEP), now, s, d, k))
            edges_n += 1
    return nodes_n, edges_n


def first_of_kind(conn: Connection, ids: Sequence[int], sims: np.ndarray, *, kind: str,
                  source: str | None, min_sim: float = 0.95) -> int | None:
    """The first KNN guess at or above ``min_sim`` that is a searchable node of ``kind``."""
    for i, s in zip(ids, sims):
        if s < min_sim:
            break
        r = conn.execute("SELECT kind, source FROM nodes WHERE id = ? AND archived = 0", (i,)).fetchone()
        if r and r[0] == kind and (source is None or r[1] == source):
            return int(i)
    return None
