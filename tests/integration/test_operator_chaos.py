"""The operator SIGKILLed in every state of a canary rollout, one test per state: a new operator, started
from nothing but what the apiserver holds, ends the rollout where an uninterrupted one ends (a healthy
canary promoted, a faulty one rolled back), with one InferenceService per version, one HTTPRoute, each
child controlled by its VSSModel alone, status.observedGeneration following the spec, and no terminal
Event posted twice.

Real: the operator process (`vss operator`, killed with SIGKILL: no shutdown, the Lease not released), the
apiserver, etcd and the garbage collector, the predictor processes of both versions, Prometheus scraping
them and the traffic loop that follows the HTTPRoute. Not real: no KServe controller runs, so the test
marks an InferenceService Ready as KServe would (`Rollout.set_ready`).

The kill comes from a watch, at the first sight of the state: right after the operator wrote the status
that enters it, before it posted that transition's Events or applied the children rendered from it (the
status is written first), which is the narrowest window a crash can hit. Initializing is caught as the
canary's InferenceService appears, so that KServe can make it Ready while no operator runs.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes import client as k8s_client
from kubernetes import watch

from tests.e2e.prometheus_server import PrometheusServer
from tests.integration.operator_fixtures import (  # noqa: F401 - the fixtures
    OperatorFactory,
    OperatorProcess,
    operator_factory_fixture,
)
from tests.integration.rollout_fixtures import (  # noqa: F401 - the fixtures
    DEADLINE,
    FAILURE_LIMIT,
    ROLLOUT_REASONS,
    SIDE,
    Rollout,
    RolloutFactory,
    history,
    model_files_fixture,
    prometheus_fixture,
    prometheus_flag,
    rollout_fixture,
    traffic,
)
from tests.integration.rollout_traffic import ROUTE_GROUP, ROUTE_PLURAL, ROUTE_VERSION, split_of
from tests.support.apiserver import LocalCluster, wait_until
from vss_api.vssmodel import GROUP, PLURAL, VERSION, VSSModel
from vss_operator.handlers import CHILD_KINDS, RETIRED_ANNOTATION
from vss_operator.kube import PLURALS
from vss_operator.render import MODEL_LABEL, VERSION_LABEL, child_selector, render
from vss_operator.rollout import PROMOTE_ANNOTATION

ISVC_GROUP, ISVC_VERSION = "serving.kserve.io", "v1beta1"
# The Events a rollout posts once at most: entering a stage, and how it ended.
ONCE = ("RolloutStarted", "ShadowStarted", "AwaitingPromotion", "Promoted", "RolloutCompleted", "AnalysisFailed")
STEPS = [{"weight": 25, "pause": "2s"}, {"weight": 50, "pause": "2s"}]

Status = dict[str, Any]


def _stage(stage: str, step: int | None = None) -> Callable[[Status], bool]:
    def test(status: Status) -> bool:
        progress = status.get("rollout") or {}
        return (status.get("phase") == "Progressing" and progress.get("stage") == stage
                and (step is None or progress.get("step") == step))
    return test


def _phase(phase: str, failed_checks: int | None = None) -> Callable[[Status], bool]:
    def test(status: Status) -> bool:
        return status.get("phase") == phase and (
            failed_checks is None or (status.get("rollout") or {}).get("failedChecks") == failed_checks)
    return test


def _promote(setup: Rollout) -> None:
    setup.annotate(PROMOTE_ANNOTATION, "v2")


def _canary_ready(setup: Rollout) -> None:
    setup.set_ready("v2")


@dataclass(frozen=True)
class ChildWrite:
    """A write of the operator to a child, to kill it at: the first watch event of `types` on the object
    `<model><suffix>` of `plural` that passes `test` (given the object and the model's name)."""

    group: str
    version: str
    plural: str
    suffix: str
    types: frozenset[str] = frozenset({"ADDED", "MODIFIED"})
    test: Callable[[dict[str, Any], str], bool] = lambda obj, model: True


def _route_at(weight: int) -> Callable[[dict[str, Any], str], bool]:
    return lambda route, model: dict(split_of(route, model).weights).get("v2") == weight


@dataclass(frozen=True)
class Case:
    """One state to kill the operator in: `state` holds in the status at the kill, which comes at its first
    sight in the status, or at `child_write` when given (the status is written before the children, so
    `state` already holds then); `while_down` is what changes before the next operator starts;
    `promoted` is how an uninterrupted rollout ends."""

    id: str
    state: Callable[[Status], bool]
    promoted: bool = True
    rollout: dict[str, Any] = field(default_factory=dict)
    child_write: ChildWrite | None = None
    canary_ready_at_start: bool = True  # False: KServe makes it Ready only while_down
    while_down: Callable[[Rollout], None] | None = None
    # Kill only once this Event is out: a state held, not the instant of entering it (the Events of a
    # transition go out after its status, so a kill at that instant loses them by design).
    settled: str | None = None


CASES = [
    # The canary's InferenceService written, KServe makes it Ready while no operator runs.
    Case("initializing", _stage("Initializing"), canary_ready_at_start=False, while_down=_canary_ready,
         child_write=ChildWrite(ISVC_GROUP, ISVC_VERSION, "inferenceservices", "-v2", frozenset({"ADDED"}))),
    Case("shadow", _stage("Shadow"), rollout={"shadow": {"percent": 50, "duration": "2s"}}),
    Case("canary-step-1-of-2", _stage("Canary", 0)),
    Case("canary-step-1-routed", _stage("Canary", 0),
         child_write=ChildWrite(ROUTE_GROUP, ROUTE_VERSION, ROUTE_PLURAL, "", test=_route_at(25))),
    Case("canary-step-2-of-2", _stage("Canary", 1)),
    Case("awaiting-promotion", _stage("AwaitingPromotion"),
         rollout={"steps": STEPS[1:], "promotion": "Manual"}, while_down=_promote),
    Case("promoted", _phase("Promoted")),
    # The old version marked retired, its scale-down delay running: the new operator deletes it on time.
    # The mark goes out in the advance that writes Promoted; the next one (Stable) may come before the kill.
    Case("promoted-v1-retired", lambda s: _phase("Promoted")(s) or _phase("Stable")(s),
         rollout={"scaleDownDelay": "8s"},
         child_write=ChildWrite(ISVC_GROUP, ISVC_VERSION, "inferenceservices", "-v1", frozenset({"MODIFIED"}),
                                test=lambda isvc, _: RETIRED_ANNOTATION in isvc["metadata"].get("annotations", {}))),
    # At the deletion of the old version, its scale-down delay over (the rollout's status already final).
    Case("promoted-v1-pruned", _phase("Stable"),
         child_write=ChildWrite(ISVC_GROUP, ISVC_VERSION, "inferenceservices", "-v1", frozenset({"DELETED"}))),
    Case("rolling-back", _phase("Progressing", failed_checks=1), promoted=False),
    Case("rolled-back", _phase("RolledBack"), promoted=False, settled="AnalysisFailed"),
]


# --- watching and killing ---------------------------------------------------------------------------------


def first_seen(cluster: LocalCluster, namespace: str, group: str, version: str, plural: str, name: str,
               test: Callable[[dict[str, Any]], bool], what: str, *,
               types: frozenset[str] = frozenset({"ADDED", "MODIFIED"}), timeout: float = DEADLINE
               ) -> dict[str, Any]:
    """The first state of the object `name` that passes `test` in a watch event of `types` (a watch
    begins with the state the object is in now, as ADDED), so that even a state held for milliseconds is
    seen."""
    api = cluster.api_client()
    try:
        objects = k8s_client.CustomObjectsApi(api)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
                objects.list_namespaced_custom_object, group, version, namespace, plural,
                field_selector=f"metadata.name={name}", timeout_seconds=max(1, int(left)))
            try:
                for event in stream:
                    obj: dict[str, Any] = event["object"]
                    if event["type"] in types and test(obj):
                        return obj
            finally:
                stream.close()
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
    finally:
        api.close()


