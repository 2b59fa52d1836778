"""bentos/monitoring: the alert rules and the Prometheus config pass promtool, the rules' unit tests pass and cover
every alert firing and quiet, the committed Grafana dashboard is what dashboard.py generates, and every metric and
label that alerts and dashboard use is one the service exports."""
from __future__ import annotations
import importlib.util, json, re, shutil, subprocess
from pathlib import Path
from urllib.parse import urlparse
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from recnb.serve import monitoring

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "bentos" / "monitoring"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not on PATH: run scripts/install-system.sh (Debian package `prometheus`)")

ALERTS = {"SearchP99LatencyHigh", "HighErrorRatio", "TooManyRequests429", "QueryDrift", "OperationalAnomaly",
          "RerankFallbacks", "ServiceDown"}
SCRAPE_LABELS = {"job", "instance"}  # added by Prometheus to every scraped series
# What the service exports, with each metric's labels: recnb's own, read from recnb.serve.monitoring's prometheus_client
# metrics, and BentoML 1.4's (observed on a running `bentoml serve`, /metrics). Histograms also expose _bucket (with
# `le`), _count and _sum.
RECNB_METRICS = {metric._name + ("_total" if metric._type == "counter" else ""): set(metric._labelnames)
                 for metric in vars(monitoring).values() if isinstance(metric, MetricWrapperBase)}
BENTOML_LABELS = {"runner_name", "service_name", "service_version"}
BENTOML_METRICS = {
    "bentoml_service_request_duration_seconds": BENTOML_LABELS | {"endpoint", "http_response_code"},
    "bentoml_service_request_total": BENTOML_LABELS | {"endpoint", "http_response_code"},
    "bentoml_service_request_in_progress": BENTOML_LABELS | {"endpoint"},
    "bentoml_service_last_request_timestamp_seconds": BENTOML_LABELS | {"pid"},
}
HISTOGRAMS = {m._name for m in vars(monitoring).values() if isinstance(m, MetricWrapperBase) and m._type == "histogram"} | {
    "bentoml_service_request_duration_seconds"}
PROMETHEUS_METRICS = {"up": set()}  # written by Prometheus for each target


def series_labels() -> dict[str, set[str]]:
    "Every series name a query may select, with the labels it has."
    known = {}
    for name, labels in {**RECNB_METRICS, **BENTOML_METRICS, **PROMETHEUS_METRICS}.items():
        known[name] = labels | SCRAPE_LABELS
        if name in HISTOGRAMS:
            known.update({f"{name}_bucket": labels | SCRAPE_LABELS | {"le"}, f"{name}_count": labels | SCRAPE_LABELS,
                          f"{name}_sum": labels | SCRAPE_LABELS})
            del known[name]
    return known


KNOWN = series_labels()

# PromQL, just enough to find what a query selects: strings and label matchers hold no metric names, functions and
# aggregations are followed by "(", the rest are keywords.
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
SELECTOR = re.compile(r'([a-zA-Z_:][\w:]*)?\s*\{((?:[^{}"]|"(?:[^"\\]|\\.)*")*)\}')
MATCHER = re.compile(r'([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)')
GROUPING = re.compile(r'\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)')
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
            "inf", "nan", "atan2"}


def metric_names(expr: str) -> set[str]:
    "The series names a PromQL expression selects."
    names = {m.group(1) for m in SELECTOR.finditer(expr) if m.group(1)}
    rest = GROUPING.sub(" ", SELECTOR.sub(" ", STRING.sub('""', expr)))
    rest = re.sub(r"\[[^\]]*\]", " ", rest)  # ranges and subqueries: [5m], [$__rate_interval]
    rest = re.sub(r"(?<![\w:])\d+(\.\d*)?([eE][+-]?\d+)?(ms|[smhdwy])?\b", " ", rest)  # numbers, durations
    for m in re.finditer(r"(?<![\w:$])([a-zA-Z_:][\w:]*)(\s*\()?", rest):
        if not m.group(2) and m.group(1).lower() not in KEYWORDS:
            names.add(m.group(1))
    return names


