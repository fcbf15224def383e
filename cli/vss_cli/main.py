"""The `vss` command: `run`, `predict`, `stream`, `render`, `crd`, `operator` and `models`, each delegating to the
package that owns it."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import re
import socket
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlparse

import yaml

from vss_api.vssmodel import DNS_LABEL, InvalidSpec, VSSModel
from vss_operator.render import RenderConfig

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    defaults = RenderConfig()
    parser = argparse.ArgumentParser(prog="vss", description="VSS Serving: serve VSSModels on KServe.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    render = commands.add_parser("render", help="print the manifests the operator would apply for FILE "
                                                "(a VSSModel or a VSSStream)")
    render.add_argument("file", type=Path, metavar="FILE")
    render.add_argument("--model-endpoint", default=None, metavar="HOST:PORT",
                        help="VSSStream only: the v2 gRPC endpoint of the stream's model")
    _render_options(render, defaults)

    commands.add_parser("crd", help="print the VSSModel CustomResourceDefinition")

    op = commands.add_parser("operator", help="run the operator (kopf, in this process)")
    op.add_argument("--namespace", "-n", default=env("VSS_WATCH_NAMESPACE") or None,
                    help="watch only this namespace (default: every namespace)")
    op.add_argument("--verbose", "-v", action="store_true", help="log debug messages")
    op.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: in-cluster or KUBECONFIG)")
    op.add_argument("--health-port", type=int, default=int(env("VSS_HEALTH_PORT", "8080")),
                    help="port of /healthz and /metrics")
    op.add_argument("--leader-election", action=argparse.BooleanOptionalAction, default=True,
                    help="take the leader Lease before reconciling (one active replica)")
    op.add_argument("--lease-name", default=env("VSS_LEASE_NAME", "vss-operator"))
    op.add_argument("--lease-namespace", default=None,
                    help="namespace of the Lease (default: POD_NAMESPACE, the pod's own, or default)")
    op.add_argument("--lease-duration", type=float, default=15.0, help="seconds")
    op.add_argument("--lease-renew-deadline", type=float, default=10.0, help="seconds")
    op.add_argument("--lease-retry-period", type=float, default=2.0, help="seconds")
    op.add_argument("--retry-delay", type=float, default=5.0,
                    help="seconds before a reconcile that met an apiserver error is retried")
    op.add_argument("--prometheus", action="append", type=_endpoint, metavar="NAME=URL", default=None,
                    help="a Prometheus the canary analysis may query, by the name VSSModels give in "
                         "rollout.analysis.prometheus.endpoint (repeatable; default: "
                         "default=http://prometheus.monitoring:9090, or VSS_PROMETHEUS_ENDPOINTS=NAME=URL,...)")
    _render_options(op, defaults)

    run = commands.add_parser("run", help="serve FILE (a VSSModel), or --model PATH (an ONNX/TorchScript export), "
                                          "locally: predictor and transformer on loopback")
    run.add_argument("file", type=Path, metavar="FILE", nargs="?")
    run.add_argument("--model", type=Path, default=None, metavar="PATH",
                     help="an ONNX (.onnx) or TorchScript (.pt, .torchscript) export instead of FILE: the VSSModel "
                          "is built from its metadata and output shape, printed, and served")
    run.add_argument("--name", default=None, help="with --model: the VSSModel's name (default: from the file name)")
    run.add_argument("--storage-uri", default=None, metavar="URI",
                     help="with --model: the storageUri the printed VSSModel carries (default: PATH, absolute)")
    run.add_argument("--imgsz", type=int, default=None, metavar="N",
                     help="with --model: the input size when the export has dynamic H/W and no imgsz metadata")
    run.add_argument("--dry-run", action="store_true", help="with --model: print the VSSModel and exit")
    run.add_argument("--http-port", type=int, default=8080)
    run.add_argument("--grpc-port", type=int, default=8081)

    predict = commands.add_parser("predict", help="call a served model over v2 REST with each INPUT and write it "
                                                  "annotated (images) or plotted (series); answers as JSON lines")
    predict.add_argument("inputs", type=Path, nargs="+", metavar="INPUT",
                         help="images (.jpg, .png, ...) for detection and classification; series (.csv with a "
                              "header of feature names, or .npy [readings, features]) for anomaly and forecasting")
    predict.add_argument("--url", default="http://127.0.0.1:8080",
                         help="the model's v2 REST address (default: the local `vss run`)")
    predict.add_argument("--model", default=None, metavar="NAME",
                         help="the model's name (default: the one model the URL serves)")
    predict.add_argument("--out", type=Path, default=Path("vss-predictions"), metavar="DIR",
                         help="where the annotated images and plots go (default: ./vss-predictions)")
    predict.add_argument("--timeout", type=float, default=60.0, help="seconds per request")

    stream = commands.add_parser("stream", help="run the VSSStream in FILE here, against a local `vss run` of "
                                                "its model; events as JSON lines on stdout")
    stream.add_argument("files", type=Path, nargs="+", metavar="FILE",
                        help="one VSSStream per file; several run in this one worker process")
    stream.add_argument("--model-grpc", action="append", default=None, metavar="HOST:PORT",
                        help="the v2 gRPC endpoint serving the stream's model (vss run's --grpc-port; default "
                             "127.0.0.1:8081): once for all streams, or once per FILE in order")
    stream.add_argument("--batch", action="store_true",
                        help="several streams: send the frames ready together to their model as one batch")
    stream.add_argument("--http-port", type=int, default=None,
                        help="serve /healthz and /metrics on this port (the rendered worker uses 8090)")
    stream.add_argument("--watch", action="store_true",
                        help="re-read FILE and apply edited lines and zones without restarting decoding")
    stream.add_argument("--report-status", action="store_true",
                        help="write the stream's status into its VSSStream (in a pod: its ServiceAccount token)")
    stream.add_argument("--kube-api", default=None, metavar="URL",
                        help="with --report-status: the apiserver (default: the in-cluster one)")
    stream.add_argument("--kube-token-file", type=Path, default=None, metavar="FILE",
                        help="with --kube-api: the bearer token")
    stream.add_argument("--kube-ca-file", type=Path, default=None, metavar="FILE",
                        help="with --kube-api: the CA of the apiserver")

    commands.add_parser("models", help="build or train the shipped models (vss models --help)",
                        add_help=False)
    return parser


def _endpoint(text: str) -> tuple[str, str]:
    name, sep, url = text.partition("=")
    if not sep or not re.fullmatch(DNS_LABEL, name) or urlparse(url).scheme not in ("http", "https"):
        raise argparse.ArgumentTypeError(f"expected NAME=http(s)://HOST:PORT with NAME a DNS label, got {text!r}")
    return name, url


def _prometheus_endpoints(flags: list[tuple[str, str]] | None) -> dict[str, str]:
    if flags:
        return dict(flags)
    configured = os.environ.get("VSS_PROMETHEUS_ENDPOINTS", "")
    if configured:
        return dict(_endpoint(item.strip()) for item in configured.split(",") if item.strip())
    from vss_operator.prometheus import DEFAULT_ENDPOINTS

    return dict(DEFAULT_ENDPOINTS)


def _namespaces(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if not re.fullmatch(DNS_LABEL, n)]
    if bad:
        raise argparse.ArgumentTypeError(f"namespace names are DNS labels, not {', '.join(bad)}")
    return names


def _render_options(parser: argparse.ArgumentParser, defaults: RenderConfig) -> None:
    get = os.environ.get
    parser.add_argument("--cpu-image", default=get("VSS_CPU_IMAGE", defaults.cpu_image),
                        help="image of the transformer and of CPU predictors")
    parser.add_argument("--gpu-image", default=get("VSS_GPU_IMAGE", defaults.gpu_image),
                        help="image of GPU predictors (CUDA, onnxruntime-gpu)")
    parser.add_argument("--image-pull-policy",
                        default=get("VSS_IMAGE_PULL_POLICY", defaults.image_pull_policy))
    parser.add_argument("--gateway-name", default=get("VSS_GATEWAY_NAME", defaults.gateway_name),
                        help="Gateway the HTTPRoutes attach to")
    parser.add_argument("--gateway-namespace",
                        default=get("VSS_GATEWAY_NAMESPACE", defaults.gateway_namespace))
    parser.add_argument("--domain", default=get("VSS_DOMAIN", defaults.domain),
                        help="hosts are <model>.<namespace>.<domain>")
    parser.add_argument("--kserve-domain-template",
                        default=get("VSS_KSERVE_DOMAIN_TEMPLATE", defaults.kserve_domain_template),
                        help="KServe's ingress.domainTemplate (its inferenceservice-config): specs whose host it "
                             "could not make are refused with the reason in status")
    parser.add_argument("--model-service-account", default=get("VSS_MODEL_SERVICE_ACCOUNT") or None,
                        help="ServiceAccount holding the storage credentials of the model pods")
    parser.add_argument("--stream-image", default=get("VSS_STREAM_IMAGE", defaults.stream_image),
                        help="image of the VSSStream workers")
    parser.add_argument("--tracing-endpoint", default=get("VSS_TRACING_ENDPOINT") or None, metavar="URL",
                        help="OTLP/HTTP collector (http://otel-collector.observability:4318) of the VSSModels whose "
                             "spec.tracing names none; default: those are not traced")
    parser.add_argument("--metrics-namespaces", type=_namespaces, metavar="NS[,NS...]",
                        default=_namespaces(get("VSS_METRICS_NAMESPACES", ",".join(defaults.metrics_namespaces))),
                        help="namespaces whose pods may scrape the model pods' metrics ports through their "
                             "NetworkPolicy when spec.networkPolicy.metricsFrom names no one (your Prometheus'); "
                             f"empty: no one; default: {','.join(defaults.metrics_namespaces)}")


def _report_target(args: argparse.Namespace) -> tuple[str | None, Path | None, Path | None] | None:
    """--report-status: (apiserver, token file, CA file), None for each of the in-cluster defaults."""
    if not args.report_status:
        return None
    return (args.kube_api, args.kube_token_file, args.kube_ca_file)


def _render_config(args: argparse.Namespace) -> RenderConfig:
    return RenderConfig(
        cpu_image=args.cpu_image, gpu_image=args.gpu_image, image_pull_policy=args.image_pull_policy,
        gateway_name=args.gateway_name, gateway_namespace=args.gateway_namespace, domain=args.domain,
        model_service_account=args.model_service_account, stream_image=args.stream_image,
        tracing_endpoint=args.tracing_endpoint, kserve_domain_template=args.kserve_domain_template,
        metrics_namespaces=args.metrics_namespaces)


def _lease_namespace(flag: str | None) -> str:
    if flag:
        return flag
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    if SERVICE_ACCOUNT_NAMESPACE.is_file():
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    return "default"


def _render(args: argparse.Namespace) -> int:
    from vss_operator.render import render

    documents = [d for d in yaml.safe_load_all(args.file.read_text()) if isinstance(d, dict)]
    if any(d.get("kind") == "VSSStream" for d in documents):
        from vss_api.vssstream import VSSStream
        from vss_operator.stream_render import render_stream

        if not args.model_endpoint:
            raise InvalidSpec(f"{args.file}: a VSSStream renders with --model-endpoint HOST:PORT, the v2 gRPC "
                              "endpoint of its model")
        stream = VSSStream.from_yaml_file(args.file)
        manifests = render_stream(stream, args.model_endpoint, _render_config(args))
    else:
        manifests = render(VSSModel.from_yaml_file(args.file), _render_config(args))
    print(yaml.safe_dump_all(manifests, sort_keys=False, width=110), end="")
    return 0


def _operator(args: argparse.Namespace) -> int:
    import kopf

    from vss_operator.daemon import OperatorOptions, run
    from vss_operator.leader import LeaseTimings

    kopf.configure(verbose=args.verbose)
    identity = f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"
    options = OperatorOptions(
        namespace=args.namespace, kubeconfig=args.kubeconfig, render=_render_config(args),
        health_port=args.health_port, leader_election=args.leader_election, lease_name=args.lease_name,
        lease_namespace=_lease_namespace(args.lease_namespace), identity=identity,
        lease=LeaseTimings(args.lease_duration, args.lease_renew_deadline, args.lease_retry_period),
        retry_delay=args.retry_delay, prometheus_endpoints=_prometheus_endpoints(args.prometheus))
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig  # kopf logs in through the same kubeconfig
    return asyncio.run(run(options))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "models":
        # Another package's CLI, loaded only when asked for (it pulls in the training stack).
        models_main: Callable[[list[str]], int | None] = importlib.import_module("vss_models.cli").main
        return int(models_main(argv[1:]) or 0)
    args = _parser().parse_args(argv)
    try:
        if args.command == "render":
            return _render(args)
        if args.command == "crd":
            from vss_operator.crd import crd_yaml

            print(crd_yaml(), end="")
            return 0
        if args.command == "operator":
            return _operator(args)
        if args.command == "run":
            if (args.file is None) == (args.model is None):
                raise InvalidSpec("vss run takes a VSSModel FILE or --model PATH (an export), one of them")
            if args.model is not None:
                from vss_cli.exports import run_export

                return run_export(args.model, name=args.name, storage_uri=args.storage_uri, imgsz=args.imgsz,
                                  http_port=args.http_port, grpc_port=args.grpc_port, dry_run=args.dry_run)
            from vss_cli.run import run_local

            return run_local(args.file, args.http_port, args.grpc_port)
        if args.command == "predict":
            from vss_cli.predict import predict as predict_inputs

            return predict_inputs(args.inputs, url=args.url, model=args.model, out_dir=args.out,
                                  timeout_s=args.timeout)
        if args.command == "stream":
            from vss_cli.stream import stream_local

            return stream_local(args.files, args.model_grpc or ["127.0.0.1:8081"], watch=args.watch,
                                http_port=args.http_port, report=_report_target(args), batch=args.batch)
    except InvalidSpec as exc:
        print(f"vss: {exc}", file=sys.stderr)
        return 2
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    raise SystemExit(main())
