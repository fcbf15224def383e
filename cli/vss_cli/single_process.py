"""`python -m vss_cli.single_process`: one VSSModel version served by one process, the transformer running the
predictor's model itself (`spec.predictor.processes`, `vss_api.serving_flags.single_process`). The same API,
limits, metrics (both components' series, on the one `/metrics`), health and tracing as the two containers, less
the gRPC hop between them. The composition lives here because the transformer and the predictor may not import
each other (tests/unit/test_layering.py): each is built by its own package, and they meet at the transformer's
`Predictor` seam."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from vss_api.serving_flags import (
    CACHE_URL_ENV,
    InvalidFlags,
    SingleProcessFlags,
    single_process_flags,
    single_process_parser,
)


def read_flags(argv: Sequence[str] | None = None) -> tuple[SingleProcessFlags, argparse.Namespace]:
    """The container's command line as the operator wrote it, and the rest of the parsed arguments."""
    from kserve import model_server

    args = single_process_parser(model_server.parser, description=__doc__).parse_args(
        None if argv is None else list(argv))
    try:
        return single_process_flags(args), args
    except InvalidFlags as exc:
        raise SystemExit(f"vss_cli.single_process: {exc}") from exc


def main(argv: Sequence[str] | None = None) -> None:
    flags, args = read_flags(argv)
    from vss_api.heap import return_large_buffers_to_the_os

    return_large_buffers_to_the_os()  # a burst's tensors go back to the OS after it (vss_api.heap)
    from kserve.errors import InvalidInput

    from vss_api.metrics import TRANSFORMER
    from vss_api.server import configure_json_logging, serve
    from vss_api.serving_metrics import ServingMetrics
    from vss_api.tracing import Tracing
    from vss_predictors.in_process import InProcessPredictor
    from vss_predictors.model import PredictorModel, PredictorSettings
    from vss_transformers.__main__ import build_cache, build_task
    from vss_transformers.model import TransformerModel

    configure_json_logging(args.log_level)
    t = flags.transformer
    metrics = ServingMetrics.create()  # one registry: the predictor's and the transformer's series side by side
    # One tracer, the transformer's: the predictor's `batch_wait` and `infer` spans nest in its `predictor.infer`.
    tracing = Tracing.start(t.tracing, model_name=t.model_name, version=t.model_version, component=TRANSFORMER,
                            caller_errors=(InvalidInput,))
    predictor = PredictorModel(PredictorSettings.from_flags(flags.predictor), metrics, tracing)
    model = TransformerModel(t.model_name, t.model_version, build_task(t),
                             InProcessPredictor(predictor, timeout_s=float(t.predictor_timeout_s)), metrics,
                             predictor_wait_s=args.predictor_wait_s, max_concurrency=t.max_concurrency,
                             request_timeout_s=t.request_timeout_ms / 1000, tracing=tracing,
                             cache=build_cache(t, os.environ.get(CACHE_URL_ENV)))
    try:
        if predictor.load():  # loads and warms the runtime; the transformer's load warms its own path on it
            model.load()
        else:  # loaded but may not serve (a GPU asked for and not found): not ready, saying why
            model.not_ready_reason = predictor.not_ready_reason
        serve([model], max_request_bytes=t.max_request_bytes, max_concurrency=t.max_concurrency,
              http_port=t.http_port, grpc_port=t.grpc_port)
    finally:
        tracing.shutdown()  # the spans still queued go out before the process ends


if __name__ == "__main__":
    main()
