"""One request's trace across the two processes of a pod: the real transformer and predictor, told of a collector
by `spec.tracing.endpoint` through the flags the operator writes, export their spans with the OpenTelemetry SDK's
OTLP/HTTP exporter to a real receiver (tests/support/otlp_receiver.py), and the spans link up: one trace, the
client's traceparent its root's parent, the predictor's spans under the transformer's call to it. Without an
endpoint, nothing is sent, even to an OTLP endpoint that the standard environment variables name."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
import tritonclient.http as httpclient
import yaml

from tests.e2e.conftest import CLASSIFICATION_YAML, jpeg
from tests.e2e.prometheus_server import wait_until
from tests.e2e.serving import vss_run
from tests.e2e.serving_pair import REPO, Pair, serving_pair
from tests.fixtures.onnx_graphs import mean_colour_classifier, save
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan, otlp_receiver
from vss_api.vssmodel import VSSModelSpec

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"
RED = jpeg(np.broadcast_to(np.array((250, 10, 10), np.uint8), (240, 320, 3)).copy())
TRANSFORMER_SPANS = {"transformer.infer", "parse", "decode", "preprocess", "predictor.infer", "postprocess"}
PREDICTOR_SPANS = {"predictor.infer", "batch_wait", "infer"}
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "50"}  # ms between exports (the SDK's default is 5 s)


def _spec(name: str, model: Path, tracing: dict[str, object] | None) -> VSSModelSpec:
    body = yaml.safe_load(CLASSIFICATION_YAML.format(name=name, path=model))
    if tracing is not None:
        body["spec"]["tracing"] = tracing
    return VSSModelSpec.model_validate(body["spec"])


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save(mean_colour_classifier(), tmp_path_factory.mktemp("tracing") / "colour.onnx")


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as running:
        yield running


@pytest.fixture(scope="module")
def traced(model_file: Path, receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    spec = _spec("traced", model_file, {"endpoint": receiver.url})
    with serving_pair(spec, "traced", model_file, tmp_path_factory.mktemp("traced"), env=FAST_EXPORT) as pair:
        yield pair


def _image() -> np.ndarray:
    return np.array([RED], dtype=object)


def _trace(receiver: OtlpReceiver, trace_id: str) -> dict[tuple[str, str], ReceivedSpan]:
    """The spans of `trace_id` by (service, name), waited for until both processes' have all arrived."""
    wanted = {("traced-transformer", n) for n in TRANSFORMER_SPANS} | {("traced-predictor", n) for n in PREDICTOR_SPANS}

    def complete() -> dict[tuple[str, str], ReceivedSpan] | None:
        spans = {(s.service, s.name): s for s in receiver.spans() if s.trace_id == trace_id}
        return spans if wanted <= set(spans) else None

    return wait_until(f"the spans of trace {trace_id}", complete, 30, every_s=0.05)


def _tree(spans: dict[tuple[str, str], ReceivedSpan]) -> str:
    """The trace as docs/tracing.md shows it: each span under its parent, with its service and duration."""
    by_id = {s.span_id: s for s in spans.values()}
    children: dict[str, list[ReceivedSpan]] = {}
    for span in spans.values():
        children.setdefault(span.parent_span_id if span.parent_span_id in by_id else "", []).append(span)
    lines: list[str] = []

    def walk(parent: str, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: s.start_ns):
            lines.append(f"{'  ' * depth}{span.name:<{24 - 2 * depth}} {span.kind:<8} {span.service:<19} "
                         f"{span.duration_ms:8.3f} ms")
            walk(span.span_id, depth + 1)

    walk("", 0)
    return "\n".join(lines)


