"""The stream's sinks against real servers on loopback: a real Mosquitto broker (started by the test on a free
port from a generated config) read by a real paho subscriber, and real aiohttp webhook servers that fail, refuse
or hang on purpose. Events are synthetic `Event`s published into a real StreamWorker's hub (the worker is not
run, so no video is decoded and no model is called): what is under test is the sinks, their retries and
reconnects, the hub's bounded queues and the counters in the worker's registry. The last test runs the whole
path instead: a real `vss stream` process on a generated clip against a real `vss run` of the shipped detector.

Nothing sleeps and then asserts: every wait is on a condition with a deadline, generous enough for a loaded
2-core machine. A missing `mosquitto` binary fails these tests (apt-get install mosquitto), it never skips."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from aiohttp import web
from paho.mqtt.enums import CallbackAPIVersion

from tests.e2e.serving import REPO, Served, free_port
from vss_api.vssstream import Direction, VSSStreamSpec
from vss_models.clips import crossing_clip, write_clip
from vss_streams.analytics import Event, EventKind
from vss_streams.inference import DetectionClient
from vss_streams.sinks import Backoff, MqttSink, attach_worker_sinks
from vss_streams.worker import StreamWorker

DEADLINE_S = 60.0  # for anything that should take well under a second on an idle machine
FAST_BACKOFF = Backoff(base_s=0.01, cap_s=0.05)


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        pytest.fail("the MQTT sink tests need Mosquitto's broker binary `mosquitto` on PATH or in /usr/sbin: "
                    "apt-get install mosquitto (they start their own broker; the system service is not used)")
    return found


@dataclass
class Broker:
    port: int
    settings: str = "allow_anonymous true\n"  # after the listener line: auth, TLS
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    def start(self, workdir: Path) -> None:
        config = workdir / f"mosquitto-{self.port}.conf"
        # As root, Mosquitto would drop to its own user, which cannot read the test's private tmp directory.
        user = "user root\n" if os.geteuid() == 0 else ""
        config.write_text(f"listener {self.port} 127.0.0.1\n{self.settings}persistence false\n{user}"
                          "log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n")
        self.log = workdir / f"mosquitto-{self.port}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen([mosquitto_binary(), "-c", str(config)], stdout=out,
                                            stderr=subprocess.STDOUT)
        end = time.monotonic() + DEADLINE_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.process.returncode}: {self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > end:
                    raise TimeoutError(f"mosquitto not listening on {self.port}: {self.log.read_text()}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def broker(workdir: Path, start: bool = True, settings: str = "allow_anonymous true\n") -> Iterator[Broker]:
    running = Broker(free_port(), settings)
    try:
        if start:
            running.start(workdir)
        yield running
    finally:
        running.stop()


@dataclass
class Subscriber:
    """A real paho client subscribed to TOPIC at QoS 1: every message's JSON, in arrival order."""

    port: int
    topic: str
    credentials: tuple[str, str] | None = None
    ca_file: Path | None = None
    received: list[dict[str, Any]] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)
    _client: mqtt.Client | None = None

    def __enter__(self) -> Subscriber:
        subscribed = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-sub-{self.port}")

        def on_connect(c: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
            c.subscribe(self.topic, qos=1)

        def on_subscribe(c: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
            subscribed.set()

        def on_message(c: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
            with self._changed:
                self.received.append(json.loads(message.payload))
                self._changed.notify_all()

        client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
        if self.credentials is not None:
            client.username_pw_set(*self.credentials)
        if self.ca_file is not None:
            client.tls_set(ca_certs=str(self.ca_file))
        client.connect("127.0.0.1", self.port)
        client.loop_start()
        self._client = client
        assert subscribed.wait(DEADLINE_S), "the test's subscriber was not subscribed in time"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._client is not None
        self._client.disconnect()
        self._client.loop_stop()

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool], what: str) -> list[dict[str, Any]]:
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(self.received), timeout=DEADLINE_S):
                raise AssertionError(f"{what}: not within {DEADLINE_S}s; received {len(self.received)}")
            return list(self.received)


