"""A test node agent: registers a Node and runs the Pods bound to it as local processes (no kubelet here).

What it does, as a kubelet would:

- registers the Node (capacity cpu/memory/pods, ``Ready``, an InternalIP) and renews its Lease in
  ``kube-node-lease``; the real kube-scheduler (``LocalCluster(scheduler=True)``) binds Pods to it;
- gives each Pod a network namespace of its own (``ip netns``, a veth pair onto a bridge of the agent, one
  address per Pod from the agent's pod CIDR), reachable from the host, so Services' endpoints are real addresses;
- runs each init container in order to completion, then the containers, from the Pod's own
  ``command``/``args``/``env`` (``$(VAR)``, ``fieldRef``, ``secretKeyRef``, ``configMapKeyRef``, ``envFrom``)/
  ``workingDir``; the image's ENTRYPOINT/CMD/ENV come from ``IMAGE_ENTRY_POINTS``, the one table of images;
- bind-mounts ``volumeMounts`` in a mount namespace per container (``pod_process.py``): emptyDir, configMap,
  secret, hostPath and a PVC bound to a hostPath PV, with ``subPath`` and ``readOnly`` as the Pod says;
- honours startup, readiness and liveness probes (httpGet, tcpSocket, exec), restarts what exits or fails its
  liveness per ``restartPolicy`` with a doubling backoff, and writes the Pod status (phase, init and container
  statuses, conditions, podIP, hostIP) back;
- deletes a Pod (grace 0) once its containers are stopped after a delete was asked for.

What it cannot emulate it refuses loudly, with phase Failed, a reason on the Pod and a Warning Event:
``nvidia.com/gpu``, ``hostNetwork``, ``privileged``, an image not in the table, a grpc probe. It does not
enforce ``runAsUser``/``runAsNonRoot``/``readOnlyRootFilesystem`` (the processes run as root: the virtualenv
lives under /root) nor resource limits, and says so in a Warning Event ``SecurityContextNotEnforced``.

Needs root, ``ip`` (iproute2), ``unshare`` and ``mount`` (util-linux). ``stop()`` kills every process and
removes every namespace, veth and the bridge, whatever state the Pods are in.
"""

from __future__ import annotations

import contextlib
import datetime
import http.client
import ipaddress
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
POD_PROCESS = Path(__file__).resolve().parent / "pod_process.py"
VENV_BIN = str(Path(sys.executable).parent)
GPU_RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True)
class ImageEntryPoint:
    """What an image brings to a container: its ENTRYPOINT, CMD and ENV (docker/*.Dockerfile)."""

    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    env: Mapping[str, str]


# The source folders of the packages the images install (pyproject's [tool.setuptools] package-dir).
SOURCE_DIRS = ("api", "cli", "operator", "predictors", "transformers", "models", "streams")
# The images' ENV: `PATH=/opt/vss/bin:${PATH}` is this virtualenv's bin directory here. The images hold this
# checkout's code: PYTHONPATH names its sources, since the virtualenv's editable install may point at another
# checkout (a git worktree of a branch shares the main checkout's virtualenv).
_IMAGE_ENV = {
    "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin",
    "PYTHONPATH": ":".join(str(REPO_ROOT / d) for d in SOURCE_DIRS),
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
}
_PREDICTOR = ImageEntryPoint((), ("python", "-m", "vss_predictors", "--help"), {**_IMAGE_ENV, "HOME": "/tmp"})
# The one table of images this agent runs, keyed by repository (tag and digest ignored): docker/<name>.Dockerfile.
IMAGE_ENTRY_POINTS: Mapping[str, ImageEntryPoint] = {
    "ghcr.io/vss-serving/predictor-cpu": _PREDICTOR,
    "ghcr.io/vss-serving/predictor-gpu": _PREDICTOR,
    "ghcr.io/vss-serving/stream-worker": ImageEntryPoint(("vss",), ("stream", "--help"),
                                                         {**_IMAGE_ENV, "HOME": "/tmp"}),
    "ghcr.io/vss-serving/operator": ImageEntryPoint(("vss",), ("operator",), dict(_IMAGE_ENV)),
}


def image_repository(image: str) -> str:
    name = image.split("@", 1)[0]
    head, _, tail = name.rpartition(":")
    return head if head and "/" not in tail else name


