"""Dynamic batching: concurrent requests with the same per-item shape are merged into one run.

Requests already queued when the runtime frees up are merged at once, so a lone client never waits
for company; only while traffic is concurrent (the last run held more than one request) does a
batch wait up to `max_latency` for more. A lone client sending many rows per request (64 sensor
windows) is still a lone client: what counts is requests, not rows.

Up to `max_in_flight` batches run at once (default 2): while one computes, the next is gathered and
started, so the runtime never idles between batches on the event loop's turn-around, and on a GPU one
batch's host-device copies overlap the other's kernels. A batch is gathered only once a slot is free, so
under load each batch holds everything that arrived while the slots were busy.

The queue is bounded: at most `max_queue_size` requests wait (queued or being gathered, not yet running); one
more is refused at once with `QueueFull` (limits before work), and nothing already queued is dropped for it. A
request may carry a deadline (`time.monotonic()`): its caller is answered `DeadlineExpired` when it passes, and
if the request had not started by then the batcher never runs it, so work nobody waits for does not keep the
runtime from work somebody does.

A caller may pass a `RunTiming`, which the batcher fills in: when the request was queued, when its batch
started and ended (wall-clock nanoseconds, for the predictor's trace spans), and how large the batch was.

`close()` stops it (KServe's shutdown calls the predictor model's `stop()`, which calls it): what has not
started fails with `PredictorStopping`, what is running finishes and answers, and the threads exit."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from vss_api.v2 import Array
from vss_predictors.errors import DeadlineExpired, PredictorStopping, QueueFull

RunFn = Callable[[Mapping[str, Array]], dict[str, Array]]
STOPPING = "the predictor is shutting down: the request was not run"


@dataclass
class RunTiming:
    """One request's time in the batcher (`time.time_ns()`; 0: did not happen) and the batch it ran in."""

    queued_ns: int = 0
    started_ns: int = 0
    ended_ns: int = 0
    batch_rows: int = 0
    batch_requests: int = 0


@dataclass
class _Pending:
    feeds: Mapping[str, Array]
    rows: int
    key: tuple[tuple[str, str, tuple[int, ...]], ...]
    done: asyncio.Future[dict[str, Array]] = field(repr=False)
    deadline: float | None = None
    queued_at: float = 0.0
    waiting: bool = True  # counted against `max_queue_size`: neither started nor given up yet
    timing: RunTiming | None = None


def batch_key(feeds: Mapping[str, Array]) -> tuple[tuple[str, str, tuple[int, ...]], ...]:
    """Requests merge only when every input agrees on dtype and on all dimensions but the first."""
    return tuple(sorted((name, a.dtype.str, tuple(a.shape[1:])) for name, a in feeds.items()))


