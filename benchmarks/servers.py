"""Serving processes for the benchmarks, started and stopped by the harness: our path as `vss run` starts it
(a VSSModel YAML written here), and the KServe docs' transformer + predictor baselines. Every process is a
child of the harness in its session, is stopped by its own id, and logs to a file in the work folder."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import yaml

REPO = Path(__file__).resolve().parents[1]
BASELINES = Path(__file__).resolve().parent / "baselines"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def vssmodel_yaml(name: str, task: str, model_path: Path, *, rectangular: bool = True,
                  max_batch_size: int = 8, max_latency_ms: float = 5.0, threads: int | None = None,
                  max_in_flight: int = 2) -> str:
    """A VSSModel for `vss run`: the seed's defaults (conf 0.5, IoU 0.4, 640; top-5 at 224)."""
    transformer: dict[str, object]
    if task == "detection":
        transformer = {"detection": {"inputSize": 640, "confidenceThreshold": 0.5, "iouThreshold": 0.4,
                                     "rectangular": rectangular}}
    else:
        transformer = {"classification": {"inputSize": 224, "topK": 5}}
    predictor: dict[str, object] = {"device": "cpu", "batching": {"maxBatchSize": max_batch_size,
                                                                  "maxLatencyMs": max_latency_ms,
                                                                  "maxInFlight": max_in_flight}}
    if threads:
        predictor["threads"] = threads
    doc = {"apiVersion": "serving.vss.ai/v1alpha1", "kind": "VSSModel", "metadata": {"name": name},
           "spec": {"task": task, "version": "v1",
                    "versions": [{"name": "v1", "storageUri": str(model_path), "format": "onnx"}],
                    "predictor": predictor, "transformer": transformer}}
    return yaml.safe_dump(doc, sort_keys=False)


@dataclass
class Process:
    role: str
    popen: subprocess.Popen[bytes]
    log: IO[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def memory_kb(self) -> dict[str, int]:
        """VmRSS (now) and VmHWM (peak) of the process, in kB."""
        return proc_memory_kb(self.pid)


def proc_memory_kb(pid: int) -> dict[str, int]:
    values = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    except OSError:
        pass
    return values


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def wait_ready(url: str, processes: list[Process], deadline_s: float) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        for p in processes:
            if p.popen.poll() is not None:
                raise RuntimeError(f"{p.role} exited with code {p.popen.returncode} before {url} was ready; "
                                   f"see {p.log.name}")
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{url} not ready after {deadline_s:.0f}s")


@dataclass
class Stack:
    """Processes started together and stopped together (last started, first stopped)."""

    name: str
    processes: list[Process] = field(default_factory=list)
    endpoints: dict[str, str] = field(default_factory=dict)
    roles: dict[str, int] = field(default_factory=dict)  # role → pid, children included

    def start(self, role: str, argv: list[str], logs: Path, env: dict[str, str] | None = None) -> Process:
        """In the harness's own session, like every other process of the run: Linux's autogroup
        scheduler gives each session an equal share of a busy machine, so a server in a session of its
        own would get more CPU than the in-process baseline it is compared with."""
        log = (logs / f"{self.name}-{role}.log").open("wb")
        popen = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env or child_env(), cwd=REPO)
        process = Process(role, popen, log)
        self.processes.append(process)
        self.roles[role] = popen.pid
        return process

    def memory_kb(self) -> dict[str, dict[str, int]]:
        return {role: proc_memory_kb(pid) for role, pid in self.roles.items()}

    def stop(self, grace_s: float = 20.0) -> None:
        for p in reversed(self.processes):
            if p.popen.poll() is None:
                p.popen.send_signal(signal.SIGTERM)
        end = time.monotonic() + grace_s
        for p in reversed(self.processes):
            try:
                p.popen.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait()
            p.log.close()


def _pythonpath() -> str:
    """The repository, for `benchmarks.*`."""
    return os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": _pythonpath()}


def vss_command() -> list[str]:
    script = Path(sys.executable).parent / "vss"
    return [str(script)] if script.exists() else [sys.executable, "-m", "vss_cli.main"]


