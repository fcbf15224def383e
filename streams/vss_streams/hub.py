"""Events of a stream fanned out to every sink, each through a bounded queue of its own: a slow or broken sink
(a webhook that times out, an MQTT broker that is gone, a WebSocket client on a bad link) loses its oldest
events, counted per sink, and never stalls the worker, the decoder or the other sinks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from vss_streams.analytics import Event

log = logging.getLogger(__name__)

Sink = Callable[[Event], Awaitable[None]]
DEFAULT_QUEUE = 1024


@dataclass(eq=False)
class Subscription:
    """One sink's view of the events: `get()` the next one; `dropped` counts what overflowed."""

    name: str
    maxsize: int = DEFAULT_QUEUE
    dropped: int = 0
    delivered: int = 0
    _queue: asyncio.Queue[Event | None] = field(init=False)

    def __post_init__(self) -> None:
        self._queue = asyncio.Queue(self.maxsize + 1)  # +1: room for the end-of-stream marker

    def offer(self, event: Event | None) -> None:
        while self._queue.qsize() >= self.maxsize and event is not None:
            self._queue.get_nowait()  # the oldest goes: the newest events matter most to a live view
            self.dropped += 1
        self._queue.put_nowait(event)

    async def get(self) -> Event | None:
        """The next event, or None once the stream has ended."""
        return await self._queue.get()

    def pending(self) -> int:
        return self._queue.qsize()


class EventHub:
    def __init__(self) -> None:
        self._subscriptions: list[Subscription] = []
        self._tasks: dict[asyncio.Task[None], Subscription] = {}
        self.closed = False
        self.on_drop: Callable[[Subscription], None] | None = None

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        return tuple(self._subscriptions)

    def subscribe(self, name: str, maxsize: int = DEFAULT_QUEUE) -> Subscription:
        subscription = Subscription(name, maxsize)
        if self.closed:
            subscription.offer(None)
        self._subscriptions.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with contextlib.suppress(ValueError):
            self._subscriptions.remove(subscription)

    def publish(self, event: Event) -> None:
        """Never blocks: each subscription takes the event or drops its oldest to make room. Once closed, a
        no-op (the end marker stays the last thing each subscription gets)."""
        if self.closed:
            return
        for subscription in self._subscriptions:
            before = subscription.dropped
            subscription.offer(event)
            if subscription.dropped != before and self.on_drop is not None:
                self.on_drop(subscription)

    def attach(self, name: str, sink: Sink, maxsize: int = DEFAULT_QUEUE,
               on_close: Callable[[], Awaitable[None]] | None = None) -> Subscription:
        """Run SINK on every event from a task of its own; a sink that raises loses that event (logged).
        ON_CLOSE (release a connection, flush) runs once the sink has had the last event, or when close() gives
        up on it."""
        subscription = self.subscribe(name, maxsize)

        async def drain() -> None:
            try:
                while (event := await subscription.get()) is not None:
                    try:
                        await sink(event)
                        subscription.delivered += 1
                    except Exception:  # a sink's failure is its own; the stream goes on
                        log.exception("sink %s failed on an event", name)
            finally:
                if on_close is not None:
                    try:
                        await on_close()
                    except Exception:
                        log.exception("sink %s failed to close", name)

        self._tasks[asyncio.get_running_loop().create_task(drain(), name=f"vss-sink-{name}")] = subscription
        return subscription

    async def close(self, flush_timeout_s: float = 5.0) -> None:
        """End of stream: every subscription gets the end marker; attached sinks get FLUSH_TIMEOUT_S to finish
        what they hold, then are cancelled: the events still queued for them count as dropped."""
        self.closed = True
        for subscription in self._subscriptions:
            subscription.offer(None)
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=flush_timeout_s)
        for task in pending:
            subscription = self._tasks[task]
            left = max(0, subscription.pending() - 1)  # all but the end marker (gone if it was taken)
            log.warning("sink %s did not finish within %.1f s of the end of the stream: cancelled, %d events "
                        "it had not taken dropped", subscription.name, flush_timeout_s, left)
            task.cancel()
            subscription.dropped += left
            if self.on_drop is not None:
                for _ in range(left):
                    self.on_drop(subscription)
        await asyncio.gather(*pending, return_exceptions=True)
        self._tasks.clear()
