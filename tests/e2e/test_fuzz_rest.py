"""The v2 REST surface fuzzed from its own description (vss_api/openapi/v2.yaml) by schemathesis against real
`vss run` processes, a detector and a classifier: every operation, with requests that fit the description and
requests that do not. Each answer must come within a deadline (no hang), be below 500, carry its reason in a 4xx
(`{"error": "..."}`) and conform to the description; after the run a good request still succeeds.

Sizes: VSS_FUZZ_SCALE unset (CI) sends REST_EXAMPLES[ci] requests per operation and model; VSS_FUZZ_SCALE=nightly
sends REST_EXAMPLES[nightly]. Generation is derandomized (a fixed seed per test), so a failure found in CI is
found again by the same command. The requests sent and the 5xx seen, per operation, are printed at the end, and
written as a Markdown table to the file VSS_FUZZ_REPORT names, if set (docs: README, Fuzzing)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import vss_api
from tests.e2e import fuzz_tensors
from tests.e2e.conftest import SERIES_WINDOWS, jpeg, scene
from tests.e2e.fuzz_tally import FuzzTally
from tests.e2e.serving import Served

SPEC = Path(vss_api.__file__).parent / "openapi" / "v2.yaml"
REST_EXAMPLES = {"ci": 100, "nightly": 1000}
SCALE = os.environ.get("VSS_FUZZ_SCALE", "ci")
DEADLINE_S = 30.0  # one answer; generous on a loaded 2-core machine, far below what a hang would take
SERVED = ("detector", "classifier", "anomaly", "forecaster")
VERSION = "v1"  # both fixtures' spec.version

OPERATIONS = [(path, method) for path, item in yaml.safe_load(SPEC.read_text())["paths"].items()
              for method in item if method in ("get", "post")]


def examples() -> int:
    if SCALE not in REST_EXAMPLES:
        raise ValueError(f"VSS_FUZZ_SCALE must be one of {sorted(REST_EXAMPLES)}, got {SCALE!r}")
    return REST_EXAMPLES[SCALE]


def schema_for(served: Served) -> Any:
    return schemathesis.openapi.from_path(SPEC)


def cases(operation: Any, served: Served) -> st.SearchStrategy[schemathesis.Case]:
    """Requests that fit the description and requests that do not, half of them to the served model's name (and
    version) so that bodies reach the model as often as random names reach the 404."""
    names = {"name": served.name, "version": VERSION}
    served_path = {p.name: names[p.name] for p in operation.path_parameters if p.name in names}
    modes = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
    return st.one_of(*(operation.as_strategy(mode, path_parameters=path)
                       for mode in modes for path in ({}, served_path)))


@pytest.fixture(scope="module")
def tally(request: pytest.FixtureRequest) -> Iterator[FuzzTally]:
    tally = FuzzTally("REST", examples=examples(), scale=SCALE)
    yield tally
    tally.report(request.config)


def _reason(response: requests.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, str) and error else None


@pytest.mark.parametrize("fixture", SERVED)
@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m.upper()} {p}" for p, m in OPERATIONS])
def test_every_fuzzed_request_is_answered_below_500_in_time_with_a_reason_and_as_described(
        request: pytest.FixtureRequest, tally: FuzzTally, fixture: str, path: str, method: str) -> None:
    served: Served = request.getfixturevalue(fixture)
    operation = schema_for(served)[path][method.upper()]
    fuzz(served, cases(operation, served), f"{method.upper()} {path} ({served.name})", tally)


@pytest.mark.parametrize("fixture", SERVED)
def test_fuzzed_tensors_in_an_infer_body_are_answered_below_500_in_time_with_a_reason_and_as_described(
        request: pytest.FixtureRequest, tally: FuzzTally, fixture: str) -> None:
    """The description's infer operation with bodies that reach the tensors (tests.e2e.fuzz_tensors: the inputs
    the tasks read, every datatype, shapes and data at odds), which schemathesis' own bodies seldom do."""
    served: Served = request.getfixturevalue(fixture)
    operation = schema_for(served)["/v2/models/{name}/infer"]["POST"]
    bodies = fuzz_tensors.requests(served.name, VERSION).map(fuzz_tensors.as_rest_json)
    strategy = bodies.flatmap(lambda body: operation.as_strategy(
        schemathesis.GenerationMode.POSITIVE, path_parameters={"name": served.name}, body=body,
        headers={}))
    fuzz(served, strategy, f"POST /v2/models/{{name}}/infer, tensors ({served.name})", tally)


