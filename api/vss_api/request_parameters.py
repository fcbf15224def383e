"""The per-request `parameters` of the v2 (Open Inference Protocol) requests the serving processes take, in one
table: each one's level (the request, an input, a requested output), its type and range, and what it does here.

No task takes a tuning value per request today: a detector's confidenceThreshold, iouThreshold and maxDetections,
a classifier's topK, an anomaly model's threshold and a forecaster's intervalLevel are the VSSModel's settings
(`spec.transformer.<task>`), one per served version. So every task takes the same parameters, those of the
protocol itself, most of them sent by tritonclient and KServe's clients on their own: `timeout` (the request's
deadline, `vss_api.deadlines`), the binary tensor extension's `binary_data_output` / `binary_data_size` /
`binary_data`, and `sequence_id` / `sequence_start` / `sequence_end` / `priority` / `content_type`, which are
accepted and have no effect (the models are stateless, one queue serves every request, tensors are read by name
and datatype).

A value of the wrong type or out of range is the caller's mistake (400, gRPC INVALID_ARGUMENT) that names the
parameter, the value and what is allowed; so is a name not in the table, answered with the names that are (and,
for a name that is one of the VSSModel's settings, where that setting lives). Triton's shared-memory and
classification extensions are refused by name: tritonclient sends their parameters only when asked to use them,
and a caller who asked would otherwise get an answer that is not the one asked for."""

from __future__ import annotations

import re
import reprlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel

from vss_api.deadlines import MAX_TIMEOUT_US, TIMEOUT_PARAMETER, grpc_parameters
from vss_api.errors import InvalidRequest
from vss_api.vssmodel import Task


class Level(StrEnum):
    REQUEST = "request"
    INPUT = "input"
    OUTPUT = "output"


@dataclass(frozen=True)
class Parameter:
    """One parameter: `allowed` says in words what `accepts` checks, for the docs and the error."""

    name: str
    levels: tuple[Level, ...]
    allowed: str
    accepts: Callable[[object], bool]
    effect: str

    def check(self, value: object, where: str) -> None:
        if not self.accepts(value):
            raise InvalidRequest(f"{where} parameter {self.name!r} must be {self.allowed}, got {_short(value)}")


def _boolean(value: object) -> bool:
    return isinstance(value, bool)


def _text(value: object) -> bool:
    return isinstance(value, str)


