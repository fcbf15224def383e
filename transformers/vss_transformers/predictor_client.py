"""The transformer's side of the hop to the predictor: gRPC v2 with raw binary tensor contents (no JSON,
one copy per tensor) carrying the request id and trace context as metadata (the caller's, or the current span's
when the request is traced), and the predictor's `/config` read once at start-up."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

import grpc
import numpy as np
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

from vss_api.request_context import TRACE_HEADERS, RequestContext
from vss_api.tracing import inject
from vss_api.v2 import NUMPY_DTYPES, V2_DATATYPES, Array
from vss_transformers.errors import PredictorTimeout, PredictorUnavailable

log = logging.getLogger(__name__)


def encode_request(model_name: str, feeds: Mapping[str, Array], request_id: str = "") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model_name, id=request_id)
    for name, array in feeds.items():
        request.inputs.add(name=name, datatype=V2_DATATYPES[array.dtype], shape=list(array.shape))
        request.raw_input_contents.append(np.ascontiguousarray(array).tobytes())
    return request


def decode_response(response: pb.ModelInferResponse) -> dict[str, Array]:
    out: dict[str, Array] = {}
    for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=True):
        out[tensor.name] = np.frombuffer(raw, dtype=NUMPY_DTYPES[tensor.datatype]).reshape(tensor.shape)
    return out


# While the predictor is down, calls fail at once with UNAVAILABLE (a 503), and the channel tries to reconnect
# on its own. gRPC's default backoff (1 s, growing 1.6-fold to 120 s) would leave it answering 503 for up to
# half a minute after a predictor that took a minute to restart is back; capped at 1 s, it serves within a second.
# (Not grpc.min_reconnect_backoff_ms: that is also the connect timeout, 20 s, which a busy predictor may need.)
RECONNECT_BACKOFF = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 1000)]


class PredictorClient:
    def __init__(self, *, model_name: str, grpc_target: str, rest_base: str, timeout_s: float,
                 max_message_bytes: int) -> None:
        self.model_name = model_name
        self.grpc_target = grpc_target
        self.rest_base = rest_base.rstrip("/")
        self.timeout_s = timeout_s
        self._options = [("grpc.max_send_message_length", max_message_bytes),
                         ("grpc.max_receive_message_length", max_message_bytes),
                         *RECONNECT_BACKOFF]
        self._channel: grpc.aio.Channel | None = None
        self._stub: GRPCInferenceServiceStub | None = None
        self._closed = False
        self._closing: asyncio.Task[None] | None = None

    def fetch_config(self, deadline_s: float) -> dict[str, Any]:
        """The predictor's model configuration; retried with backoff while it is still loading."""
        url = f"{self.rest_base}/v2/models/{self.model_name}/config"
        end = time.monotonic() + deadline_s
        delay = 0.2
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as reply:  # noqa: S310 - our own predictor
                    config: dict[str, Any] = json.loads(reply.read())
                    return config
            except (urllib.error.URLError, OSError, json.JSONDecodeError) as exc:
                if time.monotonic() + delay > end:
                    raise PredictorUnavailable(
                        f"predictor at {url} not ready after {deadline_s:.0f}s: {exc}") from exc
                log.info("waiting for the predictor", extra={"url": url, "error": str(exc)})
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def infer_blocking(self, feeds: Mapping[str, Array]) -> dict[str, Array]:
        """One synchronous call, for warm-up before the event loop runs."""
        with grpc.insecure_channel(self.grpc_target, options=self._options) as channel:
            stub = GRPCInferenceServiceStub(channel)
            return decode_response(stub.ModelInfer(encode_request(self.model_name, feeds),
                                                   timeout=self.timeout_s))

    def hop_timeout_s(self, deadline: float | None, now: float) -> float:
        """How long one call may take: the predictor timeout, or what is left of the request's deadline if less
        (the predictor gets it as the call's gRPC deadline, and drops the request if it has not started it)."""
        return self.timeout_s if deadline is None else min(self.timeout_s, deadline - now)

    async def infer(self, feeds: Mapping[str, Array], context: RequestContext | None = None, *,
                    deadline: float | None = None) -> tuple[dict[str, Array], dict[str, str]]:
        """The predictor's outputs, and the trace headers it echoed (its initial metadata). `deadline` is the
        request's, a `time.monotonic()` instant."""
        if self._closed:
            raise PredictorUnavailable("the transformer is shutting down")
        timeout_s = self.hop_timeout_s(deadline, time.monotonic())
        if timeout_s <= 0:
            raise PredictorTimeout("the request's deadline passed before it was sent to the predictor")
        if self._stub is None:  # the aio channel must be made inside the serving event loop
            self._channel = grpc.aio.insecure_channel(self.grpc_target, options=self._options)
            self._stub = GRPCInferenceServiceStub(self._channel)
        request = encode_request(self.model_name, feeds, context.request_id if context else "")
        headers = context.headers() if context else {}
        inject(headers)
        metadata = tuple(headers.items()) or None
        try:
            call = self._stub.ModelInfer(request, metadata=metadata, timeout=timeout_s)
            response = await call
            echoed = {key: value for key, value in (await call.initial_metadata() or ())
                      if key in TRACE_HEADERS and isinstance(value, str)}
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                which = "the predictor timeout" if timeout_s == self.timeout_s else "the request's deadline"
                raise PredictorTimeout(f"predictor did not answer within {timeout_s:.3f}s ({which}): "
                                       f"{exc.details()}") from exc
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                raise PredictorUnavailable(f"predictor unavailable: {exc.details()}") from exc
            raise
        return decode_response(response), echoed

    def close(self) -> None:
        """Refuse new calls and close the channel, letting calls in flight finish within their own deadline.
        Called from `TransformerModel.stop()` on the serving loop's thread, which owns the channel: the close
        runs there as a task (`aclose` awaits it). A second call does nothing."""
        self._closed = True
        channel, self._channel, self._stub = self._channel, None, None
        if channel is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # the loop that made the channel has ended: grpc frees it when it is collected
            return
        self._closing = loop.create_task(channel.close(grace=self.timeout_s), name="vss-predictor-channel-close")

    async def aclose(self) -> None:
        self.close()
        if self._closing is not None:
            await self._closing