def kill_in(case: Case, setup: Rollout, op: OperatorProcess) -> Status:
    """SIGKILL `op` at the first sight of `case`'s state (or of its child write); the status it left."""
    if (child := case.child_write) is not None:
        name = f"{setup.name}{child.suffix}"
        first_seen(setup.cluster, setup.namespace, child.group, child.version, child.plural, name,
                   lambda obj: child.test(obj, setup.name), f"the write to {child.plural} {name}",
                   types=child.types)
    else:
        first_seen(setup.cluster, setup.namespace, GROUP, VERSION, PLURAL, setup.name,
                   lambda obj: case.state(obj.get("status") or {}), f"{setup.name} in the state {case.id}")
    if case.settled is not None:
        wait_until(lambda: case.settled in setup.rollout_reasons(), timeout=DEADLINE,
                   what=f"the Event {case.settled}")
    assert op.stop(signal.SIGKILL) == -signal.SIGKILL
    return setup.status()


# --- what the cluster holds ---------------------------------------------------------------------------------


def resource(api_version: str, kind: str) -> str:
    group = api_version.rpartition("/")[0]
    return f"{PLURALS[kind]}.{group}" if group else PLURALS[kind]


def children(setup: Rollout, kinds: set[tuple[str, str]]) -> list[dict[str, Any]]:
    """Every object of `kinds` in the namespace carrying the model's child labels."""
    found = setup.cluster.kubectl("get", ",".join(sorted(resource(*k) for k in kinds)), "-n", setup.namespace,
                                  "-l", child_selector(setup.name), "-o", "json")
    items: list[dict[str, Any]] = json.loads(found.stdout)["items"]
    return items


