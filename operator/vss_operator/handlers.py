"""kopf handlers, kept thin: every path (a spec or annotation change, a child InferenceService's change, a
timer the rollout asked for) calls `advance`, which reads the VSSModel fresh, asks the pure `decide` and
`render`/`status_for` what to do, and applies that through `kube`.

No rollout state lives in memory: `advance` starts from the stored status alone, so a restarted operator
(or a new leader) resumes a rollout where the last one left it. The timers below only say *when* to look
again; losing them loses nothing, because the `resume` handler looks at every object at start.

Importing this module registers the handlers with kopf's default registry; `vss operator` runs them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import kopf
from pydantic import ValidationError

from vss_api.vssmodel import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    READY,
    VERSION,
    VSSModel,
    describe_validation_error,
    parse_duration,
)
from vss_operator.kube import Forbidden, Kube, KubeError, NotFound, Rejected
from vss_operator.metrics import ModelMetrics
from vss_operator.objects import Manifest
from vss_operator.prometheus import PrometheusClient
from vss_operator.promql import Sample, query_for
from vss_operator.render import (
    ISVC_API_VERSION,
    ISVC_KIND,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    NETWORK_POLICY_API_VERSION,
    NETWORK_POLICY_KIND,
    ROUTE_API_VERSION,
    ROUTE_KIND,
    RenderConfig,
    child_selector,
    kserve_host_problem,
    render,
)
from vss_operator.rollout import (
    PROMOTE_ANNOTATION,
    RETRY_ANNOTATION,
    Observations,
    RolloutDecision,
    RolloutStatus,
    analysis_due,
    decide,
)
from vss_operator.status import (
    APPLY_FORBIDDEN,
    APPLY_REJECTED,
    INVALID_SPEC,
    Failure,
    VSSModelStatus,
    canary_readiness,
    failed_status,
    retrying_status,
    status_for,
    transitions,
)

FINALIZER = f"{GROUP}/finalizer"
# On a child InferenceService the route no longer sends to: when the operator first found it unwanted. It is
# deleted spec.rollout.scaleDownDelay later (the old version after a promotion, an aborted canary).
RETIRED_ANNOTATION = f"{GROUP}/retired-at"
# kopf's bookkeeping (handler progress, the last handled configuration) under a prefix of its own: kopf leaves
# every annotation under a prefix it keeps storage in out of change detection, so under GROUP it hid ours
# (serving.vss.ai/retry, /promote) and an annotation alone never reached a handler. Not `kopf.`-prefixed:
# kopf marks only other prefixes as its own (`<prefix>/kopf-managed`), and unmarked, its progress annotations
# would count as changes.
KOPF_PREFIX = "operator.vss.ai"
DIFFBASE_KEY = "last-handled-configuration"
# The annotations of ours under GROUP that are the user's to set; the rest under GROUP on objects handled
# before the move is kopf's old bookkeeping (its marker makes kopf ignore the whole prefix).
USER_ANNOTATIONS = frozenset({PROMOTE_ANNOTATION, RETRY_ANNOTATION})
LEGACY_KOPF_ANNOTATIONS = (f"{GROUP}/kopf-managed", f"{GROUP}/{DIFFBASE_KEY}")


def is_legacy_kopf_annotation(key: str) -> bool:
    return key.startswith(f"{GROUP}/") and key not in USER_ANNOTATIONS


class DiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's last handled configuration under KOPF_PREFIX, compared without the bookkeeping an older operator
    left under GROUP (whose marker would make kopf drop our own annotations from the comparison again)."""

    def __init__(self) -> None:
        super().__init__(prefix=KOPF_PREFIX, key=DIFFBASE_KEY)

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        annotations = body.metadata.annotations
        if not any(is_legacy_kopf_annotation(k) for k in annotations):
            return super().build(body=body, extra_fields=extra_fields)
        metadata = {**body.get("metadata", {}),
                    "annotations": {k: v for k, v in annotations.items() if not is_legacy_kopf_annotation(k)}}
        raw = cast(kopf.RawBody, {**body, "metadata": metadata})
        return super().build(body=kopf.Body(raw), extra_fields=extra_fields)
