"""vss_models.launch runs a real `vss run` process for the served evaluators: it yields once the model
serves, stops it afterwards, and reports a process that exits early with its log."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest

from vss_models.launch import vss_run
from vss_models.timeseries.served import with_version

REPO = Path(__file__).resolve().parents[3]


def test_the_launcher_yields_a_serving_model_and_frees_its_port_afterwards(tmp_path: Path) -> None:
    spec = with_version(REPO / "examples" / "forecasting.yaml", "lstm", REPO / "models" / "artifacts", tmp_path)
    with vss_run(spec, tmp_path / "vss-run.log") as endpoint:
        ready = f"http://{endpoint.url}/v2/models/{endpoint.name}/ready"
        with urllib.request.urlopen(ready, timeout=10) as reply:
            assert reply.status == 200
    with socket.socket() as probe, pytest.raises(OSError):
        probe.settimeout(2)
        probe.connect(("127.0.0.1", endpoint.http_port))


def test_a_vss_run_that_exits_early_is_reported_with_its_log(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("apiVersion: serving.vss.ai/v1alpha1\nkind: VSSModel\nmetadata: {name: bad}\n"
                    "spec: {task: juggling, version: v1, versions: [{name: v1, storageUri: /nowhere.onnx}]}\n")
    with pytest.raises(RuntimeError, match="vss run exited") as failure, vss_run(spec, tmp_path / "bad.log"):
        pass
    assert "spec.task: Input should be" in str(failure.value)  # the log of the failed run comes along
