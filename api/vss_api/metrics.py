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
