"""recnb's Grafana dashboard, written as code with grafana-foundation-sdk; `python bentos/monitoring/dashboard.py`
writes grafana/dashboard.json beside this file (`--check`: exit 1 if that file is not what this code writes).

Traffic, latency and errors come from BentoML's own metrics (per endpoint); results, scores, drift and anomalies
from recnb's (per endpoint and arm), and an experiment's answers, feedback and click-through per arm. The `arm`
variable filters every recnb panel.
"""
from __future__ import annotations
import argparse, json, sys
from importlib.metadata import version
from pathlib import Path

# grafana-foundation-sdk publishes one build per Grafana version as `EPOCH!GRAFANA_VERSION`; a plain
# `pip install grafana-foundation-sdk` picks the highest epoch, which may be another Grafana's (10.1 lacks names used
# here). compose.yaml runs this Grafana; pyproject pins the matching build.
GRAFANA = "11.6.0"
if not version("grafana-foundation-sdk").endswith(f"!{GRAFANA}"):
    raise ImportError(f"grafana-foundation-sdk {version('grafana-foundation-sdk')} is not the Grafana {GRAFANA} build: "
                      f"pip install 'grafana-foundation-sdk==1769699379!{GRAFANA}'")

from grafana_foundation_sdk.builders import common, heatmap, prometheus, table, timeseries
from grafana_foundation_sdk.builders.dashboard import (Dashboard, DatasourceVariable, QueryVariable, Row,
                                                       ThresholdsConfig)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (GraphThresholdsStyleMode, LegendDisplayMode, LegendPlacement,
                                                  LineInterpolation, SortOrder, TooltipDisplayMode)
from grafana_foundation_sdk.models.dashboard import (DashboardCursorSync, DataSourceRef, Threshold, ThresholdsMode,
                                                     VariableOption, VariableRefresh, VariableSort)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUTPUT = Path(__file__).parent / "grafana" / "dashboard.json"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"
# BentoML labels its metrics with the service class; probes and scrapes are not API traffic.
BENTO = 'service_name="RecnbService"'
API = f'{BENTO}, endpoint!~"/livez|/readyz|/healthz|/metrics"'
ARM = 'arm=~"$arm"'


def query(expr: str, legend: str, ref_id: str = "A") -> prometheus.Dataquery:
    "A range query for the dashboard's Prometheus."
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref_id).datasource(DATASOURCE)


def graph(title: str, description: str, unit: str, *queries: prometheus.Dataquery, width: int = 12,
          threshold: float | None = None, step: bool = False) -> timeseries.Panel:
    "A time series panel; `threshold` draws the alert's limit as a dashed red line."
    panel = (timeseries.Panel().title(title).description(description).unit(unit).datasource(DATASOURCE)
             .span(width).height(8).fill_opacity(5)
             .legend(common.VizLegendOptions().display_mode(LegendDisplayMode.TABLE)
                     .placement(LegendPlacement.BOTTOM).show_legend(True).calcs(["mean", "max", "lastNotNull"]))
             .tooltip(common.VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING)))
    for q in queries:
        panel = panel.with_target(q)
    if step:
        panel = panel.line_interpolation(LineInterpolation.STEP_AFTER)
    if threshold is not None:
        panel = (panel.thresholds_style(common.GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.DASHED))
                 .thresholds(ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(
                     [Threshold(value=None, color="green"), Threshold(value=threshold, color="red")])))
    return panel


def quantiles(metric: str, selector: str, by: str, legend: str, qs=(0.5, 0.95, 0.99)) -> list[prometheus.Dataquery]:
    "One query per quantile of a histogram, grouped `by` its labels."
    return [query(f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{{{selector}}}[{RATE}])))",
                  f"{legend} p{round(q * 100)}", ref_id=chr(ord("A") + i)) for i, q in enumerate(qs)]


