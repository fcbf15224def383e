"""kopf handlers, kept thin: parse the VSSModel, call `render` and `status_for`, apply through `kube`.

Importing this module registers the handlers with kopf's default registry; `vss operator` runs them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import kopf
from pydantic import ValidationError

from vss_operator.kube import Kube, KubeError, Rejected
from vss_operator.render import (
    ISVC_API_VERSION,
    ISVC_KIND,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    ROUTE_API_VERSION,
    ROUTE_KIND,
    RenderConfig,
    child_selector,
    render,
)
from vss_operator.spec import API_VERSION, GROUP, KIND, PLURAL, VERSION, VSSModel, describe_validation_error
from vss_operator.status import (
    APPLY_REJECTED,
    INVALID_SPEC,
    READY,
    Failure,
    VSSModelStatus,
    failed_status,
    status_for,
    transitions,
)

FINALIZER = f"{GROUP}/finalizer"
CHILD_KINDS = ((ISVC_API_VERSION, ISVC_KIND), (ROUTE_API_VERSION, ROUTE_KIND))


@dataclass
class OperatorContext:
    """What the handlers share, built once by `vss operator` and handed to kopf as its memo."""

    kube: Kube
    render: RenderConfig = field(default_factory=RenderConfig)
    retry_delay: float = 5.0
    # One status writer at a time per VSSModel: the reconcile and child-event paths both write it.
    status_locks: defaultdict[str, asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))


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
    # Status has a strict schema (no `status.kopf`); kopf's bookkeeping goes into our annotations.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration")
    # Events are posted on status transitions only (kopf.event below), not for every log line.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.watching.reconnect_backoff = 1.0
    settings.networking.request_timeout = 30
    settings.batching.error_delays = (1, 2, 5, 10, 20, 30, 60)


@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
@kopf.on.resume(GROUP, VERSION, PLURAL)
async def reconcile(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    ctx = context(memo)
    generation = body.metadata.get("generation")
    try:
        model = VSSModel.from_body(body)
    except ValidationError as exc:
        failure = Failure(INVALID_SPEC, describe_validation_error(exc))
        await _write_failure(ctx, body, failure, generation)
        raise kopf.PermanentError(f"invalid spec: {failure.message}") from exc
    desired = render(model, ctx.render)
    try:
        await ctx.kube.apply_all(desired)
        await _prune(ctx.kube, model, desired)
        await write_status(ctx, body, model, generation)
    except Rejected as exc:
        failure = Failure(APPLY_REJECTED, f"the apiserver refused a child: {exc}")
        await _write_failure(ctx, body, failure, generation)
        raise kopf.PermanentError(failure.message) from exc
    except KubeError as exc:
        raise kopf.TemporaryError(f"apiserver: {exc}", delay=ctx.retry_delay) from exc
    logger.info("reconciled generation %s: %s", generation, ", ".join(m["metadata"]["name"] for m in desired))


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
def deleted(body: kopf.Body, **_: Any) -> None:
    """Seen only while something else holds the object (e.g. a foreground deletion)."""
    kopf.event(body, type="Normal", reason="Deleting",
               message="InferenceServices and HTTPRoute are removed by the garbage collector")


@kopf.on.event(ISVC_API_VERSION.split("/")[0], ISVC_API_VERSION.split("/")[1], "inferenceservices",
               labels={MANAGED_BY_LABEL: MANAGED_BY})
async def child_changed(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """A child InferenceService changed (KServe updated its status): re-evaluate its owner's status."""
    owner = next((ref for ref in body.metadata.get("ownerReferences") or []
                  if ref.get("kind") == KIND and ref.get("controller")), None)
    if owner is None:
        return
    ctx = context(memo)
    namespace = body.metadata.namespace
    try:
        owner_body = await ctx.kube.get(API_VERSION, KIND, namespace, owner["name"])
        if (owner_body is None or owner_body["metadata"].get("uid") != owner.get("uid")
                or owner_body["metadata"].get("deletionTimestamp")):
            return
        try:
            model = VSSModel.from_body(owner_body)
        except ValidationError:
            return  # the reconcile handler reports it
        await write_status(ctx, owner_body, model, None)
    except KubeError as exc:
        # The next event (or the watch's re-list after a reconnect) re-evaluates.
        logger.warning("could not re-evaluate %s/%s after a child changed: %s", namespace, owner["name"], exc)


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


async def _prune(kube: Kube, model: VSSModel, desired: Sequence[Mapping[str, Any]]) -> None:
    """Delete the children render no longer wants (a version that stopped serving)."""
    wanted = {(m["kind"], m["metadata"]["name"]) for m in desired}
    for child in await children_of(kube, model):
        if (child["kind"], child["metadata"]["name"]) not in wanted:
            await kube.delete(child["apiVersion"], child["kind"], model.metadata.namespace,
                              child["metadata"]["name"])


async def write_status(ctx: OperatorContext, body: Mapping[str, Any], model: VSSModel,
                       observed_generation: int | None) -> None:
    """Read the children and write the status they imply, posting Events on transitions.

    `observed_generation` None (a child changed, the spec did not) keeps the generation the status
    already reports, and a failure the reconcile reported stays until the spec changes.
    Written with a direct status patch (not kopf's end-of-handler patch) under a per-object lock, from
    a status read inside the lock, so neither path can overwrite a newer status with an older one."""
    key = f"{model.metadata.namespace}/{model.metadata.name}"
    async with ctx.status_locks[key]:
        fresh = await ctx.kube.get(API_VERSION, KIND, model.metadata.namespace, model.metadata.name)
        if fresh is None:
            return
        previous = VSSModelStatus.from_body_status(fresh.get("status"))
        if observed_generation is None:
            ready = previous.condition(READY)
            if ready is not None and ready.reason in (APPLY_REJECTED, INVALID_SPEC):
                return
            observed_generation = previous.observed_generation
        observed = await children_of(ctx.kube, model)
        current = status_for(model, render(model, ctx.render), observed, previous, datetime.now(UTC),
                             observed_generation)
        await _publish(ctx, body, previous, current)


async def _write_failure(ctx: OperatorContext, body: Mapping[str, Any], failure: Failure,
                         generation: int | None) -> None:
    previous = VSSModelStatus.from_body_status(body.get("status"))
    current = failed_status(previous, failure, datetime.now(UTC), generation)
    try:
        await _publish(ctx, body, previous, current)
    except KubeError as exc:
        raise kopf.TemporaryError(f"apiserver: {exc}", delay=ctx.retry_delay) from exc


async def _publish(ctx: OperatorContext, body: Mapping[str, Any], previous: VSSModelStatus,
                   current: VSSModelStatus) -> None:
    if current.as_patch() == previous.as_patch():
        return
    meta = body["metadata"]
    await ctx.kube.patch_status(API_VERSION, KIND, meta["namespace"], meta["name"], current.as_patch())
    target = body if isinstance(body, kopf.Body) else kopf.Body(cast(kopf.RawBody, dict(body)))
    for event in transitions(previous, current):
        kopf.event(target, type=event.type, reason=event.reason, message=event.message)