# A child the apiserver forbids for now (403: a full ResourceQuota, an admission webhook) is tried again after
# retry_delay, doubled each time up to this.
MAX_FORBIDDEN_BACKOFF_S = 300.0


def forbidden_backoff(base_s: float, attempt: int) -> float:
    return float(min(base_s * 2 ** min(attempt, 16), MAX_FORBIDDEN_BACKOFF_S))


CHILD_KINDS = ((ISVC_API_VERSION, ISVC_KIND), (ROUTE_API_VERSION, ROUTE_KIND),
               (NETWORK_POLICY_API_VERSION, NETWORK_POLICY_KIND))
# A timer fires on the event loop's clock, the decision counts on the wall clock: a hair later never
# finds the analysis "not due yet" and spins.
REQUEUE_SLACK_S = 0.05

logger = logging.getLogger(__name__)


class Requeues:
    """The one pending re-evaluation per VSSModel that its last decision asked for (`requeue_after`).

    A plain timer per object rather than a kopf daemon or timer: kopf puts a finalizer on every object
    that has one, and a VSSModel must stay deletable while the operator is down. Only the leader runs
    the handlers that schedule these, so only the leader drives rollouts."""

    def __init__(self) -> None:
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._running: set[asyncio.Task[None]] = set()

    def schedule(self, key: str, delay: float | None, callback: Callable[[], Awaitable[None]]) -> None:
        """Call `callback` after `delay` seconds, replacing what was scheduled for `key`; None: nothing."""
        previous = self._timers.pop(key, None)
        if previous is not None:
            previous.cancel()
        if delay is None:
            return
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(max(0.0, delay) + REQUEUE_SLACK_S, self._fire, key, callback)

    def pending(self, key: str) -> bool:
        return key in self._timers

    def due_in(self, key: str) -> float | None:
        """Seconds until `key`'s callback, slack included; None when none is scheduled."""
        timer = self._timers.get(key)
        return None if timer is None else timer.when() - asyncio.get_running_loop().time()

    def _fire(self, key: str, callback: Callable[[], Awaitable[None]]) -> None:
        self._timers.pop(key, None)
        task: asyncio.Task[None] = asyncio.ensure_future(callback())
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        running = list(self._running)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


@dataclass
class OperatorContext:
    """What the handlers share, built once by `vss operator` and handed to kopf as its memo."""

    kube: Kube
    prometheus: PrometheusClient
    render: RenderConfig = field(default_factory=RenderConfig)
    retry_delay: float = 5.0
    identity: str = "vss-operator"  # reportingInstance of the Events
    # One writer at a time per VSSModel: the reconcile, child-event and timer paths all advance it.
    status_locks: defaultdict[str, asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))
    requeues: Requeues = field(default_factory=Requeues)
    # The per-VSSModel series of /metrics (phase, readiness, traffic weights), set from each status written.
    metrics: ModelMetrics = field(default_factory=ModelMetrics)


