"""What tracing costs one request, off and on: the spans the transformer and the predictor make for a request
(a SERVER span, five stages, the hop's traceparent written, two spans recorded after the fact: 8 spans), timed in
a loop with `vss_api.tracing` off (no SDK loaded) and on (the SDK's provider, a BatchSpanProcessor and the
OTLP/HTTP exporter, sending to tests/support/otlp_receiver.py in a process of its own), against the same loop with
no tracing calls at all. On, the exporter's thread serializes and sends in the same process, as in a server.

    python -m benchmarks.tracing_overhead [--requests 20000]"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from vss_api.request_context import RequestContext
from vss_api.serving_flags import TracingFlags
from vss_api.tracing import CLIENT, Tracing, inject, record, stage

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


RECEIVER = """
import sys
from tests.support.otlp_receiver import otlp_receiver
with otlp_receiver() as receiver:
    print(receiver.url, flush=True)
    sys.stdin.read()
    print(len(receiver.spans()), flush=True)
"""


def one_request(tracing: Tracing, context: RequestContext) -> None:
    with tracing.request("transformer.infer", context, {"vss.model.name": "m"}):
        for name in ("parse", "decode", "preprocess"):
            with stage(name):
                pass
        with stage("predictor.infer", kind=CLIENT):
            inject(context.headers())
        with stage("postprocess"):
            pass
        now = time.time_ns()
        record("batch_wait", now - 1000, now, {"vss.batch.size": 1})
        record("infer", now - 500, now, {"vss.batch.size": 1})


def bare(context: RequestContext) -> None:
    context.headers()


def per_request_us(function: object, requests: int, *args: object) -> float:
    assert callable(function)
    started = time.perf_counter()
    for _ in range(requests):
        function(*args)
    return (time.perf_counter() - started) / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    n = parser.parse_args().requests
    context = RequestContext("bench", TRACEPARENT)
    baseline = per_request_us(bare, n, context)
    off = per_request_us(one_request, n, Tracing.off(), context)
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True)
    assert receiver.stdin is not None and receiver.stdout is not None
    url = receiver.stdout.readline().strip()
    os.environ.setdefault("OTEL_BSP_MAX_QUEUE_SIZE", str(16 * n))  # measure the spans, not dropped ones
    on = Tracing.start(TracingFlags(f"{url}/v1/traces"), model_name="bench", version="v1", component="transformer")
    traced = per_request_us(one_request, n, on, context)
    started = time.perf_counter()
    on.shutdown()
    flushed = time.perf_counter() - started
    receiver.stdin.close()
    received = int(receiver.stdout.readline())
    receiver.wait(timeout=30)
    print(f"{n} requests, 8 spans each (the transformer's and the predictor's together)\n")
    print(f"{'':<28}{'us/request':>12}{'over baseline':>16}")
    print(f"{'no tracing calls':<28}{baseline:>12.2f}{'':>16}")
    print(f"{'tracing off':<28}{off:>12.2f}{off - baseline:>14.2f}us")
    print(f"{'tracing on (OTLP/HTTP)':<28}{traced:>12.2f}{traced - baseline:>14.2f}us")
    print(f"\nspans received {received} of {8 * n}; the exporter sent what was left in {flushed:.2f} s at shutdown")


if __name__ == "__main__":
    main()
