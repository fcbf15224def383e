"""The small protocol every inference runtime implements, and the tensor descriptions it reports."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

# v2 datatypes by numpy dtype, as the Open Inference Protocol names them.
V2_DATATYPES: dict[np.dtype[np.generic], str] = {
    np.dtype(np.bool_): "BOOL",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.uint16): "UINT16",
    np.dtype(np.uint32): "UINT32",
    np.dtype(np.uint64): "UINT64",
    np.dtype(np.int8): "INT8",
    np.dtype(np.int16): "INT16",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.float16): "FP16",
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
}
NUMPY_DTYPES: dict[str, np.dtype[np.generic]] = {v: k for k, v in V2_DATATYPES.items()}

Array = npt.NDArray[np.generic]


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


def datatype_of(array: npt.NDArray[np.generic]) -> str:
    return "BYTES" if array.dtype == np.object_ else V2_DATATYPES[array.dtype]


def has_dynamic_batch(runtime: Runtime) -> bool:
    """True when every input and output has a dynamic leading dimension, so requests can be merged."""
    return all(t.shape and t.shape[0] == -1 for t in [*runtime.inputs, *runtime.outputs])
