"""The small protocol every inference runtime implements, and the tensor descriptions it reports."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from vss_api.v2 import NUMPY_DTYPES, Array


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a model: -1 marks a dynamic dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    @property
    def dtype(self) -> np.dtype[np.generic]:
        return NUMPY_DTYPES[self.datatype]

    def accepts_shape(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.shape) and all(
            want in (-1, got) for want, got in zip(self.shape, shape, strict=True))

    def as_v2_metadata(self) -> dict[str, object]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class RuntimeInfo:
    """What a loaded runtime really got: reported in logs, model metadata and `/config`."""

    backend: str
    providers: tuple[str, ...]
    device: str
    metadata: Mapping[str, str] = field(default_factory=dict)


class Runtime(Protocol):
    """A loaded model that maps named numpy inputs to named numpy outputs.

    `run` is blocking and CPU/GPU-heavy: callers run it in an executor or batch worker."""

    @property
    def inputs(self) -> list[TensorSpec]: ...

    @property
    def outputs(self) -> list[TensorSpec]: ...

    @property
    def info(self) -> RuntimeInfo: ...

    def run(self, feeds: Mapping[str, Array]) -> dict[str, Array]: ...


class DescribedRuntime:
    """What every runtime reports, set by its constructor: `_inputs`, `_outputs` and `_info`."""

    _inputs: list[TensorSpec]
    _outputs: list[TensorSpec]
    _info: RuntimeInfo

    @property
    def inputs(self) -> list[TensorSpec]:
        return self._inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        return self._outputs

    @property
    def info(self) -> RuntimeInfo:
        return self._info


def has_dynamic_batch(runtime: Runtime) -> bool:
    """True when every input and output has a dynamic leading dimension, so requests can be merged."""
    return all(t.shape and t.shape[0] == -1 for t in [*runtime.inputs, *runtime.outputs])
