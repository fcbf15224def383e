"""Where a stream's events go besides stdout: an MQTT broker and HTTP webhooks, as the VSSStream's
`spec.sinks` asks. Each runs behind the hub's bounded queue of its own (vss_streams.hub), so a broker that is
gone or a webhook that hangs loses its oldest events (vss_stream_sink_dropped_total) and never stalls the
decoder, the model calls or the other sinks.

MQTT: every event is one message, its `Event.to_json()` as compact JSON, on exactly `spec.sinks.mqtt.topic`
(the event carries its stream and kind, so subscribers filter on the payload; one topic keeps ACLs simple), at
the spec's QoS. paho-mqtt's network thread connects in the background and reconnects with capped exponential
backoff, so a broker that is down when the worker starts is reached once it is up; events meanwhile wait in a
backlog, bounded (`max_queued`): past it the oldest is dropped and counted failed, so a dead broker never grows
memory. Events arrive in order (see MqttSink). `mqtts://` uses TLS, verifying the broker's certificate and host
name against the system's CAs or, when VSS_MQTT_CA_FILE names a PEM file, those in it. A username and password,
when the broker wants them, come from VSS_MQTT_USERNAME / VSS_MQTT_PASSWORD (a Secret's env), never the spec,
and are never logged.

Webhooks: each event is one POST of its JSON, with the spec's timeout per attempt. A connection error, a
timeout, a 5xx or a 429 is retried up to `maxRetries` times with capped exponential backoff and full jitter
(the Retry-After of a 429 or 5xx is honoured, capped); any other 4xx is the receiver refusing the event: logged,
counted failed, not retried. An event out of retries is dropped and counted failed. Logs name a webhook by
scheme and host only: a path or query may hold a token.

Metrics, in the worker's registry, labelled {stream, sink} (sink: `mqtt`, `webhook-0`, `webhook-1`, ...):
vss_stream_sink_delivered_total (MQTT: acknowledged by the broker at QoS 1, written to the socket at QoS 0;
webhook: answered 2xx), vss_stream_sink_failed_total (refused or out of retries), vss_stream_sink_retries_total
(webhook attempts after the first); drops for a full queue are the hub's vss_stream_sink_dropped_total."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import os
import random
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client import CollectorRegistry, Counter

from vss_api.vssstream import Mqtt, Sinks, VSSStreamSpec, Webhook
from vss_streams.analytics import Event
from vss_streams.hub import DEFAULT_QUEUE, EventHub

log = logging.getLogger(__name__)

MQTT_CREDENTIAL_ENV = ("VSS_MQTT_USERNAME", "VSS_MQTT_PASSWORD")
MQTT_CA_ENV = "VSS_MQTT_CA_FILE"  # mqtts: a PEM bundle to trust instead of the system's CAs (a private CA)
DEFAULT_MQTT_QUEUE = 10_000  # messages paho holds while the broker is away (each ~300 bytes of JSON)


def _payload(event: Event) -> bytes:
    return json.dumps(event.to_json(), separators=(",", ":")).encode()


def _client_id(stream: str) -> str:
    """Unique per worker (a second client with the same id would kick the first off the broker), <= 23 chars."""
    return f"vss-{stream[:10]}-{os.urandom(4).hex()}"


def _redacted(url: str) -> str:
    """scheme://host[:port] of URL: what a log may say about where events go."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")


class SinkMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["stream", "sink"]
        self.delivered = Counter("vss_stream_sink_delivered_total", "Events a sink delivered (MQTT: acknowledged "
                                 "at QoS 1, sent at QoS 0; webhook: answered 2xx)", labels, registry=registry)
        self.failed = Counter("vss_stream_sink_failed_total", "Events a sink gave up on: refused (a 4xx, a full "
                              "MQTT queue) or out of retries", labels, registry=registry)
        self.retries = Counter("vss_stream_sink_retries_total", "Webhook attempts after the first", labels,
                               registry=registry)


_metrics: weakref.WeakKeyDictionary[CollectorRegistry, SinkMetrics] = weakref.WeakKeyDictionary()
_metrics_lock = threading.Lock()


