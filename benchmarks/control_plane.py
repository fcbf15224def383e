"""The control plane at scale (issue 17): N VSSModels (500 by default, the four tasks in turn) applied at once
to the real test apiserver (tests/support/apiserver.py, with the upstream KServe and Gateway API CRDs) and
reconciled by the real operator process (`python -m vss_cli.main operator`, leader election on, as deployed).

    python benchmarks/control_plane.py                  # 500 VSSModels, 60 s idle
    python benchmarks/control_plane.py --count 100 --idle 20

Measured and printed against the issue's targets:
- the time from the start of one `kubectl apply --server-side` of the whole List until every child the
  operator renders exists, and until every VSSModel's status.observedGeneration equals its generation;
- the operator's VmRSS during and after (and VmHWM, its peak);
- its CPU while nothing changes, over `--idle` seconds afterwards (utime + stime from /proc/PID/stat, as a
  percentage of one core);
- the time for a spec edit to one VSSModel (predictor.maxReplicas) to show in its status and its
  InferenceService while the others are idle.
It prints figures and asserts nothing (tests/integration/test_control_plane_benchmark.py runs its measuring
functions on a few models).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.servers import proc_memory_kb
from tests.support.apiserver import LocalCluster, ensure_test_binaries, free_port, wait_until
from tests.support.upstream_crds import upstream_crd_paths
from vss_api.vssmodel import VSSModel
from vss_operator.render import render

REPO = Path(__file__).resolve().parents[1]
TASKS = ("detection", "classification", "anomaly", "forecasting")
TARGETS = {"statuses_s": 60.0, "rss_mb": 300.0, "idle_cpu_percent": 5.0, "edit_s": 2.0}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def model_manifests(count: int, namespace: str) -> list[dict[str, Any]]:
    """`count` VSSModels, the tasks in turn; every fourth one a Canary with two versions (its first
    rollout goes straight to the stable version, as a new VSSModel's does)."""
    transformers: dict[str, dict[str, Any]] = {
        "detection": {"detection": {"inputSize": 640, "classes": ["person", "vehicle"]}},
        "classification": {"classification": {"inputSize": 224, "topK": 5}},
        "anomaly": {"anomaly": {"features": ["temperature", "pressure"], "window": 100}},
        "forecasting": {"forecasting": {"features": ["temperature", "pressure"], "lookback": 24, "horizon": 6}},
    }
    docs = []
    for i in range(count):
        task = TASKS[i % len(TASKS)]
        name = f"{task[:5]}-{i:04d}"
        spec: dict[str, Any] = {
            "task": task, "version": "v1",
            "versions": [{"name": "v1", "storageUri": f"s3://models/{name}/v1/model.onnx"},
                         {"name": "v2", "storageUri": f"s3://models/{name}/v2/model.onnx"}],
            "predictor": {"device": "cpu", "minReplicas": 1, "maxReplicas": 2},
            "transformer": transformers[task],
        }
        if i % 4 == 3:
            spec["rollout"] = {"strategy": "Canary", "steps": [{"weight": 20, "pause": "5m"}]}
        docs.append({"apiVersion": "serving.vss.ai/v1alpha1", "kind": "VSSModel",
                     "metadata": {"name": name, "namespace": namespace}, "spec": spec})
    return docs


def apply_all(cluster: LocalCluster, docs: Sequence[dict[str, Any]]) -> float:
    """One `kubectl apply --server-side` of all `docs` as a List; returns the seconds it took."""
    started = time.monotonic()
    cluster.kubectl("apply", "--server-side", "-f", "-", "-o", "name", timeout=600,
                    input=yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": list(docs)}))
    return time.monotonic() - started


@dataclass
class OperatorUnderTest:
    """The operator as deployed (no --verbose, leader election with its default timings), watching one
    namespace of `cluster`."""

    cluster: LocalCluster
    namespace: str
    log_path: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorUnderTest:
        argv = [sys.executable, "-m", "vss_cli.main", "operator", "--kubeconfig", str(self.cluster.kubeconfig),
                "--namespace", self.namespace, "--lease-namespace", self.namespace,
                "--health-port", str(self.port)]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                         env={**self.cluster.env}, start_new_session=True)
        wait_until(self.leading, timeout=60, what="the operator to lead", abort=self.exit_reason)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def leading(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as resp:
                health = json.loads(resp.read())
        except OSError:
            return False
        return bool(health.get("leader") and health.get("kopf"))

    def exit_reason(self) -> str | None:
        if self.proc is None or self.proc.poll() is None:
            return None
        return f"operator exited {self.proc.returncode}:\n{self.log_path.read_text(errors='replace')[-4000:]}"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


class MemorySampler:
    """VmRSS of `pid` every `every_s` seconds on a thread, while in its `with` block."""

    def __init__(self, pid: int, every_s: float = 0.25) -> None:
        self.pid = pid
        self.every_s = every_s
        self.rss_mb: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = proc_memory_kb(self.pid).get("VmRSS")
            if rss is not None:
                self.rss_mb.append(rss / 1024)
            self._stop.wait(self.every_s)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return max(self.rss_mb, default=0.0)


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of `pid` in MiB now."""
    found = proc_memory_kb(pid)
    return found.get("VmRSS", 0) / 1024, found.get("VmHWM", 0) / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds `pid` has used (its threads included), from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": fields from the 3rd on
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def idle_cpu_percent(pid: int, seconds: float) -> float:
    """The CPU `pid` used over the next `seconds`, as a percentage of one core."""
    before, started = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return 100 * (cpu_seconds(pid) - before) / (time.monotonic() - started)


def _list(api: Any, path: str) -> list[dict[str, Any]]:
    response = api.call_api("GET", api.configuration.host + path, header_params={"Accept": "application/json"})
    items: list[dict[str, Any]] = json.loads(response.read())["items"]
    return items


@dataclass
class Progress:
    """How far the operator got with the VSSModels of one namespace, from one listing of each kind."""

    models: int = 0
    statuses: int = 0  # status.observedGeneration == metadata.generation
    children_missing: int = 0  # rendered children not (yet) in the cluster


def progress(api: Any, namespace: str, expected: dict[str, set[tuple[str, str]]]) -> Progress:
    """One look: every VSSModel's status, and which of the children `render` wants are there. `expected`
    caches the (kind, name) pairs per VSSModel (filled here from each one's first listing)."""
    models = _list(api, f"/apis/serving.vss.ai/v1alpha1/namespaces/{namespace}/vssmodels")
    present = {("InferenceService", i["metadata"]["name"])
               for i in _list(api, f"/apis/serving.kserve.io/v1beta1/namespaces/{namespace}/inferenceservices")}
    present |= {("HTTPRoute", i["metadata"]["name"])
                for i in _list(api, f"/apis/gateway.networking.k8s.io/v1/namespaces/{namespace}/httproutes")}
    present |= {("NetworkPolicy", i["metadata"]["name"])
                for i in _list(api, f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies")}
    found = Progress(models=len(models))
    for body in models:
        meta = body["metadata"]
        if meta["name"] not in expected:
            expected[meta["name"]] = {(m["kind"], m["metadata"]["name"]) for m in render(VSSModel.from_body(body))}
        found.children_missing += len(expected[meta["name"]] - present)
        if (body.get("status") or {}).get("observedGeneration") == meta.get("generation"):
            found.statuses += 1
    return found


def last_write(api: Any, namespace: str) -> int:
    """The newest resourceVersion among the namespace's VSSModels and their children: it
    moves whenever anyone (the operator) writes one of them."""
    paths = (f"/apis/serving.vss.ai/v1alpha1/namespaces/{namespace}/vssmodels",
             f"/apis/serving.kserve.io/v1beta1/namespaces/{namespace}/inferenceservices",
             f"/apis/gateway.networking.k8s.io/v1/namespaces/{namespace}/httproutes",
             f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies")
    return max((int(i["metadata"]["resourceVersion"]) for path in paths for i in _list(api, path)), default=0)


def settle(api: Any, namespace: str, quiet_s: float = 5.0, deadline_s: float = 300.0) -> float | None:
    """Seconds until nothing of the namespace has been written for `quiet_s` (the tail of the work: child
    events of the last writes), counted to the last write seen; None when not within `deadline_s`."""
    started = time.monotonic()
    version, changed = last_write(api, namespace), started
    while time.monotonic() - started < deadline_s:
        time.sleep(0.5)
        now_version = last_write(api, namespace)
        if now_version != version:
            version, changed = now_version, time.monotonic()
        elif time.monotonic() - changed >= quiet_s:
            return changed - started
    return None


@dataclass
class Convergence:
    apply_s: float
    children_s: float | None  # None: not within the deadline
    statuses_s: float | None
    last: Progress


def converge(cluster: LocalCluster, api: Any, namespace: str, docs: Sequence[dict[str, Any]],
             deadline_s: float, interval_s: float = 1.0) -> Convergence:
    """Apply `docs` at once and time (from the apply's start) until every rendered child exists and every
    status is written, looking every `interval_s`, for at most `deadline_s`."""
    started = time.monotonic()
    apply_s = apply_all(cluster, docs)
    expected: dict[str, set[tuple[str, str]]] = {}
    children_s = statuses_s = None
    last = Progress()
    while time.monotonic() - started < deadline_s:
        last = progress(api, namespace, expected)
        now = time.monotonic() - started
        if last.models == len(docs):
            if children_s is None and last.children_missing == 0:
                children_s = now
            if statuses_s is None and last.statuses == len(docs):
                statuses_s = now
        if children_s is not None and statuses_s is not None:
            break
        time.sleep(interval_s)
    return Convergence(apply_s, children_s, statuses_s, last)


def edit_seconds(api: Any, namespace: str, name: str, max_replicas: int, deadline_s: float = 30.0) -> float | None:
    """Patch `name`'s spec.predictor.maxReplicas and time until its status reports the new generation and its
    InferenceService carries the value; None when not within `deadline_s`."""
    base = f"/apis/serving.vss.ai/v1alpha1/namespaces/{namespace}/vssmodels/{name}"
    started = time.monotonic()
    response = api.call_api("PATCH", api.configuration.host + base,
                            header_params={"Content-Type": "application/merge-patch+json",
                                           "Accept": "application/json"},
                            body={"spec": {"predictor": {"maxReplicas": max_replicas}}})
    generation = json.loads(response.read())["metadata"]["generation"]
    isvc = f"/apis/serving.kserve.io/v1beta1/namespaces/{namespace}/inferenceservices/{name}-v1"
    status_done = child_done = False
    while time.monotonic() - started < deadline_s:
        if not status_done:
            body = json.loads(api.call_api("GET", api.configuration.host + base,
                                           header_params={"Accept": "application/json"}).read())
            status_done = (body.get("status") or {}).get("observedGeneration") == generation
        if not child_done:
            child = json.loads(api.call_api("GET", api.configuration.host + isvc,
                                            header_params={"Accept": "application/json"}).read())
            child_done = child["spec"]["predictor"].get("maxReplicas") == max_replicas
        if status_done and child_done:
            return time.monotonic() - started
        time.sleep(0.02)
    return None


@contextlib.contextmanager
def control_plane(workdir: Path) -> Iterator[LocalCluster]:
    """The integration tests' cluster: upstream CRDs and the repo's own, controller manager running."""
    cluster = LocalCluster(ensure_test_binaries(), workdir)
    cluster.start(crds=[*upstream_crd_paths(), *sorted((REPO / "crds").glob("*.yaml"))])
    try:
        yield cluster
    finally:
        cluster.stop()


def _fmt(value: float | None, unit: str) -> str:
    return "not reached" if value is None else f"{value:.1f} {unit}"


def report(count: int, result: Convergence, settled: float | None, rss: MemorySampler,
           after: tuple[float, float], idle: float, idle_s: float, edit: float | None) -> str:
    def verdict(value: float | None, target: float) -> str:
        return "MISSED" if value is None or value >= target else "ok"

    rows = [
        ("apply (kubectl, one List)", _fmt(result.apply_s, "s"), "", ""),
        ("all children exist", _fmt(result.children_s, "s"), "", ""),
        (f"all {count} statuses written", _fmt(result.statuses_s, "s"), "< 60 s",
         verdict(result.statuses_s, TARGETS["statuses_s"])),
        ("last write, after that", _fmt(settled, "s"), "", ""),
        ("operator RSS peak (sampled)", _fmt(rss.peak_mb, "MiB"), "< 300 MB", verdict(rss.peak_mb, TARGETS["rss_mb"])),
        ("operator RSS / VmHWM after", f"{after[0]:.1f} / {after[1]:.1f} MiB", "< 300 MB",
         verdict(after[1], TARGETS["rss_mb"])),
        (f"operator idle CPU over {idle_s:g} s", f"{idle:.2f} %", "< 5 %", verdict(idle, TARGETS["idle_cpu_percent"])),
        ("one spec edit reconciled", _fmt(edit, "s"), "< 2 s", verdict(edit, TARGETS["edit_s"])),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'':{width}}  {'measured':>20}  {'target':>9}"]
    lines += [f"{a:{width}}  {b:>20}  {c:>9}  {d}" for a, b, c, d in rows]
    if result.statuses_s is None or result.children_s is None:
        last = result.last
        lines.append(f"at the deadline: {last.models} VSSModels, {last.statuses} statuses, "
                     f"{last.children_missing} children missing")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=500, help="VSSModels to apply at once")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds over which idle CPU is measured")
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds to wait for convergence")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (operator and cluster logs)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="vss-control-plane-"))
    with control_plane(workdir) as cluster:
        namespace = cluster.create_namespace("vss-bench")
        operator = OperatorUnderTest(cluster, namespace, workdir / "operator.log").start()
        api = cluster.api_client()
        try:
            docs = model_manifests(args.count, namespace)
            with MemorySampler(operator.pid) as rss:
                result = converge(cluster, api, namespace, docs, args.deadline)
                # "Afterwards" starts when the operator has stopped writing (the tail of child events).
                settled = settle(api, namespace)
            after = memory_mb(operator.pid)
            idle = idle_cpu_percent(operator.pid, args.idle)
            edit = edit_seconds(api, namespace, docs[len(docs) // 2]["metadata"]["name"], max_replicas=5)
            after = max(after, memory_mb(operator.pid))
        finally:
            api.close()
            operator.stop()
    print(f"{args.count} VSSModels, one operator process (pid {operator.pid}), {os.cpu_count()} cores")
    print(report(args.count, result, settled, rss, after, idle, args.idle, edit))
    print(f"operator log: {workdir / 'operator.log'}" if args.keep else "")
    if not args.keep:
        import shutil
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
