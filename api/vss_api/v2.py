"""Open Inference Protocol (KServe v2) tensor types: the datatype names by numpy dtype and back, and the
array type every plane passes around. The transformer and the predictor agree on these on the wire."""

from __future__ import annotations

import struct

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

# What KServe's `InferInput.as_numpy` raises for contents that do not fit the tensor's shape or datatype: numpy's
# reshape and conversion errors, and `struct.error` from a BYTES tensor whose element lengths run past its bytes.
# All of them are the caller's mistake, to be answered as one (400 / INVALID_ARGUMENT), never as a bug.
CONTENT_ERRORS: tuple[type[Exception], ...] = (ValueError, TypeError, OverflowError, struct.error)


def datatype_of(array: Array) -> str:
    return "BYTES" if array.dtype == np.object_ else V2_DATATYPES[array.dtype]

