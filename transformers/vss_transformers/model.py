"""The transformer as a KServe `Model`: v2 tensors (`image` BYTES or `pixels` UINT8) and the seed's v1
JSON in, task results out; the model itself runs in the predictor, one gRPC hop away."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import kserve
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferRequest, InferResponse

from vss_api.errors import InvalidRequest
from vss_api.metrics import CLIENT_ERROR, SERVER_ERROR, SUCCESS, TRANSFORMER, Status
from vss_api.server import binary_output
from vss_api.serving_metrics import ServingMetrics
from vss_transformers.predictor_client import PredictorClient
from vss_transformers.tasks import Task

log = logging.getLogger(__name__)


class TransformerModel(kserve.Model):
    def __init__(self, name: str, version: str, task: Task, client: PredictorClient,
                 metrics: ServingMetrics, *, predictor_wait_s: float = 300.0) -> None:
        super().__init__(name)
        self.version = version
        self.task = task
        self.client = client
        self.metrics = metrics
        self.predictor_wait_s = predictor_wait_s
        self._labels = {"model_name": name, "version": version, "component": TRANSFORMER}

    def load(self) -> bool:
        config = self.client.fetch_config(self.predictor_wait_s)
        self.task.configure(config)
        feeds, context = self.task.prepare(self.task.warmup_request())
        self.task.postprocess(self.client.infer_blocking(feeds), context)
        log.info("transformer ready", extra={"model": self.name, "task": self.task.name,
                                             "predictor": config.get("parameters", {}).get("providers")})
        self.metrics.start_counting(self.name, self.version, TRANSFORMER)
        self.ready = True
        return True

    def get_input_types(self) -> list[dict[str, Any]]:
        return self.task.input_specs()

    def get_output_types(self) -> list[dict[str, Any]]:
        return self.task.output_specs()

    # --- serving ----------------------------------------------------------------------------------
    async def predict(self, payload: Any, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> InferResponse | dict[str, Any]:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        status: Status = SUCCESS
        try:
            if isinstance(payload, InferRequest):
                parsed = self.task.parse_v2(payload)
            elif isinstance(payload, dict):
                parsed = self.task.parse_v1(payload)
            else:
                raise InvalidRequest(f"unsupported request type {type(payload).__name__}")
            feeds, context = await loop.run_in_executor(None, self.task.prepare, parsed)
            t_pre = time.perf_counter()
            outputs = await self.client.infer(feeds)
            t_pred = time.perf_counter()
            results = await loop.run_in_executor(None, self.task.postprocess, outputs, context)
            t_post = time.perf_counter()
        except InvalidInput:
            status = CLIENT_ERROR
            raise
        except Exception:
            status = SERVER_ERROR
            raise
        finally:
            self.metrics.requests.labels(**self._labels, status=status).inc()
        for stage, seconds in (("preprocess", t_pre - started), ("predict", t_pred - t_pre),
                               ("postprocess", t_post - t_pred), ("total", t_post - started)):
            self.metrics.duration.labels(**self._labels, stage=stage).observe(seconds)
        if isinstance(payload, dict):
            return {"predictions": [self.task.seed_json(r, t_post - started) for r in results]}
        tensors = self.task.v2_outputs(results)
        infer_outputs = [binary_output(n, a) for n, a in tensors.items()]
        return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=infer_outputs,
                             model_version=self.version, use_binary_outputs=payload.use_binary_outputs,
                             requested_outputs=payload.request_outputs)
