"""OpenTelemetry traces of the data plane: one SERVER span per request in each process, its stages as children,
W3C trace context (`traceparent`, `tracestate`) carried across the transformer -> predictor hop, spans exported
over OTLP/HTTP by a `BatchSpanProcessor`.

Off unless a process is given an endpoint (`--otlp_traces_endpoint`, written by `vss_api.serving_flags` from
the VSSModel's `tracing`): then `Tracing.off()` serves, which neither imports the SDK nor installs a provider,
and every helper here returns after one context-variable read, so untraced requests pay nothing measurable.
Which request is traced, and by which tracer, lives in a context variable set by `Tracing.request` for the
task serving it (copied into executor threads with `contextvars.copy_context()`), so the tasks' code marks a
stage with `stage("decode")` and never holds a tracer. No global tracer provider is set: two `Tracing`s (the
tests') never share one."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from vss_api.metrics import Component
from vss_api.request_context import TRACEPARENT, TRACESTATE, RequestContext
from vss_api.serving_flags import TracingFlags

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

INSTRUMENTATION = "vss_serving"
CLIENT = SpanKind.CLIENT  # a stage that is a call to another process (the transformer's to the predictor)
W3C = TraceContextTextMapPropagator()
Attributes = Mapping[str, str | int | float | bool]


@dataclass(frozen=True)
class _Active:
    tracer: Tracer
    caller_errors: tuple[type[BaseException], ...]


# The tracer of the request the current task serves; None while none is traced (tracing off, warm-up).
_active: ContextVar[_Active | None] = ContextVar("vss_tracing", default=None)


class Tracing:
    """One process's tracing: `off()`, or `start(flags, ...)` with a provider of its own that `shutdown()`
    flushes."""

    def __init__(self, tracer: Tracer | None, provider: TracerProvider | None = None,
                 caller_errors: tuple[type[BaseException], ...] = ()) -> None:
        self._active = None if tracer is None else _Active(tracer, caller_errors)
        self._provider = provider

    @classmethod
    def off(cls) -> Tracing:
        return cls(None)

    @classmethod
    def start(cls, flags: TracingFlags, *, model_name: str, version: str, component: Component,
              caller_errors: tuple[type[BaseException], ...] = ()) -> Tracing:
        """A provider exporting to `flags.endpoint` in batches (`OTEL_BSP_*` and `OTEL_EXPORTER_OTLP_*` tune
        it, as the SDK documents), as the service `<model>-<component>`; `off()` when `flags` name no endpoint.
        Resource attributes in `OTEL_RESOURCE_ATTRIBUTES` (the pod's, which `render` writes) are added.
        `caller_errors` are the caller's mistakes: named on the span (`error.type`), whose status stays unset
        (the OTel convention for a 4xx on a server span)."""
        if flags.endpoint is None:
            return cls.off()
        # Imported here so that a process with tracing off never loads the SDK or the exporter.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        resource = Resource.create({SERVICE_NAME: f"{model_name}-{component}", SERVICE_VERSION: version,
                                    "vss.component": component})
        provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(flags.sampling_ratio)),
                                  shutdown_on_exit=False)  # `shutdown()` flushes, after the servers stop
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=flags.endpoint)))
        return cls(provider.get_tracer(INSTRUMENTATION), provider, caller_errors)

    @property
    def enabled(self) -> bool:
        return self._active is not None

    @contextmanager
    def request(self, name: str, context: RequestContext, attributes: Attributes | None = None
                ) -> Iterator[Span | None]:
        """The SERVER span of one request, a child of the caller's `traceparent` when it sent a valid one (as
        `RequestContext` read it), current for the block and the stages inside it; None when tracing is off."""
        active = self._active
        if active is None:
            yield None
            return
        carrier = {} if context.traceparent is None else {TRACEPARENT: context.traceparent}
        if context.tracestate is not None:
            carrier[TRACESTATE] = context.tracestate
        parent = W3C.extract(carrier)
        span = active.tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes)
        token = _active.set(active)
        attached = otel_context.attach(trace.set_span_in_context(span, parent))
        try:
            yield span
        except BaseException as exc:
            _record(span, exc, active.caller_errors)
            raise
        finally:
            otel_context.detach(attached)
            _active.reset(token)
            span.end()

    def shutdown(self) -> None:
        """Export what is still queued and stop the exporter's thread; the process calls it once its servers
        have stopped. Nothing to do when off."""
        if self._provider is not None:
            self._provider.shutdown()


def _record(span: Span, exc: BaseException, caller_errors: tuple[type[BaseException], ...]) -> None:
    span.set_attribute("error.type", type(exc).__name__)
    if not isinstance(exc, caller_errors):
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


@contextmanager
def stage(name: str, *, kind: SpanKind = SpanKind.INTERNAL, attributes: Attributes | None = None
          ) -> Iterator[Span | None]:
    """A child span of the current one for the block, when the request is traced; else nothing at all."""
    active = _active.get()
    if active is None:
        yield None
        return
    with active.tracer.start_as_current_span(name, kind=kind, attributes=attributes, record_exception=False,
                                             set_status_on_exception=False) as span:
        try:
            yield span
        except BaseException as exc:
            _record(span, exc, active.caller_errors)
            raise


def record(name: str, start_ns: int, end_ns: int, attributes: Attributes | None = None) -> None:
    """A child span of the current one that has already happened, from `time.time_ns()` instants: what another
    task timed for this request (the batcher's queue wait and run). Nothing when the request is not traced."""
    active = _active.get()
    if active is None:
        return
    span = active.tracer.start_span(name, start_time=start_ns, attributes=attributes)
    span.end(end_time=end_ns)


def inject(carrier: MutableMapping[str, str]) -> None:
    """Put the current span's `traceparent` (and `tracestate`) into `carrier`, replacing those it holds, when
    the request is traced: the next hop's spans are then children of this one. Else `carrier` is left as it is
    (the caller's trace context, passed on unchanged)."""
    if _active.get() is None:
        return
    carrier.pop(TRACESTATE, None)  # the current span's tracestate, or none: not the caller's beside our parent
    W3C.inject(carrier)


def annotate(attributes: Attributes) -> None:
    """Attributes for the current span of a traced request, known only once it ran (a batch's size)."""
    if _active.get() is not None:
        trace.get_current_span().set_attributes(attributes)


def traced() -> bool:
    """Whether the current task serves a traced request: what is timed only for a span asks first."""
    return _active.get() is not None