def start_vss_run(spec_path: Path, name: str, logs: Path, *, ready_timeout_s: float = 300.0,
                  via_vss_run: bool = False, processes: str | None = None) -> Stack:
    """Our served path on free ports, as `vss run` serves it (vss_api.serving_flags: one process that runs the
    model where the operator renders one container, else the predictor, then the transformer), with its command
    lines, as children of this process. `processes` (single | two) overrides the spec's `predictor.processes`.
    With `via_vss_run`, `vss run FILE` itself starts them, each in a session of its own (see `Stack.start` for
    why that is not the default). `roles` names the processes: `server`, or `predictor` and `transformer`."""
    from vss_api.serving_flags import predictor_args, single_process, single_process_args, transformer_args
    from vss_api.vssmodel import Processes, VSSModel

    model = VSSModel.from_yaml_file(spec_path)
    if processes is not None:
        model.spec.predictor.processes = Processes(processes)
        spec_path = logs / f"{spec_path.stem}-{processes}.yaml"
        spec_path.write_text(yaml.safe_dump(model.model_dump(mode="json", by_alias=True, exclude_none=True),
                                            sort_keys=False))
    http_port, grpc_port = free_port(), free_port()
    stack = Stack("vss" if processes is None else f"vss-{processes}")
    try:
        if via_vss_run:
            process = stack.start("vss-run", [*vss_command(), "run", str(spec_path), "--http-port",
                                              str(http_port), "--grpc-port", str(grpc_port)], logs)
            wait_ready(f"http://127.0.0.1:{http_port}/v2/models/{name}/ready", [process], ready_timeout_s)
            for child in children_of(process.pid):
                line = cmdline(child)
                if "vss_predictors" in line:
                    stack.roles["predictor"] = child
                elif "vss_transformers" in line:
                    stack.roles["transformer"] = child
                elif "vss_cli.single_process" in line:
                    stack.roles["server"] = child
            del stack.roles["vss-run"]
        else:
            from vss_cli.run import local_model_path

            spec = model.spec
            version = spec.served_version()
            model_file = local_model_path(version.storage_uri, spec_path.resolve().parent)
            if single_process(spec):
                server = stack.start("server", [
                    sys.executable, "-m", "vss_cli.single_process",
                    *single_process_args(spec, version, str(model_file), http_port, grpc_port, model_name=name)],
                    logs)
                wait_ready(f"http://127.0.0.1:{http_port}/v2/models/{name}/ready", [server], ready_timeout_s)
            else:
                p_http, p_grpc = free_port(), free_port()
                predictor = stack.start("predictor", [
                    sys.executable, "-m", "vss_predictors",
                    *predictor_args(spec, version, str(model_file), p_http, p_grpc, model_name=name)], logs)
                wait_ready(f"http://127.0.0.1:{p_http}/v2/models/{name}/ready", [predictor], ready_timeout_s)
                transformer = stack.start("transformer", [
                    sys.executable, "-m", "vss_transformers",
                    *transformer_args(spec, name, f"127.0.0.1:{p_grpc}", f"127.0.0.1:{p_http}", http_port,
                                      grpc_port)], logs)
                wait_ready(f"http://127.0.0.1:{http_port}/v2/models/{name}/ready", [transformer],
                           ready_timeout_s)
    except Exception:
        stack.stop()
        raise
    stack.endpoints = {"grpc": f"127.0.0.1:{grpc_port}", "rest": f"127.0.0.1:{http_port}"}
    return stack


def start_kserve_docs(model_path: Path, name: str, task: str, names: str, logs: Path, *,
                      ready_timeout_s: float = 300.0) -> Stack:
    """The docs' predictor, and the docs' transformer twice in front of it: v1 JSON and grpc-v2."""
    stack = Stack("docs")
    p_http, p_grpc = free_port(), free_port()
    try:
        predictor = stack.start("predictor", [
            sys.executable, str(BASELINES / "kserve_docs_predictor.py"), "--model_name", name,
            "--model_path", str(model_path), "--http_port", str(p_http), "--grpc_port", str(p_grpc),
            "--grpc_max_receive_message_length", str(1 << 30), "--grpc_max_send_message_length", str(1 << 30)],
            logs)
        wait_ready(f"http://127.0.0.1:{p_http}/v2/models/{name}/ready", [predictor], ready_timeout_s)
        for protocol, host in (("v1", f"127.0.0.1:{p_http}"), ("grpc-v2", f"127.0.0.1:{p_grpc}")):
            t_http, t_grpc = free_port(), free_port()
            transformer = stack.start(f"transformer-{protocol}", [
                sys.executable, str(BASELINES / "kserve_docs_transformer.py"), "--model_name", name,
                "--task", task, "--names", names, "--predictor_host", host, "--predictor_protocol", protocol,
                "--http_port", str(t_http), "--grpc_port", str(t_grpc)], logs)
            wait_ready(f"http://127.0.0.1:{t_http}/v2/models/{name}/ready", [transformer], ready_timeout_s)
            stack.endpoints[protocol] = f"127.0.0.1:{t_http}"
    except Exception:
        stack.stop()
        raise
    return stack


def start_ultralytics_fastapi(model_path: Path, logs: Path, *, ready_timeout_s: float = 300.0) -> Stack:
    """The peer a user would write instead (benchmarks/peers/ultralytics_app.py): Ultralytics' `predict` behind
    FastAPI, one uvicorn worker, in the peer's own virtualenv (made first if missing), offline."""
    from benchmarks.peers import ultralytics_env

    python = ultralytics_env.ensure()
    port = free_port()
    env = {**ultralytics_env.offline_env(logs.parent / "yolo-config"), "PYTHONUNBUFFERED": "1",
           "YOLO_MODEL": str(model_path)}
    stack = Stack("ultralytics")
    try:
        server = stack.start("fastapi", [str(python), "-m", "uvicorn", "--app-dir", str(REPO / "benchmarks" / "peers"),
                                         "ultralytics_app:app", "--host", "127.0.0.1", "--port", str(port),
                                         "--workers", "1", "--log-level", "warning",
                                         # uvicorn drops a connection idle 5 s, which a paired turn on a
                                         # loaded machine can outlast; the clients keep theirs open
                                         "--timeout-keep-alive", "300"], logs, env=env)
        wait_ready(f"http://127.0.0.1:{port}/health", [server], ready_timeout_s)
    except Exception:
        stack.stop()
        raise
    stack.endpoints = {"fastapi": f"127.0.0.1:{port}"}
    return stack


def ultralytics_export(folder: Path) -> Path:
    """The YOLOv8n ONNX export Ultralytics' own exporter makes offline from its model YAML (random init),
    made once into `folder` in the peer's virtualenv (benchmarks/peers/ultralytics_export.py)."""
    from benchmarks.peers import ultralytics_env

    path = folder / "yolov8n.onnx"
    if not path.is_file():
        python = ultralytics_env.ensure()
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([str(python), str(REPO / "benchmarks" / "peers" / "ultralytics_export.py"), str(folder)],
                              capture_output=True, text=True, cwd=folder,
                              env=ultralytics_env.offline_env(folder / "yolo-config"), timeout=900)
        if done.returncode != 0 or not path.is_file():
            raise RuntimeError(f"Ultralytics' export failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return path
