"""`device: gpu` where no GPU can be used: the real predictor process stays live but not ready, and every
readiness answer (REST server and model ready, gRPC ServerReady) says so, with the reason on REST, unless the
spec allows the CPU fallback. CUDA_VISIBLE_DEVICES is emptied, so a GPU machine sees no GPU either."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
import yaml
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

from tests.e2e.conftest import CLASSIFICATION_YAML
from tests.e2e.predictor_process import stop
from tests.e2e.prometheus_server import free_port, wait_until
from tests.e2e.serving_pair import REPO
from tests.fixtures.onnx_graphs import mean_colour_classifier, save
from vss_api.serving_flags import predictor_args, single_process_args
from vss_api.vssmodel import VSSModel


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save(mean_colour_classifier(), tmp_path_factory.mktemp("gpu") / "colour.onnx")


def _get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return int(reply.status), json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read())


@contextmanager
def _gpu_predictor(model_file: Path, workdir: Path, *, allow_fallback: bool,
                   processes: str = "two") -> Iterator[tuple[str, int]]:
    """The predictor of a `device: gpu` classification model (with `processes: single`, the one process that runs
    the model and the transformer), yielded once it answers live (REST, gRPC port)."""
    body = yaml.safe_load(CLASSIFICATION_YAML.format(name="colours", path=model_file))
    body["spec"]["predictor"] = {"device": "gpu", "allowCpuFallback": allow_fallback, "processes": processes}
    spec = VSSModel.model_validate(body).spec
    http_port, grpc_port = free_port(), free_port()
    log = workdir / "predictor.log"
    module, args = ("vss_predictors", predictor_args) if processes == "two" else (
        "vss_cli.single_process", single_process_args)
    with log.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", module,
             *args(spec, spec.served_version(), str(model_file), http_port, grpc_port, model_name="colours")],
            stdout=sink, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": ""})
    base = f"http://127.0.0.1:{http_port}"

    def live() -> bool | None:
        if process.poll() is not None:
            raise RuntimeError(f"predictor exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base}/v2/health/live", timeout=2) as reply:
                return True if reply.status == 200 else None
        except (urllib.error.URLError, OSError):
            return None

    try:
        wait_until("gpu predictor live", live, 120)
        yield base, grpc_port
    finally:
        stop([process])


def test_a_gpu_predictor_without_a_gpu_stays_not_ready_and_says_why(model_file: Path, tmp_path: Path) -> None:
    with _gpu_predictor(model_file, tmp_path, allow_fallback=False) as (base, grpc_port):
        for path in ("/v2/health/ready", "/v2/models/colours/ready", "/v2/models/colours/versions/v1/ready"):
            status, answer = _get(base + path)
            assert status == 503, (path, answer)
            assert "GpuUnavailable" in str(answer["error"]) and "allowCpuFallback" in str(answer["error"])
        status, answer = _get(f"{base}/v2/models/colours/config")
        assert status == 503 and "GpuUnavailable" in str(answer["error"])  # what the transformer's load() reads
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = GRPCInferenceServiceStub(channel)
            assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live
            assert not stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
            assert not stub.ModelReady(pb.ModelReadyRequest(name="colours"), timeout=10).ready
        log = (tmp_path / "predictor.log").read_text()
        assert any(json.loads(line).get("reason", "").startswith("GpuUnavailable")
                   for line in log.splitlines() if line.startswith('{"'))


def test_a_gpu_predictor_allowed_to_fall_back_serves_on_the_cpu_and_is_ready(
        model_file: Path, tmp_path: Path) -> None:
    with _gpu_predictor(model_file, tmp_path, allow_fallback=True) as (base, grpc_port):
        status, _ = wait_until("fallback ready", lambda: (r if (r := _get(f"{base}/v2/health/ready"))[0] == 200
                                                            else None), 60)
        assert _get(f"{base}/v2/models/colours/ready") == (200, {"name": "colours", "ready": True})
        status, config = _get(f"{base}/v2/models/colours/config")
        assert status == 200 and config["parameters"]["device"] == "cpu"  # type: ignore[index]
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            assert GRPCInferenceServiceStub(channel).ServerReady(pb.ServerReadyRequest(), timeout=10).ready


def test_a_single_process_gpu_server_without_a_gpu_stays_not_ready_and_says_why(
        model_file: Path, tmp_path: Path) -> None:
    """`processes: single` forced on a GPU model: the model's refusal makes the one process not ready, with the
    predictor's reason on the client-facing readiness answers, and it never warms the transformer up on the CPU."""
    with _gpu_predictor(model_file, tmp_path, allow_fallback=False, processes="single") as (base, grpc_port):
        for path in ("/v2/health/ready", "/v2/models/colours/ready"):
            status, answer = _get(base + path)
            assert status == 503, (path, answer)
            assert "GpuUnavailable" in str(answer["error"]), (path, answer)
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            assert not GRPCInferenceServiceStub(channel).ServerReady(pb.ServerReadyRequest(), timeout=10).ready
        assert '"transformer ready"' not in (tmp_path / "predictor.log").read_text()


def test_a_single_process_gpu_server_allowed_to_fall_back_is_ready_on_the_cpu(model_file: Path, tmp_path: Path) -> None:
    with _gpu_predictor(model_file, tmp_path, allow_fallback=True, processes="single") as (base, _grpc_port):
        wait_until("fallback ready", lambda: True if _get(f"{base}/v2/health/ready")[0] == 200 else None, 60)
        assert _get(f"{base}/v2/models/colours/ready") == (200, {"name": "colours", "ready": True})
