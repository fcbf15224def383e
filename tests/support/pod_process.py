"""The first process of one container started by tests/support/node_agent.py, inside the Pod's network namespace.

Run as ``ip netns exec NS unshare --mount --propagation private python pod_process.py SPEC_JSON``: in its own
mount namespace it bind-mounts each volume onto the container's mount path (read-only where the Pod says so),
changes to the working directory and execs the container's argv with its environment, so the process is the
container's own command and its exit code is the container's. A command that cannot be found exits 127, as a
container runtime's shell would report it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def _mount(source: str, target: str, read_only: bool) -> None:
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target) or "/", exist_ok=True)
        if not os.path.exists(target):
            open(target, "a").close()
    subprocess.run(["mount", "--bind", source, target], check=True)
    if read_only:
        subprocess.run(["mount", "-o", "remount,bind,ro", target], check=True)


def main() -> int:
    spec = json.loads(sys.argv[1])
    for mount in spec["mounts"]:
        _mount(mount["source"], mount["target"], bool(mount["readOnly"]))
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
