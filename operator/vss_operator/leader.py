"""Leader election on a `coordination.k8s.io/v1` Lease, as client-go does it: one replica holds the Lease
and runs kopf; the others wait and take over when it stops renewing. Losing the Lease ends the process
(the Deployment restarts it as a standby), so two replicas never reconcile at once.

The decision (`next_step`) is pure; `LeaseElector` runs it against the API through `kube`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from vss_operator.kube import Forbidden, Kube, KubeError

LEASE_API_VERSION = "coordination.k8s.io/v1"

Step = Literal["create", "renew", "take", "wait"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseTimings:
    duration: float = 15.0  # how long a holder that stopped renewing keeps the Lease
    renew_deadline: float = 10.0  # a leader that could not renew for this long steps down
    retry_period: float = 2.0  # how often to try acquiring or renewing

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.duration:
            raise ValueError("lease timings must satisfy 0 < retry_period < renew_deadline < duration")


@dataclass(frozen=True)
class LeaseRecord:
    holder: str
    renew_time: str
    duration: float
    transitions: int


@dataclass
class Observation:
    """The last Lease record seen and when (on our monotonic clock) it last changed: expiry is judged on
    our own clock, never by comparing another host's timestamps with ours."""

    record: LeaseRecord | None = None
    changed_at: float = field(default=0.0)


def next_step(current: LeaseRecord | None, identity: str, seen: Observation, now: float) -> Step:
    """What to do with the Lease: create it, renew it (ours), take it (expired or released), or wait."""
    if current is None:
        return "create"
    if current.holder == identity:
        return "renew"
    if not current.holder:
        return "take"
    if seen.record != current:
        return "wait"  # it changed since we last looked: its holder is alive
    return "take" if now - seen.changed_at >= current.duration else "wait"


def _record(lease: dict[str, Any]) -> LeaseRecord:
    spec = lease.get("spec") or {}
    return LeaseRecord(holder=str(spec.get("holderIdentity") or ""),
                       renew_time=str(spec.get("renewTime") or ""),
                       duration=float(spec.get("leaseDurationSeconds") or 15),
                       transitions=int(spec.get("leaseTransitions") or 0))


def _micro_time(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


LOG_EVERY_S = 60.0  # the same lease error is logged again at most this often


class LeadershipLost(Exception):
    """This replica could not renew the Lease in time: another may be leading now."""


class LeaseElector:
    def __init__(self, kube: Kube, name: str, namespace: str, identity: str,
                 timings: LeaseTimings | None = None, clock: Callable[[], float] = time.monotonic,
                 on_error: Callable[[str | None], None] | None = None) -> None:
        self._kube = kube
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.timings = timings or LeaseTimings()
        self._clock = clock
        self._seen = Observation()
        self.is_leader = False
        # Why the last attempt failed (None: it did not): a standby that cannot even read the Lease is not a
        # healthy standby, and says so (`vss_operator.daemon`'s /readyz and vss_operator_lease_error).
        self.error: str | None = None
        self._on_error = on_error
        self._logged: tuple[str, float] | None = None

    async def _try(self) -> bool:
        """One attempt to acquire or renew; True when we hold the Lease afterwards."""
        lease = await self._kube.get(LEASE_API_VERSION, "Lease", self.namespace, self.name)
        current = _record(lease) if lease is not None else None
        now = self._clock()
        if current != self._seen.record:
            self._seen = Observation(current, now)
        step = next_step(current, self.identity, self._seen, now)
        if step == "wait":
            return False
        stamp = _micro_time(datetime.now(UTC))
        spec: dict[str, Any] = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": round(self.timings.duration),
            "renewTime": stamp,
        }
        if step == "create" or lease is None:
            spec |= {"acquireTime": stamp, "leaseTransitions": 0}
            body: dict[str, Any] = {
                "apiVersion": LEASE_API_VERSION, "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace}, "spec": spec}
            await self._kube.create(body)
        else:
            old = lease.get("spec") or {}
            if step == "take":
                spec |= {"acquireTime": stamp, "leaseTransitions": int(old.get("leaseTransitions") or 0) + 1}
            else:
                spec |= {"acquireTime": old.get("acquireTime", stamp),
                         "leaseTransitions": int(old.get("leaseTransitions") or 0)}
            await self._kube.replace({**lease, "spec": {**old, **spec}})
        return True

    def _failed(self, exc: KubeError | None) -> None:
        error = None if exc is None else str(exc)
        if error != self.error and self._on_error is not None:
            self._on_error(error)
        self.error = error
        if exc is None:
            self._logged = None
            return
        now = self._clock()
        if self._logged is not None and self._logged[0] == error and now - self._logged[1] < LOG_EVERY_S:
            return
        self._logged = (error or "", now)
        if isinstance(exc, Forbidden):  # RBAC or the namespace is wrong: nothing gets better by waiting
            logger.error("lease %s/%s is forbidden to this replica, which will never lead until its RBAC allows "
                         "get, create and update on leases in %s: %s", self.namespace, self.name, self.namespace,
                         exc)
        else:
            logger.warning("lease %s/%s not acquired: %s", self.namespace, self.name, exc)

    async def acquire(self) -> None:
        """Wait until this replica holds the Lease."""
        while True:
            try:
                held = await self._try()
                self._failed(None)
                if held:
                    break
            except KubeError as exc:
                self._failed(exc)
            await asyncio.sleep(self.timings.retry_period)
        self.is_leader = True
        logger.info("acquired lease %s/%s as %s", self.namespace, self.name, self.identity)

    async def keep(self) -> None:
        """Renew until cancelled; raise LeadershipLost when renewals fail for `renew_deadline`."""
        last_renewed = self._clock()
        while True:
            await asyncio.sleep(self.timings.retry_period)
            try:
                if await self._try():
                    last_renewed = self._clock()
                    continue
                # Someone else holds it now (we were too slow): stop at once.
                self.is_leader = False
                raise LeadershipLost(f"lease {self.namespace}/{self.name} is held by another replica")
            except KubeError as exc:
                logger.warning("could not renew lease %s/%s: %s", self.namespace, self.name, exc)
            if self._clock() - last_renewed >= self.timings.renew_deadline:
                self.is_leader = False
                raise LeadershipLost(f"lease {self.namespace}/{self.name} not renewed for "
                                     f"{self.timings.renew_deadline:g}s")

    async def release(self) -> None:
        """Give the Lease up on a clean shutdown, so a standby takes over without waiting for expiry."""
        if not self.is_leader:
            return
        self.is_leader = False
        try:
            lease = await self._kube.get(LEASE_API_VERSION, "Lease", self.namespace, self.name)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            spec = {**lease["spec"], "holderIdentity": "", "leaseDurationSeconds": 1}
            await self._kube.replace({**lease, "spec": spec})
        except KubeError as exc:
            logger.warning("could not release lease %s/%s: %s", self.namespace, self.name, exc)