def context(memo: Any) -> OperatorContext:
    ctx = memo["context"] if isinstance(memo, Mapping) else getattr(memo, "context", None)
    if not isinstance(ctx, OperatorContext):
        raise kopf.PermanentError("the operator was started without its context (run it with `vss operator`)")
    return ctx


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Every kopf setting, in one place."""
    # Leader election is a Lease taken before kopf starts (vss_operator.leader), not kopf peering.
    settings.peering.standalone = True
    # Children go with their owner through ownerReferences and the garbage collector, so the operator
    # adds no finalizer: a VSSModel stays deletable while the operator is down. The name is set anyway
    # so that anything kopf might add is ours to recognise.
    settings.persistence.finalizer = FINALIZER
    # Status has a strict schema (no `status.kopf`); kopf's bookkeeping goes into annotations (KOPF_PREFIX).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = DiffBaseStorage()
    # Events are posted by `advance` on transitions (through kube), not for every log line.
    settings.posting.level = logging.WARNING
    # After patching its annotations kopf waits this long for that version to come back on the watch before
    # it handles the object from what it has; kopf's 5 s is shorter than the watch lags while 500 VSSModels
    # arrive at once on 2 cores, and then it took each one's next event for a new creation and reconciled
    # it again (858 reconciles for 500 new VSSModels; a spec edit waited behind them for over 30 s).
    settings.persistence.consistency_timeout = 60
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.watching.reconnect_backoff = 1.0
    settings.networking.request_timeout = 30
    settings.batching.error_delays = (1, 2, 5, 10, 20, 30, 60)


@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
@kopf.on.resume(GROUP, VERSION, PLURAL)
async def reconcile(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, logger: kopf.Logger, retry: int = 0,
                    **_: Any) -> None:
    """The spec or the annotations changed (or the operator started): advance the VSSModel."""
    ctx = context(memo)
    for key in LEGACY_KOPF_ANNOTATIONS:  # an older operator's bookkeeping goes with this handler's own patch
        if key in body.metadata.annotations:
            patch.metadata.annotations[key] = None
    generation = body.metadata.get("generation")
    try:
        model = VSSModel.from_body(body)
    except ValidationError as exc:
        failure = Failure(INVALID_SPEC, describe_validation_error(exc))
        await _write_failure(ctx, body, failure, generation)
        raise kopf.PermanentError(f"invalid spec: {failure.message}") from exc
    if (problem := kserve_host_problem(model, ctx.render)) is not None:
        # Admitted by the CRD and by KServe's webhook, but KServe's controller would fail the InferenceService.
        await _write_failure(ctx, body, Failure(INVALID_SPEC, problem), generation)
        raise kopf.PermanentError(f"invalid spec: {problem}")
    try:
        advanced = await advance(ctx, str(body.metadata.namespace), body.metadata.name, generation,
                                 attempt=retry)
    except ValidationError as exc:  # the spec changed again since this event; its own event reports it
        raise kopf.TemporaryError(f"the spec changed meanwhile: {exc}", delay=ctx.retry_delay) from exc
    except Rejected as exc:
        raise kopf.PermanentError(f"the apiserver refused a child: {exc}") from exc
    except Forbidden as exc:  # kopf counts the tries: `retry` doubles the wait
        raise kopf.TemporaryError(f"the apiserver forbade a child for now: {exc}", delay=exc.retry_in_s) from exc
    except KubeError as exc:
        raise kopf.TemporaryError(f"apiserver: {exc}", delay=ctx.retry_delay) from exc
    if advanced is not None:
        logger.info("reconciled generation %s: %s", generation,
                    ", ".join(m["metadata"]["name"] for m in advanced.desired))


@kopf.on.event(GROUP, VERSION, PLURAL)
def forget_deleted(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A VSSModel that is gone takes its series off /metrics."""
    if event.get("type") == "DELETED":
        context(memo).metrics.forget(str(body.metadata.namespace), body.metadata.name)


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
def deleted(body: kopf.Body, **_: Any) -> None:
    """Seen only while something else holds the object (e.g. a foreground deletion)."""
    kopf.event(body, type="Normal", reason="Deleting",
               message="InferenceServices, HTTPRoute and NetworkPolicy are removed by the garbage collector")


@kopf.on.event(ISVC_API_VERSION.split("/")[0], ISVC_API_VERSION.split("/")[1], "inferenceservices",
               labels={MANAGED_BY_LABEL: MANAGED_BY})
