import asyncio
import threading
import time
from collections.abc import Callable, Mapping

import numpy as np
import pytest

from vss_api.v2 import Array
from vss_predictors.batcher import DynamicBatcher, RunTiming
from vss_predictors.errors import DeadlineExpired, PredictorStopping, QueueFull


class Recorder:
    """A runtime stand-in that doubles its input and records each call's batch size."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.sizes: list[int] = []
        self.gate = gate

    def __call__(self, feeds: Mapping[str, Array]) -> dict[str, Array]:
        if self.gate is not None:
            self.gate.wait(5)
        x = feeds["x"]
        self.sizes.append(int(x.shape[0]))
        return {"y": x * 2}


async def test_concurrent_requests_are_merged_and_each_gets_its_own_rows_back() -> None:
    gate = threading.Event()
    run = Recorder(gate)
    batcher = DynamicBatcher(run, max_batch_size=8, max_latency_s=0.05, merge=True, max_in_flight=1)
    first = asyncio.create_task(batcher.submit({"x": np.full((1, 2), -1.0)}))
    await asyncio.sleep(0.05)  # the first call is now blocked in the runtime: the rest queue up
    rest = [asyncio.create_task(batcher.submit({"x": np.full((1, 2), float(i))})) for i in range(5)]
    await asyncio.sleep(0.05)
    gate.set()
    results = await asyncio.gather(first, *rest)
    await batcher.aclose()
    assert run.sizes == [1, 5]
    for i, out in enumerate(results[1:]):
        np.testing.assert_array_equal(out["y"], np.full((1, 2), 2.0 * i))


async def test_a_lone_request_runs_at_once_without_waiting_for_company() -> None:
    run = Recorder()
    batcher = DynamicBatcher(run, max_batch_size=8, max_latency_s=5.0, merge=True)
    out = await asyncio.wait_for(batcher.submit({"x": np.ones((1, 3))}), timeout=1.0)
    await batcher.aclose()
    np.testing.assert_array_equal(out["y"], np.full((1, 3), 2.0))


async def test_requests_of_different_shapes_are_never_merged() -> None:
    gate = threading.Event()
    run = Recorder(gate)
    batcher = DynamicBatcher(run, max_batch_size=8, max_latency_s=0.0, merge=True)
    blocker = asyncio.create_task(batcher.submit({"x": np.zeros((1, 2))}))
    await asyncio.sleep(0.05)
    a = asyncio.create_task(batcher.submit({"x": np.zeros((1, 2))}))
    b = asyncio.create_task(batcher.submit({"x": np.zeros((1, 3))}))
    await asyncio.sleep(0.02)
    gate.set()
    await asyncio.gather(blocker, a, b)
    await batcher.aclose()
    assert run.sizes == [1, 1, 1]


async def test_a_batch_never_exceeds_the_maximum() -> None:
    gate = threading.Event()
    run = Recorder(gate)
    batcher = DynamicBatcher(run, max_batch_size=4, max_latency_s=0.0, merge=True, max_in_flight=1)
    blocker = asyncio.create_task(batcher.submit({"x": np.zeros((1, 1))}))
    await asyncio.sleep(0.05)
    tasks = [asyncio.create_task(batcher.submit({"x": np.zeros((1, 1))})) for _ in range(10)]
    await asyncio.sleep(0.02)
    gate.set()
    await asyncio.gather(blocker, *tasks)
    await batcher.aclose()
    assert max(run.sizes) == 4 and sum(run.sizes) == 11


async def test_a_runtime_failure_reaches_every_request_of_the_batch_and_the_batcher_keeps_serving() -> None:
    calls = 0

    def flaky(feeds: Mapping[str, Array]) -> dict[str, Array]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("device lost")
        return {"y": feeds["x"]}

    batcher = DynamicBatcher(flaky, max_batch_size=4, max_latency_s=0.0, merge=True)
    with pytest.raises(RuntimeError, match="device lost"):
        await batcher.submit({"x": np.zeros((1, 1))})
    out = await batcher.submit({"x": np.ones((1, 1))})
    await batcher.aclose()
    np.testing.assert_array_equal(out["y"], np.ones((1, 1)))


async def test_fixed_batch_models_run_one_request_per_call() -> None:
    gate = threading.Event()
    run = Recorder(gate)
    batcher = DynamicBatcher(run, max_batch_size=8, max_latency_s=0.0, merge=False)
    blocker = asyncio.create_task(batcher.submit({"x": np.zeros((1, 1))}))
    await asyncio.sleep(0.05)
    tasks = [asyncio.create_task(batcher.submit({"x": np.zeros((1, 1))})) for _ in range(3)]
    gate.set()
    await asyncio.gather(blocker, *tasks)
    await batcher.aclose()
    assert run.sizes == [1, 1, 1, 1]


class Overlap:
    """A runtime stand-in that holds each call until `gate` opens and records how many ran at once."""

    def __init__(self, gate: threading.Event) -> None:
        self.gate = gate
        self.sizes: list[int] = []
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def __call__(self, feeds: Mapping[str, Array]) -> dict[str, Array]:
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        self.gate.wait(5)
        with self._lock:
            self.running -= 1
            self.sizes.append(int(feeds["x"].shape[0]))
        return {"y": feeds["x"] * 2}


async def test_two_batches_run_at_once_and_a_third_gathers_everything_that_waited_for_a_slot() -> None:
    gate = threading.Event()
    run = Overlap(gate)
    batcher = DynamicBatcher(run, max_batch_size=8, max_latency_s=0.0, merge=True, max_in_flight=2)
    first = asyncio.create_task(batcher.submit({"x": np.zeros((1, 2))}))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(batcher.submit({"x": np.zeros((1, 3))}))  # another shape: its own batch
    await asyncio.sleep(0.05)
    assert run.running == 2  # both slots busy, neither run has returned
    waiting = [asyncio.create_task(batcher.submit({"x": np.full((1, 2), float(i))})) for i in range(3)]
    await asyncio.sleep(0.05)
    assert run.running == 2  # no third run while both slots are taken
    gate.set()
    results = await asyncio.gather(first, second, *waiting)
    await batcher.aclose()
    assert run.most_at_once == 2
    assert sorted(run.sizes) == [1, 1, 3]
    for i, out in enumerate(results[2:]):
        np.testing.assert_array_equal(out["y"], np.full((1, 2), 2.0 * i))


async def test_one_batch_in_flight_runs_strictly_one_after_another() -> None:
    gate = threading.Event()
    run = Overlap(gate)
    batcher = DynamicBatcher(run, max_batch_size=8, max_latency_s=0.0, merge=True, max_in_flight=1)
    tasks = [asyncio.create_task(batcher.submit({"x": np.zeros((1, n))})) for n in (1, 2, 3)]
    await asyncio.sleep(0.05)
    assert run.running == 1
    gate.set()
    await asyncio.gather(*tasks)
    await batcher.aclose()
    assert run.most_at_once == 1 and run.sizes == [1, 1, 1]


def test_a_batcher_needs_at_least_one_batch_in_flight() -> None:
    with pytest.raises(ValueError, match="max_in_flight must be at least 1"):
        DynamicBatcher(Recorder(), max_batch_size=8, max_latency_s=0.0, merge=True, max_in_flight=0)


# --- closing ----------------------------------------------------------------------------------------------------
class Entered(Recorder):
    """A Recorder that says when a run has started, so a test knows one is in the runtime."""

    def __init__(self, gate: threading.Event) -> None:
        super().__init__(gate)
        self.entered = threading.Event()

    def __call__(self, feeds: Mapping[str, Array]) -> dict[str, Array]:
        self.entered.set()
        return super().__call__(feeds)


def _batch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("vss-batch")]


async def _until(what: str, condition: Callable[[], bool], deadline_s: float = 5.0) -> None:
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError(f"{what}: not after {deadline_s}s")
        await asyncio.sleep(0.01)


async def test_aclose_lets_the_running_batch_answer_fails_the_queued_ones_and_leaves_no_thread() -> None:
    gate = threading.Event()
    run = Entered(gate)
    batcher = DynamicBatcher(run, max_batch_size=8, max_latency_s=0.0, merge=True, max_in_flight=1)
    running = asyncio.create_task(batcher.submit({"x": np.ones((1, 2))}))
    assert await asyncio.to_thread(run.entered.wait, 5)
    queued = [asyncio.create_task(batcher.submit({"x": np.ones((1, 2))})) for _ in range(3)]
    await asyncio.sleep(0)  # one turn of the loop: each has run to its first await, into the queue
    closing = asyncio.create_task(batcher.aclose())
    for task in queued:
        with pytest.raises(PredictorStopping, match="shutting down"):
            await asyncio.wait_for(task, 5)
    gate.set()
    np.testing.assert_array_equal((await asyncio.wait_for(running, 5))["y"], np.full((1, 2), 2.0))
    await asyncio.wait_for(closing, 5)
    assert _batch_threads() == []


async def _merged_batch_of_two_requests(batcher: DynamicBatcher, gate: threading.Event) -> None:
    """One request blocked in the runtime, two more queued behind it, then all let through: the last batch
    held two requests, so the batcher takes the traffic to be concurrent."""
    blocker = asyncio.create_task(batcher.submit({"x": np.ones((1, 2))}))
    await _until("the first request's batch to start", lambda: bool(batcher._running))
    queued = [asyncio.create_task(batcher.submit({"x": np.ones((1, 2))})) for _ in range(2)]
    await _until("both to queue", lambda: batcher.waiting == 2)
    gate.set()
    await asyncio.wait_for(asyncio.gather(blocker, *queued), 5)


async def test_a_request_taken_off_the_queue_while_its_batch_gathers_fails_on_close_instead_of_hanging() -> None:
    """After a batch of two requests the batcher waits up to max_latency (an hour here) for company: the lone
    request it has taken off the queue is in no queue then, and close() must still answer it."""
    gate = threading.Event()
    run = Recorder(gate)
    batcher = DynamicBatcher(run, max_batch_size=8, max_latency_s=3600.0, merge=True, max_in_flight=1)
    await _merged_batch_of_two_requests(batcher, gate)
    lone = asyncio.create_task(batcher.submit({"x": np.ones((1, 2))}))
    await _until("the worker to take the request", lambda: batcher._queue is not None and batcher._queue.empty()
                 and bool(batcher._gathering))
    batcher.close()
    with pytest.raises(PredictorStopping):
        await asyncio.wait_for(lone, 5)
    await batcher.aclose()
    assert run.sizes == [1, 2]


async def test_a_lone_client_sending_many_rows_per_request_never_waits_for_company() -> None:
    """Requests of 64 rows one after another (a client sending 64 sensor windows at a time) are a lone
    client: each runs at once, though max_latency is an hour."""
    run = Recorder()
    batcher = DynamicBatcher(run, max_batch_size=256, max_latency_s=3600.0, merge=True, max_in_flight=1)
    for i in range(3):
        out = await asyncio.wait_for(batcher.submit({"x": np.full((64, 2), float(i))}), timeout=5)
        np.testing.assert_array_equal(out["y"], np.full((64, 2), 2.0 * i))
    await batcher.aclose()
    assert run.sizes == [64, 64, 64]


async def test_after_a_batch_of_several_requests_the_next_one_waits_for_company() -> None:
    """Once traffic was concurrent (the last batch merged two requests), a request waits up to max_latency for
    others to merge with: here the hour's wait is cut short by a second request filling the batch."""
    gate = threading.Event()
    run = Recorder(gate)
    batcher = DynamicBatcher(run, max_batch_size=4, max_latency_s=3600.0, merge=True, max_in_flight=1)
    await _merged_batch_of_two_requests(batcher, gate)
    first = asyncio.create_task(batcher.submit({"x": np.ones((2, 2))}))
    await _until("the worker to gather it", lambda: bool(batcher._gathering))
    assert not first.done()
    second = asyncio.create_task(batcher.submit({"x": np.ones((2, 2))}))
    await asyncio.wait_for(asyncio.gather(first, second), 5)
    await batcher.aclose()
    assert run.sizes == [1, 2, 4]


