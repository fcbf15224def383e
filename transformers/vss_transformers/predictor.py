"""What the transformer needs of the model it fronts: the seam between pre/post-processing and inference.
`PredictorClient` fills it across the gRPC hop to a predictor container; a single-process server fills it with
the predictor's own runtime and batcher in this process (`vss_predictors.in_process`, composed by
`vss_cli.single_process`), so neither package imports the other."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from vss_api.request_context import RequestContext
from vss_api.v2 import Array


class Predictor(Protocol):
    def fetch_config(self, deadline_s: float) -> dict[str, Any]:
        """The model's configuration (`/v2/models/{name}/config`'s): tensors, providers, metadata."""
        ...

    def infer_blocking(self, feeds: Mapping[str, Array]) -> dict[str, Array]:
        """One synchronous run, for warm-up before the event loop runs."""
        ...

    async def infer(self, feeds: Mapping[str, Array], context: RequestContext | None = None, *,
                    deadline: float | None = None) -> tuple[dict[str, Array], dict[str, str]]:
        """The model's outputs within `deadline` (a `time.monotonic()` instant), and the trace headers the
        predictor echoed (none in one process). Errors are `vss_api.errors`' (503 unavailable or overloaded,
        504 past the deadline)."""
        ...

    def close(self) -> None:
        """Refuse new calls; those under way finish within their deadline."""
        ...
