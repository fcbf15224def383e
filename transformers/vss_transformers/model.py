"""The transformer as a KServe `Model`: v2 tensors (`image` BYTES or `pixels` UINT8) and v1 JSON
in, task results out; the model itself runs in the predictor, one gRPC hop away, or in this process in
single-process mode (`vss_transformers.predictor`). Each request's `parameters`
are checked against the task's table (`vss_api.request_parameters`) before anything else is read of it. At most
`max_concurrency` requests are served at once (one more is refused at once, 503 / UNAVAILABLE), each within its
deadline, which the hop to the predictor carries on. A traced request (`vss_api.tracing`) gets a SERVER span,
`transformer.infer`, with `parse`, the task's `decode` and `preprocess`, the CLIENT span `predictor.infer` (whose
context the predictor's spans are children of) and `postprocess` inside it. With `transformer.cache` on, a request
seen before is answered from Redis (`vss_transformers.result_cache`) without preprocessing or the predictor."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
from collections.abc import Sequence
from typing import Any, Generic

import kserve
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferRequest, InferResponse

from vss_api.deadlines import current_deadline
from vss_api.errors import InvalidRequest, Overloaded
from vss_api.metrics import CLIENT_ERROR, SERVER_ERROR, SUCCESS, TRANSFORMER, Status
from vss_api.request_context import RequestContext, serving
from vss_api.request_parameters import RequestParameters
from vss_api.server import binary_output
from vss_api.serving_metrics import ServingMetrics
from vss_api.tracing import CLIENT, Tracing, annotate, inject, stage
from vss_api.v2 import CONTENT_ERRORS
from vss_api.vssmodel import Task
from vss_transformers.predictor import Predictor
from vss_transformers.result_cache import (
    CorruptEntry,
    ResultCache,
    Tensors,
    decode_v1,
    decode_v2,
    encode_v1,
    encode_v2,
    model_identity,
    v1_key,
    v2_key,
)
from vss_transformers.tasks import Context, Parsed, Result, ServingTask

CACHE_HEADER = "x-vss-cache"  # hit or miss, on the REST answers of a model with the result cache on

log = logging.getLogger(__name__)


class TransformerModel(kserve.Model, Generic[Parsed, Context, Result]):
    def __init__(self, name: str, version: str, task: ServingTask[Parsed, Context, Result], client: Predictor,
                 metrics: ServingMetrics, *, predictor_wait_s: float = 300.0, max_concurrency: int = 64,
                 request_timeout_s: float = 30.0, tracing: Tracing | None = None,
                 cache: ResultCache | None = None) -> None:
        super().__init__(name, return_response_headers=True)
        self.version = version
        self.task = task
        self.client = client
        self.metrics = metrics
        self.predictor_wait_s = predictor_wait_s
        self.max_concurrency = max_concurrency
        self.request_timeout_s = request_timeout_s
        self.in_flight = 0
        self.cache = cache
        self._identity = ""  # of the served model, in the cache's keys: known once the predictor answers
        self._closing: set[asyncio.Task[None]] = set()
        self.tracing = tracing or Tracing.off()
        self._span_attributes = {"vss.model.name": name, "vss.model.version": version, "vss.task": task.name}
        self._call_attributes = {"rpc.system": "grpc", "rpc.service": "inference.GRPCInferenceService",
                                 "rpc.method": "ModelInfer"}
        self.parameters = RequestParameters(Task(task.name), task.params)
        self._labels = {"model_name": name, "version": version, "component": TRANSFORMER}
        # Why it stays not ready (`vss_api.server.not_ready_reason`): a single-process server's model that
        # loaded but may not serve (a GPU asked for and not found) says so here.
        self.not_ready_reason: str | None = None

    def load(self) -> bool:
        config = self.client.fetch_config(self.predictor_wait_s)
        self.task.configure(config)
        self._identity = model_identity(self.name, self.version, self.task.name,
                                        self.task.params.model_dump(mode="json", by_alias=True), config)
        feeds, context = self.task.prepare(self.task.warmup_request())
        self.task.postprocess(self.client.infer_blocking(feeds), context)
        log.info("transformer ready", extra={"model": self.name, "task": self.task.name,
                                             "predictor": config.get("parameters", {}).get("providers")})
        self.metrics.start_counting(self.name, self.version, TRANSFORMER)
        self.ready = True
        return True

    def stop(self) -> None:
        """Called by KServe's ModelServer on SIGTERM/SIGINT (`ModelRepository.unload`): closes the channel to
        the predictor (in one process: stops its batcher). The pre/post-processing runs in the loop's default
        executor, which asyncio shuts down."""
        self.client.close()
        if self.cache is not None:
            try:  # the cache's connections belong to the serving loop: closed there, stores under way first
                task = asyncio.get_running_loop().create_task(self.cache.close())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
            except RuntimeError:
                pass  # no loop any more: its connections went with it
        super().stop()
        log.info("model stopped", extra={"model": self.name, "version": self.version})

    def get_input_types(self) -> list[dict[str, Any]]:
        return self.task.input_specs()

    def get_output_types(self) -> list[dict[str, Any]]:
        return self.task.output_specs()

    # --- serving ----------------------------------------------------------------------------------
    async def predict(self, payload: Any, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> InferResponse | dict[str, Any]:
        if self.in_flight >= self.max_concurrency:  # before any work, even parsing: limits before work
            self.metrics.requests.labels(**self._labels, status=SERVER_ERROR).inc()
            raise Overloaded(f"the transformer is at its limit of {self.max_concurrency} requests at once: "
                             "retry later")
        self.in_flight += 1
        try:
            if self.cache is not None and isinstance(payload, (InferRequest, dict)):
                return await self._serve_cached(self.cache, payload, headers, response_headers)
            return await self._serve(payload, headers, response_headers)
        finally:
            self.in_flight -= 1

    # --- the result cache ---------------------------------------------------------------------------
    def _key(self, payload: InferRequest | dict[str, Any]) -> str | None:
        """The request's cache key, in the executor (it hashes every input byte) and after its parameters are
        checked, so a refused parameter is refused before Redis is asked. None: a body the cache cannot key."""
        if isinstance(payload, InferRequest):
            self.parameters.check_v2(payload)
            try:
                return v2_key(self._identity, payload)
            except CONTENT_ERRORS:  # contents that do not fit the tensor: `_serve` refuses them with the reason
                return None
        self.parameters.check_v1(payload)
        try:
            return v1_key(self._identity, payload)
        except TypeError:  # orjson's error for a body nested too deep to write again: served, not cached
            return None

    async def _serve_cached(self, cache: ResultCache, payload: InferRequest | dict[str, Any],
                            headers: dict[str, str] | None, response_headers: dict[str, str] | None
                            ) -> InferResponse | dict[str, Any]:
        """A stored answer to the same request if Redis has one; else the request as `_serve` answers it, stored
        in the background when it succeeded (an error is raised before anything is stored)."""
        started = time.perf_counter()
        try:
            key = await asyncio.get_running_loop().run_in_executor(None, self._key, payload)
        except InvalidInput:
            self.metrics.requests.labels(**self._labels, status=CLIENT_ERROR).inc()
            raise
        v1 = isinstance(payload, dict)
        value = None if key is None else await cache.lookup(key)
        if key is not None and value is not None:
            try:
                answer = decode_v1(value) if v1 else decode_v2(value)
            except CorruptEntry as exc:
                cache.corrupt(key, exc)
            else:
                return self._answer_from_cache(answer, payload, headers, response_headers, started)
        response = await self._serve(payload, headers, response_headers)
        if key is not None:
            cache.keep(key, encode_v1(response["predictions"]) if isinstance(response, dict)
                       else encode_v2({o.name: o.as_numpy() for o in response.outputs}))
        if response_headers is not None:
            response_headers[CACHE_HEADER] = "miss"
        return response

    def _answer_from_cache(self, answer: Tensors | list[dict[str, object]], payload: InferRequest | dict[str, Any],
                           headers: dict[str, str] | None, response_headers: dict[str, str] | None,
                           started: float) -> InferResponse | dict[str, Any]:
        context = RequestContext.from_headers(
            headers, body_id=payload.id if isinstance(payload, InferRequest) else None)
        seconds = time.perf_counter() - started
        self.metrics.requests.labels(**self._labels, status=SUCCESS).inc()
        self.metrics.duration.labels(**self._labels, stage="total").observe(seconds)
        if response_headers is not None:
            response_headers.update({**context.headers(), CACHE_HEADER: "hit"})
        if isinstance(answer, list):
            for prediction in answer:  # the v1 field says how long this answer took
                if "processing_time" in prediction:
                    prediction["processing_time"] = round(seconds, 4)
            return {"predictions": answer}
        assert isinstance(payload, InferRequest)
        return InferResponse(response_id=payload.id or context.request_id, model_name=self.name,
                             infer_outputs=[binary_output(n, a) for n, a in answer.items()],
                             model_version=self.version, use_binary_outputs=payload.use_binary_outputs,
                             requested_outputs=payload.request_outputs)

    def _prepare(self, payload: InferRequest | dict[str, Any]) -> tuple[Any, Any]:
        """Parse and preprocess one request, in the executor: `task.prepare`'s feeds and context."""
        with stage("parse"):
            if isinstance(payload, InferRequest):
                self.parameters.check_v2(payload)
                parsed = self.task.parse_v2(payload)
            else:
                self.parameters.check_v1(payload)
                parsed = self.task.parse_v1(payload)
        feeds, context = self.task.prepare(parsed)  # its `decode` and `preprocess` stages
        annotate({"vss.batch.size": int(next(iter(feeds.values())).shape[0])})
        return feeds, context

    def _postprocess(self, outputs: Any, context: Any) -> Sequence[Any]:
        with stage("postprocess"):
            return self.task.postprocess(outputs, context)

    async def _serve(self, payload: Any, headers: dict[str, str] | None,
                     response_headers: dict[str, str] | None) -> InferResponse | dict[str, Any]:
        deadline = current_deadline(self.request_timeout_s)
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        status: Status = SUCCESS
        context = RequestContext.from_headers(
            headers, body_id=payload.id if isinstance(payload, InferRequest) else None)
        echoed: dict[str, str] = {}
        traced: dict[str, str] = {}  # this request's span as the caller's traceparent, when it is traced
        with serving(context), self.tracing.request("transformer.infer", context, {  # log lines carry its id
                **self._span_attributes, "vss.request.id": context.request_id}):
            try:
                if not isinstance(payload, (InferRequest, dict)):
                    raise InvalidRequest(f"unsupported request type {type(payload).__name__}")
                # Parsing (a v1 series is checked number by number) and preprocessing in one hop off the
                # event loop, so a large body never holds up health probes or other requests.
                # The executor runs them in a copy of this task's context: its span and log fields.
                feeds, task_context = await loop.run_in_executor(None, functools.partial(
                    contextvars.copy_context().run, self._prepare, payload))
                t_pre = time.perf_counter()
                with stage("predictor.infer", kind=CLIENT, attributes=self._call_attributes):
                    outputs, echoed = await self.client.infer(feeds, context, deadline=deadline)
                t_pred = time.perf_counter()
                results = await loop.run_in_executor(None, functools.partial(
                    contextvars.copy_context().run, self._postprocess, outputs, task_context))
                t_post = time.perf_counter()
                inject(traced)
            except InvalidInput:
                status = CLIENT_ERROR
                raise
            except Exception:
                status = SERVER_ERROR
                raise
            finally:
                self.metrics.requests.labels(**self._labels, status=status).inc()
        for name, seconds in (("preprocess", t_pre - started), ("predict", t_pred - t_pre),
                              ("postprocess", t_post - t_pred), ("total", t_post - started)):
            self.metrics.duration.labels(**self._labels, stage=name).observe(seconds)
        if response_headers is not None:  # this request's span, else the context as the predictor saw it
            response_headers.update({**context.headers(), **echoed, **traced})
        if isinstance(payload, dict):
            return {"predictions": [self.task.v1_result(r, t_post - started) for r in results]}
        tensors = self.task.v2_outputs(results)
        infer_outputs = [binary_output(n, a) for n, a in tensors.items()]
        return InferResponse(response_id=payload.id or context.request_id, model_name=self.name,
                             infer_outputs=infer_outputs, model_version=self.version,
                             use_binary_outputs=payload.use_binary_outputs, requested_outputs=payload.request_outputs)
