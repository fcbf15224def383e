"""The time-series models measured through the served path: `vss run` starts the predictor and the
transformer as real processes (the flags a pod gets), and held-out windows go to the transformer over
KServe v2 REST with binary tensors (tritonclient.http). Also the served-vs-in-process parity (ONNX
Runtime in this process plus the transformer's own post-processing) and the throughput at concurrency 8
against the same work done in-process by 8 threads."""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import numpy.typing as npt
import yaml

from vss_models.launch import Endpoint, vss_run
from vss_models.timeseries.sensors import F32

__all__ = ["Endpoint", "vss_run"]  # re-exported for vss_models.timeseries.evaluation

CONCURRENCY = 8


def with_version(example: Path, version: str, store: Path, folder: Path) -> Path:
    """A copy of a VSSModel YAML that serves `version`, every storage URI pointing at the file of the
    same name in `store` (the model directory under evaluation)."""
    document = yaml.safe_load(example.read_text())
    for entry in document["spec"]["versions"]:
        entry["storageUri"] = str((store / Path(urlparse(entry["storageUri"]).path).name).resolve())
    document["spec"]["version"] = version
    path = folder / f"{example.stem}-{version}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def infer_v2(client: Any, model: str, windows: F32, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
    """One v2 request with binary tensors: `series` in, `outputs` back as numpy arrays."""
    from tritonclient import http as triton

    tensor = triton.InferInput("series", list(windows.shape), "FP32")
    tensor.set_data_from_numpy(np.ascontiguousarray(windows, dtype=np.float32), binary_data=True)
    wanted = [triton.InferRequestedOutput(name, binary_data=True) for name in outputs]
    result = client.infer(model, [tensor], outputs=wanted)
    return {name: result.as_numpy(name) for name in outputs}


def infer_all(endpoint: Endpoint, windows: F32, outputs: tuple[str, ...],
              batch: int = 32) -> dict[str, np.ndarray]:
    """Every window through the served path, `batch` windows per request."""
    from tritonclient import http as triton

    client = triton.InferenceServerClient(endpoint.url, network_timeout=120.0, connection_timeout=30.0)
    parts: dict[str, list[np.ndarray]] = {n: [] for n in outputs}
    try:
        for start in range(0, len(windows), batch):
            for name, value in infer_v2(client, endpoint.name, windows[start:start + batch], outputs).items():
                parts[name].append(value)
    finally:
        client.close()
    return {n: np.concatenate(v) for n, v in parts.items()}


@dataclass(frozen=True)
class Throughput:
    concurrency: int
    requests: int
    windows_per_request: int
    served_per_s: float
    in_process_per_s: float
    served_p50_ms: float
    served_p95_ms: float

    @property
    def ratio(self) -> float:
        return self.served_per_s / self.in_process_per_s

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "ratio": self.ratio}


def _timed_pool(call: Callable[[int], object], requests: int, concurrency: int) -> tuple[float, list[float]]:
    latencies: list[float] = []

    def one(i: int) -> None:
        started = time.perf_counter()
        call(i)
        latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, range(requests)))
    return time.perf_counter() - started, latencies


def throughput(endpoint: Endpoint, windows: F32, outputs: tuple[str, ...],
               in_process: Callable[[F32], object], *, requests: int = 400,
               concurrency: int = CONCURRENCY) -> Throughput:
    """Requests of one window each, `concurrency` at a time: through `vss run`, and through
    `in_process` (the model and the transformer's own pre/post-processing, no network)."""
    from tritonclient import http as triton

    local = threading.local()
    clients: list[Any] = []

    def served(i: int) -> None:
        if not hasattr(local, "client"):  # one connection per client thread, as 8 callers would have
            local.client = triton.InferenceServerClient(endpoint.url, network_timeout=60.0)
            clients.append(local.client)
        infer_v2(local.client, endpoint.name, windows[i % len(windows)][None], outputs)

    try:
        served(0)  # connect and warm up
        served_s, latencies = _timed_pool(served, requests, concurrency)
    finally:
        for client in clients:
            client.close()
    in_process(windows[:1])
    local_s, _ = _timed_pool(lambda i: in_process(windows[i % len(windows)][None]), requests, concurrency)
    ms = np.array(latencies) * 1000
    return Throughput(concurrency, requests, 1, requests / served_s, requests / local_s,
                      float(np.percentile(ms, 50)), float(np.percentile(ms, 95)))


def parity(served: Mapping[str, npt.NDArray[Any]], local: Mapping[str, npt.NDArray[Any]]) -> dict[str, float]:
    """Largest absolute difference per numeric output (0 for equal BYTES/BOOL outputs, inf otherwise)."""
    out: dict[str, float] = {}
    for name, value in served.items():
        expected = local[name]
        if value.dtype.kind in "OSUb":
            out[name] = 0.0 if np.array_equal(value.astype(expected.dtype), expected) else float("inf")
        else:
            out[name] = float(np.abs(value.astype(np.float64) - expected.astype(np.float64)).max())
    return out


def scratch_folder() -> Path:
    return Path(tempfile.mkdtemp(prefix="vss-timeseries-"))
