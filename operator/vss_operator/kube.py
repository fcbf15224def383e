"""The one module that talks to the Kubernetes API (through the `kubernetes` client): server-side apply,
list by label, get, delete, status patches, Events and the leader-election Lease.

The client is synchronous, so every call runs in a worker thread: handlers stay async and never block.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from vss_operator.objects import Manifest

FIELD_MANAGER = "vss-operator"


# kind → plural of every resource the operator touches (it only ever addresses these).
PLURALS: dict[str, str] = {
    "VSSModel": "vssmodels",
    "VSSStream": "vssstreams",
    "Deployment": "deployments",
    "ConfigMap": "configmaps",
    "Service": "services",
    "ServiceAccount": "serviceaccounts",
    "Role": "roles",
    "RoleBinding": "rolebindings",
    "InferenceService": "inferenceservices",
    "HTTPRoute": "httproutes",
    "NetworkPolicy": "networkpolicies",
    "Lease": "leases",
    "Event": "events",
}
EVENT_MESSAGE_LIMIT = 1024  # the apiserver's limit on an Event's note


class KubeError(Exception):
    """The apiserver refused or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotFound(KubeError):
    """404: the object (or its resource type) does not exist."""


class Conflict(KubeError):
    """409: someone changed the object first (a stale resourceVersion) or it exists already."""


class Rejected(KubeError):
    """The apiserver (or an admission webhook) refused the object as written: retrying will not help."""


class Forbidden(KubeError):
    """403: refused for now, by a ResourceQuota that is full, an admission webhook or RBAC, any of which may
    change without the object changing: retried with backoff, never taken for a verdict on the spec."""

    retry_in_s: float = 0.0  # when the operator tries again (set where the backoff is decided)


class Unavailable(KubeError):
    """The apiserver is unreachable, overloaded or failing: worth retrying later."""


def resource_path(api_version: str, kind: str, namespace: str | None, name: str | None = None,
                  subresource: str | None = None) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = base + (f"/namespaces/{quote(namespace)}" if namespace else "") + f"/{PLURALS[kind]}"
    if name is not None:
        path += f"/{quote(name)}"
    if subresource is not None:
        path += f"/{subresource}"
    return path


def _error(exc: ApiException) -> KubeError:
    status = int(exc.status or 0)
    message = str(exc.reason or "")
    try:
        body = json.loads(exc.body or "{}")
        message = str(body.get("message") or message)
    except (ValueError, AttributeError):
        pass
    if status == 404:
        return NotFound(message, status)
    if status == 409:
        return Conflict(message, status)
    if status == 403:
        return Forbidden(message, status)
    if status == 429 or status >= 500 or status == 0:
        return Unavailable(message or "apiserver unavailable", status)
    return Rejected(message, status)


