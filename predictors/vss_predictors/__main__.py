"""`python -m vss_predictors`: serve one model version over KServe v2 REST and gRPC."""

from __future__ import annotations

import argparse
from pathlib import Path

from vss_predictors.model import PredictorModel, PredictorSettings
from vss_predictors.prelude import Normalization


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from kserve import model_server

    parser = argparse.ArgumentParser(parents=[model_server.parser], description=__doc__)
    parser.add_argument("--model_path", type=Path, required=True)
    parser.add_argument("--model_version", default="v1")
    parser.add_argument("--model_format", choices=["onnx", "torchscript"], default="onnx")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--normalize", type=Normalization.parse, default=None,
                        help="MEAN:STD per RGB channel; takes UINT8 NHWC pixels and normalises in the graph")
    parser.add_argument("--max_batch_size", type=int, default=8)
    parser.add_argument("--max_latency_ms", type=float, default=5.0)
    parser.add_argument("--max_inflight_batches", type=int, default=2, choices=range(1, 9),
                        metavar="{1..8}", help="batches run at once")
    parser.add_argument("--warmup_shape", default="640,640", help="H,W of the warm-up input")
    parser.add_argument("--max_request_bytes", type=int, default=64 * 1024 * 1024)
    parser.add_argument("--log_level", default="INFO")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from vss_predictors.metrics import ServingMetrics
    from vss_predictors.server import configure_json_logging, serve

    configure_json_logging(args.log_level)
    h, w = (int(v) for v in args.warmup_shape.split(","))
    settings = PredictorSettings(
        model_name=args.model_name, version=args.model_version, model_path=args.model_path,
        model_format=args.model_format, device=args.device, threads=args.threads,
        normalization=args.normalize, max_batch_size=args.max_batch_size,
        max_latency_ms=args.max_latency_ms, max_in_flight=args.max_inflight_batches, warmup_shape=(h, w))
    model = PredictorModel(settings, ServingMetrics.create())
    model.load()
    serve([model], max_request_bytes=args.max_request_bytes, configs={model.name: model.describe},
          http_port=args.http_port, grpc_port=args.grpc_port)


if __name__ == "__main__":
    main()
