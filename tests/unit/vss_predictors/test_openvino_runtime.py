"""OpenVINO on the CPU, real: the package is installed with the serving extra, and the graphs are the test
fixtures' ONNX models (the shipped ones for the model that OpenVINO cannot run)."""

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.onnx_graphs import colour_cell_detector, mean_colour_classifier, save
from vss_api.serving_flags import Normalization
from vss_predictors.errors import UnsupportedModel
from vss_predictors.model import PredictorSettings, open_runtime, wants_openvino
from vss_predictors.onnx_runtime import OnnxRuntime
from vss_predictors.openvino_runtime import OpenVinoRuntime

REPO = Path(__file__).resolve().parents[3]


def test_openvino_gives_the_outputs_onnx_runtime_gives_on_the_same_file_and_prelude(tmp_path: Path) -> None:
    path = save(colour_cell_detector(), tmp_path / "m.onnx")
    pixels = np.random.default_rng(3).integers(0, 256, (2, 64, 96, 3), dtype=np.uint8)
    ov = OpenVinoRuntime(path, normalization=Normalization(), cache_dir=tmp_path)
    ort = OnnxRuntime(path, normalization=Normalization(), cache_dir=tmp_path)
    assert ov.prelude and ov.inputs == ort.inputs and ov.outputs == ort.outputs
    got, want = ov.run({"images": pixels}), ort.run({"images": pixels})
    assert got.keys() == want.keys()
    np.testing.assert_allclose(got["output0"], want["output0"], rtol=1e-5, atol=1e-5)


def test_openvino_reports_its_backend_precision_and_the_exports_metadata(tmp_path: Path) -> None:
    runtime = OpenVinoRuntime(save(colour_cell_detector(), tmp_path / "m.onnx"), normalization=Normalization(),
                              cache_dir=tmp_path)
    assert runtime.info.backend.startswith("openvino-")
    assert runtime.info.providers == ("CPU:f32",) and runtime.info.device == "cpu"
    assert runtime.info.metadata["stride"] == "32"


def test_outputs_of_overlapping_runs_are_each_their_own(tmp_path: Path) -> None:
    """Two runs at once (the batcher's `max_in_flight`) use two infer requests (on a machine of more than one
    core, the overlapping one on a stream of one thread): neither sees the other's outputs, and an answer is not
    overwritten by the next run."""
    runtime = OpenVinoRuntime(save(mean_colour_classifier(), tmp_path / "c.onnx"), normalization=Normalization(),
                              concurrent_runs=2, cache_dir=tmp_path)
    assert runtime.overlap_streams == (2 if len(os.sched_getaffinity(0)) > 1 else 0)
    name = runtime.inputs[0].name
    reds = np.zeros((1, 224, 224, 3), np.uint8)
    reds[..., 0] = 255
    blues = np.zeros((1, 224, 224, 3), np.uint8)
    blues[..., 2] = 255
    want = {"red": runtime.run({name: reds}), "blue": runtime.run({name: blues})}
    assert not np.allclose(want["red"][runtime.outputs[0].name], want["blue"][runtime.outputs[0].name])
    start = threading.Barrier(2)
    wrong: list[str] = []

    def work(label: str, pixels: np.ndarray) -> None:
        start.wait(timeout=30)
        kept = [runtime.run({name: pixels}) for _ in range(20)]
        for out in kept:
            if not np.array_equal(out[runtime.outputs[0].name], want[label][runtime.outputs[0].name]):
                wrong.append(label)

    threads = [threading.Thread(target=work, args=a) for a in (("red", reds), ("blue", blues))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert wrong == []


def test_a_model_openvino_cannot_run_is_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModel, match="OpenVINO cannot run this model"):
        OpenVinoRuntime(REPO / "models" / "artifacts" / "anomaly.onnx", cache_dir=tmp_path)


def test_an_unknown_precision_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModel, match="precision"):
        OpenVinoRuntime(save(colour_cell_detector(), tmp_path / "m.onnx"), precision="int4", cache_dir=tmp_path)


