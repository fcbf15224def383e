"""benchmarks/control_plane.py's measuring functions, on five VSSModels against the real apiserver and the real
operator process, so the benchmark (500 models, minutes) cannot rot unnoticed."""

from __future__ import annotations

import os
import time
from pathlib import Path

from benchmarks.control_plane import (
    TASKS,
    MemorySampler,
    OperatorUnderTest,
    converge,
    cpu_seconds,
    edit_seconds,
    idle_cpu_percent,
    memory_mb,
    model_manifests,
    settle,
)
from tests.support.apiserver import LocalCluster


def test_the_benchmark_times_five_models_to_their_children_and_statuses_and_an_edit(
        k8s_cluster: LocalCluster, k8s_namespace: str, tmp_path: Path) -> None:
    docs = model_manifests(5, k8s_namespace)
    operator = OperatorUnderTest(k8s_cluster, k8s_namespace, tmp_path / "operator.log").start()
    api = k8s_cluster.api_client()
    try:
        with MemorySampler(operator.pid, every_s=0.05) as rss:
            result = converge(k8s_cluster, api, k8s_namespace, docs, deadline_s=120)
            settled = settle(api, k8s_namespace, quiet_s=1.0, deadline_s=60)
        idle = idle_cpu_percent(operator.pid, 1.0)
        edit = edit_seconds(api, k8s_namespace, docs[2]["metadata"]["name"], max_replicas=4)
        rss_now, hwm = memory_mb(operator.pid)
    finally:
        api.close()
        operator.stop()

    assert {d["spec"]["task"] for d in docs} == set(TASKS)
    assert result.last.models == 5 and result.last.statuses == 5 and result.last.children_missing == 0
    assert result.children_s is not None and result.statuses_s is not None
    assert 0 < result.apply_s <= result.statuses_s
    assert settled is not None
    assert edit is not None and edit > 0
    assert rss.rss_mb and 20 < rss.peak_mb <= hwm
    assert 20 < rss_now <= hwm
    assert 0 <= idle < 100


def test_cpu_seconds_counts_what_a_process_spent_on_the_cpu() -> None:
    before = cpu_seconds(os.getpid())
    busy_until = time.process_time() + 0.3
    while time.process_time() < busy_until:
        pass

    assert cpu_seconds(os.getpid()) - before >= 0.25
