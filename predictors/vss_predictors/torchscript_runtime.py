"""TorchScript behind the `Runtime` protocol. `torch.jit.load` reads TorchScript archives only: no
`torch.load`, no pickle of arbitrary objects."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vss_api.serving_flags import Normalization
from vss_api.v2 import Array
from vss_predictors.errors import UnsupportedModel
from vss_predictors.prelude import scale_and_bias
from vss_predictors.runtime import DescribedRuntime, RuntimeInfo, TensorSpec

log = logging.getLogger(__name__)


TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".torchscript", "")


class TorchScriptRuntime(DescribedRuntime):
    """An image model in TorchScript: takes UINT8 NHWC pixels when a normalisation is given (done in
    torch on the model's device), FP32 NCHW otherwise; its output is read as `output0`."""

    def __init__(self, path: Path, *, device: str = "cpu", threads: int | None = None,
                 normalization: Normalization | None = None) -> None:
        import torch

        if path.suffix not in TORCHSCRIPT_SUFFIXES:  # no suffix: KServe's /mnt/models for a pvc:// file
            raise UnsupportedModel(f"{path}: TorchScript models must be .pt/.torchscript archives")
        with path.open("rb"):  # torch reports a missing file as ValueError: open it first to get an OSError
            pass
        self._torch = torch
        if threads:
            torch.set_num_threads(threads)
        want_gpu = device == "gpu" and torch.cuda.is_available()
        if device == "gpu" and not want_gpu:
            log.warning("asked for device gpu, but torch sees no CUDA device: running on CPU")
        self._device = torch.device("cuda" if want_gpu else "cpu")
        extra: dict[str, Any] = {"names": ""}
        # torch 2.15 marks TorchScript deprecated in favour of torch.export; it still loads and runs it, and
        # TorchScript is the format the platform promises, so the notice is not repeated on every start.
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*torch.jit.* is deprecated", category=FutureWarning)
                self._module = torch.jit.load(str(path), map_location=self._device,
                                              _extra_files=extra)  # type: ignore[no-untyped-call]
        except RuntimeError as exc:
            raise UnsupportedModel(f"{path}: not a TorchScript archive: {exc}") from exc
        self._module.eval()
        metadata: dict[str, str] = {}
        if extra["names"]:
            names = extra["names"]
            metadata["names"] = names.decode() if isinstance(names, bytes) else str(names)
        self._norm = normalization
        if normalization is not None:
            scale, bias = scale_and_bias(normalization)
            self._scale = torch.from_numpy(scale).to(self._device)
            self._bias = torch.from_numpy(bias).to(self._device)
            self._inputs = [TensorSpec("images", "UINT8", (-1, -1, -1, 3))]
        else:
            self._inputs = [TensorSpec("images", "FP32", (-1, 3, -1, -1))]
        n_classes = len(json.loads(metadata["names"])) if metadata.get("names", "").startswith(("[", "{")
                                                                                               ) else -1
        self._outputs = [TensorSpec("output0", "FP32", (-1, n_classes))]
        self._info = RuntimeInfo(backend=f"torchscript-{torch.__version__}",
                                 providers=("CUDA",) if want_gpu else ("CPU",),
                                 device="gpu" if want_gpu else "cpu", metadata=metadata)

    def run(self, feeds: Mapping[str, Array]) -> dict[str, Array]:
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(feeds["images"])).to(self._device)
        if self._norm is not None:
            x = x.permute(0, 3, 1, 2).float() * self._scale + self._bias
        with torch.inference_mode():
            out = self._module(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return {"output0": out.float().cpu().numpy()}