async def test_a_run_still_going_when_aclose_gives_up_fails_its_requests_instead_of_hanging() -> None:
    gate = threading.Event()
    run = Entered(gate)
    batcher = DynamicBatcher(run, max_batch_size=8, max_latency_s=0.0, merge=True, max_in_flight=1)
    stuck = asyncio.create_task(batcher.submit({"x": np.ones((1, 2))}))
    assert await asyncio.to_thread(run.entered.wait, 5)
    await asyncio.wait_for(batcher.aclose(timeout_s=0), 5)
    with pytest.raises(PredictorStopping):
        await asyncio.wait_for(stuck, 5)
    gate.set()  # the runtime call itself cannot be interrupted: its thread ends when it returns
    await _until("the batch thread to exit", lambda: not _batch_threads())


async def test_a_closed_batcher_refuses_new_requests_at_once() -> None:
    batcher = DynamicBatcher(Recorder(), max_batch_size=8, max_latency_s=0.0, merge=True)
    await batcher.submit({"x": np.ones((1, 2))})
    await batcher.aclose()
    with pytest.raises(PredictorStopping):
        await batcher.submit({"x": np.ones((1, 2))})
    batcher.close()  # a second close is harmless


class HeldRuntime:
    """A runtime stand-in that holds each call until `release` is set, says when one has started, and records the
    first value of every input it ran: what the batcher really ran."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.ran: list[float] = []

    def __call__(self, feeds: Mapping[str, Array]) -> dict[str, Array]:
        self.started.set()
        self.release.wait(10)
        x = feeds["x"]
        self.ran.extend(float(v) for v in x[:, 0])
        return {"y": x * 2}


def _row(value: float) -> dict[str, Array]:
    return {"x": np.full((1, 1), value)}


async def _running(runtime: HeldRuntime, batcher: DynamicBatcher, value: float) -> asyncio.Task[dict[str, Array]]:
    task = asyncio.create_task(batcher.submit(_row(value)))
    assert await asyncio.to_thread(runtime.started.wait, 5), "the first request never reached the runtime"
    return task


async def test_a_full_queue_refuses_one_more_request_and_still_runs_every_queued_one() -> None:
    runtime = HeldRuntime()
    batcher = DynamicBatcher(runtime, max_batch_size=1, max_latency_s=0.0, merge=True, max_in_flight=1,
                             max_queue_size=2)
    running = await _running(runtime, batcher, 0.0)
    queued = [asyncio.create_task(batcher.submit(_row(v))) for v in (1.0, 2.0)]
    await _until("two requests queued", lambda: batcher.waiting == 2)

    with pytest.raises(QueueFull, match="queue is full"):
        await batcher.submit(_row(9.0))
    runtime.release.set()
    results = await asyncio.gather(running, *queued)
    await batcher.aclose()

    assert runtime.ran == [0.0, 1.0, 2.0]
    assert [float(r["y"][0, 0]) for r in results] == [0.0, 2.0, 4.0]


async def test_a_request_whose_deadline_passes_in_the_queue_is_answered_and_never_run() -> None:
    runtime = HeldRuntime()
    batcher = DynamicBatcher(runtime, max_batch_size=8, max_latency_s=0.0, merge=True, max_in_flight=1)
    running = await _running(runtime, batcher, 0.0)

    with pytest.raises(DeadlineExpired, match="before it was run"):
        await batcher.submit(_row(7.0), deadline=time.monotonic() + 0.05)
    assert batcher.waiting == 0  # its place in the queue is free again
    runtime.release.set()
    await running
    later = await batcher.submit(_row(3.0))
    await batcher.aclose()

    assert runtime.ran == [0.0, 3.0]
    assert float(later["y"][0, 0]) == 6.0


async def test_a_request_already_past_its_deadline_is_refused_without_being_queued() -> None:
    runtime = HeldRuntime()
    runtime.release.set()
    batcher = DynamicBatcher(runtime, max_batch_size=8, max_latency_s=0.0, merge=True)

    with pytest.raises(DeadlineExpired, match="had passed"):
        await batcher.submit(_row(1.0), deadline=time.monotonic() - 0.001)
    await batcher.aclose()

    assert runtime.ran == [] and batcher.waiting == 0


async def test_a_running_request_past_its_deadline_is_answered_at_the_deadline() -> None:
    runtime = HeldRuntime()
    batcher = DynamicBatcher(runtime, max_batch_size=8, max_latency_s=0.0, merge=True, max_in_flight=1)

    with pytest.raises(DeadlineExpired, match="while it ran"):
        await batcher.submit(_row(5.0), deadline=time.monotonic() + 0.2)
    assert runtime.started.is_set()
    runtime.release.set()
    await batcher.aclose()


async def test_a_request_its_caller_gave_up_frees_its_place_in_the_queue_and_is_not_run() -> None:
    runtime = HeldRuntime()
    batcher = DynamicBatcher(runtime, max_batch_size=1, max_latency_s=0.0, merge=True, max_in_flight=1,
                             max_queue_size=1)
    running = await _running(runtime, batcher, 0.0)
    abandoned = asyncio.create_task(batcher.submit(_row(8.0)))
    await _until("the request queued", lambda: batcher.waiting == 1)

    abandoned.cancel()
    with pytest.raises(asyncio.CancelledError):
        await abandoned
    accepted = asyncio.create_task(batcher.submit(_row(4.0)))  # the queue's one place is free again
    runtime.release.set()
    await asyncio.gather(running, accepted)
    await batcher.aclose()

    assert runtime.ran == [0.0, 4.0]


async def test_a_timed_request_learns_when_it_was_queued_and_when_its_merged_batch_ran() -> None:
    gate = threading.Event()
    run = Recorder(gate)
    batcher = DynamicBatcher(run, max_batch_size=8, max_latency_s=0.05, merge=True, max_in_flight=1)
    first = asyncio.create_task(batcher.submit({"x": np.zeros((1, 2))}))
    await asyncio.sleep(0.05)  # the first batch holds the runtime: the next two queue and then run together
    timings = [RunTiming(), RunTiming()]
    rest = [asyncio.create_task(batcher.submit({"x": np.zeros((n, 2))}, timing=t))
            for n, t in zip((1, 2), timings, strict=True)]
    await asyncio.sleep(0.05)
    before_release = time.time_ns()
    gate.set()
    await asyncio.gather(first, *rest)
    await batcher.aclose()
    assert run.sizes == [1, 3]
    for timing in timings:
        assert 0 < timing.queued_ns < before_release < timing.started_ns <= timing.ended_ns
        assert (timing.batch_rows, timing.batch_requests) == (3, 2)
    assert timings[0].started_ns == timings[1].started_ns
