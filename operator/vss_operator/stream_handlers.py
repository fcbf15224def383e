"""kopf handlers of VSSStreams: render each into its worker against the v2 gRPC endpoint of the VSSModel it
names (the version that serves now), and follow that model when a rollout promotes another version.

Thin on purpose: the manifests come from `stream_render` (pure), the endpoint from `stream_model_endpoint`."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from vss_api.vssmodel import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    READY,
    RECONCILING,
    STALLED,
    VERSION,
    VSSModel,
    describe_validation_error,
)
from vss_api.vssstream import STREAM_KIND, STREAM_PLURAL, VSSStream
from vss_operator.handlers import context
from vss_operator.kube import KubeError, Rejected
from vss_operator.render import TRANSFORMER_GRPC_PORT, isvc_name
from vss_operator.stream_render import STREAM_LABEL, render_stream


def stream_model_endpoint(model: VSSModel, status: Mapping[str, Any]) -> str:
    """The v2 gRPC endpoint of the version of `model` that serves now (its stable version, or spec.version
    before the first rollout): the transformer of that version's InferenceService."""
    if model.spec.rollout.traffic_router == "knative":
        service = f"{model.metadata.name}-predictor"
    else:
        version = status.get("stableVersion") or model.spec.version
        service = f"{isvc_name(model, version)}-predictor"
    return f"{service}.{model.metadata.namespace}.svc.cluster.local:{TRANSFORMER_GRPC_PORT}"


def _conditions(generation: int | None, ready: tuple[str, str, str], stalled: tuple[str, str, str] | None,
                ) -> list[dict[str, Any]]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def condition(type_: str, status: str, reason: str, message: str) -> dict[str, Any]:
        return {"type": type_, "status": status, "reason": reason, "message": message,
                "lastTransitionTime": now, "observedGeneration": generation}

    out = [condition(READY, *ready)]
    out.append(condition(STALLED, *stalled) if stalled else condition(STALLED, "False", "Reconciled", ""))
    out.append(condition(RECONCILING, "False" if stalled or ready[0] == "True" else "True", ready[1], ready[2]))
    return out


@kopf.on.create(GROUP, VERSION, STREAM_PLURAL)
@kopf.on.update(GROUP, VERSION, STREAM_PLURAL)
@kopf.on.resume(GROUP, VERSION, STREAM_PLURAL)
async def reconcile_stream(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    ctx = context(memo)
    namespace, name = str(body.metadata.namespace), body.metadata.name
    generation = body.metadata.get("generation")

    async def status(ready: tuple[str, str, str], stalled: tuple[str, str, str] | None = None,
                     **fields: Any) -> None:
        await ctx.kube.patch_status(API_VERSION, STREAM_KIND, namespace, name, {
            "observedGeneration": generation, "conditions": _conditions(generation, ready, stalled), **fields})

    try:
        stream = VSSStream.model_validate(dict(body))
    except ValidationError as exc:
        reason = describe_validation_error(exc)
        await status(("False", "InvalidSpec", reason), ("True", "InvalidSpec", reason))
        raise kopf.PermanentError(f"invalid spec: {reason}") from exc
    try:
        found = await ctx.kube.get(API_VERSION, KIND, namespace, stream.spec.model.name)
        if found is None:
            message = f"VSSModel {stream.spec.model.name!r} does not exist in {namespace}"
            await status(("False", "ModelNotFound", message))
            raise kopf.TemporaryError(message, delay=30)
        endpoint = stream_model_endpoint(VSSModel.from_body(found), found.get("status") or {})
        manifests = render_stream(stream, endpoint, ctx.render)
        await ctx.kube.apply_all(manifests)
        await status(("False", "WorkerStarting", f"the worker calls {endpoint}"), modelEndpoint=endpoint)
    except Rejected as exc:
        await status(("False", "Rejected", str(exc)), ("True", "Rejected", str(exc)))
        raise kopf.PermanentError(f"the apiserver refused a child: {exc}") from exc
    except KubeError as exc:
        raise kopf.TemporaryError(f"apiserver: {exc}", delay=ctx.retry_delay) from exc
    logger.info("stream %s: worker rendered against %s", name, endpoint)


@kopf.index(GROUP, VERSION, STREAM_PLURAL)
def streams_by_model(namespace: str | None, spec: kopf.Spec, **_: Any) -> dict[tuple[str | None, Any], None]:
    """The VSSStreams of each (namespace, model name), kept by kopf from its watch: a VSSModel event looks
    here, not at the apiserver, whether any stream follows it."""
    return {(namespace, (spec.get("model") or {}).get("name")): None}


@kopf.on.event(GROUP, VERSION, PLURAL)
async def follow_promoted_model(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any) -> None:
    """A rollout promoted another version of a model: its streams call that version from now on.

    An event handler, level-based: on every event of a VSSModel, its streams whose `status.modelEndpoint`
    is not the endpoint that serves now are rendered again. Not a change handler (`on.field`) on purpose:
    kopf keeps the progress of all change handlers of an object together, so one that retried here (streams
    not listable, a child refused) held back the VSSModel's own reconcile of every later spec change."""
    if body.metadata.get("deletionTimestamp"):
        return
    # Most models have no stream: listing the streams on every event of every model was one apiserver call
    # per event (a few thousand when 500 VSSModels arrive at once).
    streams_by_model: kopf.Index[tuple[str | None, Any], None] = kwargs["streams_by_model"]  # kopf's keyword
    if (body.metadata.namespace, body.metadata.name) not in streams_by_model:
        return
    ctx = context(memo)
    namespace = str(body.metadata.namespace)
    try:
        model = VSSModel.from_body(body)
    except ValidationError:
        return  # the VSSModel's reconcile reports it
    endpoint = stream_model_endpoint(model, body.get("status") or {})
    try:
        streams = await ctx.kube.list(API_VERSION, STREAM_KIND, namespace, "")
        for item in streams:
            if ((item.get("spec") or {}).get("model") or {}).get("name") != model.metadata.name:
                continue
            if (item.get("status") or {}).get("modelEndpoint") == endpoint:
                continue
            try:
                stream = VSSStream.model_validate(item)
            except ValidationError:
                continue  # its own reconcile says InvalidSpec
            await ctx.kube.apply_all(render_stream(stream, endpoint, ctx.render))
            await ctx.kube.patch_status(API_VERSION, STREAM_KIND, namespace, stream.metadata.name,
                                        {"modelEndpoint": endpoint})
            logger.info("stream %s follows %s to %s", stream.metadata.name, model.metadata.name, endpoint)
    except KubeError as exc:  # the next event of the model tries again
        logger.warning("streams of %s not updated: %s", model.metadata.name, exc)


__all__ = ["STREAM_LABEL", "follow_promoted_model", "reconcile_stream", "stream_model_endpoint", "streams_by_model"]