def test_one_rest_requests_spans_from_both_processes_form_one_trace_under_the_clients_traceparent(
        traced: Pair, receiver: OtlpReceiver) -> None:
    client = httpclient.InferenceServerClient(traced.transformer.rest_url)
    tensor = httpclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(_image())
    result = client.infer(traced.name, [tensor], request_id="traced-1", headers={"traceparent": TRACEPARENT})
    assert result.as_numpy("labels")[0][0].decode() == "red"
    spans = _trace(receiver, TRACE_ID)
    print(f"\none request's trace ({TRACEPARENT} sent by the client):\n{_tree(spans)}")

    root = spans["traced-transformer", "transformer.infer"]
    assert (root.kind, root.parent_span_id) == ("server", CLIENT_SPAN)
    assert root.attributes["vss.model.name"] == "traced" and root.attributes["vss.request.id"] == "traced-1"
    assert root.attributes["vss.batch.size"] == 1
    for name in TRANSFORMER_SPANS - {"transformer.infer"}:
        assert spans["traced-transformer", name].parent_span_id == root.span_id, name
    call = spans["traced-transformer", "predictor.infer"]
    served = spans["traced-predictor", "predictor.infer"]
    assert (call.kind, served.kind) == ("client", "server")
    assert served.parent_span_id == call.span_id
    assert served.attributes["vss.model.version"] == "v1" and served.attributes["vss.batch.size"] == 1
    for name in ("batch_wait", "infer"):
        span = spans["traced-predictor", name]
        assert span.parent_span_id == served.span_id, name
        assert served.start_ns <= span.start_ns <= span.end_ns <= served.end_ns, name
        assert span.attributes["vss.batch.size"] == 1 and span.attributes["vss.model.name"] == "traced"
    assert spans["traced-predictor", "batch_wait"].end_ns <= spans["traced-predictor", "infer"].start_ns
    assert root.start_ns <= call.start_ns <= served.start_ns and served.end_ns <= call.end_ns <= root.end_ns
    assert all(s.status_code == 0 for s in spans.values())


def test_a_grpc_request_without_a_traceparent_gets_a_trace_of_its_own_and_learns_it_from_the_answer(
        traced: Pair, receiver: OtlpReceiver, tmp_path: Path) -> None:
    image = tmp_path / "red.jpg"
    image.write_bytes(RED)
    # In a child process: tritonclient.grpc and kserve register clashing protobuf symbols.
    done = subprocess.run([sys.executable, "-m", "tests.e2e.triton_grpc_trace_call", traced.transformer.grpc_url,
                           traced.name, "traced-grpc", str(image)],
                          capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout)
    assert answer["labels"][0] == "red"
    _, trace_id, span_id, flags = answer["initial_metadata"]["traceparent"].split("-")
    spans = _trace(receiver, trace_id)
    root = spans["traced-transformer", "transformer.infer"]
    assert (root.span_id, root.parent_span_id) == (span_id, "")
    assert int(flags, 16) & 1  # sampled (the SDK also sets W3C level 2's random-trace-id flag, 02)
    assert root.attributes["vss.request.id"] == "traced-grpc"
    assert spans["traced-predictor", "predictor.infer"].parent_span_id == \
        spans["traced-transformer", "predictor.infer"].span_id


def test_the_answer_names_the_transformers_span_in_the_callers_trace(traced: Pair, receiver: OtlpReceiver) -> None:
    other = "0af7651916cd43dd8448eb211c80319c"
    headers = _rest_headers(traced, other)
    root = _trace(receiver, other)["traced-transformer", "transformer.infer"]
    assert headers["traceparent"] == f"00-{other}-{root.span_id}-01"


