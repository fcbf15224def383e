"""hack/build-test-binaries.sh says which binary it builds, n of N, the time elapsed, and (from the last build on
the machine) an estimate of what is left. `go` is a stand-in that writes an empty executable for `go build`:
the real builds take many minutes and are timed by the script itself."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "hack" / "build-test-binaries.sh"

FAKE_GO = """#!/usr/bin/env bash
case "$1" in
  env) echo go1.0-fake ;;
  build) while [[ "$1" != "-o" ]]; do shift; done; printf '#!/bin/sh\\n' >"$2"; chmod +x "$2" ;;
  *) ;;
esac
"""


def _run(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    tools = tmp_path / "tools"
    tools.mkdir(exist_ok=True)
    go = tools / "go"
    go.write_text(FAKE_GO)
    go.chmod(go.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{tools}:{os.environ['PATH']}", "VSS_CACHE": str(tmp_path / "cache")}
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120, check=True)


def test_each_binary_is_announced_n_of_n_with_the_time_elapsed_and_then_an_estimate(tmp_path: Path) -> None:
    first = _run(tmp_path)
    announced = re.findall(r"\[(\d)/7\] (\S+): building .*, (\d+)s elapsed(.*)", first.stderr)
    assert [(n, name) for n, name, _, _ in announced] == [
        ("1", "etcd"), ("2", "kubectl"), ("3", "helm"), ("4", "kube-apiserver"), ("5", "kube-controller-manager"),
        ("6", "kube-scheduler"), ("7", "kserve-manager")]
    assert all(estimate == "" for *_, estimate in announced), "no estimate without an earlier build"
    bin_dir = Path(first.stdout.strip().splitlines()[-1])
    assert sorted(p.name for p in bin_dir.iterdir()) == sorted(
        ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "helm", "kserve-manager"])

    shutil.rmtree(bin_dir)  # the next build on this machine knows how long each one took
    second = _run(tmp_path)
    estimates = re.findall(r"building .*elapsed, ~(\d+)s left \(the last build here\)", second.stderr)
    assert len(estimates) == 7, second.stderr
    assert [int(s) for s in estimates] == sorted((int(s) for s in estimates), reverse=True)
