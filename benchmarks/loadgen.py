"""Load generators, one process per measurement, printing one JSON object.

`closed` (the default): `concurrency` workers each send a request, wait for its answer and send the
next; first `warmup` requests (not recorded), then exactly `requests` recorded ones, cut short only by
`max_seconds`. `paired` (concurrency 1): the targets take turns, one request each per turn with a short
gap between requests, so every target sees the same moments of a noisy machine and the per-turn
differences measure added latency to the millisecond.

Targets: `inprocess` (the served path's own code, decode → letterbox → ONNX Runtime → NMS, no serving,
in this process), `model` (the model alone on frames prepared beforehand), `grpc` and `rest` (v2, `image`
BYTES in, binary tensors out; lean clients: KServe's generated gRPC stubs and http.client, so the load
generator's own CPU stays small on a 2-core machine), `v1json` (the seed's and KServe docs'
`{"instances": [{"image": {"b64": ...}}]}`), `fastapi` (the Ultralytics peer, benchmarks/peers/ultralytics_app.py:
the JPEG as the POST body, boxes JSON back), and `triton-grpc` / `triton-rest` (tritonclient, in a
process of their own: tritonclient and kserve cannot share one, their protobuf symbols clash).

    python -m benchmarks.loadgen --target grpc --url 127.0.0.1:8081 --model yolo --frames DIR \
        --concurrency 8 --requests 64 --warmup 8
    python -m benchmarks.loadgen --paired '[{"key": "a", "target": "inprocess", ...}, ...]' --frames DIR
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.frames import read_frames

Send = Callable[[bytes], None]
MakeSender = Callable[[], Send]


@dataclass(frozen=True)
class TargetSpec:
    target: str
    url: str = ""
    model: str = ""
    outputs: tuple[str, ...] = ("labels",)
    spec: str = ""
    model_path: str = ""

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> TargetSpec:
        return cls(raw["target"], raw.get("url", ""), raw.get("model", ""), tuple(raw.get("outputs", ["labels"])),
                   raw.get("spec", ""), raw.get("model_path", ""))


def bytes_tensor(items: list[bytes]) -> bytes:
    """v2 BYTES contents: each element as a 4-byte little-endian length, then its bytes."""
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


# One payload as a v2 input: (name, datatype, shape, raw contents).
Tensor = tuple[str, str, list[int], bytes]
Encode = Callable[[bytes], Tensor]


def image_tensor(jpeg: bytes) -> Tensor:
    return "image", "BYTES", [1], bytes_tensor([jpeg])


def grpc_sender(t: TargetSpec, frames: list[bytes], encode: Encode = image_tensor) -> MakeSender:
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]

    def make() -> Send:
        stub = GRPCInferenceServiceStub(grpc.insecure_channel(t.url, options=options))

        def send(payload: bytes) -> None:
            name, datatype, shape, raw = encode(payload)
            request = pb.ModelInferRequest(model_name=t.model, raw_input_contents=[raw])
            request.inputs.add(name=name, datatype=datatype, shape=shape)
            reply = stub.ModelInfer(request, timeout=300)
            missing = set(t.outputs) - {o.name for o in reply.outputs}
            if missing or len(reply.raw_output_contents) != len(reply.outputs):
                raise RuntimeError(f"the answer lacks {sorted(missing)} or its raw contents")

        return send

    return make


def rest_sender(t: TargetSpec, frames: list[bytes], encode: Encode = image_tensor) -> MakeSender:
    host, port = t.url.rsplit(":", 1)

    def make() -> Send:
        conn = http.client.HTTPConnection(host, int(port), timeout=300)

        def send(payload: bytes) -> None:
            name, datatype, shape, data = encode(payload)
            header = json.dumps({
                "inputs": [{"name": name, "shape": shape, "datatype": datatype,
                            "parameters": {"binary_data_size": len(data)}}],
                "outputs": [{"name": n, "parameters": {"binary_data": True}} for n in t.outputs]}).encode()
            conn.request("POST", f"/v2/models/{t.model}/infer", body=header + data,
                         headers={"Content-Type": "application/octet-stream",
                                  "Inference-Header-Content-Length": str(len(header))})
            reply = conn.getresponse()
            body = reply.read()
            if reply.status != 200:
                raise RuntimeError(f"HTTP {reply.status}: {body[:300]!r}")
            size = int(reply.getheader("Inference-Header-Content-Length") or len(body))
            outputs = json.loads(body[:size])["outputs"]
            if sorted(o["name"] for o in outputs) != sorted(t.outputs) or size + sum(
                    o["parameters"]["binary_data_size"] for o in outputs) != len(body):
                raise RuntimeError("the answer's binary outputs do not match what was asked for")

        return send

    return make


def v1json_sender(t: TargetSpec, frames: list[bytes]) -> MakeSender:
    host, port = t.url.rsplit(":", 1)
    bodies = {jpeg: json.dumps({"instances": [{"image": {"b64": base64.b64encode(jpeg).decode()}}]})
              for jpeg in frames}  # the client's base64 + JSON encoding is not the server's cost

    def make() -> Send:
        conn = http.client.HTTPConnection(host, int(port), timeout=300)

        def send(jpeg: bytes) -> None:
            conn.request("POST", f"/v1/models/{t.model}:predict", body=bodies[jpeg],
                         headers={"Content-Type": "application/json"})
            reply = conn.getresponse()
            data = reply.read()
            if reply.status != 200:
                raise RuntimeError(f"HTTP {reply.status}: {data[:300]!r}")
            if "predictions" not in json.loads(data):
                raise RuntimeError("the answer has no 'predictions'")

        return send

    return make


def fastapi_sender(t: TargetSpec, frames: list[bytes]) -> MakeSender:
    """The Ultralytics + FastAPI peer as a user's client calls it: the encoded image as the body."""
    host, port = t.url.rsplit(":", 1)

    def make() -> Send:
        conn = http.client.HTTPConnection(host, int(port), timeout=300)

        def send(jpeg: bytes) -> None:
            conn.request("POST", "/predict", body=jpeg, headers={"Content-Type": "image/jpeg"})
            reply = conn.getresponse()
            data = reply.read()
            if reply.status != 200:
                raise RuntimeError(f"HTTP {reply.status}: {data[:300]!r}")
            if "boxes" not in json.loads(data):
                raise RuntimeError("the answer has no 'boxes'")

        return send

    return make