class Refused(Exception):
    """What the agent cannot emulate; the message goes on the Pod and in an Event."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def refusal(pod: Mapping[str, Any]) -> Refused | None:
    """Why POD cannot run here, or None. Pure: the first thing the agent checks."""
    spec = pod.get("spec") or {}
    if spec.get("hostNetwork"):
        return Refused("HostNetworkNotEmulated", "hostNetwork: the test node agent gives every Pod its own netns")
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        resources = c.get("resources") or {}
        for kind in ("limits", "requests"):
            if GPU_RESOURCE in (resources.get(kind) or {}):
                return Refused("GPUNotEmulated",
                               f"container {c['name']} asks for {GPU_RESOURCE}: the test node agent has no GPU")
        if (c.get("securityContext") or {}).get("privileged"):
            return Refused("PrivilegedNotEmulated", f"container {c['name']} is privileged")
        if image_repository(c.get("image", "")) not in IMAGE_ENTRY_POINTS:
            return Refused("UnknownImage", f"container {c['name']}: image {c.get('image')!r} is not in "
                                           "tests/support/node_agent.py IMAGE_ENTRY_POINTS")
        for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = c.get(probe_name) or {}
            if probe and not ({"httpGet", "tcpSocket", "exec"} & probe.keys()):
                return Refused("ProbeNotEmulated", f"container {c['name']}: {probe_name} {sorted(probe)}")
    return None


def argv_for(container: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """Kubernetes' rule: command replaces ENTRYPOINT, args replace CMD; $(VAR) expands from the env."""
    image = IMAGE_ENTRY_POINTS[image_repository(container["image"])]
    command = container.get("command")
    args = container.get("args")
    entrypoint = command or image.entrypoint
    cmd = args if args is not None else ([] if command else image.cmd)
    return [expand(a, env) for a in [*entrypoint, *cmd]]


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR.sub(sub, text)


@dataclass
class _Probe:
    spec: dict[str, Any]
    successes: int = 0
    failures: int = 0
    next_at: float = 0.0

    @property
    def period(self) -> float:
        return float(self.spec.get("periodSeconds", 10))

    @property
    def timeout(self) -> float:
        return float(self.spec.get("timeoutSeconds", 1))


@dataclass
class _Container:
    spec: dict[str, Any]
    init: bool
    popen: subprocess.Popen[bytes] | None = None
    restart_count: int = 0
    started_at: str | None = None
    started: bool = False  # startup probe passed (or none)
    ready: bool = False
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "PodInitializing"}})
    last_state: dict[str, Any] = field(default_factory=dict)
    restart_at: float | None = None
    probes: dict[str, _Probe] = field(default_factory=dict)
    done: bool = False  # exited and will not restart

    @property
    def name(self) -> str:
        return str(self.spec["name"])


