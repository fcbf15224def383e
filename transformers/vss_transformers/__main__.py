"""`python -m vss_transformers`: pre/post-processing for one VSSModel task, in front of a predictor."""

from __future__ import annotations

import argparse
import json

from vss_operator.spec import AnomalyParams, ClassificationParams, DetectionParams, ForecastingParams
from vss_transformers.images import ImageRequests
from vss_transformers.tasks import ClassificationTask, DetectionTask, Task


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from kserve import model_server

    parser = argparse.ArgumentParser(parents=[model_server.parser], description=__doc__)
    parser.add_argument("--task", choices=["detection", "classification", "anomaly", "forecasting"],
                        required=True)
    parser.add_argument("--params", default="{}", help="the task's transformer block of the VSSModel, JSON")
    parser.add_argument("--model_version", default="v1")
    parser.add_argument("--predictor_rest_host", required=True, help="host:port of the predictor's REST")
    parser.add_argument("--max_request_bytes", type=int, default=32 * 1024 * 1024)
    parser.add_argument("--max_batch_images", type=int, default=64)
    parser.add_argument("--predictor_wait_s", type=float, default=300.0)
    parser.add_argument("--log_level", default="INFO")
    return parser.parse_args(argv)


def build_task(name: str, params_json: str, args: argparse.Namespace) -> Task:
    params = json.loads(params_json)
    if name == "anomaly":
        from vss_transformers.anomaly import AnomalyTask

        return AnomalyTask(AnomalyParams.model_validate(params))
    if name == "forecasting":
        from vss_transformers.forecasting import ForecastingTask

        return ForecastingTask(ForecastingParams.model_validate(params))
    images = ImageRequests(max_batch_images=args.max_batch_images)
    if name == "detection":
        return DetectionTask(DetectionParams.model_validate(params), images)
    return ClassificationTask(ClassificationParams.model_validate(params), images)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from vss_predictors.metrics import ServingMetrics
    from vss_predictors.server import configure_json_logging, serve
    from vss_transformers.model import TransformerModel
    from vss_transformers.predictor_client import PredictorClient

    configure_json_logging(args.log_level)
    if not args.predictor_host:
        raise SystemExit("--predictor_host (the predictor's gRPC host:port) is required")
    client = PredictorClient(model_name=args.model_name, grpc_target=args.predictor_host,
                             rest_base=f"http://{args.predictor_rest_host}",
                             timeout_s=float(args.predictor_request_timeout_seconds),
                             max_message_bytes=args.max_request_bytes * 8)
    task = build_task(args.task, args.params, args)
    model = TransformerModel(args.model_name, args.model_version, task, client, ServingMetrics.create(),
                             predictor_wait_s=args.predictor_wait_s)
    model.load()
    serve([model], max_request_bytes=args.max_request_bytes, http_port=args.http_port,
          grpc_port=args.grpc_port)


if __name__ == "__main__":
    main()