def events(n: int, stream: str = "sinks", start: int = 0) -> list[Event]:
    """N events of every kind, each frame numbered: what a subscriber gets can be compared one by one."""
    made = []
    for frame in range(start, start + n):
        kind = list(EventKind)[frame % 4]
        made.append(Event(stream, kind, "road" if kind is EventKind.LINE_CROSSED else "door", "person",
                          frame // 3, frame / 15, frame, (10.0 + frame, 20.0, 110.5, 220.25),
                          direction=Direction.IN if kind is EventKind.LINE_CROSSED else None,
                          dwell_seconds=2.5 if kind is EventKind.ZONE_DWELL else None))
    return made


@asynccontextmanager
async def worker_with(sinks: dict[str, Any], stream: str = "sinks") -> AsyncIterator[StreamWorker]:
    """A StreamWorker (not run: its hub and registry are used as the worker uses them) whose spec has SINKS."""
    spec = VSSStreamSpec.model_validate({"source": {"url": "file:///clips/none.mp4"}, "model": {"name": "d"},
                                         "sinks": sinks})
    client = DetectionClient("127.0.0.1:9", "d")
    try:
        yield StreamWorker(stream, spec, client)
    finally:
        await client.close()


def metric(worker: StreamWorker, name: str, sink: str) -> float:
    value = worker.registry.get_sample_value(name, {"stream": worker.name, "sink": sink})
    return 0.0 if value is None else value


async def until(condition: Callable[[], bool], what: str, deadline_s: float = DEADLINE_S) -> None:
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not within {deadline_s}s")
        await asyncio.sleep(0.01)


@asynccontextmanager
async def webhook_server(handler: Callable[[web.Request], Any]) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/hook", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}/hook?token=secret-in-query"
    finally:
        await runner.cleanup()


# --- MQTT ---------------------------------------------------------------------------------------------------


async def test_a_real_subscriber_receives_exactly_the_published_events_in_order_with_their_json_fields(
        tmp_path: Path) -> None:
    with broker(tmp_path) as running, Subscriber(running.port, "vss/events") as subscriber:
        async with worker_with({"mqtt": {"url": f"mqtt://127.0.0.1:{running.port}", "topic": "vss/events",
                                         "qos": 1}}) as worker:
            [sink] = attach_worker_sinks(worker)
            sent = events(300)
            for event in sent:
                worker.hub.publish(event)
                await asyncio.sleep(0)
            await worker.hub.close(flush_timeout_s=DEADLINE_S)  # the sink waits for the broker's acks

            received = await asyncio.to_thread(subscriber.wait_for, lambda got: len(got) >= len(sent),
                                               "all 300 events at the subscriber")

            assert received == [e.to_json() for e in sent]
            assert received[0] == {"stream": "sinks", "kind": "lineCrossed", "line": "road", "class": "person",
                                   "trackId": 0, "time": 0.0, "frame": 0, "box": [10.0, 20.0, 110.5, 220.2],
                                   "direction": "in"}
            assert received[3]["kind"] == "zoneDwell" and received[3]["dwellSeconds"] == 2.5
            assert metric(worker, "vss_stream_sink_delivered_total", sink.name) == 300
            assert metric(worker, "vss_stream_sink_failed_total", sink.name) == 0
            assert metric(worker, "vss_stream_sink_dropped_total", sink.name) == 0


async def test_a_broker_that_comes_up_after_the_sink_gets_the_events_published_once_it_is_up(
        tmp_path: Path) -> None:
    with broker(tmp_path, start=False) as late:
        async with worker_with({"mqtt": {"url": f"mqtt://127.0.0.1:{late.port}", "topic": "vss/late"}}) as worker:
            [sink] = attach_worker_sinks(worker, reconnect_min_s=0.1, reconnect_max_s=0.5)
            assert isinstance(sink, MqttSink)
            before = events(5)
            for event in before:  # QoS 1 while the broker is down: held (bounded) by paho, not lost
                worker.hub.publish(event)
            await until(lambda: sink.outstanding() == 5, "the 5 early events held by paho")
            assert not sink.connected.is_set()

            await asyncio.to_thread(late.start, tmp_path)
            with Subscriber(late.port, "vss/late") as subscriber:
                await until(sink.connected.is_set, "the sink reconnected to the broker started after it")
                after = events(20, start=5)
                for event in after:
                    worker.hub.publish(event)
                    await asyncio.sleep(0)
                await worker.hub.close(flush_timeout_s=DEADLINE_S)

                received = await asyncio.to_thread(
                    subscriber.wait_for, lambda got: bool(got) and got[-1]["frame"] == 24, "the last event")

            # Every event published once the broker was up arrives, in order; the 5 held ones were sent on
            # reconnect, possibly before the subscriber was subscribed, so they are there or not, in order.
            frames = [m["frame"] for m in received]
            assert frames[-20:] == list(range(5, 25))
            assert frames == sorted(frames) and set(frames) <= set(range(25))
            assert metric(worker, "vss_stream_sink_delivered_total", sink.name) == 25  # the broker acked all
            assert metric(worker, "vss_stream_sink_failed_total", sink.name) == 0


