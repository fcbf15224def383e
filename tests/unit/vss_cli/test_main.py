"""The `vss` command line: render, crd, run and models delegation."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import yaml

from vss_cli import main as cli
from vss_operator.crd import crd_yaml

MODEL = """\
apiVersion: serving.vss.ai/v1alpha1
kind: VSSModel
metadata:
  name: yolo
  namespace: vision
spec:
  task: detection
  version: v1
  versions:
    - {name: v1, storageUri: "s3://models/yolo/v1/model.onnx"}
"""


def test_render_prints_the_manifests_as_multi_document_yaml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "yolo.yaml"
    path.write_text(MODEL)

    assert cli.main(["render", str(path), "--cpu-image", "reg/cpu:2"]) == 0

    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("InferenceService", "yolo-v1"), ("HTTPRoute", "yolo"), ("NetworkPolicy", "yolo")]
    assert docs[0]["spec"]["predictor"]["containers"][0]["image"] == "reg/cpu:2"
    assert "&id" not in capsys.readouterr().out


def test_render_of_an_invalid_file_says_which_field_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(MODEL.replace("version: v1\n", "version: v9\n"))

    assert cli.main(["render", str(path)]) == 2

    assert "spec.version 'v9' must name an entry" in capsys.readouterr().err


def test_render_takes_the_metrics_namespaces_from_the_flag_or_the_environment_and_refuses_a_bad_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "yolo.yaml"
    path.write_text(MODEL)

    def scrape_namespaces(*flags: str) -> list[str]:
        assert cli.main(["render", str(path), *flags]) == 0
        (policy,) = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d["kind"] == "NetworkPolicy"]
        values: list[str] = policy["spec"]["ingress"][1]["from"][0]["namespaceSelector"]["matchExpressions"][0][
            "values"]
        return values

    assert scrape_namespaces() == ["monitoring"]
    assert scrape_namespaces("--metrics-namespaces", "prom, obs") == ["prom", "obs"]
    monkeypatch.setenv("VSS_METRICS_NAMESPACES", "kube-prometheus")
    assert scrape_namespaces() == ["kube-prometheus"]
    with pytest.raises(SystemExit):
        cli.main(["render", str(path), "--metrics-namespaces", "Prom_1"])
    assert "namespace names are DNS labels, not Prom_1" in capsys.readouterr().err


def test_crd_prints_the_generated_crd(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["crd"]) == 0

    assert capsys.readouterr().out == crd_yaml()


def test_run_hands_the_file_and_ports_to_run_local(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[tuple[Path, int, int]] = []

    def fake_run_local(path: Path, http_port: int, grpc_port: int) -> int:
        calls.append((path, http_port, grpc_port))
        return 0

    monkeypatch.setattr("vss_cli.run.run_local", fake_run_local)

    assert cli.main(["run", str(tmp_path / "m.yaml"), "--http-port", "9000"]) == 0
    assert calls == [(tmp_path / "m.yaml", 9000, 8081)]


def test_models_passes_the_rest_of_the_command_line_to_vss_models(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    fake = types.ModuleType("vss_models.cli")
    fake.main = lambda argv: seen.append(argv) or 3  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vss_models.cli", fake)

    assert cli.main(["models", "build", "--out", "x"]) == 3
    assert seen == [["build", "--out", "x"]]


def test_lease_namespace_comes_from_the_flag_then_pod_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "ops")

    assert cli._lease_namespace("explicit") == "explicit"
    assert cli._lease_namespace(None) == "ops"


def test_the_operator_takes_its_prometheus_endpoints_from_flags_then_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert cli._prometheus_endpoints([("central", "https://thanos:9090"), ("edge", "http://p:9090")]) == {
        "central": "https://thanos:9090", "edge": "http://p:9090"}
    monkeypatch.setenv("VSS_PROMETHEUS_ENDPOINTS", "a=http://a:9090, b=http://b:9090")
    assert cli._prometheus_endpoints(None) == {"a": "http://a:9090", "b": "http://b:9090"}
    monkeypatch.delenv("VSS_PROMETHEUS_ENDPOINTS")
    assert cli._prometheus_endpoints(None) == {"default": "http://prometheus.monitoring:9090"}


@pytest.mark.parametrize("text", ["nourl", "Bad_Name=http://x:9090", "x=file:///etc/passwd", "x="])
def test_a_malformed_prometheus_endpoint_is_refused(text: str) -> None:
    with pytest.raises(SystemExit):
        cli.main(["operator", "--prometheus", text, "--help"])