def _rest_headers(pair: Pair, trace_id: str) -> dict[str, str]:
    """The response headers of one binary v2 REST request carrying `trace_id` (tritonclient keeps none)."""
    header = orjson.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                       "parameters": {"binary_data_size": 4 + len(RED)}}]})
    request = urllib.request.Request(
        f"http://{pair.transformer.rest_url}/v2/models/{pair.name}/infer",
        data=header + len(RED).to_bytes(4, "little") + RED, method="POST",
        headers={"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header)),
                 "traceparent": f"00-{trace_id}-b7ad6b7169203331-01"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        assert reply.status == 200
        return {k.lower(): v for k, v in reply.headers.items()}


def test_a_caller_that_did_not_sample_its_trace_gets_no_spans_but_its_context_goes_through(
        traced: Pair, receiver: OtlpReceiver) -> None:
    """Absence, told without waiting for it: the processes export spans in the order they end, so once the spans
    of a sampled request sent after the unsampled one have arrived, the unsampled one's would have too."""
    client = httpclient.InferenceServerClient(traced.transformer.rest_url)
    tensor = httpclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(_image())
    unsampled, after = "11111111111111111111111111111111", "22222222222222222222222222222222"
    client.infer(traced.name, [tensor], headers={"traceparent": f"00-{unsampled}-{CLIENT_SPAN}-00"})
    client.infer(traced.name, [tensor], headers={"traceparent": f"00-{after}-{CLIENT_SPAN}-01"})
    _trace(receiver, after)
    assert [s for s in receiver.spans() if s.trace_id == unsampled] == []


def test_without_an_endpoint_nothing_is_exported_even_where_the_otel_variables_point(
        model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The processes run with OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT naming a live receiver but no tracing in the
    spec: they serve and pass the caller's traceparent on as before, and when they have stopped (a provider
    would have flushed its spans at shutdown) the receiver has had no request at all."""
    with otlp_receiver() as stray:
        env = {**FAST_EXPORT, "OTEL_EXPORTER_OTLP_ENDPOINT": stray.url,
               "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{stray.url}/v1/traces"}
        spec = _spec("untraced", model_file, None)
        with serving_pair(spec, "untraced", model_file, tmp_path_factory.mktemp("untraced"), env=env) as pair:
            assert "--otlp_traces_endpoint" not in pair.transformer.process.args
            headers = _rest_headers(pair, TRACE_ID)
            assert headers["traceparent"] == f"00-{TRACE_ID}-b7ad6b7169203331-01"  # as it came
            processes = (pair.predictor.process, pair.transformer.process)
        assert [p.returncode for p in processes] == [0, 0]
        assert stray.requests == 0 and stray.spans() == []


def test_a_single_process_server_makes_the_same_trace_with_the_batchers_spans_under_its_call_to_the_model(
        model_file: Path, receiver: OtlpReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One process (`spec.predictor.processes: single`, the CPU default) has one service: the transformer's spans,
    and the predictor's `batch_wait` and `infer` as children of its `predictor.infer` (docs/tracing.md)."""
    body = yaml.safe_load(CLASSIFICATION_YAML.format(name="single-traced", path=model_file))
    body["spec"]["tracing"] = {"endpoint": receiver.url}
    body["spec"]["predictor"] = {"processes": "single"}
    spec_path = tmp_path / "single-traced.yaml"
    spec_path.write_text(yaml.safe_dump(body))
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", FAST_EXPORT["OTEL_BSP_SCHEDULE_DELAY"])
    trace_id = "5bf92f3577b34da6a3ce929d0e0e4737"
    with vss_run(spec_path, "single-traced", tmp_path) as served:
        client = httpclient.InferenceServerClient(served.rest_url)
        tensor = httpclient.InferInput("image", [1], "BYTES")
        tensor.set_data_from_numpy(_image())
        client.infer(served.name, [tensor], headers={"traceparent": f"00-{trace_id}-{CLIENT_SPAN}-01"})
        wanted = {("single-traced-transformer", n) for n in TRANSFORMER_SPANS | {"batch_wait", "infer"}}

        def complete() -> dict[tuple[str, str], ReceivedSpan] | None:
            spans = {(s.service, s.name): s for s in receiver.spans() if s.trace_id == trace_id}
            return spans if wanted <= set(spans) else None

        spans = wait_until(f"the spans of trace {trace_id}", complete, 30, every_s=0.05)
    assert {service for service, _ in spans} == {"single-traced-transformer"}
    root = spans["single-traced-transformer", "transformer.infer"]
    call = spans["single-traced-transformer", "predictor.infer"]
    assert root.parent_span_id == CLIENT_SPAN and call.parent_span_id == root.span_id
    for name in ("batch_wait", "infer"):
        span = spans["single-traced-transformer", name]
        assert span.parent_span_id == call.span_id, name
        assert call.start_ns <= span.start_ns <= span.end_ns <= call.end_ns, name
