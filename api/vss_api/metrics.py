"""The serving metrics' names, labels and label values: what the predictor and the transformer export
(`serving_metrics`) and the operator's canary analysis queries. Plain constants: the operator reads them too."""

from __future__ import annotations

from typing import Literal

LABELS = ("model_name", "version", "component")  # on every series; plus `status` or `stage`

# Names as Prometheus stores them (a Counter named `inference_requests` is exposed as `..._total`).
REQUESTS = "inference_requests"
REQUESTS_TOTAL = f"{REQUESTS}_total"
DURATION = "inference_duration_seconds"
BATCH_SIZE = "inference_batch_size"
GPU_MEMORY = "gpu_memory_usage_bytes"
QUEUE_DEPTH = "inference_queue_depth"  # the predictor's requests waiting for a batch (queued or being gathered)

Component = Literal["predictor", "transformer"]
PREDICTOR: Component = "predictor"
TRANSFORMER: Component = "transformer"

# `status` of `inference_requests_total`: a client error is the caller's, a server error the model's.
Status = Literal["success", "client_error", "server_error"]
SUCCESS: Status = "success"
CLIENT_ERROR: Status = "client_error"
SERVER_ERROR: Status = "server_error"
STATUSES: tuple[Status, ...] = (SUCCESS, CLIENT_ERROR, SERVER_ERROR)

# `stage` of `inference_duration_seconds`, per component; WHOLE_REQUEST is the stage that spans a request.
PREDICTOR_STAGES = ("predict",)
TRANSFORMER_STAGES = ("preprocess", "predict", "postprocess", "total")
WHOLE_REQUEST: dict[Component, str] = {PREDICTOR: "predict", TRANSFORMER: "total"}

# The transformer's result cache (`transformer.cache`), labelled model_name and version; the hit ratio is
# hits / (hits + misses). An error is a Redis call that failed or took longer than timeoutMs (by `reason`);
# bypassed counts the calls left out while the breaker was open after one.
CACHE_HITS = "result_cache_hits"
CACHE_MISSES = "result_cache_misses"
CACHE_ERRORS = "result_cache_errors"
CACHE_BYPASSED = "result_cache_bypassed"
CACHE_STORES = "result_cache_stores"
CACHE_TOO_LARGE = "result_cache_too_large"
CACHE_BREAKER_OPEN = "result_cache_breaker_open"
CacheErrorReason = Literal["timeout", "connection", "redis", "corrupt"]
CACHE_ERROR_REASONS: tuple[CacheErrorReason, ...] = ("timeout", "connection", "redis", "corrupt")