def selected_labels(expr: str) -> dict[str, set[str]]:
    "For each series name selected with label matchers, the label names matched."
    found: dict[str, set[str]] = {}
    for m in SELECTOR.finditer(expr):
        if m.group(1):
            found.setdefault(m.group(1), set()).update(MATCHER.findall(STRING.sub('""', m.group(2))))
    return found


def grouping_labels(expr: str) -> set[str]:
    "Label names in by/without/on/ignoring/group_* clauses."
    return {label.strip() for m in GROUPING.finditer(expr) for label in m.group(2).split(",") if label.strip()}


def test_metric_name_parser():
    expr = ('histogram_quantile(0.99, sum by (service_name, le) (rate(bentoml_service_request_duration_seconds_bucket'
            '{endpoint="/search", http_response_code!="429"}[5m]))) > 0.05 or absent(up{job="x"}) '
            'unless on(arm) recnb_anomaly offset 5m == bool 1e3')
    assert metric_names(expr) == {"bentoml_service_request_duration_seconds_bucket", "up", "recnb_anomaly"}
    assert metric_names('max by (signal, arm) (recnb_query_drift_ratio{arm=~"$arm"}) > 1') == {"recnb_query_drift_ratio"}
    assert metric_names("sum(rate(recnb_results_returnd_total[$__rate_interval]))") == {"recnb_results_returnd_total"}
    assert selected_labels('rate(up{job="a", instance=~"b.*"}[1m])') == {"up": {"job", "instance"}}
    assert grouping_labels("sum by (endpoint, arm) (x) / on(arm) group_left(tag) y") == {"endpoint", "arm", "tag"}


