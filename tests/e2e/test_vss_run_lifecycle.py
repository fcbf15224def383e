"""`vss run` as a user runs it: clear errors for a bad file, and a clean stop on SIGTERM."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import CLASSIFICATION_YAML, write_model_yaml
from tests.e2e.serving import REPO, get, vss_run
from tests.fixtures.onnx_graphs import mean_colour_classifier, save


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vss_cli.main", "run", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120, check=False)


def test_a_missing_model_file_fails_fast_with_a_message_naming_it(tmp_path: Path) -> None:
    path = write_model_yaml(tmp_path, "ghost", CLASSIFICATION_YAML, tmp_path / "missing.onnx")
    done = _run(str(path))
    assert done.returncode == 2
    assert "missing.onnx" in done.stderr and "not found" in done.stderr


def test_remote_storage_is_refused_locally_with_a_pointer_to_the_cluster_path(tmp_path: Path) -> None:
    path = tmp_path / "remote.yaml"
    path.write_text(CLASSIFICATION_YAML.format(name="remote", path="s3://models/not-in-the-store.onnx"))
    done = _run(str(path))
    assert done.returncode == 2 and "needs a cluster" in done.stderr and "model store" in done.stderr


def test_an_invalid_vssmodel_is_refused_with_the_field_that_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(CLASSIFICATION_YAML.format(name="bad", path="m.onnx").replace("version: v1", "version: v9"))
    done = _run(str(path))
    assert done.returncode == 2 and "v9" in done.stderr and "versions" in done.stderr


@pytest.mark.parametrize("processes", ["single", "two"])
def test_sigterm_stops_every_serving_process_and_frees_the_ports(tmp_path: Path, processes: str) -> None:
    model = save(mean_colour_classifier(), tmp_path / "colour.onnx")
    with vss_run(write_model_yaml(tmp_path, "stopme", CLASSIFICATION_YAML, model, processes), "stopme",
                 tmp_path) as served:
        assert get(f"http://{served.rest_url}/v2/health/ready")[0] == 200
    assert served.process.returncode == 0, served.output()[-3000:]
    assert "Stopping the model server" in served.output()
    try:
        status = get(f"http://{served.rest_url}/v2/health/live")[0]
    except OSError:
        status = None
    assert status is None