class _PodRunner:
    """One Pod: its namespace, volumes and containers, driven by ``tick()`` from the agent's thread."""

    def __init__(self, agent: NodeAgent, pod: dict[str, Any], ip: str) -> None:
        self.agent = agent
        self.namespace = pod["metadata"]["namespace"]
        self.name = pod["metadata"]["name"]
        self.uid = pod["metadata"]["uid"]
        self.spec: dict[str, Any] = pod["spec"]
        self.ip = ip
        self.netns = f"vssna-{self.uid[:13]}"
        self.veth = f"vna{self.uid[:8]}"
        self.dir = agent.workdir / "pods" / self.uid
        self.policy = self.spec.get("restartPolicy", "Always")
        self.init = [_Container(c, True) for c in self.spec.get("initContainers") or []]
        self.containers = [_Container(c, False) for c in self.spec.get("containers") or []]
        self.phase = "Pending"
        self.conditions: dict[str, dict[str, Any]] = {}
        self.mounts: dict[str, Path] = {}
        self.env_cache: dict[str, dict[str, str]] = {}
        self.last_status: str = ""
        self.refused: Refused | None = None
        self.stopped = False

    # -- setup ------------------------------------------------------------------------------------

    def setup(self, pod: Mapping[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        _ip("netns", "add", self.netns)
        self.agent.netns_made.add(self.netns)
        _ip("link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", self.netns)
        _ip("link", "set", self.veth, "master", self.agent.bridge, "up")
        prefix = self.agent.network.prefixlen
        _ip("-n", self.netns, "addr", "add", f"{self.ip}/{prefix}", "dev", "eth0")
        _ip("-n", self.netns, "link", "set", "eth0", "up")
        _ip("-n", self.netns, "link", "set", "lo", "up")
        _ip("-n", self.netns, "route", "add", "default", "via", self.agent.gateway)
        self.volumes()
        every = [*(self.spec.get("initContainers") or []), *(self.spec.get("containers") or [])]
        unenforced = [f"{c['name']}.securityContext.{k}" for c in every
                      for k in ("runAsUser", "runAsNonRoot", "readOnlyRootFilesystem")
                      if k in (c.get("securityContext") or {})]
        if unenforced:
            self.agent.event(pod, "Warning", "SecurityContextNotEnforced",
                             f"the test node agent runs processes as root: not enforced: {', '.join(unenforced)}")

    def volumes(self) -> None:
        core = self.agent.core
        for vol in self.spec.get("volumes") or []:
            name = vol["name"]
            path = self.dir / "volumes" / name
            if "emptyDir" in vol:
                path.mkdir(parents=True, exist_ok=True)
                path.chmod(0o777)
            elif "hostPath" in vol:
                path = Path(vol["hostPath"]["path"])
            elif "persistentVolumeClaim" in vol:
                claim = core.read_namespaced_persistent_volume_claim(
                    vol["persistentVolumeClaim"]["claimName"], self.namespace)
                if not claim.spec.volume_name:
                    raise RuntimeError(f"PVC {claim.metadata.name} is not bound")
                pv = core.read_persistent_volume(claim.spec.volume_name)
                if pv.spec.host_path is None:
                    raise Refused("VolumeNotEmulated", f"PV {pv.metadata.name} is not a hostPath PV")
                path = Path(pv.spec.host_path.path)
            elif "configMap" in vol or "secret" in vol:
                path.mkdir(parents=True, exist_ok=True)
                if "configMap" in vol:
                    cm = core.read_namespaced_config_map(vol["configMap"]["name"], self.namespace)
                    data = {k: v.encode() for k, v in (cm.data or {}).items()}
                    items = vol["configMap"].get("items")
                else:
                    import base64

                    secret = core.read_namespaced_secret(vol["secret"]["secretName"], self.namespace)
                    data = {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}
                    items = vol["secret"].get("items")
                for key, value in data.items():
                    targets = [i["path"] for i in items or [] if i["key"] == key] if items else [key]
                    for target in targets:
                        (path / target).parent.mkdir(parents=True, exist_ok=True)
                        (path / target).write_bytes(value)
            else:
                raise Refused("VolumeNotEmulated", f"volume {name}: {sorted(set(vol) - {'name'})}")
            self.mounts[name] = path

    def env_for(self, c: Mapping[str, Any]) -> dict[str, str]:
        core = self.agent.core
        image = IMAGE_ENTRY_POINTS[image_repository(c["image"])]
        env: dict[str, str] = {**image.env, "HOSTNAME": self.name}
        for source in c.get("envFrom") or []:
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                cm = core.read_namespaced_config_map(source["configMapRef"]["name"], self.namespace)
                env.update({prefix + k: v for k, v in (cm.data or {}).items()})
            if "secretRef" in source:
                import base64

                s = core.read_namespaced_secret(source["secretRef"]["name"], self.namespace)
                env.update({prefix + k: base64.b64decode(v).decode() for k, v in (s.data or {}).items()})
        fields = {"metadata.name": self.name, "metadata.namespace": self.namespace, "metadata.uid": self.uid,
                  "status.podIP": self.ip, "status.hostIP": self.agent.gateway, "spec.nodeName": self.agent.node_name,
                  "spec.serviceAccountName": self.spec.get("serviceAccountName", "")}
        for var in c.get("env") or []:
            if "valueFrom" not in var:
                env[var["name"]] = expand(var.get("value", ""), env)
                continue
            ref = var["valueFrom"]
            if "fieldRef" in ref:
                env[var["name"]] = fields[ref["fieldRef"]["fieldPath"]]
            elif "secretKeyRef" in ref or "configMapKeyRef" in ref:
                import base64

                key_ref = ref.get("secretKeyRef") or ref["configMapKeyRef"]
                try:
                    if "secretKeyRef" in ref:
                        data = core.read_namespaced_secret(key_ref["name"], self.namespace).data or {}
                        value = base64.b64decode(data[key_ref["key"]]).decode() if key_ref["key"] in data else None
                    else:
                        value = (core.read_namespaced_config_map(key_ref["name"], self.namespace).data or {}).get(
                            key_ref["key"])
                except Exception:
                    if key_ref.get("optional"):
                        continue
                    raise
                if value is None:
                    if key_ref.get("optional"):
                        continue
                    raise RuntimeError(f"env {var['name']}: key {key_ref['key']} not in {key_ref['name']}")
                env[var["name"]] = value
            else:
                raise Refused("EnvNotEmulated", f"env {var['name']}: valueFrom {sorted(ref)}")
        return env

    # -- processes --------------------------------------------------------------------------------

    def start(self, c: _Container) -> None:
        env = self.env_cache.setdefault(c.name, self.env_for(c.spec))
        mounts = []
        for m in c.spec.get("volumeMounts") or []:
            source = self.mounts[m["name"]]
            if m.get("subPath"):
                source = source / expand(m["subPath"], env)
            mounts.append({"source": str(source), "target": m["mountPath"], "readOnly": bool(m.get("readOnly"))})
        spec = {"argv": argv_for(c.spec, env), "env": env, "mounts": mounts, "workingDir": c.spec.get("workingDir")}
        log = (self.dir / f"{c.name}.log").open("ab")
        c.popen = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, "unshare", "--mount", "--propagation", "private",
             sys.executable, str(POD_PROCESS), json.dumps(spec)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        c.started_at = _now()
        c.state = {"running": {"startedAt": c.started_at}}
        c.started = "startupProbe" not in c.spec
        c.ready = False
        c.restart_at = None
        now = time.monotonic()
        c.probes = {k: _Probe(c.spec[k], next_at=now + float(c.spec[k].get("initialDelaySeconds", 0)))
                    for k in ("startupProbe", "readinessProbe", "livenessProbe") if k in c.spec}

    def kill(self, c: _Container, grace: float = 5.0) -> int | None:
        proc = c.popen
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        c.popen = None
        return proc.returncode

    def exited(self, c: _Container, code: int, reason: str | None = None) -> None:
        terminated = {"exitCode": code, "reason": reason or ("Completed" if code == 0 else "Error"),
                      "startedAt": c.started_at, "finishedAt": _now()}
        c.ready = False
        restart = (self.policy == "Always" and not c.init) or (self.policy != "Never" and code != 0)
        if c.init and code == 0:
            c.state, c.done = {"terminated": terminated}, True
        elif restart:
            c.last_state = {"terminated": terminated}
            delay = min(self.agent.backoff_s * 2 ** c.restart_count, 300.0)
            c.state = {"waiting": {"reason": "CrashLoopBackOff",
                                   "message": f"back-off {delay:.0f}s restarting failed container {c.name}"}}
            c.restart_at = time.monotonic() + delay
        else:
            c.state, c.done = {"terminated": terminated}, True

    def probe(self, c: _Container, p: _Probe) -> bool:
        spec = p.spec
        try:
            if "httpGet" in spec:
                g = spec["httpGet"]
                conn = http.client.HTTPConnection(g.get("host") or self.ip, self.port(c, g["port"]), timeout=p.timeout)
                try:
                    conn.request("GET", g.get("path", "/"), headers={h["name"]: h["value"]
                                                                     for h in g.get("httpHeaders") or []})
                    return 200 <= conn.getresponse().status < 400
                finally:
                    conn.close()
            if "tcpSocket" in spec:
                t = spec["tcpSocket"]
                with socket.create_connection((t.get("host") or self.ip, self.port(c, t["port"])), p.timeout):
                    return True
            assert c.popen is not None
            proc = subprocess.run(["nsenter", "-t", str(c.popen.pid), "-m", "-n", "--", *spec["exec"]["command"]],
                                  capture_output=True, timeout=p.timeout, check=False)
            return proc.returncode == 0
        except (OSError, subprocess.TimeoutExpired, http.client.HTTPException):
            return False

    @staticmethod
    def port(c: _Container, port: int | str) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        return next(int(p["containerPort"]) for p in c.spec.get("ports") or [] if p.get("name") == port)

    # -- the loop -----------------------------------------------------------------------------------

    def tick(self) -> None:
        now = time.monotonic()
        pending_init = next((c for c in self.init if not c.done), None)
        if pending_init is not None:
            self.step(pending_init, now)
            if pending_init.done and pending_init.state["terminated"]["exitCode"] != 0:
                self.phase = "Failed"  # restartPolicy Never: the Pod ends at its failed init container
            return
        for c in self.containers:
            if c.popen is None and not c.done and c.restart_at is None and c.started_at is None:
                self.start(c)
            self.step(c, now)
        if all(c.done for c in self.containers):
            codes = [c.state["terminated"]["exitCode"] for c in self.containers]
            self.phase = "Succeeded" if all(code == 0 for code in codes) else "Failed"
        elif all(c.started_at is not None for c in self.containers):
            self.phase = "Running"

    def step(self, c: _Container, now: float) -> None:
        if c.done:
            return
        if c.popen is None:
            if c.restart_at is not None and now >= c.restart_at:
                c.restart_count += 1
                self.start(c)
            elif c.init and c.started_at is None:
                self.start(c)
            return
        code = c.popen.poll()
        if code is not None:
            c.popen = None
            self.exited(c, code)
            return
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            p = c.probes.get(kind)
            if p is None or now < p.next_at or (kind != "startupProbe" and not c.started) or (
                    kind == "startupProbe" and c.started):
                continue
            p.next_at = now + p.period
            if self.probe(c, p):
                p.successes, p.failures = p.successes + 1, 0
                if kind == "startupProbe":
                    c.started = True
                elif kind == "readinessProbe" and p.successes >= int(p.spec.get("successThreshold", 1)):
                    c.ready = True
            else:
                p.successes, p.failures = 0, p.failures + 1
                if p.failures < int(p.spec.get("failureThreshold", 3)):
                    continue
                if kind == "readinessProbe":
                    c.ready = False
                else:  # a failed startup or liveness probe: kill and restart as the policy says
                    self.kill(c, grace=float(self.spec.get("terminationGracePeriodSeconds", 5) or 0.1))
                    self.exited(c, 137, "Error")
                    return
        if c.started and "readinessProbe" not in c.probes:
            c.ready = True

    # -- status -------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        def cs(c: _Container) -> dict[str, Any]:
            return {"name": c.name, "image": c.spec["image"], "imageID": "", "ready": c.ready,
                    "started": c.started and c.popen is not None, "restartCount": c.restart_count, "state": c.state,
                    "lastState": c.last_state}

        initialized = all(c.done and c.state["terminated"]["exitCode"] == 0 for c in self.init)
        ready = initialized and bool(self.containers) and all(c.ready for c in self.containers) and \
            self.phase == "Running"
        self.condition("Initialized", initialized)
        self.condition("ContainersReady", ready)
        self.condition("Ready", ready)
        status: dict[str, Any] = {
            "phase": self.phase, "podIP": self.ip, "podIPs": [{"ip": self.ip}], "hostIP": self.agent.gateway,
            "hostIPs": [{"ip": self.agent.gateway}], "conditions": list(self.conditions.values()),
            "containerStatuses": [cs(c) for c in self.containers],
        }
        if self.init:
            status["initContainerStatuses"] = [cs(c) for c in self.init]
        if self.refused is not None:
            status = {"phase": "Failed", "reason": self.refused.reason, "message": self.refused.message,
                      "hostIP": self.agent.gateway}
        return status

    def condition(self, kind: str, value: bool) -> None:
        text = "True" if value else "False"
        old = self.conditions.get(kind)
        if old is None or old["status"] != text:
            self.conditions[kind] = {"type": kind, "status": text, "lastTransitionTime": _now(),
                                     "lastProbeTime": None}

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        for c in [*self.init, *self.containers]:
            if c.popen is not None:
                code = self.kill(c, grace=min(float(self.spec.get("terminationGracePeriodSeconds", 5) or 0), 5.0))
                c.state = {"terminated": {"exitCode": code if code is not None else 137, "reason": "Completed"
                           if code == 0 else "Error", "startedAt": c.started_at, "finishedAt": _now()}}
                c.done = True
        _ip("link", "del", self.veth, check=False)
        _ip("netns", "del", self.netns, check=False)
        self.agent.netns_made.discard(self.netns)


class NodeAgent:
    """Registers Node NODE_NAME and runs the Pods bound to it; ``start()``, then ``stop()`` (idempotent)."""

    def __init__(self, api_client: Any, workdir: Path, *, node_name: str | None = None,
                 pod_cidr: str | None = None, backoff_s: float = 10.0, interval_s: float = 0.3,
                 cpu: str | None = None) -> None:
        """CPU: the Node's advertised cpu capacity (default: this machine's cores). Requests are not enforced
        here, so a test whose Pods request more than the machine has (the examples ask for 2 cores each) says
        how many it pretends to have."""
        from kubernetes import client

        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)
        self.workdir = workdir.resolve()
        self.node_name = node_name or f"vss-node-{uuid.uuid4().hex[:6]}"
        # A /24 of its own per agent, so agents of concurrent test runs on one machine do not collide.
        self.network = ipaddress.ip_network(pod_cidr or f"10.{random.randint(200, 250)}.{random.randint(0, 255)}.0/24")
        hosts = list(self.network.hosts())
        self.gateway = str(hosts[0])
        self.free_ips = [str(h) for h in hosts[1:]]
        self.bridge = f"vssbr{uuid.uuid4().hex[:6]}"
        self.backoff_s = backoff_s
        self.interval_s = interval_s
        self.cpu = cpu or str(os.cpu_count() or 1)
        self.pods: dict[str, _PodRunner] = {}
        self.netns_made: set[str] = set()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_heartbeat = 0.0

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.gateway}/{self.network.prefixlen}", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            self.register()
        except BaseException:
            self.stop()
            raise
        self._thread = threading.Thread(target=self._run, name=f"node-agent-{self.node_name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
        for runner in list(self.pods.values()):
            runner.stop()
        self.pods.clear()
        for netns in list(self.netns_made):
            _ip("netns", "del", netns, check=False)
        _ip("link", "del", self.bridge, check=False)
        with contextlib.suppress(Exception):
            self.core.delete_node(self.node_name)

    def register(self) -> None:
        mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                       if line.startswith("MemTotal:"))
        resources = {"cpu": self.cpu, "memory": f"{mem_kib}Ki", "pods": "110",
                     "ephemeral-storage": "100Gi"}
        self.core.create_node({"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": self.node_name, "labels": {"kubernetes.io/hostname": self.node_name, "kubernetes.io/os": "linux",
                                               "kubernetes.io/arch": "amd64"}},
            "spec": {"podCIDR": str(self.network), "podCIDRs": [str(self.network)]}})
        self._node_status = {"capacity": resources, "allocatable": resources,
                             "addresses": [{"type": "InternalIP", "address": self.gateway},
                                           {"type": "Hostname", "address": self.node_name}],
                             "nodeInfo": {"kubeletVersion": "v1.34.4-vss-node-agent", "operatingSystem": "linux",
                                          "architecture": "amd64", "containerRuntimeVersion": "vss-node-agent://1",
                                          "kernelVersion": os.uname().release, "osImage": "local processes",
                                          "kubeProxyVersion": "", "machineID": "", "systemUUID": "",
                                          "bootID": ""}}
        self.heartbeat()
        # The apiserver's TaintNodesByCondition admission taints a new Node not-ready; the node lifecycle
        # controller (not run here) would lift it once the Node reports Ready, as it now does.
        self.core.patch_node(self.node_name, {"spec": {"taints": None}})

    def heartbeat(self) -> None:
        now = _now()
        status = {**self._node_status, "conditions": [{"type": "Ready", "status": "True", "reason": "NodeAgentReady",
                                                       "message": "tests/support/node_agent.py runs Pods as processes",
                                                       "lastHeartbeatTime": now, "lastTransitionTime": now}]}
        self.core.patch_node_status(self.node_name, {"status": status})
        micro = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        lease = {"metadata": {"name": self.node_name, "namespace": "kube-node-lease"},
                 "spec": {"holderIdentity": self.node_name, "leaseDurationSeconds": 40, "renewTime": micro}}
        try:
            self.coordination.patch_namespaced_lease(self.node_name, "kube-node-lease", lease)
        except Exception:
            self.coordination.create_namespaced_lease("kube-node-lease", lease)
        self._last_heartbeat = time.monotonic()

    def event(self, pod: Mapping[str, Any], kind: str, reason: str, message: str) -> None:
        meta = pod["metadata"]
        with contextlib.suppress(Exception):
            self.core.create_namespaced_event(meta["namespace"], {
                "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
                "involvedObject": {"kind": "Pod", "apiVersion": "v1", "name": meta["name"],
                                   "namespace": meta["namespace"], "uid": meta["uid"]},
                "type": kind, "reason": reason, "message": message, "source": {"component": "vss-node-agent",
                                                                               "host": self.node_name},
                "firstTimestamp": _now(), "lastTimestamp": _now(), "count": 1})

    # -- the loop -----------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync()
            except Exception as exc:  # the loop must outlive an apiserver restart
                self.errors.append(repr(exc))
            self._stop.wait(self.interval_s)

    def _sync(self) -> None:
        if time.monotonic() - self._last_heartbeat > 10:
            self.heartbeat()
        listed = self.api_client.sanitize_for_serialization(
            self.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={self.node_name}"))
        seen = set()
        for pod in listed["items"]:
            uid = pod["metadata"]["uid"]
            seen.add(uid)
            runner = self.pods.get(uid)
            if pod["metadata"].get("deletionTimestamp"):
                if runner is not None:
                    runner.stop()
                    self._release(uid)
                with contextlib.suppress(Exception):
                    self.core.delete_namespaced_pod(pod["metadata"]["name"], pod["metadata"]["namespace"],
                                                    grace_period_seconds=0)
                continue
            if runner is None:
                if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                    continue
                runner = self._admit(pod)
                if runner is None:
                    continue
            if runner.refused is None and runner.phase not in ("Succeeded", "Failed"):
                runner.tick()
            status = runner.status()
            text = json.dumps(status, sort_keys=True, default=str)
            if text != runner.last_status:
                self.core.patch_namespaced_pod_status(runner.name, runner.namespace, {"status": status})
                runner.last_status = text
            if runner.phase in ("Succeeded", "Failed"):
                runner.stop()
        for uid in set(self.pods) - seen:
            self.pods[uid].stop()
            self._release(uid)

    def _admit(self, pod: dict[str, Any]) -> _PodRunner | None:
        runner = _PodRunner(self, pod, self.free_ips.pop(0))
        self.pods[runner.uid] = runner
        refused = refusal(pod)
        if refused is None:
            try:
                runner.setup(pod)
            except Refused as exc:
                refused = exc
            except Exception as exc:  # not ready yet (an unbound PVC, a missing Secret): try again next round
                runner.stop()
                self._release(runner.uid)
                self.errors.append(f"{runner.namespace}/{runner.name}: {exc!r}")
                return None
        if refused is not None:
            runner.refused = refused
            runner.stop()
            self.event(pod, "Warning", refused.reason, refused.message)
        return runner

    def _release(self, uid: str) -> None:
        runner = self.pods.pop(uid, None)
        if runner is not None:
            self.free_ips.append(runner.ip)

    def logs(self, namespace: str, pod: str, container: str) -> str:
        for runner in self.pods.values():
            if runner.namespace == namespace and runner.name == pod:
                path = runner.dir / f"{container}.log"
                return path.read_text(errors="replace") if path.exists() else ""
        return ""


def processes_alive(agent: NodeAgent) -> list[int]:
    """PIDs of the container processes the agent still holds (for teardown checks)."""
    return [c.popen.pid for r in agent.pods.values() for c in [*r.init, *r.containers]
            if c.popen is not None and c.popen.poll() is None]


__all__: Sequence[str] = ("IMAGE_ENTRY_POINTS", "ImageEntryPoint", "NodeAgent", "Refused", "argv_for", "refusal")
