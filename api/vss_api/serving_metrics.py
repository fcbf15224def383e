"""The prometheus-client objects both serving processes export the serving metrics with (names and label
values from `vss_api.metrics`), and the GPU memory gauge read from NVML at scrape time."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from vss_api.metrics import (
    BATCH_SIZE,
    DURATION,
    GPU_MEMORY,
    PREDICTOR,
    PREDICTOR_STAGES,
    QUEUE_DEPTH,
    REQUESTS,
    STATUSES,
    TRANSFORMER_STAGES,
    Component,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class ServingMetrics:
    requests: Counter
    duration: Histogram
    batch_size: Histogram
    gpu_memory: Gauge
    queue_depth: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry = REGISTRY) -> ServingMetrics:
        return cls(
            requests=Counter(REQUESTS, "Inference requests by outcome.",
                             ["model_name", "version", "component", "status"], registry=registry),
            duration=Histogram(DURATION, "Time spent per request and stage.",
                               ["model_name", "version", "component", "stage"],
                               buckets=LATENCY_BUCKETS, registry=registry),
            batch_size=Histogram(BATCH_SIZE, "Rows per runtime call after batching.",
                                 ["model_name", "version"], buckets=BATCH_BUCKETS, registry=registry),
            gpu_memory=Gauge(GPU_MEMORY, "GPU memory held by the runtime.",
                             ["model_name", "version", "device"], registry=registry),
            queue_depth=Gauge(QUEUE_DEPTH, "Requests waiting in the predictor's batcher, not yet running "
                              "(what max_queue_size bounds).", ["model_name", "version"], registry=registry),
        )

    def start_counting(self, model_name: str, version: str, component: Component) -> None:
        """Create every outcome's and stage's series at zero: `increase()` over a series that starts at its
        first increment misses that increment, and a canary's first error or slow request must not go unseen."""
        for status in STATUSES:
            self.requests.labels(model_name=model_name, version=version, component=component, status=status)
        for stage in PREDICTOR_STAGES if component == PREDICTOR else TRANSFORMER_STAGES:
            self.duration.labels(model_name=model_name, version=version, component=component, stage=stage)


log = logging.getLogger(__name__)


def process_gpu_memory_bytes() -> float:
    """GPU memory held by this process on every device, read from NVML at scrape time."""
    import pynvml

    total = 0
    for index in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if proc.pid == os.getpid() and proc.usedGpuMemory:
                total += int(proc.usedGpuMemory)
    return float(total)


def track_gpu_memory(metrics: ServingMetrics, model_name: str, version: str) -> bool:
    """Export `gpu_memory_usage_bytes` when an NVIDIA driver answers; on CPU machines no series appears
    (a zero would read as 'uses no memory')."""
    try:
        import pynvml

        pynvml.nvmlInit()
        name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
    except Exception as exc:  # pynvml raises NVMLError_LibraryNotFound & co without a driver
        log.info("no NVIDIA driver: gpu_memory_usage_bytes not exported", extra={"reason": str(exc)})
        return False
    device = name.decode() if isinstance(name, bytes) else str(name)
    metrics.gpu_memory.labels(model_name=model_name, version=version, device=device).set_function(
        process_gpu_memory_bytes)
    return True