def sink_metrics(registry: CollectorRegistry) -> SinkMetrics:
    """The sink counters of REGISTRY, registered once however many workers or sinks share it."""
    with _metrics_lock:
        if (metrics := _metrics.get(registry)) is None:
            metrics = _metrics[registry] = SinkMetrics(registry)
        return metrics


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with full jitter: attempt N (from 0) waits uniform(0, min(cap, base * 2**N))."""

    base_s: float = 0.5
    cap_s: float = 30.0
    retry_after_cap_s: float = 60.0  # a Retry-After longer than this is not waited for in full

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.cap_s, self.base_s * 2 ** attempt))  # noqa: S311 (jitter, not crypto)


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date), None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class WebhookSink:
    """POSTs each event to one webhook; `__call__` returns once the event is delivered or given up on."""

    def __init__(self, spec: Webhook, stream: str, name: str, metrics: SinkMetrics,
                 backoff: Backoff = Backoff()) -> None:
        self.spec, self.name, self.backoff = spec, name, backoff
        self.where = _redacted(spec.url)
        self._delivered: Counter = metrics.delivered.labels(stream, name)
        self._failed: Counter = metrics.failed.labels(stream, name)
        self._retries: Counter = metrics.retries.labels(stream, name)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.spec.timeout_seconds),
                                                  headers={"Content-Type": "application/json"})
        return self._session

    async def __call__(self, event: Event) -> None:
        try:
            await self._deliver(_payload(event))
        except asyncio.CancelledError:  # the stream ended while this event was still being tried
            self._failed.inc()
            raise

    async def _deliver(self, body: bytes) -> None:
        for attempt in range(self.spec.max_retries + 1):
            if attempt:
                self._retries.inc()
            retry_after: float | None = None
            try:
                async with self._client().post(self.spec.url, data=body) as reply:
                    await reply.read()
                    status = reply.status
                    if 200 <= status < 300:
                        self._delivered.inc()
                        return
                    if status != 429 and status < 500:
                        self._failed.inc()
                        log.warning("webhook %s (%s) refused an event with HTTP %d: not retried", self.name,
                                    self.where, status)
                        return
                    retry_after = retry_after_seconds(reply.headers.get("Retry-After"))
                    why = f"HTTP {status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                why = type(exc).__name__
            if attempt == self.spec.max_retries:
                break
            wait = self.backoff.delay(attempt)
            if retry_after is not None:
                wait = min(max(wait, retry_after), self.backoff.retry_after_cap_s)
            log.info("webhook %s (%s): %s, retry %d of %d in %.2f s", self.name, self.where, why, attempt + 1,
                     self.spec.max_retries, wait)
            await asyncio.sleep(wait)
        self._failed.inc()
        log.warning("webhook %s (%s): event dropped after %d attempts (%s)", self.name, self.where,
                    self.spec.max_retries + 1, why)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class MqttSink:
    """Hands each event to paho's network thread; `__call__` never waits on the network.

    Order: paho sends a message published before its CONNACK ahead of the ones it held from before, and past its
    in-flight limit lets a new message overtake queued ones; so events wait in a backlog of ours (bounded, the
    oldest dropped and counted failed) until the broker has accepted the connection, and paho's in-flight limit
    is off (paho's own queue stays bounded). Subscribers thus get events in order, except that after a lost
    connection paho resends the unacknowledged ones (QoS 1, flagged dup), which may land after newer ones."""

    def __init__(self, spec: Mqtt, stream: str, metrics: SinkMetrics, name: str = "mqtt", *,
                 max_queued: int = DEFAULT_MQTT_QUEUE, reconnect_min_s: float = 1.0, reconnect_max_s: float = 30.0,
                 keepalive_s: int = 30, flush_timeout_s: float = 3.0) -> None:
        self.spec, self.name, self.flush_timeout_s, self.max_queued = spec, name, flush_timeout_s, max_queued
        parts = urlsplit(spec.url)
        tls = parts.scheme == "mqtts"
        self.host, self.port = parts.hostname or "localhost", parts.port or (8883 if tls else 1883)
        self.where = _redacted(spec.url)
        self._delivered: Counter = metrics.delivered.labels(stream, name)
        self._failed: Counter = metrics.failed.labels(stream, name)
        self._lock = threading.Lock()  # guards the backlog and the counts; never held around a paho call
        self._backlog: deque[bytes] = deque()  # events not yet handed to paho (waiting for a connection)
        self._handed = 0  # taken from the backlog for paho
        self._done = 0  # acknowledged (QoS 1), written to the socket (QoS 0), or refused by paho
        self._idle = threading.Event()  # set while neither the backlog nor paho holds anything of ours
        self._idle.set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.connected = threading.Event()
        self._failing = False  # a failed connect is logged once, until the next successful one
        self._closing = False
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=_client_id(stream),
                                  protocol=mqtt.MQTTv311, clean_session=True)
        username, password = (os.environ.get(key, "") for key in MQTT_CREDENTIAL_ENV)
        if username:
            self.client.username_pw_set(username, password or None)
        if tls:
            self.client.tls_set(ca_certs=os.environ.get(MQTT_CA_ENV) or None)
        self.client.max_queued_messages_set(max_queued)
        self.client.max_inflight_messages_set(0)  # no limit: a limit lets new messages overtake queued ones
        self.client.reconnect_delay_set(min_delay=reconnect_min_s, max_delay=reconnect_max_s)  # type: ignore[arg-type]
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_publish = self._on_publish
        self.client.connect_async(self.host, self.port, keepalive=keepalive_s)
        self.client.loop_start()  # connects, and reconnects with backoff, from its own thread

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.warning("mqtt %s: broker %s refused the connection: %s", self.name, self.where, reason)
            return
        self.connected.set()
        self._failing = False
        log.info("mqtt %s: connected to %s", self.name, self.where)
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._flush)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        if not self._failing:
            self._failing = True
            log.warning("mqtt %s: cannot reach %s; retrying with backoff (events wait, up to the queue's bound)",
                        self.name, self.where)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if self.connected.is_set() and not self._closing:
            log.warning("mqtt %s: lost %s (%s); reconnecting", self.name, self.where, reason)
        self.connected.clear()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        self._delivered.inc()
        self._finished()

    def _finished(self) -> None:
        with self._lock:
            self._done += 1
            if self._done >= self._handed and not self._backlog:
                self._idle.set()

    async def __call__(self, event: Event) -> None:
        self._loop = asyncio.get_running_loop()
        payload = _payload(event)
        with self._lock:
            if len(self._backlog) >= self.max_queued:
                self._backlog.popleft()
                dropped = True
            else:
                dropped = False
            self._backlog.append(payload)
            self._idle.clear()
        if dropped:
            self._failed.inc()
            log.warning("mqtt %s: %s unreachable and %d events wait: the oldest dropped", self.name, self.where,
                        self.max_queued)
        if self.connected.is_set():
            self._flush()

    def _flush(self) -> None:
        """Hand the backlog to paho, oldest first, while connected (on the event loop: one flusher at a time)."""
        while self.connected.is_set():
            with self._lock:
                if not self._backlog:
                    return
                payload = self._backlog.popleft()
                self._handed += 1
            info = self.client.publish(self.spec.topic, payload, qos=self.spec.qos)
            # QoS 1 without a connection is held by paho and sent on reconnect; QoS 0 without one is lost.
            if info.rc == mqtt.MQTT_ERR_SUCCESS or (info.rc == mqtt.MQTT_ERR_NO_CONN and self.spec.qos > 0):
                continue
            self._failed.inc()
            self._finished()
            log.warning("mqtt %s: event not sent to %s: %s", self.name, self.where, mqtt.error_string(info.rc))

    def outstanding(self) -> int:
        """Events not delivered yet: in the backlog, or held by paho (not yet acknowledged at QoS 1)."""
        with self._lock:
            return len(self._backlog) + max(0, self._handed - self._done)

    async def close(self) -> None:
        """Wait up to FLUSH_TIMEOUT_S for what is still held, then disconnect; what is left counts failed."""
        try:
            await asyncio.to_thread(self._idle.wait, self.flush_timeout_s)
        finally:
            # Also when cancelled: the network thread must not outlive the stream (loop_stop joins it, < ~1 s).
            left = self.outstanding()
            if left:
                self._failed.inc(left)
                log.warning("mqtt %s: %d events not delivered to %s before the stream ended", self.name, left,
                            self.where)
            self._closing = True
            self.client.disconnect()
            self.client.loop_stop()


AttachedSink = MqttSink | WebhookSink


def attach_spec_sinks(hub: EventHub, stream: str, sinks: Sinks, registry: CollectorRegistry, *,
                      backoff: Backoff = Backoff(), queue: int = DEFAULT_QUEUE,
                      **mqtt_options: Any) -> list[AttachedSink]:
    """Attach the MQTT broker and the webhooks of SINKS (a VSSStreamSpec's `sinks`) to HUB, each behind a queue
    of QUEUE events. Call it on the event loop that runs the worker, before or while it
    runs: the hub's close() at the end of the stream flushes and closes them. Returns the sinks (each `.name`)."""
    metrics = sink_metrics(registry)
    attached: list[AttachedSink] = []
    if sinks.mqtt is not None:
        mqtt_sink = MqttSink(sinks.mqtt, stream, metrics, **mqtt_options)
        hub.attach(mqtt_sink.name, mqtt_sink, queue, on_close=mqtt_sink.close)
        attached.append(mqtt_sink)
        log.info("events of %s to mqtt %s topic %s (QoS %d)", stream, mqtt_sink.where, sinks.mqtt.topic,
                 sinks.mqtt.qos)
    for index, webhook in enumerate(sinks.webhooks):
        webhook_sink = WebhookSink(webhook, stream, f"webhook-{index}", metrics, backoff)
        hub.attach(webhook_sink.name, webhook_sink, queue, on_close=webhook_sink.close)
        attached.append(webhook_sink)
        log.info("events of %s to webhook %s", stream, webhook_sink.where)
    return attached


class _Worker(Protocol):
    name: str
    hub: EventHub
    registry: CollectorRegistry
    spec: VSSStreamSpec


def attach_worker_sinks(worker: _Worker, **options: Any) -> list[AttachedSink]:
    """The sinks of WORKER's VSSStreamSpec attached to its hub, counted in its registry."""
    return attach_spec_sinks(worker.hub, worker.name, worker.spec.sinks, worker.registry, **options)
