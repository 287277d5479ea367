"""The coalescing queue: per-user serialisation, coalescing, bounded concurrency, nothing lost on failure."""

from __future__ import annotations

import asyncio
from collections import Counter

from reconciler.sources.offsets import PartitionOffsets
from reconciler.sources.workqueue import CoalescingQueue, Later
from tests.support.polling import eventually


class Recorder:
    """A worker that records what it was asked and can be held mid-apply."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[int]]] = []
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight_per_key = 0
        self.max_in_flight_total = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.failures_left = 0

    async def __call__(self, key: str, hints: list[int]) -> None:
        self.in_flight[key] += 1
        self.max_in_flight_per_key = max(self.max_in_flight_per_key, self.in_flight[key])
        self.max_in_flight_total = max(self.max_in_flight_total, sum(self.in_flight.values()))
        try:
            await self.gate.wait()
            await asyncio.sleep(0.001)
            if self.failures_left:
                self.failures_left -= 1
                raise RuntimeError("transient")
            self.calls.append((key, hints))
        finally:
            self.in_flight[key] -= 1


async def test_duplicate_hints_for_a_queued_user_collapse_into_one_apply() -> None:
    worker = Recorder()
    queue: CoalescingQueue[int] = CoalescingQueue(worker, concurrency=1)
    worker.gate.clear()
    queue.start()
    await queue.submit("blocker", 0)
    await eventually(lambda: _async(worker.in_flight["blocker"]), what="blocker running")
    for i in range(10):
        await queue.submit("a", i)
    worker.gate.set()
    await queue.join()
    await queue.close()
    assert [c for c in worker.calls if c[0] == "a"] == [("a", list(range(10)))]
    assert queue.coalesced == 9


async def test_a_hint_during_an_apply_causes_exactly_one_more_apply() -> None:
    worker = Recorder()
    queue: CoalescingQueue[int] = CoalescingQueue(worker, concurrency=4)
    worker.gate.clear()
    queue.start()
    await queue.submit("a", 1)
    await eventually(lambda: _async(worker.in_flight["a"]), what="first apply running")
    for i in range(2, 7):
        await queue.submit("a", i)
    worker.gate.set()
    await queue.join()
    await queue.close()
    assert worker.calls == [("a", [1]), ("a", [2, 3, 4, 5, 6])]
    assert worker.max_in_flight_per_key == 1


async def test_concurrency_is_bounded_across_users_and_each_user_is_serialised() -> None:
    worker = Recorder()
    queue: CoalescingQueue[int] = CoalescingQueue(worker, concurrency=3)
    queue.start()
    for i in range(200):
        await queue.submit(f"user-{i % 20}", i)
    await queue.join()
    await queue.close()
    assert worker.max_in_flight_total <= 3
    assert worker.max_in_flight_per_key == 1
    applied = sorted(h for _, hints in worker.calls for h in hints)
    assert applied == list(range(200))


async def test_done_is_called_only_after_a_successful_apply_and_failures_are_retried() -> None:
    worker = Recorder()
    worker.failures_left = 2
    queue: CoalescingQueue[int] = CoalescingQueue(worker, concurrency=1)
    offsets = PartitionOffsets()
    offsets.track(0, parts=1)
    offsets.track(1, parts=1)
    queue.start()
    await queue.submit("a", 0, lambda: offsets.done(0))
    await queue.submit("b", 1, lambda: offsets.done(1))
    await queue.join()
    await queue.close()
    assert offsets.commit_point() == 2
    assert sorted(k for k, _ in worker.calls) == ["a", "b"]


def test_commit_point_stops_at_the_oldest_unfinished_record() -> None:
    offsets = PartitionOffsets()
    offsets.track(10, parts=1)
    offsets.track(11, parts=0)  # ignored message: done at once
    offsets.track(12, parts=2)
    offsets.done(12)
    assert offsets.commit_point() == 10
    offsets.done(10)
    assert offsets.commit_point() == 12  # 12 still has one part outstanding
    offsets.done(12)
    assert offsets.commit_point() == 13


async def _async(value: int) -> int:
    return value


async def test_later_keeps_the_hints_and_their_completion_until_the_wake_future_is_done() -> None:
    wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    calls: list[list[int]] = []
    done: list[str] = []

    async def worker(key: str, hints: list[int]) -> Later | None:
        calls.append(hints)
        return Later(3600.0, wake=wake) if not wake.done() else None

    queue: CoalescingQueue[int] = CoalescingQueue(worker, concurrency=1)
    queue.start()
    await queue.submit("a", 1, lambda: done.append("first"))
    await eventually(lambda: _async(len(calls)), what="first apply")
    await queue.submit("a", 2, lambda: done.append("second"))  # joins the waiting hints
    assert done == [] and len(queue) == 1  # not done, nothing failed, still held
    wake.set_result(None)  # woken long before the hour is up
    await asyncio.wait_for(queue.join(), 5)
    await queue.close()
    assert calls == [[1], [1, 2]] and done == ["first", "second"]