def traffic_row() -> list:
    "BentoML's request metrics: latency, throughput, errors, rejections, requests in flight."
    latency = "bentoml_service_request_duration_seconds"
    return [
        Row("Traffic and latency (BentoML)"),
        graph("Latency p50 / p95 / p99 per endpoint",
              "Request duration from BentoML's histogram, 429s left out (rejected before any work). "
              "Dashed: SearchP99LatencyHigh's 50 ms on /search.", "s",
              *quantiles(latency, f'{BENTO}, endpoint!~"/livez|/readyz|/healthz|/metrics", http_response_code!="429"',
                         "endpoint", "{{endpoint}}"), threshold=0.05),
        graph("Throughput per endpoint", "API requests per second, every status code.", "reqps",
              query(f"sum by (endpoint) (rate(bentoml_service_request_total{{{API}}}[{RATE}]))", "{{endpoint}}")),
        graph("5xx error ratio per endpoint", "Share of requests answered 5xx (HighErrorRatio: over 5% for 5m).",
              "percentunit",
              query(f'sum by (endpoint) (rate(bentoml_service_request_total{{{API}, http_response_code=~"5.."}}[{RATE}]))'
                    f" / sum by (endpoint) (rate(bentoml_service_request_total{{{API}}}[{RATE}]))", "{{endpoint}}"),
              width=8, threshold=0.05),
        graph("429 rejections per second", "Requests refused past max_concurrency (TooManyRequests429: over 1/s).",
              "reqps",
              query(f'sum by (endpoint) (rate(bentoml_service_request_total{{{API}, http_response_code="429"}}[{RATE}]))',
                    "{{endpoint}}"), width=8, threshold=1),
        graph("Requests in flight", "Concurrent requests per endpoint, all pods.", "short",
              query(f"sum by (endpoint) (bentoml_service_request_in_progress{{{API}}})", "{{endpoint}}"), width=8),
    ]


def results_row() -> list:
    "recnb's result metrics per endpoint and arm: the served model, results, top scores, query lengths, the second stage."
    return [
        Row("Model and results (recnb, per arm)"),
        table.Panel().title("Served model").description("recnb_model_info: the model each pod serves, per arm.")
        .datasource(DATASOURCE).span(24).height(5)
        .with_target(query(f"max by (tag, run, dataset, arm) (recnb_model_info{{{ARM}}})", "")
                     .instant().format(PromQueryFormat.TABLE)),
        graph("Results returned per second", "Items returned, per endpoint and arm.", "short",
              query(f"sum by (endpoint, arm) (rate(recnb_results_returned_total{{{ARM}}}[{RATE}]))",
                    "{{endpoint}} {{arm}}")),
        graph("Empty results per second", "Requests that found nothing to return, per endpoint and arm.", "reqps",
              query(f"sum by (endpoint, arm) (rate(recnb_empty_results_total{{{ARM}}}[{RATE}]))",
                    "{{endpoint}} {{arm}}")),
        graph("Top score p10 / p50 / p90", "The best result's score per request: falling scores mean weaker matches.",
              "short", *quantiles("recnb_top_score", ARM, "endpoint, arm", "{{endpoint}} {{arm}}", qs=(0.1, 0.5, 0.9))),
        # One heatmap per chosen arm: a heatmap cannot show two distributions at once.
        heatmap.Panel().title("Top score distribution, arm $arm").description("recnb_top_score buckets over time.")
        .datasource(DATASOURCE).span(12).height(8).calculate(False).repeat("arm").repeat_direction("h").max_per_row(2)
        .with_target(query(f"sum by (le) (increase(recnb_top_score_bucket{{{ARM}}}[{RATE}]))", "{{le}}")
                     .format(PromQueryFormat.HEATMAP)),
        graph("Query length p50 / p95", "Characters per query, per arm.", "short",
              *quantiles("recnb_query_length_chars", ARM, "arm", "{{arm}}", qs=(0.5, 0.95))),
        graph("Second stage: queries re-ranked / fallen back per second",
              "recnb_rerank_queries_total of a two-stage model, per arm: fallback = kept the first stage's order because "
              "the batch's time budget had passed (alert RerankFallbacks).", "reqps",
              query(f"sum by (outcome, arm) (rate(recnb_rerank_queries_total{{{ARM}}}[{RATE}]))", "{{arm}} {{outcome}}")),
    ]