def triton_grpc_sender(t: TargetSpec, frames: list[bytes]) -> MakeSender:
    import numpy as np
    import tritonclient.grpc as grpcclient

    def make() -> Send:
        client = grpcclient.InferenceServerClient(t.url)

        def send(jpeg: bytes) -> None:
            tensor = grpcclient.InferInput("image", [1], "BYTES")
            tensor.set_data_from_numpy(np.array([jpeg], dtype=np.object_))
            result = client.infer(t.model, [tensor])
            if any(result.as_numpy(name) is None for name in t.outputs):
                raise RuntimeError("the answer lacks an expected output")

        return send

    return make


def triton_rest_sender(t: TargetSpec, frames: list[bytes]) -> MakeSender:
    import numpy as np
    import tritonclient.http as httpclient

    def make() -> Send:  # called on the worker's own thread: the gevent client must stay on it
        client = httpclient.InferenceServerClient(t.url, connection_timeout=300, network_timeout=300)
        requested = [httpclient.InferRequestedOutput(name, binary_data=True) for name in t.outputs]

        def send(jpeg: bytes) -> None:
            tensor = httpclient.InferInput("image", [1], "BYTES")
            tensor.set_data_from_numpy(np.array([jpeg], dtype=np.object_), binary_data=True)
            result = client.infer(t.model, [tensor], outputs=requested)
            if any(result.as_numpy(name) is None for name in t.outputs):
                raise RuntimeError("the answer lacks an expected output")

        return send

    return make


def inprocess_sender(t: TargetSpec, frames: list[bytes]) -> MakeSender:
    """The transformer's and predictor's own code on one ONNX Runtime session, called directly; or,
    for `model`, the session alone on frames prepared beforehand."""
    from benchmarks.inprocess import InProcessPipeline

    pipeline = InProcessPipeline.from_spec(Path(t.spec), Path(t.model_path))
    send = pipeline.model_only(frames) if t.target == "model" else pipeline.run_encoded
    _shapes[t] = pipeline.input_shape
    return lambda: send


_shapes: dict[TargetSpec, list[int] | None] = {}

SENDERS: dict[str, Callable[[TargetSpec, list[bytes]], MakeSender]] = {
    "inprocess": inprocess_sender, "model": inprocess_sender, "grpc": grpc_sender, "rest": rest_sender,
    "v1json": v1json_sender, "fastapi": fastapi_sender, "triton-grpc": triton_grpc_sender,
    "triton-rest": triton_rest_sender,
}