def _whole(low: int, high: int) -> Callable[[object], bool]:
    def accepts(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
    return accepts


def _whole_or_text(value: object) -> bool:
    return _text(value) or _whole(0, UINT64_MAX)(value)


UINT64_MAX = (1 << 64) - 1
INT64_MAX = (1 << 63) - 1

REQUEST, INPUT, OUTPUT = (Level.REQUEST,), (Level.INPUT,), (Level.OUTPUT,)

PROTOCOL_PARAMETERS: tuple[Parameter, ...] = (
    Parameter(TIMEOUT_PARAMETER, REQUEST, f"a whole number of microseconds from 1 to {MAX_TIMEOUT_US}",
              _whole(1, MAX_TIMEOUT_US),
              "the request's deadline, if sooner than its gRPC deadline and the VSSModel's "
              "transformer.requestTimeoutMs: past it, 504 (DEADLINE_EXCEEDED); tritonclient's infer(timeout=...)"),
    Parameter("binary_data_output", REQUEST, "true or false", _boolean,
              "REST: every output as binary data unless the output's own binary_data says otherwise "
              "(tritonclient sends true when it asks for no outputs by name)"),
    Parameter("sequence_id", REQUEST, f"a whole number from 0 to {UINT64_MAX}, or a string", _whole_or_text,
              "accepted, no effect: the models keep no state between requests (tritonclient's sequence_id)"),
    Parameter("sequence_start", REQUEST, "true or false", _boolean, "accepted, no effect (as sequence_id)"),
    Parameter("sequence_end", REQUEST, "true or false", _boolean, "accepted, no effect (as sequence_id)"),
    Parameter("priority", REQUEST, f"a whole number from 0 to {UINT64_MAX}", _whole(0, UINT64_MAX),
              "accepted, no effect: one queue serves every request in turn (tritonclient's priority)"),
    Parameter("content_type", (Level.REQUEST, Level.INPUT), "a string", _text,
              "accepted, no effect: tensors are read by their name and datatype (KServe's codec hint)"),
    Parameter("binary_data_size", INPUT, f"a whole number of bytes from 0 to {INT64_MAX}", _whole(0, INT64_MAX),
              "REST binary extension: the input's length in bytes after the JSON header (tritonclient and "
              "KServe's clients send it for every binary input)"),
    Parameter("binary_data", OUTPUT, "true or false", _boolean,
              "REST: this output as binary data (true) or JSON (false)"),
)

# Asked for by name only, to use an extension this server does not serve: refused with what to do instead.
UNSERVED: Mapping[str, tuple[tuple[Level, ...], str]] = {
    **{name: ((Level.INPUT, Level.OUTPUT), "Triton's shared-memory extension, which this server does not serve: "
                                           "send the tensor in the request") for name in
       ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")},
    "classification": (OUTPUT, "Triton's classification extension, which this server does not serve: the "
                               "classification task's labels, scores and class_ids outputs are its top-K, best "
                               "first (spec.transformer.classification.topK)"),
}


@dataclass(frozen=True)
class ParameterTable:
    """The parameters a task takes, by level."""

    parameters: tuple[Parameter, ...]

    def at(self, level: Level) -> dict[str, Parameter]:
        return {p.name: p for p in self.parameters if level in p.levels}

    def known(self, level: Level) -> str:
        named = [f"{p.name} ({p.allowed})" for p in sorted(self.at(level).values(), key=lambda p: p.name)]
        return ", ".join(named) if named else "none"


TASK_PARAMETERS: Mapping[Task, ParameterTable] = {task: ParameterTable(PROTOCOL_PARAMETERS) for task in Task}
V1_PARAMETERS = ParameterTable(())  # KServe's v1 route reads no `parameters` (its deadline is the default)


class Tensor(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def parameters(self) -> Any: ...


class V2Request(Protocol):
    """What is read of a KServe `InferRequest` (REST, or from gRPC with the request's parameters as protos)."""

    @property
    def parameters(self) -> Any: ...

    @property
    def inputs(self) -> Sequence[Tensor]: ...

    @property
    def request_outputs(self) -> Sequence[Tensor] | None: ...


@dataclass(frozen=True)
class RequestParameters:
    """Checks the parameters of each request to one task against its table; `settings` (the task's VSSModel
    block, e.g. `DetectionParams`) lets a refused name that is one of its settings say where that setting is."""

    task: Task
    settings: BaseModel | None = None

    @property
    def table(self) -> ParameterTable:
        return TASK_PARAMETERS[self.task]

    def check_v2(self, request: V2Request) -> None:
        self._check(self.table, Level.REQUEST, request.parameters, "request")
        for tensor in request.inputs:
            self._check(self.table, Level.INPUT, tensor.parameters, f"input {tensor.name!r}")
        for tensor in request.request_outputs or ():
            self._check(self.table, Level.OUTPUT, tensor.parameters, f"output {tensor.name!r}")

    def check_v1(self, payload: Mapping[str, Any]) -> None:
        self._check(V1_PARAMETERS, Level.REQUEST, payload.get("parameters"), "v1 request")

    def _check(self, table: ParameterTable, level: Level, parameters: object, where: str) -> None:
        """A known parameter with no value is one left out: JSON null, or on gRPC a kind of value KServe's v2 protocol
        lacks (it has bool, int64 and string; tritonclient's `priority` is a uint64_param, a Python float a
        double_param, and KServe reads either as no value). An unknown name is refused with or without one."""
        values = plain(parameters, where)
        known = table.at(level)
        for name, value in values.items():
            parameter = known.get(name)
            if parameter is None:
                raise InvalidRequest(self._unknown(table, level, name, value, where))
            if value is not None:
                parameter.check(value, where)

    def _unknown(self, table: ParameterTable, level: Level, name: str, value: object, where: str) -> str:
        unserved = UNSERVED.get(name)
        if unserved is not None and level in unserved[0]:
            return f"{where} parameter {name!r} ({_short(value)}) asks for {unserved[1]}"
        head = f"{where} parameter {name!r} ({_short(value)}) is not one this server takes"
        setting = self._setting(name)
        if setting:
            head += f": {setting}"
        return f"{head}; the {level.value} parameters are: {table.known(level)}"

    def _setting(self, name: str) -> str | None:
        if self.settings is None:
            return None
        wanted = _normalized(name)
        for field, info in type(self.settings).model_fields.items():
            alias = info.alias or field
            if wanted in (_normalized(field), _normalized(alias)):
                return (f"{alias} is a setting of the VSSModel, spec.transformer.{self.task.value}.{alias} "
                        f"({_short(getattr(self.settings, field))} for this model), not of a request")
        return None


def plain(parameters: object, where: str) -> dict[str, object]:
    """`parameters` as plain values: a JSON object as it came, a gRPC `InferParameter` map read as
    `vss_api.deadlines.grpc_parameters` reads it; None is none. Anything else is the caller's mistake."""
    if parameters is None:
        return {}
    if not isinstance(parameters, Mapping):
        raise InvalidRequest(f"{where} parameters must be an object of name: value, "
                             f"got {type(parameters).__name__} {_short(parameters)}")
    if any(hasattr(v, "WhichOneof") for v in parameters.values()):
        return grpc_parameters(parameters)
    return {str(k): v for k, v in parameters.items()}


def _normalized(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 60


def _short(value: object) -> str:
    return _repr.repr(value)


def markdown_table() -> str:
    """The table as the README shows it (a unit test keeps the two the same)."""
    rows = ["| parameter | where | value | what it does |", "|---|---|---|---|"]
    for p in PROTOCOL_PARAMETERS:
        rows.append(f"| `{p.name}` | {', '.join(level.value for level in p.levels)} | {p.allowed} | {p.effect} |")
    return "\n".join(rows)
