"""The first process of one container started by tests/support/node_agent.py, inside the Pod's network namespace.

Run as ``ip netns exec NS unshare --mount --propagation private python pod_process.py SPEC_JSON``: in its own
mount namespace it bind-mounts each volume onto the container's mount path (read-only where the Pod says so),
changes to the working directory and execs the container's argv with its environment, so the process is the
container's own command and its exit code is the container's. A command that cannot be found exits 127, as a
container runtime's shell would report it.

Every source is opened before the first mount and mounted through its file descriptor, as runc does: a mount
onto ``/tmp`` (an emptyDir, say) would otherwise hide the sources of the mounts after it, which live under the
agent's working directory in the host's ``/tmp``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import stat
import sys

MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _sys_mount(source: str | None, target: str, flags: int) -> None:
    if _libc.mount(source.encode() if source else None, target.encode(), None, flags, None) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {source} on {target}: {os.strerror(errno)}")


def _mount(fd: int, target: str, read_only: bool) -> None:
    if stat.S_ISDIR(os.fstat(fd).st_mode):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target) or "/", exist_ok=True)
        if not os.path.exists(target):
            open(target, "a").close()
    _sys_mount(f"/proc/self/fd/{fd}", target, MS_BIND)
    if read_only:
        _sys_mount(None, target, MS_BIND | MS_REMOUNT | MS_RDONLY)


def main() -> int:
    spec = json.loads(sys.argv[1])
    fds = [os.open(m["source"], os.O_PATH) for m in spec["mounts"]]
    for fd, mount in zip(fds, spec["mounts"], strict=True):
        _mount(fd, mount["target"], bool(mount["readOnly"]))
    for fd in fds:
        os.close(fd)
    os.chdir(spec["workingDir"] or "/")
    argv: list[str] = spec["argv"]
    env: dict[str, str] = spec["env"]
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        print(f"pod_process: cannot exec {argv[0]!r}: {exc}", file=sys.stderr)
        return 127 if isinstance(exc, FileNotFoundError) else 126


if __name__ == "__main__":
    sys.exit(main())