def _settings(**kw: object) -> PredictorSettings:
    return PredictorSettings(model_name="m", version="v1", model_path=Path("/m.onnx"), **kw)  # type: ignore[arg-type]


def test_auto_picks_openvino_for_an_image_model_on_the_cpu_and_onnx_runtime_elsewhere() -> None:
    assert wants_openvino(_settings(normalization=Normalization()))
    assert not wants_openvino(_settings())  # a series model: no pixels, no prelude
    assert not wants_openvino(_settings(normalization=Normalization(), device="gpu"))
    assert not wants_openvino(_settings(normalization=Normalization(), runtime="onnxruntime"))
    assert wants_openvino(_settings(runtime="openvino"))


def test_auto_serves_a_model_openvino_cannot_run_with_onnx_runtime() -> None:
    """Normalisation set, so `auto` tries OpenVINO first (the trees of the anomaly model have no kernel there)."""
    anomaly = REPO / "models" / "artifacts" / "anomaly.onnx"
    runtime = open_runtime(PredictorSettings(model_name="m", version="v1", model_path=anomaly,
                                             normalization=Normalization()))
    assert runtime.info.backend.startswith("onnxruntime-")
    with pytest.raises(UnsupportedModel, match="OpenVINO cannot run this model"):
        open_runtime(PredictorSettings(model_name="m", version="v1", model_path=anomaly, runtime="openvino"))


def test_auto_serves_an_image_model_with_openvino(tmp_path: Path) -> None:
    path = save(mean_colour_classifier(), tmp_path / "c.onnx")
    runtime = open_runtime(PredictorSettings(model_name="m", version="v1", model_path=path,
                                             normalization=Normalization()))
    assert runtime.info.backend.startswith("openvino-")


def test_set_threads_or_one_run_at_a_time_compile_the_model_once(tmp_path: Path) -> None:
    path = save(mean_colour_classifier(), tmp_path / "c.onnx")
    assert OpenVinoRuntime(path, normalization=Normalization(), concurrent_runs=2, threads=1,
                           cache_dir=tmp_path).overlap_streams == 0
    assert OpenVinoRuntime(path, normalization=Normalization(), concurrent_runs=1,
                           cache_dir=tmp_path).overlap_streams == 0


FIRST_RUNS_AT_ONCE = """
import sys, threading, numpy as np
from pathlib import Path
from vss_api.serving_flags import Normalization
from vss_predictors.openvino_runtime import OpenVinoRuntime
runtime = OpenVinoRuntime(Path(sys.argv[1]), normalization=Normalization(), concurrent_runs=2,
                          cache_dir=Path(sys.argv[2]))
name = runtime.inputs[0].name
start = threading.Barrier(8)
def work():
    start.wait()
    runtime.run({name: np.zeros((1, 224, 224, 3), np.uint8)})
threads = [threading.Thread(target=work) for _ in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
print("all ran")
"""


def test_the_first_runs_of_a_fresh_process_may_all_start_at_once(tmp_path: Path) -> None:
    """OpenVINO's Python module sets up its NumPy bridge on the first array it converts, in a way that deadlocks
    when two threads do it at once; the runtime does it on one thread before any run. A fresh process, because
    this one may have set it up already; the timeout turns a hang into a failure."""
    import subprocess
    import sys

    path = save(mean_colour_classifier(), tmp_path / "c.onnx")
    done = subprocess.run([sys.executable, "-c", FIRST_RUNS_AT_ONCE, str(path), str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0 and "all ran" in done.stdout, done.stderr[-2000:]


def test_auto_leaves_a_quantized_model_on_onnx_runtime_unless_openvino_is_asked_for() -> None:
    int8 = REPO / "models" / "artifacts" / "detector.int8.onnx"
    auto = open_runtime(PredictorSettings(model_name="m", version="v1", model_path=int8,
                                          normalization=Normalization()))
    assert auto.info.backend.startswith("onnxruntime-")
    asked = open_runtime(PredictorSettings(model_name="m", version="v1", model_path=int8, runtime="openvino",
                                           normalization=Normalization()))
    assert asked.info.backend.startswith("openvino-")
