"""handlers.advance against an in-memory apiserver and Prometheus: the order of its writes, when it asks
Prometheus, and the per-object timers it leaves behind (Requeues)."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from vss_api.vssmodel import VSSModel
from vss_operator.handlers import RETIRED_ANNOTATION, OperatorContext, Requeues, advance
from vss_operator.kube import Kube, NotFound
from vss_operator.prometheus import PrometheusClient
from vss_operator.promql import Sample, VersionQuery, VersionSample
from vss_operator.render import render

NAMESPACE, NAME, UID = "vision", "yolo", "u-1"


def _model(version: str = "v1", status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "serving.vss.ai/v1alpha1", "kind": "VSSModel",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "uid": UID, "generation": 1, "annotations": {}},
        "spec": {"task": "detection", "version": version,
                 "versions": [{"name": "v1", "storageUri": "s3://m/v1.onnx"},
                              {"name": "v2", "storageUri": "s3://m/v2.onnx"}],
                 "rollout": {"steps": [{"weight": 10, "pause": "1m"}], "analysis": {"interval": "1m"}}},
        "status": status or {},
    }


class FakeKube:
    """Holds one VSSModel and its children; records every write in order."""

    def __init__(self, model: dict[str, Any]) -> None:
        self.model = model
        self.children: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[str] = []

    async def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.model) if kind == "VSSModel" and name == NAME else None

    async def list(self, api_version: str, kind: str, namespace: str | None, selector: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(c) for (k, _), c in self.children.items() if k == kind]

    async def patch_status(self, api_version: str, kind: str, namespace: str, name: str,
                           status: dict[str, Any]) -> dict[str, Any]:
        self.calls.append("patch_status")
        merged = {**self.model.get("status", {}), **status}
        self.model["status"] = {k: v for k, v in merged.items() if v is not None}
        return self.model

    async def apply_all(self, manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.calls.append("apply " + ",".join(m["metadata"]["name"] for m in manifests))
        for m in manifests:
            old = self.children.get((m["kind"], m["metadata"]["name"]), {})
            self.children[(m["kind"], m["metadata"]["name"])] = {**copy.deepcopy(m), "status": old.get("status", {})}
        return manifests

    async def annotate(self, api_version: str, kind: str, namespace: str, name: str,
                       annotations: dict[str, str | None]) -> dict[str, Any]:
        self.calls.append(f"annotate {name} " + ",".join(f"{k}={v}" for k, v in annotations.items()))
        meta = self.children[(kind, name)]["metadata"]
        merged = {**(meta.get("annotations") or {}), **annotations}
        meta["annotations"] = {k: v for k, v in merged.items() if v is not None}
        return self.children[(kind, name)]

    async def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool:
        self.calls.append(f"delete {name}")
        return self.children.pop((kind, name), None) is not None

    async def post_event(self, involved: dict[str, Any], type_: str, reason: str, message: str, *,
                         instance: str, at: datetime | None = None) -> dict[str, Any]:
        self.calls.append(f"event {reason}")
        return {}

    def set_ready(self, version: str) -> None:
        self.children[("InferenceService", f"{NAME}-{version}")]["status"] = {
            "conditions": [{"type": "Ready", "status": "True"}]}


class FakePrometheus:
    def __init__(self, sample: Sample) -> None:
        self.queries: list[VersionQuery] = []
        self._sample = sample

    async def sample(self, query: VersionQuery, at: datetime) -> Sample:
        self.queries.append(query)
        return self._sample


GOOD = VersionSample(requests=100, server_errors=0, client_errors=0, p95_ms=10.0)


def _context(kube: FakeKube, prometheus: FakePrometheus) -> OperatorContext:
    return OperatorContext(kube=cast(Kube, kube), prometheus=cast(PrometheusClient, prometheus))


async def test_a_new_version_writes_the_status_first_then_posts_the_event_then_applies_the_canary() -> None:
    kube, prometheus = FakeKube(_model("v1")), FakePrometheus(GOOD)
    ctx = _context(kube, prometheus)
    await advance(ctx, NAMESPACE, NAME, 1)
    kube.set_ready("v1")
    await advance(ctx, NAMESPACE, NAME, None)  # KServe's status change: Ready
    kube.model["spec"]["version"] = "v2"
    kube.calls.clear()

    advanced = await advance(ctx, NAMESPACE, NAME, 2)

    assert advanced is not None and advanced.decision.status.phase == "Progressing"
    # The Event right after the status it reports: a crash while applying the children loses neither.
    assert kube.calls == ["patch_status", "event RolloutStarted", "apply yolo-v1,yolo-v2,yolo,yolo"]
    assert kube.model["status"]["canaryVersion"] == "v2" and kube.model["status"]["canaryWeight"] == 0
    assert prometheus.queries == []  # nothing to judge while the canary initializes
    assert ctx.requeues.pending(f"{NAMESPACE}/{NAME}")
    await ctx.requeues.close()


async def test_prometheus_is_asked_only_when_an_analysis_is_due_and_a_pass_promotes() -> None:
    started = datetime.now(UTC) - timedelta(minutes=5)
    status = {"phase": "Progressing", "stableVersion": "v1", "canaryVersion": "v2", "canaryWeight": 10,
              "rollout": {"stage": "Canary", "step": 0, "startedAt": started.isoformat(),
                          "stageStartedAt": started.isoformat()}}
    kube, prometheus = FakeKube(_model("v2", status)), FakePrometheus(GOOD)
    ctx = _context(kube, prometheus)
    await kube.apply_all(render(VSSModel.from_body(kube.model), stable_version="v1", canary_version="v2",
                                canary_weight=10))
    kube.set_ready("v1")
    kube.set_ready("v2")

    first = await advance(ctx, NAMESPACE, NAME, None)  # the check is due: passes, records it
    assert first is not None and [q.version for q in prometheus.queries] == ["v2", "v1"]
    assert first.decision.check is not None and first.decision.check.verdict == "Pass"
    assert kube.model["status"]["phase"] == "Promoted"  # the step's pause passed and its check too

    second = await advance(ctx, NAMESPACE, NAME, None)  # promoted: no analysis, the old version retires
    assert second is not None and len(prometheus.queries) == 2
    assert kube.model["status"]["phase"] == "Stable" and kube.model["status"]["stableVersion"] == "v2"
    assert [h["result"] for h in kube.model["status"]["history"]] == ["Promoted"]
    assert ("InferenceService", "yolo-v1") in kube.children and "delete yolo-v1" not in kube.calls
    assert RETIRED_ANNOTATION in kube.children[("InferenceService", "yolo-v1")]["metadata"]["annotations"]
    await ctx.requeues.close()


def _retired(kube: FakeKube, version: str, ago_s: float) -> None:
    kube.children[("InferenceService", f"{NAME}-{version}")]["metadata"]["annotations"] = {
        RETIRED_ANNOTATION: (datetime.now(UTC) - timedelta(seconds=ago_s)).isoformat()}


@pytest.mark.parametrize(("delay", "retired_ago_s", "deleted"), [("30s", 10.0, False), ("30s", 31.0, True),
                                                                   ("0s", 0.0, True)])
async def test_the_old_version_is_deleted_only_a_scale_down_delay_after_the_route_left_it(
        delay: str, retired_ago_s: float, deleted: bool) -> None:
    """Promoted to v2: v1's InferenceService stays (its deadline in its annotation, so a new operator keeps
    it) until spec.rollout.scaleDownDelay has passed, and the next look is scheduled for then."""
    model = _model("v2", {"phase": "Stable", "stableVersion": "v2", "observedGeneration": 1})
    model["spec"]["rollout"]["scaleDownDelay"] = delay
    kube = FakeKube(model)
    ctx = _context(kube, FakePrometheus(GOOD))
    await kube.apply_all(render(VSSModel.from_body(model), stable_version="v1"))
    await kube.apply_all(render(VSSModel.from_body(model), stable_version="v2"))
    kube.set_ready("v2")
    if retired_ago_s:
        _retired(kube, "v1", retired_ago_s)

    await advance(ctx, NAMESPACE, NAME, None)

    assert (("InferenceService", "yolo-v1") not in kube.children) is deleted
    assert ("delete yolo-v1" in kube.calls) is deleted
    due = ctx.requeues.due_in(f"{NAMESPACE}/{NAME}")
    if not deleted:
        assert due is not None and 30 - retired_ago_s - 2 <= due <= 30 - retired_ago_s + 1
    await ctx.requeues.close()


async def test_a_retired_version_wanted_again_loses_its_mark_and_is_not_deleted() -> None:
    """A rollout back to v1 during its scale-down delay: v1 is the canary again, and serves on, warm."""
    status = {"phase": "Stable", "stableVersion": "v2", "observedGeneration": 1}
    kube = FakeKube(_model("v1", status))
    ctx = _context(kube, FakePrometheus(GOOD))
    await kube.apply_all(render(VSSModel.from_body(kube.model), stable_version="v1"))
    await kube.apply_all(render(VSSModel.from_body(kube.model), stable_version="v2"))
    kube.set_ready("v2")
    _retired(kube, "v1", 5.0)

    await advance(ctx, NAMESPACE, NAME, 2)

    assert f"annotate yolo-v1 {RETIRED_ANNOTATION}=None" in kube.calls and "delete yolo-v1" not in kube.calls
    assert RETIRED_ANNOTATION not in kube.children[("InferenceService", "yolo-v1")]["metadata"]["annotations"]
    assert kube.model["status"]["canaryVersion"] == "v1"
    await ctx.requeues.close()


async def test_a_gone_object_is_left_alone() -> None:
    kube = FakeKube(_model())
    ctx = _context(kube, FakePrometheus(GOOD))

    assert await advance(ctx, NAMESPACE, "other", None) is None
    assert kube.calls == []


async def test_a_requeue_replaces_the_pending_one_and_none_cancels_it() -> None:
    requeues = Requeues()
    fired: list[str] = []
    done = asyncio.Event()

    async def record(what: str) -> None:
        fired.append(what)
        done.set()

    requeues.schedule("ns/a", 60, lambda: record("late"))
    requeues.schedule("ns/a", 0, lambda: record("soon"))
    requeues.schedule("ns/b", 0, lambda: record("cancelled"))
    requeues.schedule("ns/b", None, lambda: record("never"))
    await asyncio.wait_for(done.wait(), timeout=5)

    assert fired == ["soon"]
    assert not requeues.pending("ns/a") and not requeues.pending("ns/b")
    await requeues.close()


async def test_closing_cancels_timers_and_running_callbacks() -> None:
    requeues = Requeues()
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    requeues.schedule("ns/a", 0, forever)
    requeues.schedule("ns/b", 3600, forever)
    await asyncio.wait_for(started.wait(), timeout=5)

    await requeues.close()

    assert not requeues.pending("ns/b")


@pytest.mark.parametrize("delay", [-1.0, 0.0])
async def test_a_due_time_in_the_past_fires_at_once(delay: float) -> None:
    requeues = Requeues()
    done = asyncio.Event()

    async def mark() -> None:
        done.set()

    requeues.schedule("ns/a", delay, mark)
    await asyncio.wait_for(done.wait(), timeout=5)
    await requeues.close()


def test_kopf_compares_the_retry_annotation_even_on_objects_an_older_operator_marked_as_its_own() -> None:
    """Before, kopf's bookkeeping lived under serving.vss.ai with its marker, which makes kopf drop every
    annotation under that prefix from the comparison; now its bookkeeping is under its own prefix, and what an
    older operator left is left out instead of our annotations."""
    import kopf

    from vss_operator.handlers import DiffBaseStorage

    legacy = {"serving.vss.ai/kopf-managed": "yes", "serving.vss.ai/last-handled-configuration": "{}\n",
              "serving.vss.ai/retry": "1", "operator.vss.ai/kopf-managed": "yes",
              "operator.vss.ai/last-handled-configuration": "{}\n", "team": "vision"}
    body = kopf.Body({"apiVersion": "serving.vss.ai/v1alpha1", "kind": "VSSModel",
                      "metadata": {"name": "m", "namespace": "n", "annotations": legacy}, "spec": {"version": "v1"}})
    essence = DiffBaseStorage().build(body=body)
    assert essence["metadata"]["annotations"] == {"serving.vss.ai/retry": "1", "team": "vision"}
    assert essence["spec"] == {"version": "v1"}


async def test_an_old_version_deleted_by_someone_else_before_its_retirement_mark_is_left_alone() -> None:
    """The listing still holds v1, but it is gone when the operator marks it: no error, nothing deleted."""
    model = _model("v2", {"phase": "Stable", "stableVersion": "v2", "observedGeneration": 1})

    class Racing(FakeKube):
        async def annotate(self, api_version: str, kind: str, namespace: str, name: str,
                           annotations: dict[str, str | None]) -> dict[str, Any]:
            self.children.pop((kind, name), None)
            raise NotFound(f"{kind} {name} not found")

    kube = Racing(model)
    ctx = _context(kube, FakePrometheus(GOOD))
    await kube.apply_all(render(VSSModel.from_body(model), stable_version="v1"))
    await kube.apply_all(render(VSSModel.from_body(model), stable_version="v2"))
    kube.set_ready("v2")

    advanced = await advance(ctx, NAMESPACE, NAME, None)

    assert advanced is not None and "delete yolo-v1" not in kube.calls
    await ctx.requeues.close()
