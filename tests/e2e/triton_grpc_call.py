"""Run in a child process: tritonclient.grpc and kserve register clashing protobuf symbols, so the
test process (which imports kserve) calls tritonclient's gRPC client from here. Prints JSON."""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException


def main() -> None:
    url, model, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    payloads = [open(p, "rb").read() for p in sys.argv[4:]]  # noqa: SIM115
    client = grpcclient.InferenceServerClient(url)
    result: dict[str, object] = {"ready": client.is_model_ready(model)}
    # What tritonclient sends on its own for each option of infer(...), and a custom parameter no task takes.
    options: dict[str, Any] = {
        "image-with-client-options": {"timeout": 30_000_000, "priority": 2, "sequence_id": 9, "sequence_start": True},
        "image-with-unknown-parameter": {"parameters": {"confidenceThreshold": "abc"}},
    }.get(mode, {})
    if mode == "image" or options:
        tensor = grpcclient.InferInput("image", [len(payloads)], "BYTES")
        tensor.set_data_from_numpy(np.array(payloads, dtype=object))
    elif mode == "pixels-float":
        tensor = grpcclient.InferInput("pixels", [8, 8, 3], "FP32")
        tensor.set_data_from_numpy(np.zeros((8, 8, 3), np.float32))
    else:
        raise SystemExit(f"unknown mode {mode}")
    try:
        reply = client.infer(model, [tensor], **options)
    except InferenceServerException as exc:
        result.update(error=exc.message(), status=exc.status())
    else:
        for name in ("boxes", "scores", "class_ids", "num_detections", "labels"):
            array = reply.as_numpy(name)
            if array is not None:
                result[name] = [[v.decode() for v in row] for row in array] if name == "labels" else array.tolist()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