@pytest.mark.parametrize("fixture", SERVED)
def test_fuzzed_binary_tensor_bodies_are_answered_below_500_in_time_with_a_reason(
        request: pytest.FixtureRequest, tally: FuzzTally, fixture: str) -> None:
    """The binary tensor extension, which a JSON schema cannot describe: `binary_data_size` and
    `Inference-Header-Content-Length` honest or lying, bytes cut short or trailing (tests.e2e.fuzz_tensors)."""
    served: Served = request.getfixturevalue(fixture)
    row = f"POST /v2/models/{{name}}/infer, binary ({served.name})"
    session = requests.Session()
    url = f"http://{served.rest_url}/v2/models/{served.name}/infer"

    @settings(max_examples=examples(), derandomize=True, database=None, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(body=fuzz_tensors.rest_binary(served.name, VERSION))
    def one(body: tuple[bytes, dict[str, str]]) -> None:
        data, headers = body
        try:
            response = session.post(url, data=data, headers=headers, timeout=DEADLINE_S)
        except requests.Timeout:
            tally.hang(row)
            raise AssertionError(f"no answer within {DEADLINE_S}s to {headers} {data[:300]!r}") from None
        tally.answered(row, response.status_code)
        assert response.status_code < 500, f"{response.status_code} {response.text[:500]}\n{headers} {data[:300]!r}"
        if response.status_code >= 400:
            assert _reason(response), f"a {response.status_code} without a reason: {response.text[:500]}"

    try:
        one()
    finally:
        session.close()
    _a_good_request_succeeds(served)


def fuzz(served: Served, strategy: st.SearchStrategy[schemathesis.Case], row: str, tally: FuzzTally) -> None:
    session = requests.Session()

    @settings(max_examples=examples(), derandomize=True, database=None, deadline=None,
              # a REST round trip each: slow by Hypothesis' measure, as every e2e example is
              suppress_health_check=[HealthCheck.too_slow])
    @given(case=strategy)
    def one(case: schemathesis.Case) -> None:
        try:
            response = case.call(base_url=f"http://{served.rest_url}", session=session, timeout=DEADLINE_S)
        except requests.Timeout:
            tally.hang(row)
            raise AssertionError(f"no answer within {DEADLINE_S}s to:\n{case.as_curl_command()}") from None
        tally.answered(row, response.status_code)
        assert response.status_code < 500, f"{response.status_code} {response.text[:500]}\n{case.as_curl_command()}"
        if response.status_code >= 400:
            assert _reason(response), f"a {response.status_code} without a reason: {response.text[:500]}"
        case.validate_response(response, checks=[status_code_conformance, content_type_conformance,
                                                 response_schema_conformance])

    try:
        one()
    finally:
        session.close()
    _a_good_request_succeeds(served)


def _a_good_request_succeeds(served: Served) -> None:
    if served.name in SERIES_WINDOWS:
        window = fuzz_tensors.good_series(*SERIES_WINDOWS[served.name])
        name, datatype, shape, raw = window.name, window.datatype, window.shape, window.raw
    else:
        data = jpeg(scene())
        name, datatype, shape, raw = "image", "BYTES", [1], len(data).to_bytes(4, "little") + data
    head = json.dumps({"inputs": [{"name": name, "datatype": datatype, "shape": shape,
                                   "parameters": {"binary_data_size": len(raw)}}]}).encode()
    reply = requests.post(f"http://{served.rest_url}/v2/models/{served.name}/infer",
                          data=head + raw, timeout=DEADLINE_S,
                          headers={"Inference-Header-Content-Length": str(len(head)),
                                   "Content-Type": "application/octet-stream"})
    assert reply.status_code == 200, reply.text
