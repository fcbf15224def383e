"""The Argo CD health check of VSSModel (gitops/argocd/health.lua), run in Lua 5.1 as Argo CD runs it
(gopher-lua), over a table of statuses the operator writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51

from vss_operator.rollout import RolloutProgress, RolloutStatus

REPO = Path(__file__).resolve().parents[3]
HEALTH_LUA = REPO / "gitops" / "argocd" / "health.lua"
CM_PATCH = REPO / "gitops" / "argocd" / "argocd-cm-patch.yaml"
CM_KEY = "resource.customizations.health.serving.vss.ai_VSSModel"


def _lua_value(runtime: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return runtime.table_from({k: _lua_value(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([_lua_value(runtime, v) for v in value])
    return value


def health(obj: dict[str, Any]) -> tuple[str, str]:
    """Run the script as Argo CD does: `obj` is the live object, the script returns {status, message}.
    The standard library is cut to what Argo CD's sandbox offers (no os, io, require)."""
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua_globals = runtime.globals()
    for name in ("os", "io", "require", "dofile", "loadfile", "package", "debug"):
        lua_globals[name] = None
    lua_globals.obj = _lua_value(runtime, obj)
    result = runtime.execute(HEALTH_LUA.read_text())
    return str(result.status), str(result.message)


def condition(type_: str, status: str, reason: str = "Reason", message: str = "") -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2026-03-01T12:00:00Z", "observedGeneration": 3}


def vssmodel(status: dict[str, Any] | None, generation: int = 3) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "serving.vss.ai/v1alpha1", "kind": "VSSModel",
                           "metadata": {"name": "yolo", "namespace": "vision", "generation": generation},
                           "spec": {"version": "v2"}}
    if status is not None:
        obj["status"] = status
    return obj


def rollout_status(phase: str, stage: str | None = None, *, weight: int = 0, canary: str | None = "v2",
                   stable: str = "v1", ready: str = "True", stalled: bool = False,
                   message: str | None = None) -> dict[str, Any]:
    """A status as the operator writes it: the rollout's fields from RolloutStatus plus kstatus conditions."""
    status = RolloutStatus(
        phase=phase,  # type: ignore[arg-type]
        stable_version=stable, canary_version=canary, canary_weight=weight,
        progress=RolloutProgress(stage=stage, message=message))  # type: ignore[arg-type]
    conditions = [condition("Ready", ready, "InferenceServicesReady" if ready == "True" else "NotReady",
                            "InferenceService yolo-v1 ready" if ready == "True" else "yolo-v2 not ready")]
    if stalled:
        conditions.append(condition("Stalled", "True", "AnalysisFailed", "v2 failed 2 checks"))
    return {"observedGeneration": 3, "conditions": conditions, **{
        k: v for k, v in status.as_status_fields().items() if v is not None}}


CASES = [
    ("no status yet is progressing", vssmodel(None), "Progressing", "Waiting for the vss-operator"),
    ("a status for an older generation is progressing",
     vssmodel(rollout_status("Stable", canary=None), generation=4), "Progressing", "observe generation 4"),
    ("stable and ready is healthy", vssmodel(rollout_status("Stable", canary=None)), "Healthy",
     "v1 serves all traffic"),
    ("stable but not ready is progressing",
     vssmodel(rollout_status("Stable", canary=None, ready="False")), "Progressing", "yolo-v2 not ready"),
    ("a canary step is progressing with its weight",
     vssmodel(rollout_status("Progressing", "Canary", weight=10, message="step 1 of 2")), "Progressing",
     "Rolling out v2 (10% of traffic, stable v1): step 1 of 2"),
    ("a shadow phase is progressing", vssmodel(rollout_status("Progressing", "Shadow")), "Progressing",
     "Rolling out v2 (0% of traffic"),
    ("a manual rollout waiting for promotion is suspended",
     vssmodel(rollout_status("Progressing", "AwaitingPromotion", weight=50)), "Suspended",
     "waiting for serving.vss.ai/promote: v2"),
    ("a promotion still finishing is progressing",
     vssmodel(rollout_status("Promoted", canary=None, stable="v2")), "Progressing", "v2 promoted"),
    ("a rolled-back rollout is degraded",
     vssmodel(rollout_status("RolledBack", stalled=True, message="v2 rolled back: failed 2 checks")),
     "Degraded", "v2 rolled back: failed 2 checks"),
    ("stalled children are degraded even when the phase says stable",
     vssmodel(rollout_status("Stable", canary=None, ready="False", stalled=True)), "Degraded",
     "v2 failed 2 checks"),
    ("a failed phase without conditions is degraded", vssmodel({"observedGeneration": 3, "phase": "Failed"}),
     "Degraded", "Failed"),
]


@pytest.mark.parametrize(("obj", "status", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_health_of_a_vssmodel(obj: dict[str, Any], status: str, message: str) -> None:
    got_status, got_message = health(obj)
    assert got_status == status
    assert message in got_message


def test_a_stable_status_is_healthy_only_with_ready_true() -> None:
    for ready in ("False", "Unknown"):
        assert health(vssmodel(rollout_status("Stable", canary=None, ready=ready)))[0] == "Progressing"


def test_the_configmap_patch_carries_the_script_verbatim() -> None:
    patch = yaml.safe_load(CM_PATCH.read_text())
    assert patch["kind"] == "ConfigMap" and patch["metadata"]["name"] == "argocd-cm"
    assert patch["data"][CM_KEY] == HEALTH_LUA.read_text()
