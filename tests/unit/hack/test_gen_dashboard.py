"""hack/gen_dashboard.py and the dashboard it writes into the chart: the committed JSON is exactly what the
generator builds (nobody edits it by hand), it has the panels the docs list, every query filters by the
template variables and selects only series the processes export. That each query returns series from real
processes is tests/integration/test_dashboard_queries.py's."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.dashboard import DASHBOARD, ROOT, committed, generator, panel_queries
from tests.support.exported_metrics import exported_series, metric_names

PANELS = ["Request rate", "Error ratio", "p50 latency by stage", "p95 latency by stage", "p99 latency by stage",
          "Batch size", "Queue depth", "GPU memory", "Rollout phase", "Model ready", "Canary weight",
          "Traffic split"]


def test_the_committed_dashboard_is_what_the_generator_writes_byte_for_byte() -> None:
    assert DASHBOARD.read_text() == generator().render(), "run: python hack/gen_dashboard.py"


def test_check_mode_fails_on_a_stale_file_and_passes_on_a_fresh_one(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    stale = tmp_path / "dashboard.json"
    stale.write_text(DASHBOARD.read_text().replace("Request rate", "Requests"))
    gen = generator()

    assert gen.main(["--check", "--output", str(stale)]) == 1
    assert "out of date" in capsys.readouterr().err
    assert gen.main(["--output", str(stale)]) == 0
    assert gen.main(["--check", "--output", str(stale)]) == 0
    assert stale.read_text() == DASHBOARD.read_text()


def test_the_panels_are_the_ones_the_docs_list() -> None:
    dashboard = committed()
    titles = [p["title"] for p in dashboard["panels"] if p["type"] != "row"]
    doc = (ROOT / "docs" / "observability.md").read_text()

    assert titles == PANELS
    assert [t for t in titles if f"| {t} |" not in doc] == []
    assert dashboard["uid"] == "vss-serving"


def test_template_variables_namespace_model_version_component_and_the_datasource() -> None:
    variables = {v["name"]: v for v in committed()["templating"]["list"]}

    assert list(variables) == ["datasource", "namespace", "model", "version", "component"]
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "model", "version"):
        assert variables[name]["includeAll"] and variables[name]["multi"] and variables[name]["allValue"] == ".*"
    assert variables["component"]["current"]["value"] == "predictor"


def test_every_query_filters_by_the_variables_and_selects_exported_series() -> None:
    queries = panel_queries(committed())
    exported = exported_series()

    assert {q.panel for q in queries} == set(PANELS)
    for query in queries:
        assert 'namespace=~"$namespace"' in query.expr and 'model_name=~"$model"' in query.expr, query
        names = metric_names(query.expr)
        assert names and names <= exported, (query.panel, names - exported)
        assert "{{model_name}}" in query.legend, query  # every series says whose it is


def test_every_panel_reads_the_datasource_variable() -> None:
    for panel in committed()["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"]), panel["title"]


def test_only_the_gpu_memory_panel_needs_a_gpu() -> None:
    specs = [spec for _, row in generator().ROWS for spec in row]

    assert [s.title for s in specs] == PANELS
    assert [s.title for s in specs if s.gpu_only] == ["GPU memory"]