async def test_a_broker_that_never_comes_up_bounds_what_the_sink_holds_and_counts_the_rest_failed(
        tmp_path: Path) -> None:
    port = free_port()
    async with worker_with({"mqtt": {"url": f"mqtt://127.0.0.1:{port}", "topic": "vss/none"}}) as worker:
        [sink] = attach_worker_sinks(worker, max_queued=50, reconnect_min_s=0.1, reconnect_max_s=0.2,
                                     flush_timeout_s=0.2)
        for event in events(200):
            worker.hub.publish(event)
            await asyncio.sleep(0)
        await until(lambda: metric(worker, "vss_stream_sink_failed_total", "mqtt") == 150, "150 refused")
        assert isinstance(sink, MqttSink) and sink.outstanding() == 50
        await worker.hub.close(flush_timeout_s=DEADLINE_S)

        assert metric(worker, "vss_stream_sink_failed_total", "mqtt") == 200  # the 50 held ones too, at the end
        assert metric(worker, "vss_stream_sink_delivered_total", "mqtt") == 0


def password_file(workdir: Path, username: str, password: str) -> Path:
    tool = shutil.which("mosquitto_passwd") or shutil.which("mosquitto_passwd", path="/usr/sbin:/usr/local/sbin")
    if tool is None:
        pytest.fail("`mosquitto_passwd` (package mosquitto) is needed to test broker credentials")
    path = workdir / "passwords"
    subprocess.run([tool, "-b", "-c", str(path), username, password], check=True, capture_output=True)
    return path


async def test_credentials_from_the_env_reach_a_broker_that_requires_them_and_never_the_logs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    secret = "pa55-w0rd-never-logged"
    passwords = password_file(tmp_path, "camera-7", secret)
    settings = f"allow_anonymous false\npassword_file {passwords}\n"
    caplog.set_level("DEBUG")
    with broker(tmp_path, settings=settings) as running, \
            Subscriber(running.port, "vss/auth", credentials=("camera-7", secret)) as subscriber:
        monkeypatch.setenv("VSS_MQTT_USERNAME", "camera-7")
        monkeypatch.setenv("VSS_MQTT_PASSWORD", secret)
        async with worker_with({"mqtt": {"url": f"mqtt://127.0.0.1:{running.port}", "topic": "vss/auth"}}) as worker:
            attach_worker_sinks(worker)
            for event in events(10):
                worker.hub.publish(event)
            await worker.hub.close(flush_timeout_s=DEADLINE_S)
            received = await asyncio.to_thread(subscriber.wait_for, lambda got: len(got) >= 10, "10 events")
            assert [m["frame"] for m in received] == list(range(10))
            assert metric(worker, "vss_stream_sink_delivered_total", "mqtt") == 10

        monkeypatch.setenv("VSS_MQTT_PASSWORD", "wrong-" + secret)
        async with worker_with({"mqtt": {"url": f"mqtt://127.0.0.1:{running.port}", "topic": "vss/auth"}}) as worker:
            [sink] = attach_worker_sinks(worker, flush_timeout_s=0.2, reconnect_min_s=0.1, reconnect_max_s=0.2)
            worker.hub.publish(events(1)[0])
            await until(lambda: "refused the connection" in caplog.text, "the refusal logged")
            await worker.hub.close(flush_timeout_s=DEADLINE_S)
            assert isinstance(sink, MqttSink) and not sink.connected.is_set()
            assert metric(worker, "vss_stream_sink_delivered_total", "mqtt") == 0
            assert metric(worker, "vss_stream_sink_failed_total", "mqtt") == 1

    assert secret not in caplog.text


