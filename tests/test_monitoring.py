"Monitoring against a real `bentoml serve` and a real Prometheus on 127.0.0.1: recnb's metrics, drift for off-distribution queries only, the drift alert."
import shutil, sys, time
from pathlib import Path
import httpx
import numpy as np
import pytest
import yaml
from conftest import ROOT, Process, dataset_dir, free_port, serve, served_parts

pytestmark = pytest.mark.integration  # a real bentoml serve and Prometheus

WINDOW = 40


@pytest.fixture(scope="module")
def monitored(packaged, tmp_path_factory):
    "The service with a 40-query drift window and 1 s anomaly intervals, scraped every second by Prometheus with recnb's alert rules."
    if not shutil.which("prometheus"): pytest.fail("the prometheus binary is missing: scripts/install-system.sh installs it")
    base = tmp_path_factory.mktemp("monitoring")
    service, url = serve(packaged, base / "serve.log", RECNB_DRIFT_WINDOW=str(WINDOW), RECNB_ANOMALY_INTERVAL_S="1")
    config = yaml.safe_load((ROOT / "bentos" / "monitoring" / "prometheus.yml").read_text())
    config["global"].update({"scrape_interval": "1s", "evaluation_interval": "1s"})
    config["rule_files"] = [str(ROOT / "bentos" / "monitoring" / "alerts.yml")]
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "recnb-service")
    job["static_configs"] = [{"targets": [url.removeprefix("http://")]}]
    config.pop("alerting", None)
    (base / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    try:
        prometheus = Process(["prometheus", f"--config.file={base / 'prometheus.yml'}", f"--storage.tsdb.path={base / 'tsdb'}",
                              f"--web.listen-address=127.0.0.1:{port}"], {}, base, base / "prometheus.log",
                             f"http://127.0.0.1:{port}/-/ready")
    except BaseException:
        service.stop(); raise
    try: yield {"service": url, "prometheus": f"http://127.0.0.1:{port}"}
    finally:
        prometheus.stop(); service.stop()


def search_all(url: str, queries: list[str]) -> None:
    for q in queries:
        answer = httpx.post(f"{url}/search", json={"query": q, "k": 10}, timeout=30)
        assert answer.status_code == 200, answer.text


def prometheus_value(prometheus: str, query: str) -> dict[str, float]:
    data = httpx.get(f"{prometheus}/api/v1/query", params={"query": query}, timeout=10).json()["data"]["result"]
    return {r["metric"].get("signal", ""): float(r["value"][1]) for r in data}


def drift_alerts(prometheus: str) -> list[dict]:
    alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == "QueryDrift"]


def wait_for(check, seconds: float = 30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if (value := check()): return value
        time.sleep(1)
    return check()


def test_false_alarm_rate_of_held_out_in_distribution_windows_is_low(packaged):
    "Every window of held-out test queries (never in the reference) against the service's own thresholds."
    from safetensors.torch import load_file
    from recnb.run.experiment import load_run_data
    from recnb.serve.monitoring import DriftMonitor, DriftReference
    package = packaged["path"]
    reference = load_file(str(package / "reference.safetensors"))
    drift = DriftReference(reference["query_vectors"], reference["top_scores"], window=WINDOW)
    queries = load_run_data(packaged["params"]).queries_in("test")["query"].tolist()
    encoder, index = served_parts(package).values()   # the package's own encoder and index, as the service ranks
    vectors = encoder.encode(queries)
    best = index.search(vectors, k=1).scores[:, 0].numpy()
    alarms = []
    for start in range(0, len(queries) - WINDOW + 1, 5):
        monitor = DriftMonitor(drift)
        ratios = monitor.ratios(monitor.observe(vectors[start:start + WINDOW], best[start:start + WINDOW]))
        alarms.append(max(ratios.values()) > 1)
    rate = float(np.mean(alarms))
    print(f"false-alarm rate over {len(alarms)} held-out windows of {WINDOW}: {rate:.3f}")
    assert rate <= 0.05, rate


def test_metrics_drift_and_the_drift_alert_in_a_real_prometheus(monitored, packaged):
    from recnb.data.datasets import load_dataset
    from recnb.run.experiment import load_run_data
    service, prometheus = monitored["service"], monitored["prometheus"]
    held_out = load_run_data(packaged["params"]).queries_in("test")["query"].tolist()[:WINDOW + 10]
    search_all(service, held_out)
    exposed = httpx.get(f"{service}/metrics", timeout=10).text
    for name in ("recnb_results_returned_total", "recnb_top_score_bucket", "recnb_query_length_chars_bucket",
                 "recnb_model_info", "recnb_query_drift_ratio", "recnb_anomaly_score", "bentoml_service_request_total"):
        assert name in exposed, name
    assert f'tag="{packaged["tag"]}"' in exposed
    ratios = wait_for(lambda: (r := prometheus_value(prometheus, "recnb_query_drift_ratio")) and len(r) == 3 and r)
    assert ratios and max(ratios.values()) < 1, ratios  # in-distribution: under every threshold
    time.sleep(3)
    assert drift_alerts(prometheus) == []
    other_shop = load_dataset("homedepot", dataset_dir("homedepot")).queries_in("test")["query"].tolist()
    search_all(service, other_shop[:WINDOW + 10])
    moved = wait_for(lambda: (r := prometheus_value(prometheus, "recnb_query_drift_ratio")) and max(r.values()) > 1 and r)
    assert moved and max(moved.values()) > 1, moved
    alerts = wait_for(lambda: drift_alerts(prometheus))
    assert alerts and alerts[0]["state"] in ("pending", "firing"), alerts
    print("in-distribution ratios", {k: round(v, 2) for k, v in ratios.items()},
          "off-distribution", {k: round(v, 2) for k, v in moved.items()})
