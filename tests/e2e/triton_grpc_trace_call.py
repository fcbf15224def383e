"""Run in a child process (tritonclient.grpc and kserve register clashing protobuf symbols): one image sent over
gRPC with a request id and trace metadata, twice. First through tritonclient's client, which gives the response
but not its metadata; then through tritonclient's own stub with `with_call`, which gives the initial metadata
too. Prints JSON.

    python -m tests.e2e.triton_grpc_trace_call URL MODEL REQUEST_ID IMAGE_FILE [KEY=VALUE ...]"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import serialize_byte_tensor


def main() -> None:
    url, model, request_id, image_file = sys.argv[1:5]
    metadata = dict(item.split("=", 1) for item in sys.argv[5:])
    image = np.array([Path(image_file).read_bytes()], dtype=object)

    client = grpcclient.InferenceServerClient(url)
    tensor = grpcclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(image)
    reply = client.infer(model, [tensor], request_id=request_id, headers=metadata)

    request = service_pb2.ModelInferRequest(model_name=model, id=request_id)
    request.inputs.add(name="image", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(serialize_byte_tensor(image).item())
    with grpc.insecure_channel(url) as channel:
        response, call = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer.with_call(
            request, metadata=tuple(metadata.items()), timeout=30)
        initial = {key: value for key, value in call.initial_metadata()}
    print(json.dumps({"client_id": reply.get_response().id, "stub_id": response.id, "initial_metadata": initial,
                      "labels": [v.decode() for v in reply.as_numpy("labels")[0]]}))


if __name__ == "__main__":
    main()
