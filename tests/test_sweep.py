"Sweeps: a broken parameter set is recorded while the others finish; a killed sweep resumes without redoing runs."
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
BASE = """name: base
data: {n_items: 300, n_queries: 80, n_users: 10}
train: {epochs: 1, max_steps: 3, batch_size: 16}
tracker: disabled
"""


def _sweep(tmp_path: Path, body: str) -> Path:
    (tmp_path / "base.yaml").write_text(BASE)
    path = tmp_path / "sweep.yaml"
    path.write_text(body)
    return path


def recnb(*args, timeout=1200):
    return subprocess.run([sys.executable, "-m", "recnb.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


@pytest.mark.integration  # papermill
def test_broken_set_is_recorded_and_others_finish(tmp_path):
    sweep = _sweep(tmp_path, """name: broken-sweep
base: base.yaml
sets:
  - {name: good-a, train.lr: 3.0e-5}
  - {name: bad-params, train.lr: -1, train.negatives: sometimes}
  - {name: bad-data, data.name: homedepot, data.path: EMPTY_FOLDER}
  - {name: good-b, train.lr: 8.0e-5, train.negatives: bm25}
gate: {bm25: -1.0}
""")
    (tmp_path / "empty").mkdir()  # exists, so the parameters pass; the loader finds no file in it
    sweep.write_text(sweep.read_text().replace("EMPTY_FOLDER", str(tmp_path / "empty")))
    out = tmp_path / "out"
    result = recnb("sweep", sweep, "--out", out, "--jobs", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    status = {name: json.loads((out / name / "status.json").read_text()) for name in ("good-a", "bad-params", "bad-data", "good-b")}
    assert status["good-a"]["status"] == status["good-b"]["status"] == "finished"
    assert status["bad-params"]["status"] == "failed" and "train.lr" in status["bad-params"]["error"] \
        and "train.negatives" in status["bad-params"]["error"]
    assert status["bad-data"]["status"] == "failed" and "DataError" in status["bad-data"]["error"]
    assert (out / "bad-data" / "executed.ipynb").exists(), "the failed run's executed notebook is kept"
    board = pd.read_csv(out / "leaderboard.csv")
    assert list(board["status"]) == ["finished", "finished", "failed", "failed"]
    valid = board["valid ndcg@10"].dropna().tolist()
    assert valid == sorted(valid, reverse=True)
    metrics = {n: json.loads((out / n / "metrics.json").read_text()) for n in ("good-a", "good-b")}
    best = max(metrics, key=lambda n: metrics[n]["valid"][metrics[n]["model"]]["ndcg@10"])
    winner = json.loads((out / "winner.json").read_text())
    assert winner["winner"] == best == board["run"][0] and winner["passed"]


@pytest.mark.integration  # papermill
def test_gate_refuses_a_winner_that_does_not_beat_baselines(tmp_path):
    sweep = _sweep(tmp_path, """name: gated
base: base.yaml
sets:
  - {name: only}
gate: {bm25: 0.99}
""")
    out = tmp_path / "out"
    result = recnb("sweep", sweep, "--out", out)
    assert result.returncode == 1 and "does not pass the gate" in result.stderr
    again = recnb("winner", out)
    assert again.returncode == 1 and "FAIL" in again.stdout


@pytest.mark.integration  # papermill
def test_killed_sweep_resumes_without_redoing_finished_runs(tmp_path):
    sweep = _sweep(tmp_path, """name: resumable
base: base.yaml
grid:
  train.lr: [3.0e-5, 5.0e-5, 8.0e-5]
""")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "recnb.cli", "sweep", str(sweep), "--out", str(out)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 900
    def finished():
        return [p.parent.name for p in out.glob("*/status.json") if json.loads(p.read_text()).get("status") == "finished"]
    while time.time() < deadline and not finished(): time.sleep(1)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its papermill kernels, mid-way
    proc.wait()
    done = finished()
    assert len(done) == 1, done
    stamp = (out / done[0] / "metrics.json").stat().st_mtime_ns
    result = recnb("sweep", sweep, "--out", out, "--resume")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"skip {done[0]} (finished)" in result.stdout
    assert (out / done[0] / "metrics.json").stat().st_mtime_ns == stamp
    board = pd.read_csv(out / "leaderboard.csv")
    assert len(board) == 3 and (board["status"] == "finished").all()


def test_a_recommendation_leaderboard_shows_only_baselines_as_baselines(tmp_path):
    "The model's own rankers (every name `model_rankers` builds) are never listed as baselines of a run."
    from recnb.names import MODEL_RANKERS, REC_RANKERS
    from recnb.run.sweep import leaderboard
    out = tmp_path / "recs"
    run = out / "shoppers"
    run.mkdir(parents=True)
    (run / "status.json").write_text(json.dumps({"status": "finished"}))
    rankers = [*REC_RANKERS, "fine-tuned", "fine-tuned-items", "fine-tuned+co-occurrence"]
    scores = {r: {"ndcg@10": 0.1 + 0.01 * i} for i, r in enumerate(rankers)}
    (run / "metrics.json").write_text(json.dumps({"model": "fine-tuned+co-occurrence", "selection_metric": "ndcg@10",
                                                  "valid": scores, "test": scores}))
    row = leaderboard(out, write=False).iloc[0]
    assert row["model"] == "fine-tuned+co-occurrence"
    shown = sorted(c.removeprefix("valid ndcg@10 ") for c in row.index if c.startswith("valid ndcg@10 "))
    assert shown == sorted(REC_RANKERS) and not set(shown) & set(MODEL_RANKERS)