class Kube:
    """A handle on one cluster; cheap to share between handlers (the client's pool is thread-safe)."""

    def __init__(self, api: k8s_client.ApiClient, field_manager: str = FIELD_MANAGER,
                 timeout: tuple[float, float] = (5.0, 30.0)) -> None:
        self._api = api
        self.field_manager = field_manager
        self._timeout = timeout

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None, context: str | None = None) -> Kube:
        """In-cluster credentials in a pod, else the kubeconfig (KUBECONFIG or ~/.kube/config)."""
        configuration = k8s_client.Configuration()
        if kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ:
            k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration)
        else:
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context, client_configuration=configuration)
        # Retries are ours (kopf's TemporaryError, the lease loop); urllib3 must not stall a call.
        configuration.retries = False
        return cls(k8s_client.ApiClient(configuration))

    def close(self) -> None:
        self._api.close()  # type: ignore[no-untyped-call]

    # -- raw calls ------------------------------------------------------------------------------------

    def _request_sync(self, method: str, path: str, *, query: Mapping[str, str] | None = None,
                      body: Any = None, content_type: str = "application/json") -> Manifest:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        _, url, headers, body, _ = self._api.param_serialize(
            method, path, query_params=list((query or {}).items()), header_params=headers, body=body,
            auth_settings=["BearerToken"])
        try:
            response = self._api.call_api(method, url, header_params=headers, body=body,
                                          _request_timeout=self._timeout)
            data: bytes = response.read()  # type: ignore[no-untyped-call]
        except ApiException as exc:
            raise _error(exc) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise Unavailable(f"{method} {path}: {exc}") from exc
        if not 200 <= response.status <= 299:
            raise _error(ApiException(status=response.status, reason=response.reason,
                                      body=data.decode("utf-8", "replace")))
        parsed: Manifest = json.loads(data) if data else {}
        return parsed

    async def request(self, method: str, path: str, *, query: Mapping[str, str] | None = None,
                      body: Any = None, content_type: str = "application/json") -> Manifest:
        return await asyncio.to_thread(self._request_sync, method, path, query=query, body=body,
                                       content_type=content_type)

    # -- objects --------------------------------------------------------------------------------------

    async def apply(self, manifest: Mapping[str, Any]) -> Manifest:
        """Server-side apply as `vss-operator`, taking over fields another manager set (we own them)."""
        meta = manifest["metadata"]
        path = resource_path(manifest["apiVersion"], manifest["kind"], meta.get("namespace"), meta["name"])
        return await self.request("PATCH", path, body=dict(manifest),
                                  query={"fieldManager": self.field_manager, "force": "true"},
                                  content_type="application/apply-patch+yaml")

    async def apply_all(self, manifests: Sequence[Mapping[str, Any]]) -> list[Manifest]:
        return [await self.apply(m) for m in manifests]

    async def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Manifest | None:
        try:
            return await self.request("GET", resource_path(api_version, kind, namespace, name))
        except NotFound:
            return None

    async def list(self, api_version: str, kind: str, namespace: str | None, selector: str) -> list[Manifest]:
        """Objects of a kind matching a label selector; none when the kind is not installed."""
        try:
            found = await self.request("GET", resource_path(api_version, kind, namespace),
                                       query={"labelSelector": selector})
        except NotFound:
            return []
        items: list[Manifest] = found.get("items") or []
        for item in items:  # list items come without them
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return items

    async def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool:
        """Delete in the background (the garbage collector takes the dependents); False if it was gone."""
        try:
            await self.request("DELETE", resource_path(api_version, kind, namespace, name),
                               body={"propagationPolicy": "Background"})
        except NotFound:
            return False
        return True

    async def patch_status(self, api_version: str, kind: str, namespace: str, name: str,
                           status: Mapping[str, Any]) -> Manifest:
        return await self.request("PATCH", resource_path(api_version, kind, namespace, name, "status"),
                                  body={"status": dict(status)}, content_type="application/merge-patch+json")

    async def post_event(self, involved: Mapping[str, Any], type_: str, reason: str, message: str, *,
                         instance: str, at: datetime | None = None) -> Manifest:
        """Post a core/v1 Event about `involved` (an object as the apiserver returned it). `eventTime`
        carries microseconds, so a timeline read back from the Events keeps the order and spacing."""
        meta = involved["metadata"]
        when = at or datetime.now(UTC)
        seconds = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": involved["apiVersion"], "kind": involved["kind"],
                               "name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid"),
                               "resourceVersion": meta.get("resourceVersion")},
            "type": type_, "reason": reason, "message": message[:EVENT_MESSAGE_LIMIT],
            "action": reason,
            "source": {"component": self.field_manager},
            "reportingComponent": self.field_manager, "reportingInstance": instance[:128],
            "firstTimestamp": seconds, "lastTimestamp": seconds, "count": 1,
            "eventTime": when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        return await self.create(event)

    # -- create and replace (events, leases) ----------------------------------------------------------

    async def create(self, manifest: Mapping[str, Any]) -> Manifest:
        meta = manifest["metadata"]
        return await self.request("POST", resource_path(manifest["apiVersion"], manifest["kind"],
                                                        meta.get("namespace")), body=dict(manifest))

    async def replace(self, manifest: Mapping[str, Any]) -> Manifest:
        """PUT with the manifest's resourceVersion: Conflict when someone else wrote it first."""
        meta = manifest["metadata"]
        path = resource_path(manifest["apiVersion"], manifest["kind"], meta.get("namespace"), meta["name"])
        return await self.request("PUT", path, body=dict(manifest))