def self_signed(workdir: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (its IP in subjectAltName, as host name checks want) and its key."""
    cert, key = workdir / "broker.crt", workdir / "broker.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True)
    return cert, key


async def test_mqtts_publishes_over_tls_to_a_broker_whose_certificate_the_ca_file_vouches_for(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = self_signed(tmp_path)
    settings = f"allow_anonymous true\ncertfile {cert}\nkeyfile {key}\n"
    with broker(tmp_path, settings=settings) as running, \
            Subscriber(running.port, "vss/tls", ca_file=cert) as subscriber:
        monkeypatch.setenv("VSS_MQTT_CA_FILE", str(cert))
        async with worker_with({"mqtt": {"url": f"mqtts://127.0.0.1:{running.port}", "topic": "vss/tls"}}) as worker:
            attach_worker_sinks(worker)
            for event in events(10):
                worker.hub.publish(event)
            await worker.hub.close(flush_timeout_s=DEADLINE_S)
            received = await asyncio.to_thread(subscriber.wait_for, lambda got: len(got) >= 10, "10 events")
            assert [m["frame"] for m in received] == list(range(10))
            assert metric(worker, "vss_stream_sink_delivered_total", "mqtt") == 10


# paho 2.2 leaves the SSL socket of a failed handshake to the garbage collector (closed there, with a
# ResourceWarning that pytest turns into an error): a warning about paho, not what this test is about.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning", "ignore::ResourceWarning")
async def test_mqtts_sends_nothing_to_a_broker_whose_certificate_nothing_vouches_for(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    cert, key = self_signed(tmp_path)
    settings = f"allow_anonymous true\ncertfile {cert}\nkeyfile {key}\n"
    with broker(tmp_path, settings=settings) as running, \
            Subscriber(running.port, "vss/tls", ca_file=cert) as subscriber:
        monkeypatch.delenv("VSS_MQTT_CA_FILE", raising=False)  # the system's CAs do not know this one
        async with worker_with({"mqtt": {"url": f"mqtts://127.0.0.1:{running.port}", "topic": "vss/tls"}}) as worker:
            [sink] = attach_worker_sinks(worker, flush_timeout_s=0.5, reconnect_min_s=0.1, reconnect_max_s=0.2)
            worker.hub.publish(events(1, start=10)[0])
            await until(lambda: "cannot reach" in caplog.text, "the failed handshake logged")
            await worker.hub.close(flush_timeout_s=DEADLINE_S)
            assert isinstance(sink, MqttSink) and not sink.connected.is_set()
            assert metric(worker, "vss_stream_sink_failed_total", "mqtt") == 1
            assert metric(worker, "vss_stream_sink_delivered_total", "mqtt") == 0
        assert subscriber.received == []


# --- Webhooks -----------------------------------------------------------------------------------------------


async def test_a_webhook_that_answers_503_twice_then_200_gets_the_event_once_delivered_after_two_retries() -> None:
    bodies: list[dict[str, Any]] = []

    async def flaky(request: web.Request) -> web.Response:
        bodies.append(await request.json())
        return web.Response(status=503 if len(bodies) <= 2 else 200)

    async with webhook_server(flaky) as url, worker_with({"webhooks": [{"url": url, "maxRetries": 5}]}) as worker:
        attach_worker_sinks(worker, backoff=FAST_BACKOFF)
        [event] = events(1)
        worker.hub.publish(event)
        await worker.hub.close(flush_timeout_s=DEADLINE_S)

    assert bodies == [event.to_json()] * 3  # two 503s, then the 200: the same event each time
    assert metric(worker, "vss_stream_sink_delivered_total", "webhook-0") == 1
    assert metric(worker, "vss_stream_sink_retries_total", "webhook-0") == 2
    assert metric(worker, "vss_stream_sink_failed_total", "webhook-0") == 0


async def test_a_webhook_that_answers_400_is_not_retried_and_the_event_counts_failed(
        caplog: pytest.LogCaptureFixture) -> None:
    requests = 0

    async def refuses(request: web.Request) -> web.Response:
        nonlocal requests
        requests += 1
        return web.Response(status=400, text="bad event")

    caplog.set_level("INFO", logger="vss_streams")
    async with webhook_server(refuses) as url, worker_with({"webhooks": [{"url": url}]}) as worker:
        attach_worker_sinks(worker, backoff=FAST_BACKOFF)
        for event in events(2):
            worker.hub.publish(event)
        await worker.hub.close(flush_timeout_s=DEADLINE_S)

    assert requests == 2  # one each, no retry
    assert metric(worker, "vss_stream_sink_failed_total", "webhook-0") == 2
    assert metric(worker, "vss_stream_sink_retries_total", "webhook-0") == 0
    assert metric(worker, "vss_stream_sink_delivered_total", "webhook-0") == 0
    assert "HTTP 400" in caplog.text and "secret-in-query" not in caplog.text  # the URL's query is never logged


async def test_a_webhook_out_of_retries_drops_the_event_and_counts_it_failed() -> None:
    requests = 0

    async def down(request: web.Request) -> web.Response:
        nonlocal requests
        requests += 1
        return web.Response(status=502)

    async with webhook_server(down) as url, worker_with({"webhooks": [{"url": url, "maxRetries": 3}]}) as worker:
        attach_worker_sinks(worker, backoff=FAST_BACKOFF)
        worker.hub.publish(events(1)[0])
        await worker.hub.close(flush_timeout_s=DEADLINE_S)

    assert requests == 4
    assert metric(worker, "vss_stream_sink_retries_total", "webhook-0") == 3
    assert metric(worker, "vss_stream_sink_failed_total", "webhook-0") == 1


async def test_a_429_with_retry_after_is_retried_no_sooner_than_it_asks() -> None:
    seen: list[float] = []

    async def throttles(request: web.Request) -> web.Response:
        seen.append(time.monotonic())
        if len(seen) == 1:
            return web.Response(status=429, headers={"Retry-After": "1"})
        return web.Response(status=204)

    async with webhook_server(throttles) as url, worker_with({"webhooks": [{"url": url}]}) as worker:
        attach_worker_sinks(worker, backoff=FAST_BACKOFF)  # its own delays are ~10 ms: the header rules
        worker.hub.publish(events(1)[0])
        await worker.hub.close(flush_timeout_s=DEADLINE_S)

    assert len(seen) == 2 and seen[1] - seen[0] >= 0.95
    assert metric(worker, "vss_stream_sink_delivered_total", "webhook-0") == 1


async def test_a_refused_connection_is_retried_then_dropped_and_counted() -> None:
    url = f"http://127.0.0.1:{free_port()}/nobody-listens"
    async with worker_with({"webhooks": [{"url": url, "maxRetries": 2}]}) as worker:
        attach_worker_sinks(worker, backoff=FAST_BACKOFF)
        worker.hub.publish(events(1)[0])
        await worker.hub.close(flush_timeout_s=DEADLINE_S)

    assert metric(worker, "vss_stream_sink_retries_total", "webhook-0") == 2
    assert metric(worker, "vss_stream_sink_failed_total", "webhook-0") == 1


async def test_a_webhook_that_hangs_loses_its_oldest_events_counted_while_the_other_sinks_get_every_event(
        tmp_path: Path) -> None:
    n, queue = 2000, 16
    hung = asyncio.Event()
    never = asyncio.Event()

    async def hangs(request: web.Request) -> web.Response:
        hung.set()
        await never.wait()  # never answers while the stream runs
        return web.Response(status=200)

    # The broker holds what the test's subscriber has not taken yet, however much (mosquitto's default keeps 1000
    # per client and drops the rest): what is measured is our sinks, not a slow subscriber on a busy CI machine.
    unbounded = "allow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 0\n"
    with broker(tmp_path, settings=unbounded) as running, Subscriber(running.port, "vss/hang") as subscriber:
        async with webhook_server(hangs) as url, worker_with({
                "mqtt": {"url": f"mqtt://127.0.0.1:{running.port}", "topic": "vss/hang"},
                "webhooks": [{"url": url, "timeoutSeconds": 60, "maxRetries": 0}]}) as worker:
            attach_worker_sinks(worker, queue=queue)
            fast: list[int] = []

            async def fast_sink(event: Event) -> None:
                fast.append(event.frame)

            worker.hub.attach("fast", fast_sink)
            lags: list[float] = []
            loop = asyncio.get_running_loop()

            async def ticker() -> None:  # how late the loop runs a 10 ms timer: a stalled loop shows here
                while True:
                    due = loop.time() + 0.01
                    await asyncio.sleep(0.01)
                    lags.append(loop.time() - due)

            ticking = asyncio.create_task(ticker())
            sent = events(n)
            started = time.monotonic()
            worker.hub.publish(sent[0])
            await asyncio.wait_for(hung.wait(), DEADLINE_S)  # the webhook holds the first event, stuck
            for event in sent[1:]:  # ~1 ms apart: a stream's pace, while the webhook never answers
                worker.hub.publish(event)
                await asyncio.sleep(0.001)
            await until(lambda: len(fast) == n, f"all {n} events at the fast sink")
            took = time.monotonic() - started
            received = await asyncio.to_thread(subscriber.wait_for, lambda got: len(got) >= n,
                                               f"all {n} events at the MQTT subscriber")
            ticking.cancel()
            # The hung webhook holds event 0; its queue kept the newest 16; the 1983 in between were dropped.
            assert metric(worker, "vss_stream_sink_dropped_total", "webhook-0") == n - 1 - queue
            await worker.hub.close(flush_timeout_s=0.5)  # still hung: cancelled, what it held is accounted for
            never.set()

    assert fast == list(range(n))
    assert [m["frame"] for m in received] == list(range(n))
    assert metric(worker, "vss_stream_sink_dropped_total", "webhook-0") == n - 1  # the 16 queued, at the end
    assert metric(worker, "vss_stream_sink_failed_total", "webhook-0") == 1  # the one it was stuck on
    assert metric(worker, "vss_stream_sink_delivered_total", "webhook-0") == 0
    assert metric(worker, "vss_stream_sink_dropped_total", "mqtt") == 0
    assert metric(worker, "vss_stream_sink_dropped_total", "fast") == 0
    assert took < DEADLINE_S and max(lags) < 2.0, (took, max(lags))


# --- Through `vss stream` -----------------------------------------------------------------------------------


async def test_vss_stream_sends_every_event_it_prints_to_the_spec_mqtt_broker_and_webhook_in_order(
        shipped_detector: Served, tmp_path: Path) -> None:
    """A real `vss stream` process on a generated clip, its frames inferred by the shipped detector of a real
    `vss run examples/detection.yaml`: the events it prints on stdout are exactly, in order, what a subscriber
    of the spec's MQTT topic and the spec's webhook receive."""
    clip = await asyncio.to_thread(write_clip, crossing_clip(frames=150), tmp_path / "crossing.mp4")
    bodies: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        bodies.append(await request.json())
        return web.Response(status=204)

    with broker(tmp_path) as running, Subscriber(running.port, "vss/crossing") as subscriber:
        async with webhook_server(hook) as url:
            example = yaml.safe_load((REPO / "examples" / "stream-crossing.yaml").read_text())
            example["spec"]["source"]["url"] = f"file://{clip}"
            example["spec"]["sinks"] = {"mqtt": {"url": f"mqtt://127.0.0.1:{running.port}",
                                                 "topic": "vss/crossing"}, "webhooks": [{"url": url}]}
            stream_file = tmp_path / "stream.yaml"
            stream_file.write_text(yaml.safe_dump(example))
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "vss_cli.main", "stream", str(stream_file),
                "--model-grpc", shipped_detector.grpc_url, cwd=REPO,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=240)
        assert process.returncode == 0, stderr.decode()
        printed = [json.loads(line) for line in stdout.decode().splitlines()]
        received = await asyncio.to_thread(subscriber.wait_for, lambda got: len(got) >= len(printed),
                                           "every printed event at the MQTT subscriber")

    assert any(e["kind"] == "lineCrossed" for e in printed), stderr.decode()
    assert received == printed  # the worker's own hub: delivered before `vss stream` exited
    assert bodies == printed


def test_without_a_mosquitto_binary_the_mqtt_tests_fail_saying_what_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)
    with pytest.raises(pytest.fail.Exception, match="apt-get install mosquitto"):
        mosquitto_binary()
