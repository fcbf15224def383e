"""Frames to the detection VSSModel over v2 gRPC: RGB pixels as one raw UINT8 tensor (`pixels`, no JPEG
round trip, no JSON), answers read from `boxes`, `scores`, `labels`, `num_detections`. Several frames (of
several streams) go as one batch when they are ready together."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import grpc
import numpy as np
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from numpy.typing import NDArray

from vss_streams.tracking import FrameDetections

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class ModelUnavailable(Exception):
    """The model did not answer: the frame is dropped and counted, never queued without bound."""


def infer_request(model_name: str, frames: Sequence[NDArray[np.uint8]]) -> pb.ModelInferRequest:
    batch = np.ascontiguousarray(np.stack(frames)) if len(frames) > 1 else np.ascontiguousarray(frames[0])[None]
    request = pb.ModelInferRequest(model_name=model_name)
    request.inputs.add(name="pixels", datatype="UINT8", shape=list(batch.shape))
    request.raw_input_contents.append(batch.tobytes())
    return request


_DTYPES = {"FP32": np.float32, "INT32": np.int32, "INT64": np.int64}


def parse_response(response: pb.ModelInferResponse) -> tuple[list[FrameDetections], list[list[str]]]:
    """Each frame's detections and its labels, in request order."""
    tensors: dict[str, NDArray[np.generic]] = {}
    labels: list[bytes] = []
    for output, raw in zip(response.outputs, response.raw_output_contents, strict=True):
        if output.datatype == "BYTES":
            labels = _bytes_elements(raw)
            continue
        tensors[output.name] = np.frombuffer(raw, _DTYPES[output.datatype]).reshape(tuple(output.shape))
    counts = tensors["num_detections"].astype(int)
    k = tensors["boxes"].shape[1] if tensors["boxes"].ndim == 3 else 0
    frames, names = [], []
    for i, n in enumerate(counts):
        frames.append(FrameDetections(tensors["boxes"][i, :n].astype(np.float32),
                                      tensors["scores"][i, :n].astype(np.float32),
                                      tensors["class_ids"][i, :n].astype(np.int32)))
        names.append([labels[i * k + j].decode() for j in range(n)] if labels else [])
    return frames, names


def _bytes_elements(raw: bytes) -> list[bytes]:
    """v2 raw BYTES: each element a 4-byte little-endian length and its bytes."""
    out, at = [], 0
    while at < len(raw):
        size = int.from_bytes(raw[at:at + 4], "little")
        out.append(raw[at + 4:at + 4 + size])
        at += 4 + size
    return out


class DetectionClient:
    def __init__(self, target: str, model_name: str, timeout_s: float = 5.0) -> None:
        self.model_name = model_name
        self.timeout_s = timeout_s
        self._channel = grpc.aio.insecure_channel(target, options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)])
        self._stub = GRPCInferenceServiceStub(self._channel)

    async def detect(self, frames: Sequence[NDArray[np.uint8]]) -> tuple[list[FrameDetections], list[list[str]]]:
        try:
            response = await self._stub.ModelInfer(infer_request(self.model_name, frames), timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise ModelUnavailable(f"{exc.code().name}: {exc.details()}") from exc
        return parse_response(response)

    async def close(self) -> None:
        await self._channel.close()


class Detector(Protocol):
    async def detect(self, frames: Sequence[NDArray[np.uint8]]
                     ) -> tuple[list[FrameDetections], list[list[str]]]: ...


@dataclass(eq=False)
class _Pending:
    frames: list[NDArray[np.uint8]] = field(default_factory=list)
    answers: list[asyncio.Future[tuple[FrameDetections, list[str]]]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class FrameBatcher:
    """The frames of several streams held by one worker, sent to the model as one batch when they are ready
    together: a frame waits at most `max_delay_s` for others of its size, a batch holds at most `max_batch`.
    One model call per batch instead of one per frame: fewer round trips, and the predictor's own batching
    gets full batches. A failed call fails every frame in it (each is dropped and counted by its stream)."""

    def __init__(self, client: Detector, max_batch: int = 8, max_delay_s: float = 0.005) -> None:
        self.client, self.max_batch, self.max_delay_s = client, max_batch, max_delay_s
        self._pending: dict[tuple[int, ...], _Pending] = {}
        self._calls: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.frames = 0

    async def detect(self, frames: Sequence[NDArray[np.uint8]]
                     ) -> tuple[list[FrameDetections], list[list[str]]]:
        loop = asyncio.get_running_loop()
        answers = []
        for pixels in frames:
            pending = self._pending.setdefault(pixels.shape, _Pending())
            answer: asyncio.Future[tuple[FrameDetections, list[str]]] = loop.create_future()
            pending.frames.append(pixels)
            pending.answers.append(answer)
            answers.append(answer)
            if len(pending.frames) >= self.max_batch:
                self._flush(pixels.shape)
            elif pending.timer is None:
                pending.timer = loop.call_later(self.max_delay_s, self._flush, pixels.shape)
        done = await asyncio.gather(*answers)
        return [d for d, _ in done], [n for _, n in done]

    def _flush(self, shape: tuple[int, ...]) -> None:
        pending = self._pending.pop(shape, None)
        if pending is None:
            return
        if pending.timer is not None:
            pending.timer.cancel()
        task = asyncio.get_running_loop().create_task(self._call(pending))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _call(self, pending: _Pending) -> None:
        self.batches += 1
        self.frames += len(pending.frames)
        try:
            detections, names = await self.client.detect(pending.frames)
        except Exception as exc:  # every waiting frame gets the model's failure
            for answer in pending.answers:
                if not answer.done():
                    answer.set_exception(exc)
            return
        for answer, found, labels in zip(pending.answers, detections, names, strict=True):
            if not answer.done():
                answer.set_result((found, labels))