def expected_children(model: dict[str, Any]) -> list[dict[str, Any]]:
    """What `render` makes of the stored status: the children an operator that never died would leave."""
    status = model["status"]
    return render(VSSModel.from_body(model), stable_version=status["stableVersion"],
                  canary_version=status.get("canaryVersion"), canary_weight=status.get("canaryWeight") or 0)


def backends(route: dict[str, Any]) -> list[tuple[str, int]]:
    return [(ref["name"], ref.get("weight", 1)) for ref in route["spec"]["rules"][0]["backendRefs"]]


def assert_children_once(setup: Rollout, model: dict[str, Any]) -> Counter[str]:
    """The children are exactly what render wants: one InferenceService per version it names, one
    HTTPRoute with its weights, one NetworkPolicy, each controlled by this VSSModel alone. Waits for the garbage the
    operator prunes after a status write (the old stable version's InferenceService)."""
    wanted = expected_children(model)
    kinds = {(m["apiVersion"], m["kind"]) for m in wanted} | set(CHILD_KINDS)
    names = sorted((m["kind"], m["metadata"]["name"]) for m in wanted)

    def settled() -> list[dict[str, Any]] | None:
        items = children(setup, kinds)
        return items if sorted((i["kind"], i["metadata"]["name"]) for i in items) == names else None

    found = wait_until(settled, timeout=DEADLINE, what=f"the children {names}")
    for item in found:
        refs = item["metadata"].get("ownerReferences") or []
        assert [(r["kind"], r["name"], r["uid"], r.get("controller")) for r in refs] == [
            ("VSSModel", setup.name, model["metadata"]["uid"], True)], (item["metadata"]["name"], refs)
    isvcs = [i for i in found if i["kind"] == "InferenceService"]
    per_version = Counter(i["metadata"]["labels"][VERSION_LABEL] for i in isvcs)
    assert all(count == 1 for count in per_version.values()), per_version
    # Nothing unlabelled either: every InferenceService of the namespace is one of these.
    everything = setup.cluster.kubectl("get", "inferenceservices", "-n", setup.namespace, "-o", "json")
    assert sorted(i["metadata"]["name"] for i in json.loads(everything.stdout)["items"]) == sorted(
        i["metadata"]["name"] for i in isvcs)
    assert all(i["metadata"]["labels"][MODEL_LABEL] == setup.name for i in found)
    route = next(i for i in found if i["kind"] == "HTTPRoute")
    rendered_route = next(m for m in wanted if m["kind"] == "HTTPRoute")
    wait_until(lambda: backends(setup.get("httproute") or route) == backends(rendered_route),
               timeout=DEADLINE, what=f"the route at {backends(rendered_route)}")
    return Counter(i["kind"] for i in found)


