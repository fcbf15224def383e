"""Builds the chart's Grafana dashboard with grafana-foundation-sdk and writes it to
charts/vss-serving/files/dashboards/vss-serving.json (the chart's ConfigMap carries that file).

    python hack/gen_dashboard.py           # write the file
    python hack/gen_dashboard.py --check   # exit 1 when the committed file is not what this script builds

The JSON is generated, never edited by hand: tests/unit/hack/test_gen_dashboard.py fails when the committed
file differs from what this script writes, and tests/integration/test_dashboard_queries.py executes every
panel's PromQL against a real Prometheus scraping real serving processes and the operator.

The metrics are the ones the processes export: `inference_*` and `gpu_memory_usage_bytes` (vss_api.metrics;
the predictor and the transformer), `vss_model_*` (vss_operator.metrics; the operator's leader). The `namespace`
label comes from the scrape (Kubernetes service discovery, a PodMonitor) on the serving series and from the
operator itself on the `vss_model_*` series (its ServiceMonitor keeps it: honorLabels).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, stat, statetimeline, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "charts" / "vss-serving" / "files" / "dashboards" / "vss-serving.json"
UID = "vss-serving"

DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
# The serving series: the selector every data-plane panel starts from. `component` is on the requests and the
# durations only; the batch size, queue depth and GPU memory are the predictor's own.
SERVING = 'namespace=~"$namespace", model_name=~"$model", version=~"$version"'
BY_COMPONENT = f'{SERVING}, component=~"$component"'
MODEL = 'namespace=~"$namespace", model_name=~"$model"'
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class PanelSpec:
    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str
    kind: str = "timeseries"  # timeseries | stat | state
    width: int = 12
    mappings: tuple[model.ValueMap, ...] = field(default_factory=tuple)
    # Series appear only on machines with an NVIDIA driver (vss_api.serving_metrics.track_gpu_memory).
    gpu_only: bool = False


def quantile(q: float) -> Query:
    buckets = f"inference_duration_seconds_bucket{{{BY_COMPONENT}}}"
    return Query(f"histogram_quantile({q:g}, sum by (le, model_name, version, component, stage) "
                 f"(rate({buckets}[{RATE}])))", "{{model_name}} {{version}} {{component}}/{{stage}}")


def ratio(status: str) -> str:
    errors = f'inference_requests_total{{{BY_COMPONENT}, status="{status}"}}'
    total = f"inference_requests_total{{{BY_COMPONENT}}}"
    by = "sum by (model_name, version, component)"
    return f"{by} (rate({errors}[{RATE}]))\n/\n{by} (rate({total}[{RATE}]))"


READY_MAP = model.ValueMap(options={
    "0": model.ValueMappingResult(text="Not ready", color="red", index=0),
    "1": model.ValueMappingResult(text="Ready", color="green", index=1)})

ROWS: tuple[tuple[str, tuple[PanelSpec, ...]], ...] = (
    ("Traffic", (
        PanelSpec("Request rate", "Requests per second by outcome: success, client_error (the caller's: a bad "
                  "input, a deadline it set), server_error (the model's).",
                  (Query(f"sum by (model_name, version, component, status) "
                         f"(rate(inference_requests_total{{{BY_COMPONENT}}}[{RATE}]))",
                         "{{model_name}} {{version}} {{component}} {{status}}"),),
                  "reqps"),
        PanelSpec("Error ratio", "Share of requests that ended in a server error (the canary analysis' error "
                  "rate) and in a client error.",
                  (Query(ratio("server_error"), "{{model_name}} {{version}} {{component}} server errors"),
                   Query(ratio("client_error"), "{{model_name}} {{version}} {{component}} client errors")),
                  "percentunit"),
    )),
    ("Latency by stage", (
        PanelSpec("p50 latency by stage", "Median time per request and stage: the predictor's predict; the "
                  "transformer's preprocess, predict (its call to the predictor), postprocess and total.",
                  (quantile(0.5),), "s", width=8),
        PanelSpec("p95 latency by stage", "95th percentile per stage (the canary analysis judges the stage that "
                  "spans a request: predictor/predict or transformer/total).", (quantile(0.95),), "s", width=8),
        PanelSpec("p99 latency by stage", "99th percentile per stage.", (quantile(0.99),), "s", width=8),
    )),
    ("Batching and resources", (
        PanelSpec("Batch size", "Rows per runtime call after dynamic batching: the mean and the 95th percentile.",
                  (Query(f"sum by (model_name, version) (rate(inference_batch_size_sum{{{SERVING}}}[{RATE}]))\n/\n"
                         f"sum by (model_name, version) (rate(inference_batch_size_count{{{SERVING}}}[{RATE}]))",
                         "{{model_name}} {{version}} mean"),
                   Query(f"histogram_quantile(0.95, sum by (le, model_name, version) "
                         f"(rate(inference_batch_size_bucket{{{SERVING}}}[{RATE}])))",
                         "{{model_name}} {{version}} p95")),
                  "short", width=8),
        PanelSpec("Queue depth", "Requests waiting in the predictors' batchers, not yet running (the most in each "
                  "interval, summed over replicas); a full queue (maxQueueSize) answers 503.",
                  (Query(f"sum by (model_name, version) (max_over_time(inference_queue_depth{{{SERVING}}}[{RATE}]))",
                         "{{model_name}} {{version}}"),),
                  "short", width=8),
        PanelSpec("GPU memory", "GPU memory held by the predictor processes, per device (read from NVML at "
                  "scrape time; no series on CPU predictors).",
                  (Query(f"sum by (model_name, version, device) (gpu_memory_usage_bytes{{{SERVING}}})",
                         "{{model_name}} {{version}} {{device}}"),),
                  "bytes", width=8, gpu_only=True),
    )),
    ("Rollout", (
        PanelSpec("Rollout phase", "The VSSModel's phase as the operator wrote it: Stable, Progressing (a canary "
                  "rollout), Promoted, RolledBack (the canary failed its analysis; the stable version serves), "
                  "Failed.",
                  (Query(f"max by (model_name, phase) (vss_model_phase{{{MODEL}}}) == 1",
                         "{{model_name}}: {{phase}}"),),
                  "none", kind="state", width=12),
        PanelSpec("Model ready", "The VSSModel's Ready condition: the InferenceServices (predictor, transformer) "
                  "of the versions that take traffic are ready.",
                  (Query(f"max by (model_name) (vss_model_ready{{{MODEL}}})", "{{model_name}}"),),
                  "none", kind="stat", width=4, mappings=(READY_MAP,)),
        PanelSpec("Canary weight", "Percent of requests routed to the canary version (0 while it initializes or "
                  "after a rollback).",
                  (Query(f'max by (model_name, version) (vss_model_traffic_weight{{{SERVING}, role="canary"}})',
                         "{{model_name}} {{version}}"),),
                  "percent", kind="stat", width=8),
        PanelSpec("Traffic split", "Percent of requests routed to each version, stable and canary, over time.",
                  (Query(f"max by (model_name, version, role) (vss_model_traffic_weight{{{SERVING}}})",
                         "{{model_name}} {{version}} ({{role}})"),),
                  "percent", width=24),
    )),
)


def _target(query: Query, ref: str) -> prometheus.Dataquery:
    return (prometheus.Dataquery().expr(query.expr).legend_format(query.legend).ref_id(ref)
            .datasource(DATASOURCE).range())


def _panel(spec: PanelSpec) -> timeseries.Panel | stat.Panel | statetimeline.Panel:
    panel: timeseries.Panel | stat.Panel | statetimeline.Panel
    if spec.kind == "timeseries":
        panel = (timeseries.Panel().line_width(1).fill_opacity(10).show_points(common.VisibilityMode.NEVER)
                 .legend(common_builder.VizLegendOptions().display_mode(common.LegendDisplayMode.TABLE)
                         .placement(common.LegendPlacement.BOTTOM).show_legend(True)))
    elif spec.kind == "stat":
        panel = (stat.Panel().color_mode(common.BigValueColorMode.VALUE)
                 .reduce_options(common_builder.ReduceDataOptions().calcs(["lastNotNull"]).values(False)))
    elif spec.kind == "state":
        panel = statetimeline.Panel().show_value(common.VisibilityMode.NEVER).merge_values(True)
    else:
        raise ValueError(f"unknown panel kind {spec.kind!r}")
    panel = (panel.title(spec.title).description(spec.description).datasource(DATASOURCE).unit(spec.unit)
             .height(8).span(spec.width))
    if spec.mappings:
        panel = panel.mappings(list(spec.mappings))
    for index, query in enumerate(spec.queries):
        panel = panel.with_target(_target(query, chr(ord("A") + index)))
    return panel


def _label_variable(name: str, label: str, query: str) -> db.QueryVariable:
    return (db.QueryVariable(name).label(label).query(query).datasource(DATASOURCE)
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(model.VariableSort.ALPHABETICAL_ASC)
            .multi(True).include_all(True).all_value(".*")
            .current(model.VariableOption(selected=True, text="All", value="$__all")))


def build() -> model.Dashboard:
    dashboard = (
        db.Dashboard("VSS serving").uid(UID).tags(["vss-serving"]).editable().refresh("30s")
        .time("now-1h", "now").timezone("browser").tooltip(model.DashboardCursorSync.CROSSHAIR)
        .description("Requests, errors, latency by stage, batching, queue depth and GPU memory of the VSSModels' "
                     "serving processes, per model and version, with the operator's rollout phase and traffic "
                     "weights. Generated by hack/gen_dashboard.py.")
        .with_variable(db.DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(_label_variable("namespace", "Namespace", "label_values(inference_requests_total, namespace)"))
        .with_variable(_label_variable(
            "model", "Model", 'label_values(inference_requests_total{namespace=~"$namespace"}, model_name)'))
        .with_variable(_label_variable(
            "version", "Version",
            'label_values(inference_requests_total{namespace=~"$namespace", model_name=~"$model"}, version)'))
        .with_variable(
            db.CustomVariable("component").label("Component").values("predictor,transformer").multi(True)
            .include_all(True).all_value("predictor|transformer")
            .current(model.VariableOption(selected=True, text="predictor", value="predictor")))
    )
    for title, panels in ROWS:
        dashboard = dashboard.with_row(db.Row(title))
        for spec in panels:
            dashboard = dashboard.with_panel(_panel(spec))
    return dashboard.build()


def render() -> str:
    """The dashboard's JSON as committed: sorted keys, two-space indent, a final newline."""
    return json.dumps(build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail when the committed file is out of date")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not args.output.exists() or args.output.read_text() != text:
            print(f"{args.output} is out of date: run python hack/gen_dashboard.py", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
