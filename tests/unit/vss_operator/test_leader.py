"""Lease leader election: one holder at a time, take-over after expiry, hand-over on release."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from vss_operator.kube import Conflict, NotFound, Unavailable
from vss_operator.leader import (
    LeadershipLost,
    LeaseElector,
    LeaseRecord,
    LeaseTimings,
    Observation,
    next_step,
)

FAST = LeaseTimings(duration=15.0, renew_deadline=0.05, retry_period=0.01)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeKube:
    """Leases in memory, with the apiserver's optimistic concurrency on resourceVersion."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.version = 0

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.objects.get((namespace, name))
        return copy.deepcopy(found) if found is not None else None

    async def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        key = (manifest["metadata"]["namespace"], manifest["metadata"]["name"])
        if key in self.objects:
            raise Conflict("already exists", 409)
        return self._store(key, manifest)

    async def replace(self, manifest: dict[str, Any]) -> dict[str, Any]:
        key = (manifest["metadata"]["namespace"], manifest["metadata"]["name"])
        if key not in self.objects:
            raise NotFound("gone", 404)
        if manifest["metadata"].get("resourceVersion") != self.objects[key]["metadata"]["resourceVersion"]:
            raise Conflict("the object has been modified", 409)
        return self._store(key, manifest)

    def _store(self, key: tuple[str, str], manifest: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        stored = copy.deepcopy(manifest)
        stored["metadata"]["resourceVersion"] = str(self.version)
        self.objects[key] = stored
        return copy.deepcopy(stored)

    def holder(self) -> str:
        return str(self.objects[("ops", "vss-operator")]["spec"]["holderIdentity"])


def _elector(kube: FakeKube, identity: str, clock: FakeClock, timings: LeaseTimings = FAST) -> LeaseElector:
    return LeaseElector(kube, "vss-operator", "ops", identity, timings, clock=clock)  # type: ignore[arg-type]


RECORD = LeaseRecord(holder="a", renew_time="t1", duration=15.0, transitions=0)


@pytest.mark.parametrize(("current", "identity", "seen", "now", "step"), [
    (None, "b", Observation(), 0.0, "create"),
    (RECORD, "a", Observation(RECORD, 0.0), 100.0, "renew"),
    (RECORD, "b", Observation(RECORD, 0.0), 14.9, "wait"),
    (RECORD, "b", Observation(RECORD, 0.0), 15.0, "take"),
    (RECORD, "b", Observation(None, 0.0), 100.0, "wait"),  # first sight of this record: not yet expired
    (LeaseRecord("", "t1", 1.0, 3), "b", Observation(), 0.0, "take"),  # released
])
def test_next_step_creates_renews_takes_over_expired_or_released_leases_and_otherwise_waits(
    current: LeaseRecord | None, identity: str, seen: Observation, now: float, step: str,
) -> None:
    assert next_step(current, identity, seen, now) == step


async def test_only_one_of_two_replicas_holds_the_lease() -> None:
    kube, clock = FakeKube(), FakeClock()
    a, b = _elector(kube, "a", clock), _elector(kube, "b", clock)

    assert await a._try() is True
    assert await b._try() is False
    assert kube.holder() == "a"


async def test_a_standby_takes_over_once_the_holder_stops_renewing_for_the_lease_duration() -> None:
    kube, clock = FakeKube(), FakeClock()
    a, b = _elector(kube, "a", clock), _elector(kube, "b", clock)
    await a._try()
    assert await b._try() is False  # b sees a's record for the first time

    clock.now += 14.0
    assert await b._try() is False
    clock.now += 1.0
    assert await b._try() is True

    assert kube.holder() == "b"
    assert kube.objects[("ops", "vss-operator")]["spec"]["leaseTransitions"] == 1
    assert await a._try() is False  # the old leader sees it lost


async def test_a_renewing_holder_is_never_taken_over() -> None:
    kube, clock = FakeKube(), FakeClock()
    a, b = _elector(kube, "a", clock), _elector(kube, "b", clock)
    await a._try()
    for _ in range(5):
        await b._try()
        clock.now += 10.0
        assert await a._try() is True

    assert await b._try() is False
    assert kube.holder() == "a"


async def test_release_hands_the_lease_over_without_waiting_for_expiry() -> None:
    kube, clock = FakeKube(), FakeClock()
    a, b = _elector(kube, "a", clock), _elector(kube, "b", clock)
    await a.acquire()

    await a.release()

    assert await b._try() is True
    assert kube.holder() == "b"


async def test_keep_raises_leadership_lost_when_another_replica_holds_the_lease() -> None:
    kube, clock = FakeKube(), FakeClock()
    a = _elector(kube, "a", clock)
    await a.acquire()
    lease = kube.objects[("ops", "vss-operator")]
    lease["spec"]["holderIdentity"] = "intruder"
    lease["spec"]["renewTime"] = "later"

    with pytest.raises(LeadershipLost, match="held by another replica"):
        await a.keep()
    assert a.is_leader is False


async def test_keep_raises_leadership_lost_when_renewals_fail_past_the_deadline() -> None:
    kube, clock = FakeKube(), FakeClock()
    a = _elector(kube, "a", clock)
    await a.acquire()

    async def unreachable(*_: Any) -> None:
        clock.now += 0.02
        raise Unavailable("connection refused")

    kube.get = unreachable  # type: ignore[method-assign,assignment]
    with pytest.raises(LeadershipLost, match="not renewed"):
        await a.keep()


def test_timings_must_leave_room_to_renew_before_expiry() -> None:
    with pytest.raises(ValueError, match="lease timings"):
        LeaseTimings(duration=5.0, renew_deadline=6.0, retry_period=1.0)