def assert_events_once(setup: Rollout, case: Case, last: str) -> list[str]:
    """No Event of the rollout posted twice: the once-only reasons at most once (the one the rollout ended
    with exactly once), every transition's message once, no restart of the rollout."""
    events = [e for e in setup.events() if e["reason"] in ROLLOUT_REASONS | {"RolloutRestarted", "RetryStarted"}]
    reasons = [e["reason"] for e in events]
    counts = Counter(reasons)
    assert counts[last] == 1, reasons
    assert all(counts[reason] <= 1 for reason in ONCE), reasons
    assert counts["RolloutRestarted"] == counts["RetryStarted"] == 0, reasons
    steps = case.rollout.get("steps", STEPS)
    assert counts["StepAdvanced"] <= len(steps), reasons
    transitions = Counter((e["reason"], e["message"]) for e in events if e["reason"] != "CheckNoData")
    assert all(count == 1 for count in transitions.values()), transitions
    return reasons


# --- the tests ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_an_operator_killed_in_a_rollout_state_ends_it_as_if_never_killed_with_no_duplicate_children(
    case: Case, rollout: RolloutFactory, k8s_cluster: LocalCluster, operator_factory: OperatorFactory,
    prometheus: PrometheusServer,
) -> None:
    first = operator_factory(*prometheus_flag(prometheus))
    first.wait_leading()
    canary = "healthy" if case.promoted else "erroring"
    setup = rollout(f"chaos-{case.id}", canary, **{"steps": STEPS, **case.rollout})
    # The erroring canary fails every fourth request (a frame size it refuses).
    sides = (SIDE,) if case.promoted else (SIDE, SIDE, SIDE, SIDE + 32)

    with traffic(setup, k8s_cluster, sides=sides):
        setup.start(ready=case.canary_ready_at_start)
        at_kill = kill_in(case, setup, first)
        killed_at = time.time()
        assert case.state(at_kill), f"the state at the kill: {json.dumps(at_kill, indent=1)}"
        if case.while_down is not None:
            case.while_down(setup)
        second = operator_factory(*prometheus_flag(prometheus))
        second.wait_leading()
        leading_at = time.time()
        if case.promoted:
            ended = _phase("Stable")
            final = setup.wait_status(lambda s: ended(s) and s.get("stableVersion") == "v2"
                                      and second.reconciled(setup.name) >= 1, "v2 promoted by the new operator")
        else:
            final = setup.wait_status(lambda s: _phase("RolledBack")(s) and second.reconciled(setup.name) >= 1,
                                      "v2 rolled back, seen by the new operator")
        ended_at = time.time()
        model = setup.get()
        assert model is not None
        kinds = assert_children_once(setup, model)
    last = "RolloutCompleted" if case.promoted else "AnalysisFailed"
    setup.timeline(f"The operator SIGKILLed in the state {case.id}", ended_at - setup.started_at, last,
                   {"operator killed (SIGKILL)": killed_at, "a new operator leads": leading_at})
    reasons = assert_events_once(setup, case, last)
    print(f"chaos {case.id}: final {final['phase']} on {final['stableVersion']}, children {dict(kinds)}, "
          f"{ended_at - killed_at:.1f}s from the kill to the end ({leading_at - killed_at:.1f}s to a new leader)")

    assert final["observedGeneration"] == model["metadata"]["generation"]
    if case.promoted:
        assert history(final) == [("v2", "Promoted")]  # one rollout, not restarted from the beginning
        assert "canaryVersion" not in final and "canaryWeight" not in final
        assert kinds == {"InferenceService": 1, "HTTPRoute": 1, "NetworkPolicy": 1}
        assert "Promoted" in reasons or case.id == "promoted", reasons  # killed before posting it: lost
    else:
        assert history(final) == [("v2", "RolledBack")]
        assert (final["stableVersion"], final["canaryVersion"], final["canaryWeight"]) == ("v1", "v2", 0)
        assert final["rollout"]["failedChecks"] == FAILURE_LIMIT
        assert kinds == {"InferenceService": 2, "HTTPRoute": 1, "NetworkPolicy": 1}  # the canary kept for inspection
    assert (setup.condition("Ready") or {}).get("status") == "True"
