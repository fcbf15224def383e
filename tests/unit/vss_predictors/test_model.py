"""The predictor's KServe model without a server: its load retries, its stop(), and the request id and trace
context it echoes and logs."""

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest
from kserve.protocol.infer_type import InferInput, InferRequest
from prometheus_client import CollectorRegistry

from tests.fixtures.onnx_graphs import mean_colour_classifier, save
from vss_api.request_context import RequestContextFilter
from vss_api.serving_metrics import ServingMetrics
from vss_api.v2 import Array
from vss_predictors import model as predictor_model
from vss_predictors.errors import ModelLoadError, PredictorStopping
from vss_predictors.model import PredictorModel, PredictorSettings, load_with_retries
from vss_predictors.runtime import RuntimeInfo, TensorSpec

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class GatedRuntime:
    """Doubles `x`; while `gate` is clear a run blocks in its thread, and `entered` says a run has started."""

    inputs = [TensorSpec("x", "FP32", (-1, 2))]  # noqa: RUF012 - read-only stand-in of the Runtime protocol
    outputs = [TensorSpec("y", "FP32", (-1, 2))]  # noqa: RUF012
    info = RuntimeInfo(backend="gated", providers=("CPU",), device="cpu")

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def run(self, feeds: Mapping[str, Array]) -> dict[str, Array]:
        self.entered.set()
        assert self.gate.wait(10), "the test never opened the gate"
        return {"y": np.asarray(feeds["x"]) * 2}


def _model(monkeypatch: pytest.MonkeyPatch, runtime: GatedRuntime, *, max_in_flight: int = 1) -> PredictorModel:
    monkeypatch.setattr(predictor_model, "open_runtime", lambda _settings: runtime)
    settings = PredictorSettings(model_name="m", version="v1", model_path=Path("unused.onnx"),
                                 max_in_flight=max_in_flight, max_latency_ms=0.0)
    model = PredictorModel(settings, ServingMetrics.create(CollectorRegistry()))
    model.load()
    return model


def _request(request_id: str, value: float = 1.0) -> InferRequest:
    tensor = InferInput(name="x", shape=[1, 2], datatype="FP32")
    tensor.set_data_from_numpy(np.full((1, 2), value, np.float32), binary_data=True)
    return InferRequest(model_name="m", infer_inputs=[tensor], request_id=request_id)


def _batch_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("vss-batch")]


async def _until(what: str, condition: Callable[[], bool], deadline_s: float = 5.0) -> None:
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError(f"{what}: not after {deadline_s}s")
        await asyncio.sleep(0.01)


