"""The event hub on a real asyncio loop with synthetic events and in-test sinks (no video, no network): every
subscription gets every event in order, a slow one loses its oldest and counts them while a fast one misses
nothing, close() delivers the end marker and lets sinks flush, and a sink that raises stops only itself."""

from __future__ import annotations

import asyncio

from vss_streams.analytics import Event, EventKind
from vss_streams.hub import EventHub


def event(frame: int) -> Event:
    return Event("hub", EventKind.LINE_CROSSED, "road", "person", 1, frame / 15, frame, (0.0, 0.0, 1.0, 1.0))


def test_every_subscription_gets_every_event_in_order() -> None:
    async def run() -> list[list[int]]:
        hub = EventHub()
        subscriptions = [hub.subscribe(f"s{i}") for i in range(3)]
        for frame in range(50):
            hub.publish(event(frame))
        await hub.close()
        seen: list[list[int]] = []
        for subscription in subscriptions:
            frames = []
            while (got := await subscription.get()) is not None:
                frames.append(got.frame)
            seen.append(frames)
        return seen

    assert asyncio.run(run()) == [list(range(50))] * 3


def test_a_slow_sink_loses_its_oldest_events_and_counts_them_while_a_fast_one_gets_everything() -> None:
    async def run() -> tuple[list[int], list[int], int, list[str]]:
        hub = EventHub()
        dropped_by: list[str] = []
        hub.on_drop = lambda subscription: dropped_by.append(subscription.name)
        fast: list[int] = []
        slow: list[int] = []
        release = asyncio.Event()

        async def fast_sink(e: Event) -> None:
            fast.append(e.frame)

        async def slow_sink(e: Event) -> None:
            await release.wait()  # stuck until every event is out
            slow.append(e.frame)

        hub.attach("fast", fast_sink)
        slow_subscription = hub.attach("slow", slow_sink, maxsize=10)
        for frame in range(100):
            hub.publish(event(frame))
            await asyncio.sleep(0)  # the loop runs the sinks between frames, as the worker's awaits do
        release.set()
        await hub.close()
        return fast, slow, slow_subscription.dropped, dropped_by

    fast, slow, dropped, dropped_by = asyncio.run(run())

    assert fast == list(range(100))
    # The slow sink held its first event while stuck, then its queue kept the 10 newest: the rest were dropped.
    assert slow == [0, *range(90, 100)]
    assert dropped == 100 - len(slow) == 89
    assert dropped_by == ["slow"] * 89


def test_close_delivers_the_end_marker_and_lets_attached_sinks_flush_what_they_hold() -> None:
    async def run() -> tuple[list[int], list[str]]:
        hub = EventHub()
        got: list[int] = []
        calls: list[str] = []

        async def sink(e: Event) -> None:
            await asyncio.sleep(0.001)
            got.append(e.frame)

        async def on_close() -> None:
            calls.append(f"closed after {len(got)}")

        hub.attach("slowish", sink, on_close=on_close)
        for frame in range(20):
            hub.publish(event(frame))
        await hub.close(flush_timeout_s=30)
        hub.publish(event(99))  # after close: ignored
        late = hub.subscribe("late")
        assert await asyncio.wait_for(late.get(), 5) is None
        return got, calls

    got, calls = asyncio.run(run())

    assert got == list(range(20))
    assert calls == ["closed after 20"]


def test_close_cancels_a_sink_that_does_not_finish_in_time_counts_what_it_had_not_taken_and_runs_its_on_close(
        ) -> None:
    async def run() -> tuple[list[str], float, int, list[str]]:
        hub = EventHub()
        calls: list[str] = []
        dropped_by: list[str] = []
        hub.on_drop = lambda subscription: dropped_by.append(subscription.name)

        async def hangs(e: Event) -> None:
            await asyncio.Event().wait()

        async def on_close() -> None:
            calls.append("closed")

        subscription = hub.attach("hangs", hangs, on_close=on_close)
        for frame in range(5):  # the first is taken (and hangs), four wait in its queue
            hub.publish(event(frame))
            await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await hub.close(flush_timeout_s=0.2)
        return calls, loop.time() - started, subscription.dropped, dropped_by

    calls, took, dropped, dropped_by = asyncio.run(run())

    assert calls == ["closed"]
    assert took < 10
    assert dropped == 4 and dropped_by == ["hangs"] * 4


def test_a_sink_that_raises_loses_only_its_own_events_and_the_others_go_on() -> None:
    async def run() -> tuple[list[int], int, int]:
        hub = EventHub()
        good: list[int] = []

        async def broken(e: Event) -> None:
            raise RuntimeError("sink bug")

        async def fine(e: Event) -> None:
            good.append(e.frame)

        broken_subscription = hub.attach("broken", broken)
        fine_subscription = hub.attach("fine", fine)
        for frame in range(10):
            hub.publish(event(frame))
        await hub.close()
        return good, broken_subscription.delivered, fine_subscription.delivered

    good, broken_delivered, fine_delivered = asyncio.run(run())

    assert good == list(range(10))
    assert (broken_delivered, fine_delivered) == (0, 10)
