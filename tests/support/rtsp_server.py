"""A real RTSP server on loopback for the stream tests: GStreamer's gst-rtsp-server serving a clip file (H.264
MP4, e.g. from `vss_models.clips.write_clip`) at rtsp://127.0.0.1:<port>/<path>, run as a subprocess by Debian's
/usr/bin/python3 (it has python3-gi; the project's virtualenv does not) from `rtsp_server_main.py`.

It can be SIGKILLed mid-stream and restarted on the same port, with another clip (a camera that comes back at
another resolution). Starting waits, with a deadline, until the server answers an RTSP DESCRIBE for the path
with 200 (it listens and its pipeline builds). Missing GStreamer pieces raise `RtspServerError` with the reason:
the tests that need this server fail, they never skip."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

SYSTEM_PYTHON = Path("/usr/bin/python3")
MAIN = Path(__file__).with_name("rtsp_server_main.py")


class RtspServerError(RuntimeError):
    """The RTSP server could not be started (what is missing, or what it said)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def describe_status(host: str, port: int, path: str, timeout: float = 2.0) -> int | None:
    """The status code of an RTSP DESCRIBE for the path, or None when nothing answers."""
    request = (f"DESCRIBE rtsp://{host}:{port}/{path} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n"
               "User-Agent: vss-tests\r\n\r\n").encode()
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.sendall(request)
            reply = b""
            while b"\r\n" not in reply:
                chunk = conn.recv(4096)
                if not chunk:
                    return None
                reply += chunk
    except OSError:
        return None
    parts = reply.split(b"\r\n", 1)[0].split()
    return int(parts[1]) if len(parts) >= 2 and parts[0].startswith(b"RTSP/") and parts[1].isdigit() else None


class RtspServer:
    """One RTSP mount on one port for the test's whole life: `start`, `kill` (SIGKILL), `restart` (same port)."""

    def __init__(self, log_dir: Path, path: str = "cam", port: int | None = None) -> None:
        self.log_dir, self.path = log_dir, path.strip("/")
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.process: subprocess.Popen[bytes] | None = None
        self.clip: Path | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"rtsp://{self.host}:{self.port}/{self.path}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def log(self) -> Path:
        return self.log_dir / f"rtsp-server-{self.port}-{self.starts}.log"

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def start(self, clip: Path, *, loop: bool = False, encode: bool = False, deadline_s: float = 30.0) -> None:
        """Serve `clip`; returns once a DESCRIBE is answered with 200, raises `RtspServerError` otherwise.

        `loop` plays the clip again at its end (timestamps go on), else the session ends there; `encode`
        decodes and re-encodes it with x264 (zero latency), else its H.264 is only repacketised."""
        if self.running:
            raise RtspServerError(f"the RTSP server on port {self.port} is already running")
        if not SYSTEM_PYTHON.exists():
            raise RtspServerError(f"{SYSTEM_PYTHON} is missing: the RTSP server runs on Debian's python3 with "
                                  "python3-gi and gir1.2-gst-rtsp-server-1.0")
        if not clip.is_file():
            raise RtspServerError(f"no clip at {clip}")
        self.clip = clip
        end = time.monotonic() + deadline_s
        while True:
            self.starts += 1
            self.log_dir.mkdir(parents=True, exist_ok=True)
            command = [str(SYSTEM_PYTHON), str(MAIN), "--port", str(self.port), "--path", self.path,
                       "--clip", str(clip), *(["--loop"] if loop else []), *(["--encode"] if encode else [])]
            with self.log.open("wb") as sink:
                # Debian's python, its own site-packages: nothing of the project's virtualenv
                env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
                self.process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env,
                                                start_new_session=True)
            if self._wait_ready(end):
                return
            # it exited: the port still held by the killed one (retry until the deadline) or a real failure
            said = self.output()
            if "ERROR cannot listen" not in said or time.monotonic() > end:
                raise RtspServerError(f"the RTSP server exited with {self.process.returncode}: {said[-3000:]}")
            time.sleep(0.2)

    def _wait_ready(self, end: float) -> bool:
        """True once the mount answers 200; False if the process exited (the caller reads why)."""
        assert self.process is not None
        while True:
            if self.process.poll() is not None:
                return False
            if "READY" in self.output() and describe_status(self.host, self.port, self.path) == 200:
                return True
            if time.monotonic() > end:
                said = self.output()
                self.kill()
                raise RtspServerError(f"the RTSP server on port {self.port} did not answer DESCRIBE with 200 "
                                      f"before the deadline: {said[-3000:]}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL, as a crashed camera or server: no RTSP TEARDOWN, the TCP connections just die."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)  # a frozen one too: SIGKILL needs no SIGCONT
            self.process.wait(timeout=10)

    def freeze(self) -> None:
        """SIGSTOP: a hung server, its TCP connections open and silent (the kernel still accepts new ones)."""
        if self.running:
            assert self.process is not None
            os.killpg(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT: the hung server goes on (and answers what queued up meanwhile)."""
        if self.running:
            assert self.process is not None
            os.killpg(self.process.pid, signal.SIGCONT)

    def restart(self, clip: Path | None = None, *, loop: bool = False, encode: bool = False,
                deadline_s: float = 30.0) -> None:
        """Kill (if running) and serve again on the same port and path, `clip` or the one served before."""
        self.kill()
        chosen = clip or self.clip
        if chosen is None:
            raise RtspServerError("restart before any start: no clip to serve")
        self.start(chosen, loop=loop, encode=encode, deadline_s=deadline_s)

    def __enter__(self) -> RtspServer:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.kill()
