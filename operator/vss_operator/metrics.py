"""The operator's series about each VSSModel, set from the status it has just written (so they say what
`kubectl get vssm` says), for the dashboard and the alert rules of the chart:

    vss_model_phase{namespace, model_name, phase}            1 for the current phase, 0 for the others
    vss_model_ready{namespace, model_name}                   1 while the Ready condition is True
    vss_model_traffic_weight{namespace, model_name, version, role}
                                                             percent of requests routed to the stable
                                                             (role="stable") and canary (role="canary") version

Only the leader writes statuses, so only the leader exports these; a standby exports none, and a new leader
exports every model again once its `resume` handlers have advanced them. A model that is deleted takes its
series with it.
"""

from __future__ import annotations

from typing import get_args

from prometheus_client import CollectorRegistry, Gauge

from vss_api.vssmodel import READY, Phase
from vss_operator.status import VSSModelStatus

PHASE = "vss_model_phase"
READY_METRIC = "vss_model_ready"
TRAFFIC_WEIGHT = "vss_model_traffic_weight"
PHASES: tuple[Phase, ...] = get_args(Phase)
STABLE, CANARY = "stable", "canary"


def traffic_weights(status: VSSModelStatus) -> dict[tuple[str, str], int]:
    """(version, role) → percent of requests, from the status' versions and canary weight."""
    weights: dict[tuple[str, str], int] = {}
    canary = (status.canary_weight or 0) if status.canary_version is not None else 0
    if status.stable_version is not None:
        weights[(status.stable_version, STABLE)] = 100 - canary
    if status.canary_version is not None and status.canary_version != status.stable_version:
        weights[(status.canary_version, CANARY)] = canary
    return weights


class ModelMetrics:
    """The per-VSSModel gauges, in `registry` (the one `/metrics` serves)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        registry = registry if registry is not None else CollectorRegistry()
        self.phase = Gauge(PHASE, "1 for the VSSModel's current phase (Stable, Progressing, Promoted, RolledBack, "
                           "Failed), 0 for the others", ["namespace", "model_name", "phase"], registry=registry)
        self.ready = Gauge(READY_METRIC, "1 while the VSSModel's Ready condition is True: the InferenceServices of "
                           "the versions taking traffic are ready", ["namespace", "model_name"], registry=registry)
        self.weight = Gauge(TRAFFIC_WEIGHT, "Percent of the VSSModel's requests routed to a version (role: stable "
                            "or canary)", ["namespace", "model_name", "version", "role"], registry=registry)
        self._weights: dict[tuple[str, str], set[tuple[str, str]]] = {}

    def observe(self, namespace: str, name: str, status: VSSModelStatus) -> None:
        """Export what `status` says about the VSSModel `namespace/name`."""
        for phase in PHASES:
            self.phase.labels(namespace, name, phase).set(1 if status.phase == phase else 0)
        ready = status.condition(READY)
        self.ready.labels(namespace, name).set(1 if ready is not None and ready.status == "True" else 0)
        weights = traffic_weights(status)
        for version, role in self._weights.get((namespace, name), set()) - set(weights):
            self.weight.remove(namespace, name, version, role)
        for (version, role), percent in weights.items():
            self.weight.labels(namespace, name, version, role).set(percent)
        self._weights[(namespace, name)] = set(weights)

    def forget(self, namespace: str, name: str) -> None:
        """The VSSModel is gone: its series go too."""
        if (namespace, name) not in self._weights:
            return
        for phase in PHASES:
            self.phase.remove(namespace, name, phase)
        self.ready.remove(namespace, name)
        for version, role in self._weights.pop((namespace, name)):
            self.weight.remove(namespace, name, version, role)
