"The main job (`recnb demo`, what `scripts/setup.sh` runs) through every stage, on a tiny sweep so it stays quick."
import os, subprocess, sys
import httpx
import yaml
from conftest import ROOT, free_port

import pytest
pytestmark = pytest.mark.integration  # the whole kit: papermill, bentoml serve


def test_demo_runs_every_stage_and_stops_the_service(tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"name": "demo-tiny", "base": str(ROOT / "params" / "default.yaml"),
                                     "grid": {"data.n_items": [300], "data.n_queries": [120], "train.max_steps": [4]},
                                     "metric": "ndcg@10", "gate": {"bm25": 0.0}}))
    port = free_port()
    env = {"BENTOML_HOME": str(tmp_path / "bentoml"), "RECNB_RUNS_DIR": str(tmp_path / "runs"), "HF_HUB_OFFLINE": "1",
           "WANDB_MODE": "offline", "PATH": os.environ["PATH"]}
    out = subprocess.run([sys.executable, "-m", "recnb.cli", "demo", "--sweep-file", str(sweep), "--port", str(port)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for stage in ("1/6 sweep", "winner: ", "gate: passed", "2/6 package", "packaged recnb:", "A/A test", "3/6 start the service",
                  "4/6 a few real requests", "5/6 a simulated A/B", "300 shoppers", "| champion |", "| challenger |",
                  "sample ratio", "6/6 stop the service", "stopped", "demo finished"):
        assert stage in out.stdout, stage
    for path in ("/search", "/recommend", "/similar"): assert f"POST {path} " in out.stdout, path
    assert out.stdout.count("→ 200 in") == 4, out.stdout
    assert (tmp_path / "runs" / "demo-tiny" / "demo-ab-report" / "report.json").is_file()
    assert "model card: " in out.stdout and "/metrics" in out.stdout
    try: httpx.get(f"http://127.0.0.1:{port}/livez", timeout=2); raise AssertionError("the service still answers")
    except httpx.ConnectError: pass
