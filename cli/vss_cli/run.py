"""`vss run FILE`: serve a VSSModel on this machine, with no cluster, as its pod would: one process that runs
the model itself (`python -m vss_cli.single_process`) where the operator renders one container, else the predictor
and the transformer as two processes on loopback (`vss_api.serving_flags.single_process` decides for both). The
same flags as in a pod (from `vss_api.serving_flags`), so what runs here runs there."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from urllib.parse import urlparse

from vss_api.serving_flags import (
    CACHE_URL_ENV,
    predictor_args,
    single_process,
    single_process_args,
    transformer_args,
)
from vss_api.vssmodel import InvalidSpec, VSSModel


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


DEFAULT_MODEL_STORE = Path("models/artifacts")


def local_model_path(storage_uri: str, base: Path, store: Path = DEFAULT_MODEL_STORE) -> Path:
    """A local file for `storageUri`: a path (relative to the YAML's folder, then the working folder),
    a file:// URI, or for remote URIs (pvc://, s3://, ...) the file of the same name in the local model
    store, so one YAML serves both in a cluster and here."""
    parsed = urlparse(storage_uri)
    if parsed.scheme not in ("", "file"):
        name = Path(parsed.path).name
        candidate = store / name
        if name and candidate.is_file():
            return candidate.resolve()
        raise InvalidSpec(f"{storage_uri!r} is remote storage, which needs a cluster; locally vss run looks for "
                          f"{name or 'the file'} in the model store {store.resolve()} (build it with "
                          "`vss models build`), or give a local path")
    raw = Path(parsed.path if parsed.scheme == "file" else storage_uri).expanduser()
    for candidate in ([raw] if raw.is_absolute() else [base / raw, Path.cwd() / raw]):
        if candidate.is_file():
            return candidate.resolve()
    raise InvalidSpec(f"model file {storage_uri!r} not found (looked in {base} and {Path.cwd()}); "
                      "build the shipped models with `vss models build`")


def wait_ready(url: str, process: subprocess.Popen[bytes], deadline_s: float) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[2] if isinstance(process.args, list) else 'process'} "
                               f"exited with code {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:  # noqa: S310 - loopback
                if reply.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {deadline_s:.0f}s")


def stop(processes: list[subprocess.Popen[bytes]], grace_s: float = 15.0) -> None:
    for p in reversed(processes):  # transformer first, so it stops taking requests
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    end = time.monotonic() + grace_s
    for p in processes:
        try:
            p.wait(timeout=max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def check_cache_url(model: VSSModel, environ: Mapping[str, str]) -> None:
    """A VSSModel with `transformer.cache` names a Secret, which only a cluster has: locally the Redis URL comes
    from $VSS_CACHE_URL (e.g. redis://127.0.0.1:6379/0), which the transformer inherits."""
    cache = model.spec.transformer.cache
    if cache is not None and not environ.get(CACHE_URL_ENV):
        raise InvalidSpec(f"transformer.cache reads the Redis URL from Secret {cache.secret_ref.name!r} (key "
                          f"{cache.secret_ref.key!r}) in a cluster; locally set {CACHE_URL_ENV}, e.g. "
                          f"{CACHE_URL_ENV}=redis://127.0.0.1:6379/0, or remove transformer.cache")


def run_local(path: Path, http_port: int = 8080, grpc_port: int = 8081, *,
              model_store: Path = DEFAULT_MODEL_STORE, ready_timeout_s: float = 600.0) -> int:
    try:
        model = VSSModel.from_yaml_file(path)
        spec = model.spec
        version = spec.served_version()
        model_file = local_model_path(version.storage_uri, path.resolve().parent, model_store)
        check_cache_url(model, os.environ)
    except InvalidSpec as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return serve(model, model_file, http_port, grpc_port, ready_timeout_s=ready_timeout_s)


def _endpoints(name: str, http_port: int, grpc_port: int) -> str:
    return (f"  v2 REST  http://127.0.0.1:{http_port}/v2/models/{name}/infer\n"
            f"  v2 gRPC  127.0.0.1:{grpc_port}  (model {name})\n"
            f"  v1 JSON  http://127.0.0.1:{http_port}/v1/models/{name}:predict")


def _wait(processes: list[subprocess.Popen[bytes]], stopping: Callable[[], bool]) -> int:
    """Until a signal: 0; 1 as soon as a serving process exits on its own."""
    while not stopping():
        for p in processes:
            if p.poll() is not None:
                print(f"error: a serving process exited with code {p.returncode}", file=sys.stderr)
                return 1
        time.sleep(0.2)
    return 0


def serve(model: VSSModel, model_file: Path, http_port: int = 8080, grpc_port: int = 8081, *,
          ready_timeout_s: float = 600.0) -> int:
    """Serve `model` with the weights in `model_file` until SIGINT/SIGTERM: 0, or 1 when a process fails."""
    spec = model.spec
    version = spec.served_version()
    name = model.metadata.name
    p_http, p_grpc = free_port(), free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    stopping = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        if single_process(spec):
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "vss_cli.single_process",
                 *single_process_args(spec, version, str(model_file), http_port, grpc_port, model_name=name)],
                env=env, start_new_session=True))
            wait_ready(f"http://127.0.0.1:{http_port}/v2/models/{name}/ready", processes[0], ready_timeout_s)
            print(f"VSSModel {name} ({spec.task.value}, version {version.name}, {model_file.name}) is serving "
                  f"in one process:\n{_endpoints(name, http_port, grpc_port)}\n"
                  f"  metrics  http://127.0.0.1:{http_port}/metrics  (transformer and predictor)\n"
                  "Ctrl-C stops it.", flush=True)
            return _wait(processes, lambda: stopping)
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "vss_predictors",
             *predictor_args(spec, version, str(model_file), p_http, p_grpc, model_name=name)],
            env=env, start_new_session=True))
        wait_ready(f"http://127.0.0.1:{p_http}/v2/models/{name}/ready", processes[0], ready_timeout_s)
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "vss_transformers",
             *transformer_args(spec, name, f"127.0.0.1:{p_grpc}", f"127.0.0.1:{p_http}", http_port,
                               grpc_port)],
            env=env, start_new_session=True))
        wait_ready(f"http://127.0.0.1:{http_port}/v2/models/{name}/ready", processes[1], ready_timeout_s)
        print(f"VSSModel {name} ({spec.task.value}, version {version.name}, {model_file.name}) is serving:\n"
              f"{_endpoints(name, http_port, grpc_port)}\n"
              f"  metrics  http://127.0.0.1:{http_port}/metrics  (predictor: "
              f"http://127.0.0.1:{p_http}/metrics)\n"
              "Ctrl-C stops both processes.", flush=True)
        return _wait(processes, lambda: stopping)
    except (RuntimeError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        stop(processes)
        for s, handler in previous.items():
            signal.signal(s, handler)
