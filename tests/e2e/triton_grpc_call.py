"""Run in a child process: tritonclient.grpc and kserve register clashing protobuf symbols, so the
test process (which imports kserve) calls tritonclient's gRPC client from here. Prints JSON."""

from __future__ import annotations

import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException


def main() -> None:
    url, model, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    payloads = [open(p, "rb").read() for p in sys.argv[4:]]  # noqa: SIM115
    client = grpcclient.InferenceServerClient(url)
    result: dict[str, object] = {"ready": client.is_model_ready(model)}
    if mode == "image":
        tensor = grpcclient.InferInput("image", [len(payloads)], "BYTES")
        tensor.set_data_from_numpy(np.array(payloads, dtype=object))
    elif mode == "pixels-float":
        tensor = grpcclient.InferInput("pixels", [8, 8, 3], "FP32")
        tensor.set_data_from_numpy(np.zeros((8, 8, 3), np.float32))
    else:
        raise SystemExit(f"unknown mode {mode}")
    try:
        reply = client.infer(model, [tensor])
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