async def test_after_stop_no_batch_thread_remains_and_a_waiting_request_fails_instead_of_hanging(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """One request is running in the runtime (the gate holds it), the next waits for the only batch slot.
    stop() refuses the waiting one at once; the running one still gets its answer; then the threads end."""
    runtime = GatedRuntime()
    model = _model(monkeypatch, runtime)
    runtime.gate.clear()
    runtime.entered.clear()
    running = asyncio.create_task(model.predict(_request("running", 1.0)))
    assert await asyncio.to_thread(runtime.entered.wait, 5)
    waiting = asyncio.create_task(model.predict(_request("waiting", 2.0)))
    await asyncio.sleep(0)  # one turn of the loop: `waiting` has run to its first await, into the queue
    assert _batch_threads()

    model.stop()

    with pytest.raises(PredictorStopping, match="shutting down"):
        await asyncio.wait_for(waiting, 5)
    assert not model.ready
    runtime.gate.set()
    answer = await asyncio.wait_for(running, 5)
    np.testing.assert_array_equal(answer.outputs[0].as_numpy(), np.full((1, 2), 2.0, np.float32))
    await _until("the batch threads to exit", lambda: not _batch_threads())
    with pytest.raises(PredictorStopping):
        await asyncio.wait_for(model.predict(_request("late")), 5)


async def test_the_queue_depth_gauge_counts_the_requests_waiting_behind_a_running_batch(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`inference_queue_depth` is read from the batcher at scrape time: 0 when idle, the waiting requests while
    the one batch slot is busy, 0 again once they ran."""
    registry = CollectorRegistry()
    runtime = GatedRuntime()
    monkeypatch.setattr(predictor_model, "open_runtime", lambda _settings: runtime)
    settings = PredictorSettings(model_name="m", version="v1", model_path=Path("unused.onnx"), max_in_flight=1,
                                 max_latency_ms=0.0)
    model = PredictorModel(settings, ServingMetrics.create(registry))
    model.load()

    def depth() -> float | None:
        return registry.get_sample_value("inference_queue_depth", {"model_name": "m", "version": "v1"})

    assert depth() == 0
    runtime.gate.clear()
    runtime.entered.clear()
    running = asyncio.create_task(model.predict(_request("running")))
    assert await asyncio.to_thread(runtime.entered.wait, 5)
    waiting = [asyncio.create_task(model.predict(_request(f"w{i}"))) for i in range(3)]
    await _until("three requests queued", lambda: depth() == 3)
    runtime.gate.set()
    await asyncio.wait_for(asyncio.gather(running, *waiting), 5)
    assert depth() == 0
    model.stop()


def test_stop_logs_that_the_model_stopped_and_may_be_called_twice(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    model = _model(monkeypatch, GatedRuntime())
    with caplog.at_level(logging.INFO, logger="vss_predictors.model"):
        model.stop()
        model.stop()
    assert [r.getMessage() for r in caplog.records].count("model stopped") == 2


async def test_the_response_carries_the_request_id_and_the_trace_context_comes_back_as_headers(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    model = _model(monkeypatch, GatedRuntime())
    caplog.handler.addFilter(RequestContextFilter())
    response_headers: dict[str, str] = {}
    with caplog.at_level(logging.DEBUG, logger="vss_predictors.model"):
        response = await model.predict(_request("req-1"), {"traceparent": TRACEPARENT, "tracestate": "a=b"},
                                       response_headers)
    model.stop()
    assert response.id == "req-1"
    assert response_headers == {"x-request-id": "req-1", "traceparent": TRACEPARENT, "tracestate": "a=b"}
    (line,) = [r for r in caplog.records if r.getMessage() == "inference done"]
    assert vars(line)["request_id"] == "req-1"
    assert vars(line)["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"


async def test_a_request_without_a_v2_id_is_answered_with_its_x_request_id(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model(monkeypatch, GatedRuntime())
    response = await model.predict(_request(""), {"x-request-id": "from-the-transformer"}, {})
    model.stop()
    assert response.id == "from-the-transformer"


# --- loading --------------------------------------------------------------------------------------------------
def _settings(path: Path, model_format: str = "onnx") -> PredictorSettings:
    return PredictorSettings(model_name="m", version="v1", model_path=path, model_format=model_format,
                             load_attempts=5, load_backoff_s=0.5)


def test_a_model_file_that_appears_after_the_first_attempt_is_loaded(tmp_path: Path) -> None:
    """The backoff sleep is the test's: it tells the writer thread that an attempt failed and returns once the
    file is in place, so the outcome depends on the order of events, not on how long anything takes."""
    path = tmp_path / "colour.onnx"
    attempt_failed, written = threading.Event(), threading.Event()
    delays: list[float] = []

    def storage_initializer() -> None:
        assert attempt_failed.wait(10)
        save(mean_colour_classifier(), tmp_path / "partial" / "colour.onnx").replace(path)
        written.set()

    def backoff(delay: float) -> None:
        delays.append(delay)
        attempt_failed.set()
        assert written.wait(10)

    writer = threading.Thread(target=storage_initializer)
    writer.start()
    try:
        runtime = load_with_retries(_settings(path), sleep=backoff)
    finally:
        attempt_failed.set()
        writer.join(10)
    assert delays == [0.5]
    assert [t.name for t in runtime.inputs] == ["images"]


@pytest.mark.parametrize("model_format", ["onnx", "torchscript"])
def test_a_model_file_that_never_appears_fails_after_every_attempt_with_growing_delays(
        tmp_path: Path, model_format: str) -> None:
    delays: list[float] = []
    path = tmp_path / ("missing.onnx" if model_format == "onnx" else "missing.pt")
    with pytest.raises(ModelLoadError, match="after 5 attempts"):
        load_with_retries(_settings(path, model_format), sleep=delays.append)
    assert delays == [0.5, 1.0, 2.0, 4.0]


@pytest.mark.parametrize(("name", "model_format"), [("garbage.onnx", "onnx"), ("garbage.pt", "torchscript"),
                                                    ("colour.bin", "onnx")])
def test_a_file_that_is_there_but_not_a_model_fails_at_once_without_retrying(
        tmp_path: Path, name: str, model_format: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"not a model at all")
    delays: list[float] = []
    with pytest.raises(ModelLoadError, match="cannot serve"):
        load_with_retries(_settings(path, model_format), sleep=delays.append)
    assert delays == []


def test_a_model_file_without_a_suffix_is_loaded_as_kserve_mounts_a_pvc_file_uri(tmp_path: Path) -> None:
    """KServe's pod mutator mounts `pvc://claim/colour.onnx` with subPath, so the file is `/mnt/models` itself."""
    save(mean_colour_classifier(), tmp_path / "colour.onnx").replace(tmp_path / "models")
    runtime = load_with_retries(_settings(tmp_path / "models"), sleep=lambda _: None)
    assert [t.name for t in runtime.inputs] == ["images"]


def test_a_directory_holding_one_model_file_serves_that_file(tmp_path: Path) -> None:
    save(mean_colour_classifier(), tmp_path / "models" / "colour.onnx")
    (tmp_path / "models" / "README.txt").write_text("not a model")
    runtime = load_with_retries(_settings(tmp_path / "models"), sleep=lambda _: None)
    assert [t.name for t in runtime.inputs] == ["images"]


@pytest.mark.parametrize(("files", "message"), [
    (["README.txt"], r"no \.onnx file in it \(it holds \['README.txt'\]\)"),
    (["a.onnx", "b.onnx"], r"holds 2 onnx files \(\['a.onnx', 'b.onnx'\]\): point storageUri at one")])
def test_a_directory_without_exactly_one_model_file_fails_at_once_saying_what_it_holds(
        tmp_path: Path, files: list[str], message: str) -> None:
    (tmp_path / "models").mkdir()
    for name in files:
        (tmp_path / "models" / name).write_bytes(b"x")
    delays: list[float] = []
    with pytest.raises(ModelLoadError, match=message):
        load_with_retries(_settings(tmp_path / "models"), sleep=delays.append)
    assert delays == []


class RecordingRuntime(GatedRuntime):
    """Records the rows of every run; runs of `barrier_rows` rows wait at a barrier of `parties`, so they only
    finish when that many run at once."""

    def __init__(self, barrier_rows: int, parties: int) -> None:
        super().__init__()
        self.rows: list[int] = []
        self.barrier_rows = barrier_rows
        self.barrier = threading.Barrier(parties, timeout=10)

    def run(self, feeds: Mapping[str, Array]) -> dict[str, Array]:
        rows = int(np.asarray(feeds["x"]).shape[0])
        self.rows.append(rows)
        if rows == self.barrier_rows:
            self.barrier.wait()  # BrokenBarrierError after 10 s if the runs were not concurrent
        return super().run(feeds)


def test_load_runs_the_largest_batch_as_many_at_once_as_the_batcher_runs_before_the_model_is_ready(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """So the runtime's memory arena reaches its high-water mark at start, not the first time a burst fills a
    batch (vss_predictors.model._warm_up_largest_batches)."""
    runtime = RecordingRuntime(barrier_rows=8, parties=2)
    monkeypatch.setattr(predictor_model, "open_runtime", lambda _settings: runtime)
    settings = PredictorSettings(model_name="m", version="v1", model_path=Path("unused.onnx"), max_batch_size=8,
                                 max_in_flight=2)
    model = PredictorModel(settings, ServingMetrics.create(CollectorRegistry()))
    assert model.load()
    assert runtime.rows.count(1) == settings.warmup_runs and runtime.rows.count(8) == 2, runtime.rows
    model.stop()


def test_a_model_that_cannot_batch_is_warmed_up_at_batch_one_only(monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = RecordingRuntime(barrier_rows=8, parties=2)
    runtime.inputs = [TensorSpec("x", "FP32", (1, 2))]
    monkeypatch.setattr(predictor_model, "open_runtime", lambda _settings: runtime)
    settings = PredictorSettings(model_name="m", version="v1", model_path=Path("unused.onnx"), max_batch_size=8)
    model = PredictorModel(settings, ServingMetrics.create(CollectorRegistry()))
    assert model.load()
    assert set(runtime.rows) == {1}, runtime.rows
    model.stop()


def test_a_gpu_setting_on_a_cpu_runtime_is_refused_with_its_reason_unless_the_fallback_is_allowed() -> None:
    from vss_predictors.model import gpu_refusal
    from vss_predictors.runtime import RuntimeInfo

    on_cpu = RuntimeInfo(backend="onnxruntime-1.23", providers=("CPUExecutionProvider",), device="cpu")
    on_gpu = RuntimeInfo(backend="onnxruntime-1.23", providers=("CUDAExecutionProvider",), device="gpu")
    gpu = PredictorSettings(model_name="m", version="v1", model_path=Path("/m"), device="gpu")
    reason = gpu_refusal(gpu, on_cpu)
    assert reason is not None and reason.startswith("GpuUnavailable")
    assert "CPUExecutionProvider" in reason and "allowCpuFallback" in reason
    assert gpu_refusal(gpu, on_gpu) is None
    assert gpu_refusal(PredictorSettings(model_name="m", version="v1", model_path=Path("/m"), device="gpu",
                                         allow_cpu_fallback=True), on_cpu) is None
    assert gpu_refusal(PredictorSettings(model_name="m", version="v1", model_path=Path("/m")), on_cpu) is None
