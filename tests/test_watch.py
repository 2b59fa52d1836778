"""`recnb watch` behind a real Alertmanager on 127.0.0.1: alertmanager.yml passes amtool; an alert posted to
Alertmanager reaches the watcher with the bearer token and starts the retrain once; a second drift alert while it runs
starts nothing; an alert it does not act on is only audited; the receiver refuses requests without the token."""
import json, os, shutil, subprocess, sys, time
from pathlib import Path
import httpx
import pytest
import yaml
from conftest import ALERTMANAGER, ROOT, Process, free_port, start_alertmanager, wait_for_entries

pytestmark = pytest.mark.integration  # real Alertmanager and uvicorn processes

MONITORING = ROOT / "bentos" / "monitoring"
AMTOOL = shutil.which("amtool")
needs_alertmanager = pytest.mark.skipif(AMTOOL is None or ALERTMANAGER is None,
                                        reason="Alertmanager not on PATH: run scripts/install-system.sh (Debian package `prometheus-alertmanager`)")
TOKEN = "watch-test-token-8b2f"


@needs_alertmanager
def test_alertmanager_config_passes_amtool():
    done = subprocess.run([AMTOOL, "check-config", str(MONITORING / "alertmanager.yml")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    route = yaml.safe_load((MONITORING / "alertmanager.yml").read_text())
    hook = route["receivers"][0]["webhook_configs"][0]
    assert hook["url"].endswith("/alerts") and hook["send_resolved"] and hook["http_config"]["authorization"]["type"] == "Bearer"


def entries(url: str) -> list[dict]:
    return httpx.get(f"{url}/status", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).json()["entries"]


def wait_for(url: str, event: str, count: int = 1, timeout: float = 30) -> list[dict]:
    return wait_for_entries(lambda: entries(url), event, count, timeout)


@needs_alertmanager
def test_an_alert_through_real_alertmanager_starts_one_retrain(tmp_path):
    watch_port = free_port()
    watch_url = f"http://127.0.0.1:{watch_port}"
    marker = tmp_path / "retrained"
    retrain = f"{sys.executable} -c \"import pathlib, time; time.sleep(3); pathlib.Path('{marker}').write_text('done')\""
    env = {**os.environ, "RECNB_WATCH_TOKEN": TOKEN}
    watcher = Process([sys.executable, "-m", "recnb.cli", "watch", "--port", str(watch_port), "--command", retrain,
                       "--audit", str(tmp_path / "audit.jsonl"), "--cooldown-s", "3600"], env, ROOT, tmp_path / "watch.log",
                      f"{watch_url}/healthz", timeout=60)
    manager = None
    try:
        manager, manager_url = start_alertmanager(tmp_path, watch_url, TOKEN, env)   # the committed file, pointed at this test
        assert httpx.post(f"{watch_url}/alerts", json={}, timeout=10).status_code == 401   # no token, nothing read
        def fire(alertname, arm):
            answer = httpx.post(f"{manager_url}/api/v2/alerts", timeout=10,
                                json=[{"labels": {"alertname": alertname, "arm": arm}, "annotations": {"summary": "test"}}])
            assert answer.status_code == 200, answer.text
        fire("QueryDrift", "champion")
        started = wait_for(watch_url, "retrain_started")
        assert started[0]["alerts"] == ["QueryDrift"]
        fire("QueryDrift", "challenger")            # another group: a second notification while the retrain runs
        fire("SearchP99LatencyHigh", "champion")    # not one to retrain on
        wait_for(watch_url, "alert_received", count=3)
        wait_for(watch_url, "retrain_finished", timeout=60)
        decisions = [e["event"] for e in entries(watch_url) if e["event"].startswith("decision_")]
        assert decisions.count("decision_started") == 1 and "decision_noted" in decisions, decisions
        assert {"decision_busy", "decision_cooldown"} & set(decisions), decisions
        assert marker.read_text() == "done"
        metrics = httpx.get(f"{watch_url}/metrics", timeout=10).text
        assert 'recnb_watch_events_total{event="retrain_started"} 1.0' in metrics
        audited = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
        assert [e["event"] for e in audited] == [e["event"] for e in entries(watch_url)]   # /status is the file
    finally:
        if manager: manager.stop()
        watcher.stop()