def run_load(make_sender: MakeSender, frames: list[bytes], *, concurrency: int, requests: int,
             warmup: int, max_seconds: float) -> dict[str, Any]:
    """Closed loop; returns latencies (seconds) of the recorded requests and the wall time they took.

    Each worker makes its own client in its own thread (tritonclient.http's gevent client must stay on
    the thread that made it) and keeps it from the warm-up into the recorded phase."""
    lock = threading.Lock()
    state: dict[str, Any] = {"next": 0, "limit": warmup, "errors": 0, "first_error": "", "record": False}
    latencies: list[float] = []
    deadline = [float("inf")]
    barrier = threading.Barrier(concurrency + 1)

    def failed(exc: BaseException) -> None:
        with lock:
            state["errors"] += 1
            state["first_error"] = state["first_error"] or f"{type(exc).__name__}: {exc}"[:500]

    def loop(send: Send) -> None:
        while True:
            with lock:
                i = state["next"]
                if i >= state["limit"] or time.perf_counter() > deadline[0]:
                    return
                state["next"] = i + 1
                record = state["record"]
            started = time.perf_counter()
            try:
                send(frames[i % len(frames)])
            except Exception as exc:
                failed(exc)
                continue
            if record:
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)

    def worker() -> None:
        send: Send | None = None
        try:
            send = make_sender()
            loop(send)
        except Exception as exc:
            failed(exc)
        barrier.wait()  # warm-up over
        barrier.wait()  # recorded phase begins
        if send is not None:
            loop(send)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    barrier.wait()
    warm_errors = state["errors"]
    state.update(next=0, limit=requests, errors=0, record=True)
    started = time.perf_counter()
    deadline[0] = started + max_seconds
    barrier.wait()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {"latencies_s": latencies, "wall_s": wall, "errors": state["errors"], "warmup_errors": warm_errors,
            "first_error": state["first_error"], "truncated": len(latencies) + state["errors"] < requests}


def run_paired(senders: dict[str, Send], frames: list[bytes], *, requests: int, warmup: int, gap_s: float,
               max_seconds: float) -> dict[str, dict[str, Any]]:
    """Turns of one request per target (the order rotating each turn), `gap_s` of quiet after each
    request so that no target's leftover work (a thread pool spinning down) lands on the next one."""
    keys = list(senders)
    out: dict[str, dict[str, Any]] = {k: {"latencies_s": [], "errors": 0, "first_error": "", "wall_s": 0.0}
                                      for k in keys}
    deadline = time.perf_counter() + max_seconds
    for turn in range(-warmup, requests):
        if turn >= 0 and time.perf_counter() > deadline:
            break
        rotation = turn % len(keys)
        for key in keys[rotation:] + keys[:rotation]:
            frame = frames[turn % len(frames)]
            started = time.perf_counter()
            try:
                senders[key](frame)
            except Exception as exc:
                out[key]["errors"] += 1
                out[key]["first_error"] = out[key]["first_error"] or f"{type(exc).__name__}: {exc}"[:500]
                continue
            finally:
                elapsed = time.perf_counter() - started
                time.sleep(gap_s)
            if turn >= 0:
                out[key]["latencies_s"].append(elapsed)
                out[key]["wall_s"] += elapsed  # c=1: busy time is the sum of the latencies
    for result in out.values():
        result["truncated"] = len(result["latencies_s"]) + result["errors"] < requests
    return out


def _own_memory_kb() -> dict[str, int]:
    """VmRSS and VmHWM of this process: for `inprocess`, the whole in-process server's memory."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=list(SENDERS), help="closed loop on this target")
    parser.add_argument("--paired", default="", help="JSON list of {key, target, url, model, ...}")
    parser.add_argument("--url", default="", help="host:port of the server (not for inprocess)")
    parser.add_argument("--model", default="", help="model name on the server")
    parser.add_argument("--outputs", default="labels", help="v2 outputs to ask for (binary) and check")
    parser.add_argument("--spec", default="", help="inprocess: the VSSModel YAML")
    parser.add_argument("--model_path", default="", help="inprocess: the ONNX file")
    parser.add_argument("--frames", type=Path, required=True, help="folder of frame_*.jpg")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--gap_s", type=float, default=0.05, help="paired: quiet after each request")
    parser.add_argument("--max_seconds", type=float, default=120.0)
    args = parser.parse_args(argv)
    frames = read_frames(args.frames)
    if not frames:
        raise SystemExit(f"no frame_*.jpg in {args.frames}")
    if args.paired:
        specs = {item["key"]: TargetSpec.from_json(item) for item in json.loads(args.paired)}
        senders = {key: SENDERS[t.target](t, frames)() for key, t in specs.items()}
        result: dict[str, Any] = {"paired": run_paired(senders, frames, requests=args.requests, warmup=args.warmup,
                                                       gap_s=args.gap_s, max_seconds=args.max_seconds)}
        result["input_shapes"] = {key: _shapes.get(t) for key, t in specs.items() if _shapes.get(t)}
    elif args.target:
        t = TargetSpec(args.target, args.url, args.model, tuple(args.outputs.split(",")), args.spec, args.model_path)
        result = run_load(SENDERS[t.target](t, frames), frames, concurrency=args.concurrency,
                          requests=args.requests, warmup=args.warmup, max_seconds=args.max_seconds)
        if _shapes.get(t):
            result["input_shape"] = _shapes[t]
    else:
        raise SystemExit("give --target or --paired")
    result["loadgen_memory_kb"] = _own_memory_kb()
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
