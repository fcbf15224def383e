"""The worker writes what its stream is doing into its VSSStream's status: the source (connected, since when,
the last error without credentials, reconnects, resolution), frames inferred per second, the lag, and the
kstatus conditions Ready / Stalled / Reconciling, so `kubectl get vssstreams` and `kubectl wait` tell the truth.

The worker's only API right is `patch` on its own `vssstreams/<name>/status` (a Role with that resourceName,
rendered by the operator); nothing here reads or writes anything else. The API is called with the pod's
ServiceAccount token, over plain HTTPS (aiohttp), so the worker image carries no Kubernetes client."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from vss_api.vssmodel import API_VERSION
from vss_api.vssstream import STREAM_PLURAL, SamplingMode, VSSStreamSpec
from vss_streams.source import SourceState
from vss_streams.worker import StreamWorker

log = logging.getLogger(__name__)

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
FPS_WINDOW_S = 60.0
# A source that stays down this long (or never came up) is Stalled: someone has to look at it.
STALLED_AFTER_S = 30.0


def rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Reading:
    """What the worker saw at one instant, for `stream_status`."""

    state: SourceState
    frames_inferred: int
    frames_unanswered: int
    lag_seconds: float | None
    now: float  # time.time()


class RateWindow:
    """Frames per second over the last `window_s` seconds, from counters sampled at each report."""

    def __init__(self, window_s: float = FPS_WINDOW_S) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, count: int) -> float | None:
        self._samples.append((now, count))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window_s:
            self._samples.popleft()
        first_t, first = self._samples[0]
        if now - first_t <= 0:
            return None
        return (count - first) / (now - first_t)


def stream_status(spec: VSSStreamSpec, reading: Reading, fps: float | None, unanswered_recently: bool,
                  previous: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The status document (a merge patch of `.status`), conditions keeping their lastTransitionTime while
    their status does not change (`previous`: the conditions last written, by type)."""
    state = reading.state
    down_for = reading.now - state.since
    lag = reading.lag_seconds
    if state.ended:
        ready = ("False", "SourceEnded", "the source ended (a recording played to its end)")
        stalled = None
    elif not state.connected:
        what = state.last_error or "connecting"
        ready = ("False", "SourceUnavailable", f"no frames since {rfc3339(state.since)}: {what}")
        stalled = ("True", *ready[1:]) if down_for >= STALLED_AFTER_S else None
    elif unanswered_recently:
        ready = ("False", "ModelUnavailable", "the model does not answer; frames are dropped and counted")
        stalled = ("True", *ready[1:])
    elif (spec.sampling.mode is SamplingMode.LIVE and lag is not None
          and lag > spec.sampling.max_lag_seconds):
        ready = ("False", "Lagging", f"{lag:.2f}s behind live (maxLagSeconds {spec.sampling.max_lag_seconds:g})")
        stalled = None
    else:
        ready = ("True", "Streaming", f"{fps or 0:.1f} frames/s inferred")
        stalled = None
    reconciling = ("True", ready[1], ready[2]) if ready[0] == "False" and stalled is None and not state.ended \
        else ("False", ready[1], "")
    now = rfc3339(reading.now)

    def condition(type_: str, value: tuple[str, str, str]) -> dict[str, Any]:
        status, reason, message = value
        before = previous.get(type_)
        since = before["lastTransitionTime"] if before and before.get("status") == status else now
        return {"type": type_, "status": status, "reason": reason, "message": message[:1024],
                "lastTransitionTime": since}

    width_height = f"{state.resolution[0]}x{state.resolution[1]}" if state.resolution else None
    return {
        "source": {"connected": state.connected, "since": rfc3339(state.since), "lastError": state.last_error[:1024],
                   "reconnects": state.reconnects, "resolution": width_height},
        "fps": round(fps, 2) if fps is not None else None,
        "lagSeconds": round(lag, 3) if lag is not None else None,
        "conditions": [condition("Ready", ready),
                       condition("Stalled", stalled or ("False", "Streaming" if ready[0] == "True" else ready[1], "")),
                       condition("Reconciling", reconciling)],
    }


@dataclass(frozen=True)
class KubeTarget:
    """Where to patch: the apiserver, the token (re-read on every patch: kubelet rotates it), its CA."""

    api: str
    namespace: str
    name: str
    token_file: Path
    ca_file: Path | None

    @classmethod
    def in_cluster(cls, namespace: str, name: str) -> KubeTarget:
        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise RuntimeError("not in a cluster (no KUBERNETES_SERVICE_HOST): give --kube-api")
        server = f"[{host}]" if ":" in host else host
        return cls(f"https://{server}:{port}", namespace, name, SERVICE_ACCOUNT / "token", SERVICE_ACCOUNT / "ca.crt")

    @property
    def url(self) -> str:
        group_version = API_VERSION
        return (f"{self.api.rstrip('/')}/apis/{group_version}/namespaces/{self.namespace}/{STREAM_PLURAL}/"
                f"{self.name}/status")


class StatusReporter:
    """Patches the status every `period_s` and as soon as the source connects or is lost."""

    def __init__(self, target: KubeTarget, spec: Callable[[], VSSStreamSpec], read: Callable[[], Reading],
                 period_s: float = 10.0) -> None:
        self.target, self._spec, self._read, self.period_s = target, spec, read, period_s
        self._window = RateWindow()
        self._unanswered = RateWindow()
        self._previous: dict[str, dict[str, Any]] = {}
        self.patches = 0
        self.last_error = ""

    def document(self) -> dict[str, Any]:
        reading = self._read()
        fps = self._window.add(reading.now, reading.frames_inferred)
        unanswered = self._unanswered.add(reading.now, reading.frames_unanswered)
        status = stream_status(self._spec(), reading, fps, bool(unanswered and unanswered > 0 and not fps),
                               self._previous)
        return status

    async def patch_once(self, session: aiohttp.ClientSession) -> None:
        status = self.document()
        token = (await asyncio.to_thread(self.target.token_file.read_text)).strip()
        async with session.patch(self.target.url, json={"status": status}, headers={
                "Authorization": f"Bearer {token}", "Content-Type": "application/merge-patch+json"}) as answer:
            if answer.status >= 300:
                text = (await answer.text())[:300]
                raise aiohttp.ClientResponseError(answer.request_info, (), status=answer.status, message=text)
        self._previous = {c["type"]: c for c in status["conditions"]}
        self.patches += 1

    def _session(self) -> aiohttp.ClientSession:
        context = ssl.create_default_context(cafile=str(self.target.ca_file)) if self.target.ca_file else None
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context or True),
                                     timeout=aiohttp.ClientTimeout(total=10))

    async def final(self) -> None:
        """One last patch (the source ended, or the worker stops); failures are logged."""
        try:
            async with self._session() as session:
                await self.patch_once(session)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("last status of %s/%s not written: %s", self.target.namespace, self.target.name, exc)

    async def run(self, connected: Callable[[], bool]) -> None:
        async with self._session() as session:
            seen = connected()
            next_at = 0.0
            while True:
                now = time.monotonic()
                if now >= next_at or connected() != seen:
                    seen = connected()
                    try:
                        await self.patch_once(session)
                        self.last_error = ""
                    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                        self.last_error = str(exc)
                        log.warning("status of %s/%s not written: %s", self.target.namespace, self.target.name, exc)
                    next_at = now + self.period_s
                await asyncio.sleep(0.5)


def reading(worker: StreamWorker) -> Reading:
    report = worker.report
    return Reading(worker.state, report.frames_inferred, report.frames_dropped_model,
                   report.lags[-1] if report.lags else None, time.time())


async def stop(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
