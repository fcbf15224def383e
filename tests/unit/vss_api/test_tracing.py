"""vss_api.tracing in one process: spans recorded by the SDK's in-memory exporter (the OTLP path is covered by
tests/e2e/test_tracing.py), the W3C context read and written, and tracing off leaving no trace at all."""

from __future__ import annotations

import asyncio
import contextvars
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from kserve.errors import InvalidInput
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from vss_api.request_context import RequestContext
from vss_api.serving_flags import (
    TracingFlags,
    predictor_flags,
    predictor_parser,
    traces_url,
    tracing_flags,
    transformer_parser,
)
from vss_api.tracing import CLIENT, Tracing, annotate, inject, record, stage, traced
from vss_api.vssmodel import VSSModelSpec

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"


@pytest.fixture
def exported() -> Iterator[tuple[Tracing, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield Tracing(provider.get_tracer("test"), provider, caller_errors=(InvalidInput,)), exporter
    provider.shutdown()


def _by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in exporter.get_finished_spans()}


def test_a_request_span_is_the_child_of_the_callers_traceparent_and_its_stages_are_its_children(
        exported: tuple[Tracing, InMemorySpanExporter]) -> None:
    tracing, exporter = exported
    with tracing.request("transformer.infer", RequestContext("r1", TRACEPARENT), {"vss.model.name": "m"}):
        with stage("decode"):
            pass
        with stage("predictor.infer", kind=CLIENT):
            hop = RequestContext("r1", TRACEPARENT).headers()
            inject(hop)
        record("batch_wait", 1_000, 2_000, {"vss.batch.size": 4})
    spans = _by_name(exporter)
    root = spans["transformer.infer"]
    assert root.kind is SpanKind.SERVER and root.parent is not None and root.parent.is_remote
    assert format(root.context.trace_id, "032x") == TRACE_ID and format(root.parent.span_id, "016x") == CALLER_SPAN
    assert root.attributes == {"vss.model.name": "m"}
    for name in ("decode", "predictor.infer", "batch_wait"):
        assert spans[name].parent is not None and spans[name].parent.span_id == root.context.span_id, name
    assert spans["predictor.infer"].kind is SpanKind.CLIENT
    assert (spans["batch_wait"].start_time, spans["batch_wait"].end_time) == (1_000, 2_000)
    # The next hop's traceparent names the client span, in the caller's trace; the request id stays.
    client = spans["predictor.infer"].context
    assert hop["traceparent"] == f"00-{TRACE_ID}-{client.span_id:016x}-01" and hop["x-request-id"] == "r1"


def test_a_request_without_a_traceparent_starts_a_trace_of_its_own(
        exported: tuple[Tracing, InMemorySpanExporter]) -> None:
    tracing, exporter = exported
    with tracing.request("transformer.infer", RequestContext("r2")):
        pass
    (root,) = exporter.get_finished_spans()
    assert root.parent is None and root.context.trace_id != int(TRACE_ID, 16)


def test_a_caller_mistake_is_named_on_the_span_without_an_error_status_and_a_bug_is_an_error(
        exported: tuple[Tracing, InMemorySpanExporter]) -> None:
    tracing, exporter = exported
    with pytest.raises(InvalidInput), tracing.request("bad", RequestContext("r3")), stage("decode"):
        raise InvalidInput("not an image")
    with pytest.raises(RuntimeError), tracing.request("bug", RequestContext("r4")):
        raise RuntimeError("broken")
    spans = _by_name(exporter)
    for name in ("bad", "decode"):
        assert spans[name].status.status_code is StatusCode.UNSET
        assert spans[name].attributes is not None and spans[name].attributes["error.type"] == "InvalidInput"
    assert spans["bug"].status.status_code is StatusCode.ERROR
    assert [event.name for event in spans["bug"].events] == ["exception"]


async def test_stages_in_an_executor_thread_are_children_of_the_request_that_handed_them_over(
        exported: tuple[Tracing, InMemorySpanExporter]) -> None:
    tracing, exporter = exported

    def preprocess() -> bool:
        with stage("preprocess"):
            annotate({"vss.batch.size": 2})
        return traced()

    with tracing.request("transformer.infer", RequestContext("r5", TRACEPARENT)):
        loop = asyncio.get_running_loop()
        in_thread = await loop.run_in_executor(None, contextvars.copy_context().run, preprocess)
    spans = _by_name(exporter)
    assert in_thread
    assert spans["preprocess"].parent is not None
    assert spans["preprocess"].parent.span_id == spans["transformer.infer"].context.span_id
    assert spans["preprocess"].attributes == {"vss.batch.size": 2}


def test_an_unsampled_caller_gets_no_spans_recorded_but_its_context_goes_on(
        exported: tuple[Tracing, InMemorySpanExporter]) -> None:
    """Parent-based sampling is the provider's (`Tracing.start`); the fixture's default sampler is parent-based
    too, so a caller's sampled flag 00 is followed."""
    tracing, exporter = exported
    unsampled = f"00-{TRACE_ID}-{CALLER_SPAN}-00"
    with tracing.request("transformer.infer", RequestContext("r6", unsampled)), stage("predictor.infer"):
        hop: dict[str, str] = {}
        inject(hop)
    assert exporter.get_finished_spans() == ()
    assert hop["traceparent"].startswith(f"00-{TRACE_ID}-") and hop["traceparent"].endswith("-00")


def test_tracing_off_records_nothing_and_passes_the_callers_context_on_unchanged() -> None:
    tracing = Tracing.start(TracingFlags(), model_name="m", version="v1", component="transformer")
    assert not tracing.enabled
    with tracing.request("transformer.infer", RequestContext("r7", TRACEPARENT)) as span, stage("decode") as inner:
        hop = RequestContext("r7", TRACEPARENT).headers()
        inject(hop)
        record("batch_wait", 1, 2)
        annotate({"a": 1})
        assert span is None and inner is None and not traced()
    assert hop == {"x-request-id": "r7", "traceparent": TRACEPARENT}
    tracing.shutdown()


OFF_PROCESS = textwrap.dedent("""
    import sys
    from opentelemetry import trace
    from vss_api.request_context import RequestContext
    from vss_api.serving_flags import TracingFlags
    from vss_api.tracing import Tracing, stage
    tracing = Tracing.start(TracingFlags(), model_name="m", version="v1", component="predictor")
    with tracing.request("predictor.infer", RequestContext("r")), stage("infer"):
        pass
    tracing.shutdown()
    print(sorted(m for m in sys.modules if m.startswith("opentelemetry.sdk") or m.startswith("opentelemetry.exporter")),
          type(trace.get_tracer_provider()).__name__)
""")


def test_a_process_with_tracing_off_loads_neither_the_sdk_nor_an_exporter_and_sets_no_provider() -> None:
    done = subprocess.run([sys.executable, "-c", OFF_PROCESS], capture_output=True, text=True, timeout=60,
                          check=True)
    assert done.stdout.split() == ["[]", "ProxyTracerProvider"]


def test_a_process_with_an_endpoint_has_a_provider_of_its_own_and_none_globally() -> None:
    tracing = Tracing.start(TracingFlags("http://127.0.0.1:9/v1/traces", 0.5), model_name="yolo", version="v2",
                            component="predictor")
    from opentelemetry import trace

    assert tracing.enabled and type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"
    assert tracing._provider is not None
    resource = tracing._provider.resource.attributes
    assert (resource["service.name"], resource["service.version"]) == ("yolo-predictor", "v2")
    assert tracing._provider.sampler.get_description().startswith("ParentBased{root:TraceIdRatioBased{0.5},")
    tracing.shutdown()  # nothing was recorded: nothing is sent to the closed port


# --- the flags ----------------------------------------------------------------------------------------

def _spec(tracing: dict[str, object] | None = None) -> VSSModelSpec:
    return VSSModelSpec.model_validate({"task": "detection", "version": "v1",
                                        "versions": [{"name": "v1", "storageUri": "m.onnx"}],
                                        **({} if tracing is None else {"tracing": tracing})})


def test_a_collectors_base_url_becomes_its_traces_url_and_a_traces_url_is_kept() -> None:
    assert traces_url("http://otel.observability:4318") == "http://otel.observability:4318/v1/traces"
    assert traces_url("http://otel:4318/") == "http://otel:4318/v1/traces"
    assert traces_url("https://tempo.example.com/otlp/v1/traces") == "https://tempo.example.com/otlp/v1/traces"


def test_the_spec_names_the_collector_and_the_operators_default_serves_a_spec_that_names_none() -> None:
    assert tracing_flags(_spec()) == TracingFlags(None, 1.0)
    assert tracing_flags(_spec(), "http://default:4318") == TracingFlags("http://default:4318/v1/traces", 1.0)
    assert tracing_flags(_spec({"endpoint": "http://mine:4318", "samplingRatio": 0.25}), "http://default:4318") \
        == TracingFlags("http://mine:4318/v1/traces", 0.25)


@pytest.mark.parametrize("tracing", [{"endpoint": "otel:4318"}, {"endpoint": "http://a b"},
                                     {"samplingRatio": 1.5}, {"samplingRatio": -0.1}, {"sampler": "always"}])
def test_a_tracing_block_that_cannot_be_served_is_refused(tracing: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="tracing"):
        _spec(tracing)


def test_the_tracing_flags_read_back_as_written_by_both_processes_parsers() -> None:
    flags = TracingFlags("http://otel:4318/v1/traces", 0.1)
    for parser, required in ((predictor_parser(), ["--model_path", "m"]),
                             (transformer_parser(), ["--task", "detection", "--predictor_rest_host", "h:1"])):
        args = parser.parse_args([*required, *flags.args()])
        assert (args.otlp_traces_endpoint, args.trace_sampling_ratio) == (flags.endpoint, flags.sampling_ratio)
    assert TracingFlags().args() == []
    assert predictor_flags(predictor_parser().parse_args(["--model_path", "m"])).tracing == TracingFlags()



def test_a_sampling_ratio_outside_zero_to_one_is_refused_on_the_command_line() -> None:
    with pytest.raises(SystemExit):
        predictor_parser().parse_args(["--model_path", "m", "--trace_sampling_ratio", "2"])
