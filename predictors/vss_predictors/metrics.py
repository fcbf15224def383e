"""Prometheus metrics shared by the predictor and transformer processes, labelled by model and version."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class ServingMetrics:
    requests: Counter
    duration: Histogram
    batch_size: Histogram
    gpu_memory: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry = REGISTRY) -> ServingMetrics:
        return cls(
            requests=Counter("inference_requests", "Inference requests by outcome.",
                             ["model_name", "version", "component", "status"], registry=registry),
            duration=Histogram("inference_duration_seconds", "Time spent per request and stage.",
                               ["model_name", "version", "component", "stage"],
                               buckets=LATENCY_BUCKETS, registry=registry),
            batch_size=Histogram("inference_batch_size", "Rows per runtime call after batching.",
                                 ["model_name", "version"], buckets=BATCH_BUCKETS, registry=registry),
            gpu_memory=Gauge("gpu_memory_usage_bytes", "GPU memory held by the runtime.",
                             ["model_name", "version", "device"], registry=registry),
        )