class DynamicBatcher:
    """Runs `run` on merged batches in one worker thread; `submit` is safe from any coroutine."""

    def __init__(self, run: RunFn, *, max_batch_size: int, max_latency_s: float, merge: bool,
                 max_in_flight: int = 2, max_queue_size: int = 256,
                 on_batch: Callable[[int], None] = lambda _rows: None) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        if max_queue_size < 1:
            raise ValueError(f"max_queue_size must be at least 1, got {max_queue_size}")
        self._max_queue_size = max_queue_size
        self._waiting = 0
        self._run = run
        self._max_rows = max_batch_size if merge else 1
        self._max_latency_s = max_latency_s
        self._merge = merge
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Pending] | None = None
        self._carry: _Pending | None = None
        self._worker: asyncio.Task[None] | None = None
        self._last_requests = 1  # in the last batch gathered: more than one means traffic is concurrent
        self._max_in_flight = max_in_flight
        self._slots: asyncio.Semaphore | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._executor = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="vss-batch")
        self._gathering: list[_Pending] = []  # taken off the queue by `_collect`, not yet running
        self._closed = False

    @property
    def waiting(self) -> int:
        """Requests queued or being gathered, not yet started."""
        return self._waiting

    async def submit(self, feeds: Mapping[str, Array], *, deadline: float | None = None,
                     timing: RunTiming | None = None) -> dict[str, Array]:
        """The outputs of `feeds`, run alone or merged; `deadline` is a `time.monotonic()` instant; `timing`, when
        given, is filled in as the request is queued and its batch runs."""
        if self._closed:
            raise PredictorStopping(STOPPING)
        now = time.monotonic()
        if deadline is not None and deadline <= now:
            raise DeadlineExpired("the request's deadline had passed when it reached the predictor: not run")
        if self._waiting >= self._max_queue_size:
            raise QueueFull(f"the predictor's queue is full ({self._max_queue_size} requests waiting): "
                            "not queued, retry later")
        rows = int(next(iter(feeds.values())).shape[0])
        loop = asyncio.get_running_loop()
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._slots = asyncio.Semaphore(self._max_in_flight)
            self._worker = loop.create_task(self._work(), name="vss-batcher")
        pending = _Pending(feeds, rows, batch_key(feeds), loop.create_future(), deadline, now, timing=timing)
        if timing is not None:
            timing.queued_ns = time.time_ns()
        self._waiting += 1
        self._queue.put_nowait(pending)
        if deadline is None:
            try:
                return await pending.done
            finally:
                self._release(pending)  # cancelled by its caller while queued: it frees its place now
        try:
            await asyncio.wait((pending.done,), timeout=deadline - now)
        except asyncio.CancelledError:
            pending.done.cancel()
            self._release(pending)
            raise
        if pending.done.done():
            return pending.done.result()
        started = not pending.waiting
        pending.done.cancel()  # not started: the batcher skips it; running: its rows are dropped
        self._release(pending)
        waited = time.monotonic() - pending.queued_at
        raise DeadlineExpired(f"the request's deadline passed after {waited:.3f}s in the predictor, "
                              + ("while it ran" if started else "before it was run: it was dropped unrun"))

    def _release(self, pending: _Pending) -> None:
        if pending.waiting:
            pending.waiting = False
            self._waiting -= 1

    def close(self) -> None:
        """Stop now, without blocking: later submissions and every one not yet running fail with
        `PredictorStopping`; batches already running finish and answer (a model run cannot be interrupted),
        and the worker threads exit after them. Runs on the event loop's thread (KServe calls a model's
        `stop()` there) or where no loop runs; a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
        waiting, self._gathering = self._gathering, []
        if self._carry is not None:
            waiting.append(self._carry)
            self._carry = None
        while self._queue is not None and not self._queue.empty():
            waiting.append(self._queue.get_nowait())
        _fail_stopping(waiting)
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def aclose(self, timeout_s: float = 30.0) -> None:
        """`close()`, then wait up to `timeout_s` for the running batches to answer and for the worker
        threads to exit. Batches still running then are given up: their requests fail with
        `PredictorStopping` (their threads end with the run, unwaited)."""
        self.close()
        if self._worker is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        late: set[asyncio.Task[None]] = set()
        if self._running:
            _, late = await asyncio.wait(set(self._running), timeout=timeout_s)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)
            return
        await asyncio.to_thread(self._executor.shutdown, wait=True)

    async def _next(self, wait_s: float | None) -> _Pending | None:
        assert self._queue is not None
        if self._carry is not None:
            item, self._carry = self._carry, None
            return item
        if wait_s is None:
            return await self._queue.get()
        if not self._queue.empty():
            return self._queue.get_nowait()
        if wait_s <= 0:
            return None
        try:
            return await asyncio.wait_for(self._queue.get(), wait_s)
        except TimeoutError:
            return None

    async def _collect(self) -> list[_Pending]:
        first = await self._next(None)
        assert first is not None
        batch, rows = [first], first.rows
        self._gathering = batch  # `close()` fails these if it comes while the batch is gathered
        loop = asyncio.get_running_loop()
        wait = self._max_latency_s if self._last_requests > 1 else 0.0
        deadline = loop.time() + wait
        while self._merge and rows < self._max_rows:
            item = await self._next(max(0.0, deadline - loop.time()))
            if item is None:
                break
            if item.key != first.key or rows + item.rows > self._max_rows:
                self._carry = item
                break
            batch.append(item)
            rows += item.rows
        self._last_requests = len(batch)
        self._gathering = []
        return batch

    async def _work(self) -> None:
        assert self._slots is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()
            try:
                batch = await self._collect()
            except BaseException:
                self._slots.release()
                raise
            live = [p for p in batch if not p.done.cancelled()]
            if not live:
                self._slots.release()
                continue
            task = loop.create_task(self._execute(live), name="vss-batch")
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _execute(self, batch: list[_Pending]) -> None:
        assert self._slots is not None
        live = self._starting(batch)
        try:
            if not live:
                return
            if self._closed:  # closed between gathering and this task's first step
                raise PredictorStopping(STOPPING)
            merged = _concat([p.feeds for p in live]) if len(live) > 1 else live[0].feeds
            rows = sum(p.rows for p in live)
            self._on_batch(rows)
            timed = [p.timing for p in live if p.timing is not None]
            started_ns = time.time_ns() if timed else 0
            try:
                outputs = await asyncio.get_running_loop().run_in_executor(self._executor, self._run, merged)
            finally:
                if timed:
                    ended_ns = time.time_ns()
                    for timing in timed:
                        timing.started_ns, timing.ended_ns = started_ns, ended_ns
                        timing.batch_rows, timing.batch_requests = rows, len(live)
        except asyncio.CancelledError:  # given up (`aclose` past its timeout, or the loop is ending)
            _fail_stopping(live)
            raise
        except Exception as exc:  # the run failed: every waiting request learns why
            for p in live:
                if not p.done.done():
                    p.done.set_exception(exc)
            return
        finally:
            self._slots.release()
        start = 0
        for p in live:
            if not p.done.done():
                p.done.set_result({k: v[start:start + p.rows] for k, v in outputs.items()})
            start += p.rows


    def _starting(self, batch: list[_Pending]) -> list[_Pending]:
        """What of `batch` still runs: each leaves the queue's count, and those given up or past their
        deadline are dropped unrun."""
        now = time.monotonic()
        live = []
        for p in batch:
            self._release(p)
            if p.done.done():
                continue
            if p.deadline is not None and p.deadline <= now:
                p.done.set_exception(DeadlineExpired(
                    f"the request's deadline passed after {now - p.queued_at:.3f}s in the predictor's queue, "
                    "before it was run: it was dropped unrun"))
                continue
            live.append(p)
        return live


def _fail_stopping(pending: list[_Pending]) -> None:
    for p in pending:
        if not p.done.done():
            p.done.set_exception(PredictorStopping(STOPPING))


def _concat(feeds: list[Mapping[str, Array]]) -> dict[str, Array]:
    return {name: np.concatenate([f[name] for f in feeds], axis=0) for name in feeds[0]}
