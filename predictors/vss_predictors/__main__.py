"""`python -m vss_predictors`: serve one model version over KServe v2 REST and gRPC."""

from __future__ import annotations

from collections.abc import Sequence

from vss_api.serving_flags import PredictorFlags, predictor_flags, predictor_parser
from vss_predictors.model import PredictorSettings


def read_flags(argv: Sequence[str] | None = None) -> tuple[PredictorFlags, int, str]:
    """The container's command line as the operator wrote it, plus the request limit and log level."""
    from kserve import model_server

    args = predictor_parser(model_server.parser, description=__doc__).parse_args(
        None if argv is None else list(argv))
    return predictor_flags(args), args.max_request_bytes, args.log_level


def settings_from(flags: PredictorFlags) -> PredictorSettings:
    return PredictorSettings.from_flags(flags)


def main(argv: Sequence[str] | None = None) -> None:
    flags, max_request_bytes, log_level = read_flags(argv)
    from vss_api.heap import return_large_buffers_to_the_os

    return_large_buffers_to_the_os()  # a burst's tensors go back to the OS after it (vss_api.heap)
    from kserve.errors import InvalidInput

    from vss_api.metrics import PREDICTOR
    from vss_api.server import configure_json_logging, serve
    from vss_api.serving_metrics import ServingMetrics
    from vss_api.tracing import Tracing
    from vss_predictors.model import PredictorModel

    configure_json_logging(log_level)
    tracing = Tracing.start(flags.tracing, model_name=flags.model_name, version=flags.model_version,
                            component=PREDICTOR, caller_errors=(InvalidInput,))
    model = PredictorModel(settings_from(flags), ServingMetrics.create(), tracing)
    try:
        model.load()
        serve([model], max_request_bytes=max_request_bytes, max_concurrency=flags.max_concurrency,
              configs={model.name: model.describe},
              http_port=flags.http_port, grpc_port=flags.grpc_port)
    finally:
        tracing.shutdown()  # the spans still queued go out before the process ends


if __name__ == "__main__":
    main()
