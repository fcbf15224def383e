"""One stream, end to end: decoded frames -> the detection model -> the tracker -> lines and zones -> events to
every sink. The decoder never waits for inference in `live` mode (the newest frame wins), and a model that
does not answer drops frames (counted), it never builds a queue."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import weakref
from collections import Counter as Counter_
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge

from vss_api.vssstream import Direction, VSSStreamSpec
from vss_streams.analytics import Analyzer, Event, TrackedObject
from vss_streams.hub import EventHub, Sink, Subscription
from vss_streams.inference import Detector, ModelUnavailable
from vss_streams.source import Decoder, Frame, FrameSlot, SourceState
from vss_streams.tracking import ObjectTracker

log = logging.getLogger(__name__)

# Called on the event loop after each inferred frame with what was tracked and emitted; it must be quick (the
# preview only keeps a reference and encodes off the loop at its own rate).
FrameListener = Callable[[Frame, list[TrackedObject], list[Event]], None]


class StreamMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["stream"]
        self.frames = Counter("vss_stream_frames_total", "Frames by stage: decoded, sampled, inferred, "
                              "dropped (live: a newer one came first), unanswered (the model did not answer)",
                              [*labels, "stage"], registry=registry)
        self.lag = Gauge("vss_stream_lag_seconds", "Age of the newest inferred frame when its events were out",
                         labels, registry=registry)
        self.reconnects = Counter("vss_stream_reconnects_total", "Times the source was reopened", labels,
                                  registry=registry)
        self.events = Counter("vss_stream_events_total", "Events emitted by kind", [*labels, "kind"],
                              registry=registry)
        self.sink_dropped = Counter("vss_stream_sink_dropped_total", "Events a sink lost because it fell behind "
                                    "(its queue was full)", [*labels, "sink"], registry=registry)


_stream_metrics: weakref.WeakKeyDictionary[CollectorRegistry, StreamMetrics] = weakref.WeakKeyDictionary()
_stream_metrics_lock = threading.Lock()


def stream_metrics(registry: CollectorRegistry) -> StreamMetrics:
    """The stream counters of REGISTRY, registered once however many workers of one process share it."""
    with _stream_metrics_lock:
        if (metrics := _stream_metrics.get(registry)) is None:
            metrics = _stream_metrics[registry] = StreamMetrics(registry)
        return metrics


# What a report keeps of a stream that runs for days: the newest events and lags only (memory stays flat).
REPORT_KEEPS = 10_000


@dataclass
class StreamReport:
    """What a finished (or stopped) run saw: totals, and the newest REPORT_KEEPS events and lags."""

    frames_inferred: int = 0
    frames_dropped_model: int = 0
    events_total: int = 0
    # (line, direction, class) -> crossings, all of them (the Analyzer's, as the run ended)
    line_counts: Counter_[tuple[str, Direction, str]] = field(default_factory=Counter_)
    events: deque[Event] = field(default_factory=lambda: deque(maxlen=REPORT_KEEPS))
    # seconds from decode to events out, per inferred frame
    lags: deque[float] = field(default_factory=lambda: deque(maxlen=REPORT_KEEPS))


class StreamWorker:
    def __init__(self, name: str, spec: VSSStreamSpec, client: Detector, *,
                 sinks: list[Sink] | None = None, registry: CollectorRegistry | None = None,
                 class_names: tuple[str, ...] = ("person", "vehicle", "object"),
                 credentials: tuple[str, str] = ("", "")) -> None:
        self.name, self.spec, self.client = name, spec, client
        self.hub = EventHub()
        self.hub.on_drop = self._sink_dropped
        self._pending_sinks = list(enumerate(sinks or []))
        self.frame_listeners: list[FrameListener] = []
        self.state = SourceState()
        self.registry = registry or CollectorRegistry()
        self.metrics = stream_metrics(self.registry)
        self.tracker = ObjectTracker(spec.tracking, class_names, spec.sampling.fps)
        self.analyzer = Analyzer(name, spec.analytics, min_track_age=spec.tracking.min_track_age,
                                 forget_after_frames=spec.tracking.lost_track_buffer)
        self.report = StreamReport()
        self._credentials = credentials
        self._reported = {"decoded": 0, "sampled": 0, "dropped": 0, "reconnects": 0}
        self._decoder: Decoder | None = None

    def reconfigure(self, spec: VSSStreamSpec) -> None:
        """New lines and zones apply from the next frame; decoding and tracking go on."""
        self.analyzer.reconfigure(spec.analytics)
        self.spec = spec

    def stop(self) -> None:
        """Ends `run()` (a live source never ends by itself): the decoder stops at its next frame, or once a
        blocked open or read gives up, and `run()` returns its report after the sinks are flushed."""
        if self._decoder is not None:
            self._decoder.stop(timeout=0)

    async def run(self) -> StreamReport:
        slot = FrameSlot(self.spec.sampling.mode, asyncio.get_running_loop(), self.state)
        decoder = Decoder(self.spec.source, self.spec.sampling, slot, self.state, credentials=self._credentials)
        self._decoder = decoder
        for index, sink in self._pending_sinks:
            self.hub.attach(f"sink-{index}", sink)
        decoder.start()
        try:
            while (frame := await slot.get()) is not None:
                await self._process(frame)
                self._export_source_metrics()
        finally:
            decoder.stop()
            self._export_source_metrics()
            self.report.line_counts = Counter_(self.analyzer.line_counts)
            await self.hub.close()
        return self.report

    def _sink_dropped(self, subscription: Subscription) -> None:
        self.metrics.sink_dropped.labels(self.name, subscription.name).inc()

    async def _process(self, frame: Frame) -> None:
        try:
            [detections], _ = await self.client.detect([frame.pixels])
        except ModelUnavailable as exc:
            self.report.frames_dropped_model += 1
            self.metrics.frames.labels(self.name, "unanswered").inc()
            log.warning("frame %d dropped: the model did not answer (%s)", frame.index, exc)
            return
        tracked = self.tracker.update(detections, frame.time)
        height, width = frame.pixels.shape[:2]
        events = self.analyzer.update(tracked, width, height, frame.time, frame.index)
        for event in events:
            self.metrics.events.labels(self.name, event.kind.value).inc()
            self.hub.publish(event)
        for listener in self.frame_listeners:
            listener(frame, tracked, events)
        self.report.events.extend(events)
        self.report.events_total += len(events)
        self.report.frames_inferred += 1
        self.metrics.frames.labels(self.name, "inferred").inc()
        lag = time.monotonic() - frame.received
        self.report.lags.append(lag)
        self.metrics.lag.labels(self.name).set(lag)

    def _export_source_metrics(self) -> None:
        for stage, value in (("decoded", self.state.frames_decoded), ("sampled", self.state.frames_sampled),
                             ("dropped", self.state.frames_dropped)):
            self.metrics.frames.labels(self.name, stage).inc(value - self._reported[stage])
            self._reported[stage] = value
        self.metrics.reconnects.labels(self.name).inc(self.state.reconnects - self._reported["reconnects"])
        self._reported["reconnects"] = self.state.reconnects


def json_lines_sink(write: Callable[[str], object]) -> Sink:
    """Events as JSON lines (stdout for `vss stream`, a file, a pipe)."""
    async def sink(event: Event) -> None:
        write(json.dumps(event.to_json(), separators=(",", ":")) + "\n")
    return sink
