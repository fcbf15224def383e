"""The `vss operator` process: wait for the leader Lease, then run kopf with the handlers, and serve
`/healthz` and `/metrics` the whole time (standbys too, so their liveness probe passes while they wait).
The Prometheus client's HTTP session opens with kopf and closes with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import kopf
from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Importing the handlers module registers them with kopf's default registry.
from vss_operator.handlers import OperatorContext
from vss_operator.kube import Kube
from vss_operator.leader import LeadershipLost, LeaseElector, LeaseTimings
from vss_operator.metrics import ModelMetrics
from vss_operator.prometheus import DEFAULT_ENDPOINTS, PrometheusClient
from vss_operator.render import RenderConfig
from vss_operator.stream_handlers import reconcile_stream  # noqa: F401 - registers the VSSStream handlers

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OperatorOptions:
    namespace: str | None = None  # None: every namespace
    kubeconfig: str | None = None
    render: RenderConfig = field(default_factory=RenderConfig)
    health_host: str = "0.0.0.0"  # noqa: S104 - the kubelet probes the pod's address
    health_port: int = 8080
    leader_election: bool = True
    lease_name: str = "vss-operator"
    lease_namespace: str = "default"
    identity: str = "vss-operator"
    lease: LeaseTimings = field(default_factory=LeaseTimings)
    retry_delay: float = 5.0
    # The Prometheus servers VSSModels may pick by name (spec.rollout.analysis.prometheus.endpoint).
    prometheus_endpoints: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_ENDPOINTS))


@dataclass
class _State:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    leader_gauge: Gauge = field(init=False)
    lease_error_gauge: Gauge = field(init=False)
    leader: bool = False
    running: bool = False
    lease_error: str | None = None  # why the last attempt at the Lease failed (a 403: RBAC or namespace)

    def __post_init__(self) -> None:
        self.leader_gauge = Gauge("vss_operator_leader", "1 while this replica holds the leader Lease",
                                  registry=self.registry)
        self.lease_error_gauge = Gauge("vss_operator_lease_error",
                                       "1 while this replica's last attempt at the leader Lease failed",
                                       registry=self.registry)

    def set_lease_error(self, error: str | None) -> None:
        self.lease_error = error
        self.lease_error_gauge.set(0 if error is None else 1)

    def set_leader(self, value: bool) -> None:
        self.leader = value
        self.leader_gauge.set(1 if value else 0)


async def _serve_health(options: OperatorOptions, state: _State) -> web.AppRunner:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"ok": True, "leader": state.leader, "kopf": state.running})

    async def readyz(_: web.Request) -> web.Response:
        """Not ready while the Lease cannot be read or written: a standby that could never lead shows in
        `kubectl get pods` instead of waiting forever as a healthy-looking one (liveness stays /healthz)."""
        if state.lease_error is not None:
            return web.json_response({"ready": False, "lease_error": state.lease_error}, status=503)
        return web.json_response({"ready": True, "leader": state.leader})

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(state.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.add_routes([web.get("/healthz", healthz), web.get("/readyz", readyz), web.get("/metrics", metrics)])
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, options.health_host, options.health_port).start()
    return runner


async def run(options: OperatorOptions) -> int:
    """Run until stopped; 0 after a clean shutdown, 1 when the leadership was lost."""
    kube = Kube.from_environment(options.kubeconfig)
    state = _State()
    runner = await _serve_health(options, state)
    elector: LeaseElector | None = None
    keeper: asyncio.Task[None] | None = None
    stop = asyncio.Event()
    lost = False
    try:
        if options.leader_election:
            elector = LeaseElector(kube, options.lease_name, options.lease_namespace, options.identity,
                                   options.lease, on_error=state.set_lease_error)
            logger.info("waiting for lease %s/%s as %s", options.lease_namespace, options.lease_name,
                        options.identity)
            await elector.acquire()
            state.set_leader(True)

            async def keep(elector: LeaseElector) -> None:
                nonlocal lost
                try:
                    await elector.keep()
                except LeadershipLost as exc:
                    logger.error("stopping: %s", exc)
                    lost = True
                    state.set_leader(False)
                    stop.set()

            keeper = asyncio.create_task(keep(elector))
        async with PrometheusClient(endpoints=options.prometheus_endpoints) as prometheus:
            ctx = OperatorContext(kube=kube, prometheus=prometheus, render=options.render,
                                  retry_delay=options.retry_delay, identity=options.identity,
                                  metrics=ModelMetrics(state.registry))
            state.running = True
            try:
                await kopf.operator(
                    clusterwide=options.namespace is None,
                    namespaces=[options.namespace] if options.namespace else (),
                    standalone=True,
                    stop_flag=stop,
                    memo=kopf.Memo(context=ctx),
                )
            finally:
                await ctx.requeues.close()
    finally:
        state.running = False
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        if elector is not None and not lost:
            await elector.release()
        await runner.cleanup()
        kube.close()
    return 1 if lost else 0

