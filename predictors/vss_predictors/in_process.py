"""The predictor's model served inside the transformer's process (single-process mode): the same runtime, warm-up,
batcher, limits and metrics as `python -m vss_predictors`, called with the transformer's arrays instead of over the
gRPC hop. It has the shape of the transformer's `Predictor` seam (`vss_transformers.predictor`) without importing
the transformer: `vss_cli.single_process` composes the two."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import kserve

from vss_api.request_context import RequestContext
from vss_api.v2 import Array
from vss_predictors.errors import DeadlineExpired, PredictorStopping
from vss_predictors.model import PredictorModel


class InProcessPredictor:
    def __init__(self, model: PredictorModel, *, timeout_s: float) -> None:
        self.model = model
        self.timeout_s = timeout_s  # as the hop's: the longest one model call may take
        self._closed = False

    def fetch_config(self, deadline_s: float) -> dict[str, Any]:
        """The loaded model's configuration, as the predictor's `/config` answers it (`deadline_s` is the hop's
        wait for a predictor still loading; here the model has loaded before the transformer asks)."""
        if not self.model.ready:
            raise kserve.errors.ModelNotReady(self.model.name, self.model.not_ready_reason)
        return self.model.describe()

    def infer_blocking(self, feeds: Mapping[str, Array]) -> dict[str, Array]:
        runtime = self.model.runtime
        if runtime is None:
            raise kserve.errors.ModelNotReady(self.model.name, self.model.not_ready_reason)
        return runtime.run(feeds)

    async def infer(self, feeds: Mapping[str, Array], context: RequestContext | None = None, *,
                    deadline: float | None = None) -> tuple[dict[str, Array], dict[str, str]]:
        """The outputs through the batcher, within the request's deadline or the predictor timeout if that comes
        first (what the hop gives the predictor as its gRPC deadline); no headers are echoed in one process."""
        if self._closed:
            raise PredictorStopping("the server is shutting down: the request was not run")
        now = time.monotonic()
        until = now + self.timeout_s if deadline is None else min(deadline, now + self.timeout_s)
        if until <= now:
            raise DeadlineExpired("the request's deadline passed before it reached the model")
        return await self.model.infer_tensors(feeds, deadline=until), {}

    def close(self) -> None:
        """Called from the transformer model's `stop()`: what has not started fails with 503, running batches
        finish, the batch threads exit (the predictor's own `stop()`). A second call does nothing."""
        if self._closed:
            return
        self._closed = True
        self.model.stop()