def promtool(*args: str) -> str:
    done = subprocess.run([PROMTOOL, *args], cwd=MONITORING, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"promtool {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@needs_promtool
def test_rules_are_valid():
    assert "SUCCESS" in promtool("check", "rules", "alerts.yml")


@needs_promtool
def test_prometheus_config_is_valid():
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml")


@needs_promtool
def test_rule_unit_tests_pass():
    assert "SUCCESS" in promtool("test", "rules", "alerts.test.yml")


def alert_rules() -> dict[str, dict]:
    groups = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


def test_alerts_are_the_agreed_set_and_documented():
    rules = alert_rules()
    assert set(rules) == ALERTS
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
    assert rules["QueryDrift"]["for"] == "1m" and rules["SearchP99LatencyHigh"]["for"] == "5m"


def test_every_alert_is_unit_tested_firing_and_quiet():
    tests = yaml.safe_load((MONITORING / "alerts.test.yml").read_text())
    assert tests["rule_files"] == ["alerts.yml"]
    cases = [case for test in tests["tests"] for case in test.get("alert_rule_test", [])]
    for alert in ALERTS:
        own = [case for case in cases if case["alertname"] == alert]
        assert any(case.get("exp_alerts") for case in own), f"alerts.test.yml: no case where {alert} fires"
        assert any(not case.get("exp_alerts") for case in own), f"alerts.test.yml: no case where {alert} stays quiet"


def load_dashboard_module():
    spec = importlib.util.spec_from_file_location("recnb_dashboard", MONITORING / "dashboard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # needs grafana-foundation-sdk, a dev dependency
    return module


def test_dashboard_is_for_the_grafana_that_compose_runs():
    compose = yaml.safe_load((MONITORING / "compose.yaml").read_text())
    assert compose["services"]["grafana"]["image"] == f"grafana/grafana:{load_dashboard_module().GRAFANA}"


def dashboard() -> dict:
    return json.loads((MONITORING / "grafana" / "dashboard.json").read_text())


def test_dashboard_json_is_what_dashboard_py_writes():
    generated = load_dashboard_module().render()
    committed = (MONITORING / "grafana" / "dashboard.json").read_text()
    assert committed == generated, "grafana/dashboard.json is stale: run python bentos/monitoring/dashboard.py"


def dashboard_queries() -> list[tuple[dict, str]]:
    "(panel, PromQL) for every query of the dashboard."
    return [(panel, target["expr"]) for panel in dashboard()["panels"] for target in panel.get("targets", [])]


def alert_queries() -> list[str]:
    return [rule["expr"] for rule in alert_rules().values()]


def test_dashboard_panels():
    panels = dashboard()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    titles = " | ".join(p["title"] for p in panels).lower()
    for topic in ("latency", "throughput", "error", "429", "drift ratio", "top score", "results", "empty"):
        assert topic in titles, f"no panel about {topic}"
    latency = next(p for p in panels if p["title"].lower().startswith("latency"))
    assert {"0.5", "0.95", "0.99"} <= {re.match(r"histogram_quantile\(([\d.]+)", t["expr"]).group(1)
                                       for t in latency["targets"]}
    assert all("endpoint" in grouping_labels(t["expr"]) for t in latency["targets"]), "latency is per endpoint"


def test_dashboard_splits_recnb_metrics_per_arm():
    for panel, expr in dashboard_queries():
        for name in metric_names(expr):
            if "arm" in KNOWN.get(name, set()) and name.startswith("recnb_"):
                assert 'arm=~"$arm"' in expr, f"{panel['title']}: {name} is not filtered by the arm variable"
                assert "arm" in grouping_labels(expr) or panel.get("repeat") == "arm", \
                    f"{panel['title']}: {name} is not split per arm"


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_only_exported_metrics_and_labels_are_used(source):
    if source == "alerts":
        queries = alert_queries()
    else:
        queries = [expr for _, expr in dashboard_queries()]
        for variable in dashboard()["templating"]["list"]:
            if variable["type"] == "query":
                queries.append(re.sub(r"label_values\((\w+),\s*(\w+)\)", r"\1{\2=''}", variable["query"]))
    assert queries
    all_labels = set().union(*KNOWN.values())
    for expr in queries:
        names = metric_names(expr)
        unknown = names - KNOWN.keys()
        assert not unknown, f"{source}: {sorted(unknown)} is not a metric the service exports, in: {expr}"
        for name, labels in selected_labels(expr).items():
            assert labels <= KNOWN[name], f"{source}: {name} has no label {sorted(labels - KNOWN[name])}, in: {expr}"
        assert grouping_labels(expr) <= all_labels, f"{source}: unknown grouping label in: {expr}"


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path):
    "promtool parses every dashboard query (Grafana's variables replaced by values Prometheus accepts)."
    rules = [{"record": f"dashboard:query_{i}",
              "expr": expr.replace("$__rate_interval", "5m").replace("$arm", ".*")}
             for i, (_, expr) in enumerate(dashboard_queries())]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"a dashboard query is not valid PromQL:\n{done.stdout}\n{done.stderr}"


def test_compose_wires_service_prometheus_and_grafana():
    compose = yaml.safe_load((MONITORING / "compose.yaml").read_text())
    services = compose["services"]
    assert {"recnb-service", "prometheus", "grafana"} <= services.keys()
    for service in services.values():  # every file it mounts from here exists
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (MONITORING / source).exists(), f"compose.yaml mounts {source}, which does not exist"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["prometheus"]["volumes"]}
    assert mounts["/etc/prometheus/prometheus.yml"] == "./prometheus.yml"
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    for rule_file in config["rule_files"]:  # relative to the config file, there as here
        assert mounts[f"/etc/prometheus/{rule_file}"] == f"./{rule_file}"
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "recnb-service"]
    assert job["static_configs"][0]["targets"] == ["recnb-service:3000"], "Prometheus must scrape the compose service"
    assert "recnb-service" in alert_rules()["ServiceDown"]["expr"]
    datasource = yaml.safe_load((MONITORING / "grafana/provisioning/datasources/prometheus.yml").read_text())
    url = urlparse(datasource["datasources"][0]["url"])
    assert url.hostname in services and url.port == 9090
    provider = yaml.safe_load((MONITORING / "grafana/provisioning/dashboards/recnb.yml").read_text())
    grafana_mounts = {v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"]}
    path = provider["providers"][0]["options"]["path"]
    assert grafana_mounts[f"{path}/dashboard.json"] == "./grafana/dashboard.json"
