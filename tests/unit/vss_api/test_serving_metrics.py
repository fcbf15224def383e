"""The GPU memory gauge on a machine without an NVIDIA driver (every CI machine here); on a GPU machine
benchmarks/gpu.sh reads the series."""

from prometheus_client import CollectorRegistry, generate_latest

from vss_api.serving_metrics import ServingMetrics, track_gpu_memory


def test_without_a_driver_no_gpu_memory_series_is_exported() -> None:
    registry = CollectorRegistry()
    metrics = ServingMetrics.create(registry)
    assert track_gpu_memory(metrics, "m", "v1") is False
    assert b'gpu_memory_usage_bytes{' not in generate_latest(registry)


def test_request_counters_are_exposed_with_the_total_suffix_and_labels() -> None:
    registry = CollectorRegistry()
    metrics = ServingMetrics.create(registry)
    metrics.requests.labels(model_name="m", version="v1", component="predictor", status="success").inc()
    text = generate_latest(registry).decode()
    assert 'inference_requests_total{component="predictor",model_name="m",status="success",version="v1"} 1.0' in text


def test_every_outcome_series_exists_at_zero_before_the_first_request() -> None:
    registry = CollectorRegistry()
    metrics = ServingMetrics.create(registry)
    metrics.start_counting("m", "v2", "predictor")
    text = generate_latest(registry).decode()
    for status in ("success", "client_error", "server_error"):
        labels = f'component="predictor",model_name="m",status="{status}",version="v2"'
        assert f"inference_requests_total{{{labels}}} 0.0" in text
    stage = 'component="predictor",model_name="m",stage="predict",version="v2"'
    assert f"inference_duration_seconds_count{{{stage}}} 0.0" in text