def drift_row() -> list:
    "Query drift against the packaged reference, and the operational anomaly detectors."
    return [
        Row("Drift and anomalies (recnb, per arm)"),
        graph("Query drift ratio per signal", "Statistic / calibrated threshold, worst pod (QueryDrift: over 1).",
              "short", query(f"max by (signal, arm) (recnb_query_drift_ratio{{{ARM}}})", "{{signal}} {{arm}}"),
              threshold=1),
        graph("Query drift statistic per signal", "The raw drift statistics, worst pod.", "short",
              query(f"max by (signal, arm) (recnb_query_drift{{{ARM}}})", "{{signal}} {{arm}}")),
        graph("Anomaly score", "How far latency and error rate are from their recent history.", "short",
              query(f"max by (series, arm) (recnb_anomaly_score{{{ARM}}})", "{{series}} {{arm}}")),
        graph("Anomaly flags", "1 while a detector flags its series (OperationalAnomaly).", "short",
              query(f"max by (series, arm) (recnb_anomaly{{{ARM}}})", "{{series}} {{arm}}"), step=True),
    ]


def experiment_row() -> list:
    "An experiment's arms: answers (with and without a shopper), feedback events and click-through."
    answers = f"sum by (arm) (rate(recnb_arm_answers_total{{{ARM}}}[{RATE}]))"
    clicks = f'sum by (arm) (rate(recnb_feedback_events_total{{{ARM}, event="click"}}[{RATE}]))'
    return [
        Row("Experiment (recnb, per arm)"),
        graph("Answers per second per arm", "recnb_arm_answers_total: `interleaved` is a team draft of two arms; "
              "assigned=false: requests without a shopper id, answered by the champion.", "reqps",
              query(f"sum by (arm, assigned) (rate(recnb_arm_answers_total{{{ARM}}}[{RATE}]))", "{{arm}} assigned={{assigned}}"),
              width=8),
        graph("Feedback events per second per arm", "Clicks, add-to-carts and purchases logged (repeats not counted), "
              "credited to the arm that showed the item.", "reqps",
              query(f"sum by (event, arm) (rate(recnb_feedback_events_total{{{ARM}}}[{RATE}]))", "{{arm}} {{event}}"), width=8),
        graph("Click-through per arm", "Clicks per answer of each arm of a split (an interleaved experiment credits clicks "
              "to arms but answers as `interleaved`: compare its arms' click rates). The verdict is `recnb ab report`'s.",
              "percentunit", query(f"{clicks} / {answers}", "{{arm}}"), width=8),
    ]


def build() -> dict:
    "The dashboard as Grafana's JSON model."
    dashboard = (
        Dashboard("recnb service").uid("recnb-service").tags(["recnb", "bentoml"])
        .description("recnb's BentoML service: traffic, latency and errors per endpoint; results, scores, query drift "
                     "and anomalies per arm. Alert rules: bentos/monitoring/alerts.yml.")
        .time("now-1h", "now").refresh("30s").timezone("browser").tooltip(DashboardCursorSync.CROSSHAIR).editable()
        .with_variable(DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
        .with_variable(QueryVariable("arm").label("arm").datasource(DATASOURCE)
                       .query("label_values(recnb_model_info, arm)").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
                       .sort(VariableSort.ALPHABETICAL_ASC).multi(True).include_all(True).all_value(".*")
                       .current(VariableOption(selected=True, text="All", value="$__all")))
    )
    panel_id = 0
    for item in [*traffic_row(), *results_row(), *drift_row(), *experiment_row()]:
        panel_id += 1
        if isinstance(item, Row):
            dashboard = dashboard.with_row(item.id(panel_id))
        else:
            dashboard = dashboard.with_panel(item.id(panel_id))
    return json.loads(json.dumps(dashboard.build(), cls=JSONEncoder))


def render() -> str:
    "The dashboard JSON exactly as written to grafana/dashboard.json."
    return json.dumps(build(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help=f"exit 1 if {OUTPUT.name} differs from this code")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT} is out of date: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
