"""Steady closed-loop load on a transformer from client threads (v2 REST over http.client, v2 gRPC over KServe's
generated stubs), each call recorded with when it started and ended and how it ended, so a test can read, after
a fault, what every call in flight at that moment got."""

from __future__ import annotations

import http.client
import json
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import grpc
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

OK = "ok"
UNAVAILABLE = "unavailable"  # 503 / UNAVAILABLE from the transformer: it runs, the predictor does not answer
CONNECTION = "connection"  # no answer from the transformer at all: refused, reset, closed
HANG_GUARD_S = 30.0
RETRY_PAUSE_S = 0.01
# The clients retry a dead transformer quickly, so the test sees the moment it is back.
CLIENT_CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                          ("grpc.max_reconnect_backoff_ms", 500)]


@dataclass(frozen=True)
class Call:
    client: int
    protocol: str
    started: float
    ended: float
    outcome: str
    detail: str = ""

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    def in_flight_at(self, moment: float) -> bool:
        return self.started < moment < self.ended


class Client(Protocol):
    """One client of the load: `send` one request and say how it ended; `close` what it holds."""

    def send(self) -> tuple[str, str]: ...

    def close(self) -> None: ...


class RestClient:
    """v2 REST with the binary extension over one keep-alive connection, made again after it broke."""

    def __init__(self, url: str, model: str, image: bytes, expected_label: str) -> None:
        self.host, port = url.rsplit(":", 1)
        self.port = int(port)
        self.model = model
        self.expected_label = expected_label
        element = struct.pack("<I", len(image)) + image
        header = json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                         "parameters": {"binary_data_size": len(element)}}]}).encode()
        self.body = header + element
        self.header_length = str(len(header))
        self.conn: list[http.client.HTTPConnection] = []

    def close(self) -> None:
        while self.conn:
            self.conn.pop().close()

    def send(self) -> tuple[str, str]:
        conn = self.conn
        if not conn:
            conn.append(http.client.HTTPConnection(self.host, self.port, timeout=HANG_GUARD_S))
        try:
            conn[0].request("POST", f"/v2/models/{self.model}/infer", body=self.body,
                            headers={"Content-Type": "application/octet-stream",
                                     "Inference-Header-Content-Length": self.header_length})
            reply = conn[0].getresponse()
            body = reply.read()
        except (ConnectionError, http.client.HTTPException) as exc:  # refused, reset, closed mid-answer
            conn.pop().close()
            return CONNECTION, f"{type(exc).__name__}: {exc}"
        except TimeoutError as exc:
            conn.pop().close()
            return "hang", str(exc)
        if reply.will_close:
            conn.pop().close()
        if reply.status == 503:
            return UNAVAILABLE, body.decode(errors="replace")[:200]
        if reply.status != 200:
            return f"http {reply.status}", body.decode(errors="replace")[:200]
        labels = next(o for o in json.loads(body)["outputs"] if o["name"] == "labels")["data"]
        return (OK, "") if labels[0] == self.expected_label else ("wrong answer", str(labels))


class GrpcClient:
    """v2 gRPC on one channel (KServe's generated stub), raw BYTES contents."""

    def __init__(self, url: str, model: str, image: bytes, expected_label: str) -> None:
        self.channel = grpc.insecure_channel(url, options=CLIENT_CHANNEL_OPTIONS)
        self.stub = GRPCInferenceServiceStub(self.channel)
        self.expected_label = expected_label
        self.request = pb.ModelInferRequest(model_name=model,
                                            raw_input_contents=[struct.pack("<I", len(image)) + image])
        self.request.inputs.add(name="image", datatype="BYTES", shape=[1])

    def close(self) -> None:
        self.channel.close()

    def send(self) -> tuple[str, str]:
        try:
            reply = self.stub.ModelInfer(self.request, timeout=HANG_GUARD_S)
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""
            if code == grpc.StatusCode.UNAVAILABLE:  # ours name the predictor; grpc's own, the connection
                return (UNAVAILABLE if "predictor" in details else CONNECTION), details[:200]
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return "hang", details[:200]
            return f"grpc {code.name}", details[:200]
        index = [o.name for o in reply.outputs].index("labels")
        raw = reply.raw_output_contents[index]
        label = raw[4:4 + struct.unpack("<I", raw[:4])[0]].decode()
        return (OK, "") if label == self.expected_label else ("wrong answer", label)


@dataclass
class SteadyLoad:
    """Client threads sending one request after another until `stop()`; `calls` lists the finished ones."""

    clients: list[tuple[str, Client]]
    calls: list[Call] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> SteadyLoad:
        for index, (protocol, client) in enumerate(self.clients):
            thread = threading.Thread(target=self._loop, args=(index, protocol, client), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _loop(self, index: int, protocol: str, client: Client) -> None:
        try:
            while not self._stopping.is_set():
                started = time.monotonic()
                outcome, detail = client.send()
                call = Call(index, protocol, started, time.monotonic(), outcome, detail)
                with self._lock:
                    self.calls.append(call)
                if outcome == CONNECTION:  # a refused connection answers at once: retry as a client would
                    self._stopping.wait(RETRY_PAUSE_S)
        finally:
            client.close()

    def snapshot(self) -> list[Call]:
        with self._lock:
            return list(self.calls)

    def started_after(self, moment: float) -> list[Call]:
        return [c for c in self.snapshot() if c.started > moment]

    def wait_for(self, what: str, enough: Callable[[list[Call]], bool], deadline_s: float = 60.0) -> list[Call]:
        """Poll the finished calls until `enough(calls)`; fail after `deadline_s`."""
        end = time.monotonic() + deadline_s
        while True:
            calls = self.snapshot()
            if enough(calls):
                return calls
            if time.monotonic() > end:
                outcomes = sorted({c.outcome for c in calls})
                raise TimeoutError(f"{what}: not after {deadline_s:.0f}s ({len(calls)} calls, outcomes {outcomes})")
            time.sleep(0.05)

    def stop(self) -> list[Call]:
        """Stop the threads (each ends within its call's hang guard) and return every call."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=HANG_GUARD_S + 10)
            assert not thread.is_alive(), "a client thread hangs past its call's timeout"
        return self.snapshot()


def outcomes(calls: list[Call]) -> dict[str, int]:
    counted: dict[str, int] = {}
    for call in calls:
        counted[call.outcome] = counted.get(call.outcome, 0) + 1
    return counted