async def child_changed(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """A child InferenceService changed (KServe updated its status): advance its owner."""
    owner = next((ref for ref in body.metadata.get("ownerReferences") or []
                  if ref.get("kind") == KIND and ref.get("controller")), None)
    if owner is None:
        return
    await _advance_quietly(context(memo), str(body.metadata.namespace), owner["name"], owner.get("uid"),
                           logger)


async def _advance_quietly(ctx: OperatorContext, namespace: str, name: str, uid: str | None,
                           log: logging.Logger | logging.LoggerAdapter[logging.Logger]) -> None:
    """`advance` from a path that is not the spec's own (a child event, a timer): what goes wrong is
    logged and retried after `retry_delay`; an invalid spec is the reconcile handler's to report."""
    try:
        await advance(ctx, namespace, name, None, uid=uid)
    except ValidationError:
        return
    except Rejected as exc:
        log.warning("the apiserver refused a child of %s/%s: %s", namespace, name, exc)
    except Forbidden as exc:
        log.warning("the apiserver forbade a child of %s/%s for now: %s; again in %gs", namespace, name, exc,
                    exc.retry_in_s)
        _requeue(ctx, namespace, name, exc.retry_in_s)
    except KubeError as exc:
        log.warning("could not advance %s/%s: %s; again in %gs", namespace, name, exc, ctx.retry_delay)
        _requeue(ctx, namespace, name, ctx.retry_delay)
    except Exception:  # a bug must not stop every later rollout step of this object
        log.exception("advancing %s/%s failed; again in %gs", namespace, name, ctx.retry_delay)
        _requeue(ctx, namespace, name, ctx.retry_delay)


def _requeue(ctx: OperatorContext, namespace: str, name: str, delay: float | None) -> None:
    ctx.requeues.schedule(f"{namespace}/{name}", delay,
                          lambda: _advance_quietly(ctx, namespace, name, None, logger))


@dataclass(frozen=True)
class Advanced:
    """What one `advance` did: the rollout's decision and the manifests applied from it."""

    decision: RolloutDecision
    desired: list[Manifest]


async def advance(ctx: OperatorContext, namespace: str, name: str, observed_generation: int | None, *,
                  uid: str | None = None, attempt: int = 0) -> Advanced | None:
    """Move the VSSModel `namespace/name` one decision on, under its lock, from a fresh read:

    read the status and the children; query Prometheus only when an analysis is due; `decide`; write the
    status first (so a crash after it resumes from the decision), then post the decision's Events, then
    apply and prune the manifests rendered from the decision; schedule the next look.

    `observed_generation` None (not the spec's own event) keeps the generation the status reports, and a
    failure the reconcile reported stays until the spec changes. None is returned when there is nothing
    to do (the object is gone, or is not the one `uid` names)."""
    key = f"{namespace}/{name}"
    async with ctx.status_locks[key]:
        fresh = await ctx.kube.get(API_VERSION, KIND, namespace, name)
        if (fresh is None or fresh["metadata"].get("deletionTimestamp")
                or (uid is not None and fresh["metadata"].get("uid") != uid)):
            if fresh is None:
                ctx.requeues.schedule(key, None, _nothing)
            if fresh is None or fresh["metadata"].get("deletionTimestamp"):
                ctx.metrics.forget(namespace, name)
            return None
        model = VSSModel.from_body(fresh)
        previous = VSSModelStatus.from_body_status(fresh.get("status"))
        if observed_generation is None:
            ready = previous.condition(READY)
            if ready is not None and ready.reason in (APPLY_REJECTED, INVALID_SPEC):
                ctx.metrics.observe(namespace, name, previous)
                return None
            observed_generation = previous.observed_generation
        rollout = RolloutStatus.from_status(fresh.get("status"))
        now = datetime.now(UTC)
        observed = await children_of(ctx.kube, model)
        sample, stable_sample = await _samples(ctx, model, rollout, now)
        observations = Observations.gates(
            fresh["metadata"].get("annotations") or {}, canary=canary_readiness(model, rollout, observed),
            sample=sample, stable_sample=stable_sample)
        decision = decide(model.spec, rollout, observations, now)
        desired = render(model, ctx.render, stable_version=decision.stable_version,
                         canary_version=decision.canary_version, canary_weight=decision.canary_weight,
                         mirror_percent=decision.mirror_percent)
        current = status_for(model, desired, observed, previous, now, observed_generation, decision)
        if current.as_patch() != previous.as_patch():
            await ctx.kube.patch_status(API_VERSION, KIND, namespace, name, current.as_patch())
        ctx.metrics.observe(namespace, name, current)
        # The transition is stored: its Events go out before the children are applied, so an operator
        # killed while applying them (a slow admission webhook, a lost apiserver) loses none of them; the
        # next operator finds the transition in the status and does not post them again.
        await _post(ctx, fresh, [*((e.type, e.reason, e.message) for e in decision.events),
                                 *((e.type, e.reason, e.message) for e in transitions(previous, current))])
        try:
            await ctx.kube.apply_all(desired)
            retiring = await _prune(ctx.kube, model, desired, observed, now)
        except Rejected as exc:
            failure = Failure(APPLY_REJECTED, f"the apiserver refused a child: {exc}")
            failed = failed_status(current, failure, datetime.now(UTC), observed_generation)
            await ctx.kube.patch_status(API_VERSION, KIND, namespace, name, failed.as_patch())
            ctx.metrics.observe(namespace, name, failed)
            await _post(ctx, fresh, [(e.type, e.reason, e.message) for e in transitions(current, failed)])
            raise
        except Forbidden as exc:  # `attempt`: the reconcile's count of tries, for the backoff
            exc.retry_in_s = forbidden_backoff(ctx.retry_delay, attempt)
            failure = Failure(APPLY_FORBIDDEN, f"the apiserver forbade a child for now: {exc}")
            retrying = retrying_status(current, failure, datetime.now(UTC), observed_generation, exc.retry_in_s)
            await ctx.kube.patch_status(API_VERSION, KIND, namespace, name, retrying.as_patch())
            ctx.metrics.observe(namespace, name, retrying)
            await _post(ctx, fresh, [(e.type, e.reason, e.message) for e in transitions(current, retrying)])
            raise
    _requeue(ctx, namespace, name, _sooner(decision.requeue_after, retiring))
    return Advanced(decision, desired)


def _sooner(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


async def _nothing() -> None:
    return None


async def _samples(ctx: OperatorContext, model: VSSModel, rollout: RolloutStatus, now: datetime
                   ) -> tuple[Sample | None, Sample | None]:
    """The canary's metrics over the last interval, and the stable version's for comparison; only when an
    analysis is due (None otherwise)."""
    canary = analysis_due(model.spec, rollout, now)
    if canary is None:
        return None, None
    queries = [ctx.prometheus.sample(query_for(model.spec, model.metadata.name, canary), now)]
    if rollout.stable_version is not None:
        queries.append(ctx.prometheus.sample(
            query_for(model.spec, model.metadata.name, rollout.stable_version), now))
    found = await asyncio.gather(*queries)
    return found[0], found[1] if len(found) > 1 else None


async def _post(ctx: OperatorContext, involved: Mapping[str, Any], events: Sequence[tuple[str, str, str]]
                ) -> None:
    """Post Events about `involved`; one that fails is logged, never fails the caller (the status holds
    the same facts)."""
    target = {"apiVersion": API_VERSION, "kind": KIND, **involved}
    for type_, reason, message in events:
        try:
            await ctx.kube.post_event(target, type_, reason, message, instance=ctx.identity)
        except KubeError as exc:
            logger.warning("could not post the Event %s about %s: %s", reason, involved["metadata"]["name"], exc)


async def children_of(kube: Kube, model: VSSModel) -> list[dict[str, Any]]:
    """Our children of `model`: labelled by us and controlled by this very object (uid)."""
    found: list[dict[str, Any]] = []
    for api_version, kind in CHILD_KINDS:
        for item in await kube.list(api_version, kind, model.metadata.namespace,
                                    child_selector(model.metadata.name)):
            refs = item["metadata"].get("ownerReferences") or []
            if any(r.get("uid") == model.metadata.uid and r.get("controller") for r in refs):
                found.append(item)
    return found


async def _prune(kube: Kube, model: VSSModel, desired: Sequence[Mapping[str, Any]],
                 observed: Sequence[Mapping[str, Any]], now: datetime) -> float | None:
    """Delete the children render no longer wants (the old stable version after a promotion, a canary
    after an abort); return the seconds until the next retired InferenceService is due (None: none waits).

    The route already sends nothing to an unwanted InferenceService (`desired` was applied just before),
    but a gateway applies new weights some time later and requests are in flight: it is marked retired
    (RETIRED_ANNOTATION) and deleted only spec.rollout.scaleDownDelay after, by the advance the returned
    delay schedules; the mark is in the apiserver, so a restarted operator keeps the same deadline. One
    wanted again before then (a rollout back to it) loses the mark and serves on, warm. `observed` is the
    listing `advance` decided from: under the VSSModel's lock only the apply of `desired` came since, so it
    is not listed again (two calls fewer on every advance, the bulk of the work when 500 VSSModels arrive)."""
    wanted = {(m["kind"], m["metadata"]["name"]) for m in desired}
    delay_s = parse_duration(model.spec.rollout.scale_down_delay)
    namespace, due = model.metadata.namespace, None
    for child in observed:
        name = child["metadata"]["name"]
        mark = (child["metadata"].get("annotations") or {}).get(RETIRED_ANNOTATION)
        if (child["kind"], name) in wanted:
            if mark is not None:
                await kube.annotate(child["apiVersion"], child["kind"], namespace, name, {RETIRED_ANNOTATION: None})
            continue
        if child["kind"] == ISVC_KIND and delay_s > 0:
            retired = _parse_time(mark)
            if retired is None:
                try:
                    await kube.annotate(child["apiVersion"], child["kind"], namespace, name,
                                        {RETIRED_ANNOTATION: now.isoformat()})
                except NotFound:  # deleted meanwhile (by someone else): nothing left to retire
                    continue
                logger.info("%s/%s: %s is retired, deleted in %.0f s", namespace, model.metadata.name, name,
                            delay_s)
                retired = now
            left = (retired - now).total_seconds() + delay_s
            if left > 0:
                due = _sooner(due, left)
                continue
        await kube.delete(child["apiVersion"], child["kind"], namespace, name)
    return due


def _parse_time(text: str | None) -> datetime | None:
    """An ISO time with a zone; None for none or anything else (a mark someone garbled restarts the wait)."""
    try:
        found = datetime.fromisoformat(text) if text else None
    except ValueError:
        return None
    return found if found is not None and found.tzinfo is not None else None


async def _write_failure(ctx: OperatorContext, body: Mapping[str, Any], failure: Failure,
                         generation: int | None) -> None:
    key = f"{body['metadata']['namespace']}/{body['metadata']['name']}"
    async with ctx.status_locks[key]:
        previous = VSSModelStatus.from_body_status(body.get("status"))
        current = failed_status(previous, failure, datetime.now(UTC), generation)
        try:
            if current.as_patch() != previous.as_patch():
                meta = body["metadata"]
                await ctx.kube.patch_status(API_VERSION, KIND, meta["namespace"], meta["name"],
                                            current.as_patch())
                await _post(ctx, body, [(e.type, e.reason, e.message) for e in transitions(previous, current)])
            ctx.metrics.observe(body["metadata"]["namespace"], body["metadata"]["name"], current)
        except KubeError as exc:
            raise kopf.TemporaryError(f"apiserver: {exc}", delay=ctx.retry_delay) from exc
