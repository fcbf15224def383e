"""The KServe docs' custom predictor (`python/custom_model/model.py` and `model_grpc.py` in kserve/kserve),
serving an ONNX model with ONNX Runtime instead of torchvision's AlexNet.

As in the docs: a `kserve.Model` whose synchronous `predict` takes v1 JSON (`{"instances": [{"data":
<nested lists>}]}`, what the docs' transformer sends with `--predictor_protocol v1`) or a v2 `InferRequest`
(`--predictor_protocol grpc-v2`), runs the model on the float tensor it is given, and answers
`{"predictions": output.tolist()}` on v1 and an `InferResponse` on v2. Not crippled: ONNX Runtime with
its default (all-core, fully optimised) session, `as_numpy` on v2 inputs, and binary FP32 outputs on v2.

    python benchmarks/baselines/kserve_docs_predictor.py --model_name yolo --model_path M.onnx \
        --http_port 8085 --grpc_port 8086
"""

from __future__ import annotations

import argparse
import uuid
from typing import Any

import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer, model_server


class OnnxModel(Model):
    def __init__(self, name: str, model_path: str) -> None:
        super().__init__(name)
        self.model_path = model_path
        self.session: ort.InferenceSession | None = None
        self.ready = False

    def load(self) -> bool:
        self.session = ort.InferenceSession(self.model_path, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.ready = True
        return self.ready

    def predict(self, payload: dict[str, Any] | InferRequest, headers: dict[str, str] | None = None,
                response_headers: dict[str, str] | None = None) -> dict[str, Any] | InferResponse:
        assert self.session is not None
        if isinstance(payload, InferRequest):
            tensor = payload.inputs[0].as_numpy()
            output = self.session.run([self.output_name], {self.input_name: tensor})[0]
            infer_output = InferOutput(name=self.output_name, shape=list(output.shape), datatype="FP32")
            infer_output.set_data_from_numpy(output, binary_data=True)
            return InferResponse(model_name=self.name, infer_outputs=[infer_output],
                                 response_id=str(uuid.uuid4()))
        # v1: the transformer already preprocessed the image into nested lists
        tensor = np.asarray([instance["data"] for instance in payload["instances"]], dtype=np.float32)
        output = self.session.run([self.output_name], {self.input_name: tensor})[0]
        return {"predictions": output.tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(parents=[model_server.parser])
    parser.add_argument("--model_path", required=True)
    args, _ = parser.parse_known_args()
    model = OnnxModel(args.model_name, args.model_path)
    model.load()
    ModelServer().start([model])


if __name__ == "__main__":
    main()
