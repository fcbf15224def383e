"""`python -m vss_transformers`: pre/post-processing for one VSSModel task, in front of a predictor."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from vss_api.serving_flags import (
    CACHE_URL_ENV,
    InvalidFlags,
    TransformerFlags,
    grpc_message_bytes,
    transformer_flags,
    transformer_parser,
)
from vss_api.vssmodel import AnomalyParams, ClassificationParams, DetectionParams, ForecastingParams, Task
from vss_transformers.images import ImageRequests
from vss_transformers.tasks import ClassificationTask, DetectionTask, ServingTask

if TYPE_CHECKING:
    from vss_transformers.result_cache import ResultCache

log = logging.getLogger(__name__)


def read_flags(argv: Sequence[str] | None = None) -> tuple[TransformerFlags, argparse.Namespace]:
    """The container's command line as the operator wrote it, and the rest of the parsed arguments."""
    from kserve import model_server

    args = transformer_parser(model_server.parser, description=__doc__).parse_args(
        None if argv is None else list(argv))
    try:
        return transformer_flags(args), args
    except InvalidFlags as exc:
        raise SystemExit(f"vss_transformers: {exc}") from exc


def build_task(flags: TransformerFlags) -> ServingTask[Any, Any, Any]:
    """The task the flags name; each one's own types are checked where it subclasses `ServingTask`."""
    params = flags.params
    if flags.task is Task.ANOMALY:
        from vss_transformers.anomaly import AnomalyTask

        assert isinstance(params, AnomalyParams)
        return AnomalyTask(params)
    if flags.task is Task.FORECASTING:
        from vss_transformers.forecasting import ForecastingTask

        assert isinstance(params, ForecastingParams)
        return ForecastingTask(params)
    images = ImageRequests(max_batch_images=flags.max_batch_images, max_pixels=flags.max_image_pixels,
                           max_batch_pixels=flags.max_batch_pixels)
    if flags.task is Task.DETECTION:
        assert isinstance(params, DetectionParams)
        return DetectionTask(params, images)
    assert isinstance(params, ClassificationParams)
    return ClassificationTask(params, images)


def build_cache(flags: TransformerFlags, url: str | None) -> ResultCache | None:
    """The result cache the flags ask for, on the Redis at `url` ($VSS_CACHE_URL); None when it is off. Nothing
    connects yet: the client connects on the serving loop, at the first request, and a Redis that is down then
    only costs the cache (a wrong URL must not keep the model from serving)."""
    if flags.cache is None:
        return None
    from vss_transformers.result_cache import CacheMetrics, RedisStore, ResultCache

    if not url:
        raise SystemExit(f"vss_transformers: --cache needs the Redis URL in ${CACHE_URL_ENV} "
                         "(transformer.cache.secretRef in a cluster)")
    try:
        store = RedisStore(url, timeout_s=flags.cache.timeout_ms / 1000, max_connections=2 * flags.max_concurrency)
    except ValueError as exc:  # redis-py's message names the schemes it takes, never the URL (a password)
        raise SystemExit(f"vss_transformers: ${CACHE_URL_ENV} is not a Redis URL: {exc}") from exc
    where = urlsplit(url)
    log.info("result cache on", extra={"redis": f"{where.scheme}://{where.hostname}:{where.port or 6379}{where.path}",
                                       "ttl_s": flags.cache.ttl_seconds, "max_entry_bytes": flags.cache.max_entry_bytes,
                                       "timeout_ms": flags.cache.timeout_ms})
    return ResultCache(store, flags.cache, CacheMetrics.create(), flags.model_name, flags.model_version)


def main(argv: Sequence[str] | None = None) -> None:
    flags, args = read_flags(argv)
    from vss_api.heap import return_large_buffers_to_the_os

    return_large_buffers_to_the_os()  # a burst's tensors go back to the OS after it (vss_api.heap)
    from kserve.errors import InvalidInput

    from vss_api.metrics import TRANSFORMER
    from vss_api.server import configure_json_logging, serve
    from vss_api.serving_metrics import ServingMetrics
    from vss_api.tracing import Tracing
    from vss_transformers.model import TransformerModel
    from vss_transformers.predictor_client import PredictorClient

    configure_json_logging(args.log_level)
    client = PredictorClient(model_name=flags.model_name, grpc_target=flags.predictor_grpc,
                             rest_base=f"http://{flags.predictor_rest}",
                             timeout_s=float(flags.predictor_timeout_s),
                             max_message_bytes=grpc_message_bytes(flags.max_request_bytes))
    task = build_task(flags)
    cache = build_cache(flags, os.environ.get(CACHE_URL_ENV))
    tracing = Tracing.start(flags.tracing, model_name=flags.model_name, version=flags.model_version,
                            component=TRANSFORMER, caller_errors=(InvalidInput,))
    model = TransformerModel(flags.model_name, flags.model_version, task, client, ServingMetrics.create(),
                             predictor_wait_s=args.predictor_wait_s, max_concurrency=flags.max_concurrency,
                             request_timeout_s=flags.request_timeout_ms / 1000, tracing=tracing, cache=cache)
    try:
        model.load()
        serve([model], max_request_bytes=flags.max_request_bytes, max_concurrency=flags.max_concurrency,
              http_port=flags.http_port,
              grpc_port=flags.grpc_port)
    finally:
        tracing.shutdown()  # the spans still queued go out before the process ends


if __name__ == "__main__":
    main()
