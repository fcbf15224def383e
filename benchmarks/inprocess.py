"""The served path with the serving taken out: the transformer's own task code (decode, letterbox or
crop, YOLO decode + NMS or top-k) around the predictor's own runtime (`open_runtime`: ONNX Runtime or
OpenVINO, same prelude, same
threads), configured from the same VSSModel YAML that `vss run` reads. This is the ceiling a served
path is measured against, and `model_only` the model's own compute at the chosen input shape."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vss_api.serving_flags import normalization
from vss_api.vssmodel import Task as TaskKind
from vss_api.vssmodel import VSSModel
from vss_predictors.model import PredictorSettings, open_runtime
from vss_predictors.runtime import Runtime
from vss_transformers.images import ImageRequests
from vss_transformers.tasks import ClassificationTask, DetectionTask, ImageTask


@dataclass
class InProcessPipeline:
    runtime: Runtime
    task: ImageTask[Any, Any]
    input_shape: list[int] | None = None

    @classmethod
    def from_spec(cls, spec_path: Path, model_path: Path) -> InProcessPipeline:
        spec = VSSModel.from_yaml_file(spec_path).spec
        runtime = open_runtime(PredictorSettings(
            model_name="in-process", version="v1", model_path=model_path, device=spec.predictor.device.value,
            threads=spec.predictor.threads, runtime=spec.predictor.runtime.value,
            precision=spec.predictor.precision.value, normalization=normalization(spec),
            max_in_flight=spec.predictor.batching.max_in_flight))
        task: ImageTask[Any, Any]
        if spec.task is TaskKind.DETECTION:
            task = DetectionTask(spec.detection, ImageRequests())
        else:
            task = ClassificationTask(spec.classification, ImageRequests())
        task.configure(predictor_config(runtime))
        return cls(runtime, task)

    def run_encoded(self, jpeg: bytes) -> None:
        feeds, context = self.task.prepare([jpeg])
        outputs = self.runtime.run(feeds)
        self.task.v2_outputs(self.task.postprocess(outputs, context))

    def model_only(self, frames: list[bytes]) -> Callable[[bytes], None]:
        """The model alone (its in-graph prelude included) on each frame prepared beforehand: the
        floor under any serving path's latency at this input shape."""
        prepared = {jpeg: self.task.prepare([jpeg])[0] for jpeg in frames}
        self.input_shape = list(next(iter(next(iter(prepared.values())).values())).shape)

        def run(jpeg: bytes) -> None:
            self.runtime.run(prepared[jpeg])

        return run


def predictor_config(runtime: Runtime) -> dict[str, Any]:
    """What the predictor's `/config` route reports, which the transformer configures itself from."""
    return {"inputs": [t.as_v2_metadata() for t in runtime.inputs],
            "outputs": [t.as_v2_metadata() for t in runtime.outputs],
            "parameters": {"providers": list(runtime.info.providers), "metadata": dict(runtime.info.metadata)}}
