"""Lanes: a job moved on to another lane stays in the job table until it ends there."""

from __future__ import annotations

import threading

from ruvllm_edge import protocol
from ruvllm_edge.server.lanes import FAST_WORKERS, LANES, Job, Lanes


def client_job(rid: str, lane: str) -> Job:
    return Job(b"c", [], protocol.Request(rid, "query", {}), rid, lane=lane)


def test_a_moved_job_stays_in_the_table_until_its_new_lane_ends_it() -> None:
    lanes = Lanes(max_queue=4, gen_workers=1, fast_workers=2)
    seen: list[tuple[str, bool]] = []
    done = threading.Event()
    gate = threading.Event()

    def run(job: Job) -> bool:
        if job.lane == "fast":
            assert lanes.move_to("gen", job, lambda: {"ok": 1})
            seen.append(("fast", True))
            return True
        gate.wait(10)          # on gen: the table still has it while this runs
        seen.append(("gen", lanes.jobs.find_by_client(b"c", "a") is job))
        assert job.resume is not None
        return False

    lanes.start(run, on_change=lambda: done.set() if seen and seen[-1][0] == "gen" else None,
                on_exit=lambda: None)
    job = client_job("a", "fast")
    assert lanes.jobs.enqueue(job, lanes.queues["fast"])
    while not seen or lanes.in_flight("fast"):             # the fast worker has let go
        threading.Event().wait(0.005)
    assert lanes.jobs.find_by_client(b"c", "a") is job    # moved, not removed
    assert lanes.in_flight("gen") == 1                    # queued or running there
    gate.set()
    assert done.wait(10)
    assert seen == [("fast", True), ("gen", True)]
    assert lanes.jobs.find_by_client(b"c", "a") is None   # ended on gen: out of the table
    lanes.join(5)


def test_a_move_to_a_full_lane_is_refused_and_leaves_the_job_as_it_was() -> None:
    lanes = Lanes(max_queue=1, gen_workers=1)
    lanes.queues["gen"].put_nowait(client_job("x", "gen"))
    job = client_job("a", "fast")
    assert lanes.move_to("gen", job, lambda: {}) is False
    assert job.lane == "fast" and job.resume is None


def test_the_fast_lane_exists_with_its_default_workers() -> None:
    lanes = Lanes(max_queue=8, gen_workers=1)
    assert "fast" in LANES and lanes.workers["fast"] == FAST_WORKERS
    assert lanes.sizes() == {"gen": 0, "fast": 0, "aux": 0, "slow": 0}
