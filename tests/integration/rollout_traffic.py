"""Client traffic for the rollout tests, routed as a gateway would route it: no gateway runs here, so a
bounded loop reads the HTTPRoute the operator wrote and sends each request to the predictor process of the
version its backend weights pick (smooth weighted round robin, so the split is exact over any window), and
mirrors the share a RequestMirror filter names to the canary, dropping those answers.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException

ROUTE_GROUP, ROUTE_VERSION, ROUTE_PLURAL = "gateway.networking.k8s.io", "v1", "httproutes"
ROUTE_READ_EVERY_S = 0.25  # how stale a split may be: a gateway also applies a route a moment later


@dataclass(frozen=True)
class Split:
    """One rule of the route: version → weight, and the mirrored version and percent (if any)."""

    weights: tuple[tuple[str, int], ...]
    mirror: tuple[str, int] | None = None


def split_of(route: dict[str, Any], model: str) -> Split:
    """Read the first rule of an HTTPRoute back into versions (`<model>-<version>-predictor` Services)."""
    rule = route["spec"]["rules"][0]

    def version(ref: dict[str, Any]) -> str:
        name = str(ref["name"])
        return name.removeprefix(f"{model}-").removesuffix("-predictor")

    weights = tuple((version(ref), int(ref.get("weight", 1))) for ref in rule.get("backendRefs") or [])
    mirror = next(((version(f["requestMirror"]["backendRef"]), int(f["requestMirror"].get("percent", 100)))
                   for f in rule.get("filters") or [] if f.get("type") == "RequestMirror"), None)
    return Split(weights, mirror)


class Target(Protocol):
    """Where one version's requests go: a predictor process, or a KServe Service's endpoints."""

    def infer(self, side: int) -> int:
        """One request with a `side`x`side` frame (or the frame `side` names); its HTTP status."""
        ...


@dataclass
class TrafficLoop:
    """Send about `rate_hz` requests a second until stopped (or `limit_s` passed), each to the predictor of
    the version the live HTTPRoute `model` picks. `sides` cycles through the image sizes sent. The loop
    owns `api` and closes it when stopped."""

    api: k8s_client.ApiClient
    namespace: str
    model: str
    predictors: Mapping[str, Target]
    sides: tuple[int, ...] = (64,)
    rate_hz: float = 30.0
    limit_s: float = 120.0
    sent: Counter[tuple[str, int]] = field(default_factory=Counter)  # (version, HTTP status) → count
    mirrored: Counter[tuple[str, int]] = field(default_factory=Counter)
    splits: list[Split] = field(default_factory=list)  # every split seen, in order, without repeats
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _error: BaseException | None = None

    def __enter__(self) -> TrafficLoop:
        self._thread = threading.Thread(target=self._run, name=f"traffic-{self.model}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
            self.api.close()
        if self._error is not None:
            raise RuntimeError(f"the traffic loop of {self.model} failed") from self._error

    def weights_seen(self, version: str) -> list[int]:
        return [dict(s.weights).get(version, 0) for s in self.splits]

    def _read_split(self, api: k8s_client.CustomObjectsApi) -> Split | None:
        try:
            route = api.get_namespaced_custom_object(ROUTE_GROUP, ROUTE_VERSION, self.namespace, ROUTE_PLURAL,
                                                     self.model)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        split = split_of(route, self.model)
        if not self.splits or self.splits[-1] != split:
            self.splits.append(split)
        return split

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # reported by stop(), in the test's thread
            self._error = exc

    def _loop(self) -> None:
        api = k8s_client.CustomObjectsApi(self.api)
        end = time.monotonic() + self.limit_s
        split: Split | None = None
        read_at = 0.0
        credit: dict[str, float] = {}
        mirror_credit = 0.0
        sent: Counter[str] = Counter()  # per version, so that `sides` cycles within each version's share
        tick = time.monotonic()
        while not self._stop.is_set() and time.monotonic() < end:
            if time.monotonic() >= read_at:
                split = self._read_split(api)
                read_at = time.monotonic() + ROUTE_READ_EVERY_S
            if split is not None and any(w > 0 for _, w in split.weights):
                # Smooth weighted round robin (nginx's): exact shares over every run of sum(weights).
                total = sum(w for _, w in split.weights)
                for version, weight in split.weights:
                    credit[version] = credit.get(version, 0.0) + weight
                version = max((v for v, w in split.weights if w > 0), key=lambda v: credit[v])
                credit[version] -= total
                side = self.sides[sent[version] % len(self.sides)]
                sent[version] += 1
                self.sent[(version, self.predictors[version].infer(side))] += 1
                if split.mirror is not None:
                    mirror_credit += split.mirror[1]
                    if mirror_credit >= 100:
                        mirror_credit -= 100
                        target = split.mirror[0]
                        self.mirrored[(target, self.predictors[target].infer(side))] += 1
            # A loop that fell behind (a slow version) goes on at the rate, without a burst to catch up.
            tick = max(tick + 1.0 / self.rate_hz, time.monotonic() - 1.0 / self.rate_hz)
            # Pacing the load generator, not waiting for a state: the stop flag ends it at once.
            self._stop.wait(max(0.0, tick - time.monotonic()))
