"""`recnb retrain` on a real feedback log and a real packaged champion: the clicks become judgements, the sweep's gate
re-evaluates the champion on the same split, a challenger that fails registers nothing, one that passes is packaged and
registered in the next round's experiment file, every step audited; `recnb sweep --backend ray` (a local Ray on this
machine's CPUs) gives the local backend's leaderboard."""
import json, subprocess, sys
from pathlib import Path
import pytest
import yaml
from conftest import recnb_cli as recnb

pytestmark = pytest.mark.integration  # papermill runs, a BentoML store, Ray


def tiny_sweep(folder: Path, name: str, **resources) -> Path:
    "One parameter set on the packaged run's data (the same synthetic shop), a few training steps."
    (folder / "base.yaml").write_text(yaml.safe_dump({
        "data": {"name": "synthetic", "n_items": 300, "n_queries": 1000, "n_users": 40},
        "train": {"epochs": 1, "max_steps": 4, "batch_size": 16}, "tracker": "disabled",
        "eval": {"baselines": ["bm25"], "model_ranker": "fine-tuned"}, **({"resources": resources} if resources else {})}))
    (folder / f"{name}.yaml").write_text(yaml.safe_dump({"name": name, "base": "base.yaml", "sets": [{"name": "a", "seed": 1}],
                                                         "gate": {"bm25": -1.0}}))
    return folder / f"{name}.yaml"


@pytest.fixture(scope="module")
def shop_log(packaged, tmp_path_factory):
    "An experiment on the packaged champion and a feedback log of simulated shoppers clicking on BM25's answers."
    from recnb.ab.arms import load_experiment
    from recnb.rank.baselines import BM25Ranker
    from recnb.ab.clicks import simulate_log
    from recnb.run.experiment import load_run_data
    from recnb.serve.feedback import FeedbackLog
    folder = tmp_path_factory.mktemp("retrain")
    experiment = folder / "experiment.yaml"
    experiment.write_text(yaml.safe_dump({"name": "shop", "salt": "salt-of-the-shop", "keep_queries": True, "arms": [
        {"name": "champion", "model": packaged["tag"], "share": 0.9}, {"name": "challenger", "model": packaged["tag"], "share": 0.1}]}))
    spec = load_experiment(experiment)
    data = load_run_data(packaged["params"])
    queries = data.queries_in("train").head(150)
    ranked = BM25Ranker(data.catalog).rank(queries["query"].tolist(), k=10).ids
    answers = {q: list(r) for q, r in zip(queries["query"], ranked)}
    qrels = {text: data.qrels()[qid] for qid, text in zip(queries["query_id"], queries["query"]) if qid in data.qrels()}
    requests, events = simulate_log(spec, {"champion": answers, "challenger": answers}, qrels, units=300, seed=5)
    log = FeedbackLog(folder / "ab.sqlite", b"a-secret-of-16-chars", keep_queries=True)
    for r in requests.itertuples(): log.record_request(r.request_id, r.experiment, r.route, r.arm, r.model, r.items, r.unit, r.query, r.at)
    for e in events.itertuples(): log.record_feedback(e.request_id, e.item_id, e.event, e.at)
    log.close()
    return {"folder": folder, "experiment": experiment, "log": folder / "ab.sqlite", "events": len(events)}


def audit(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def challengers(env) -> list[str]:
    out = subprocess.run([sys.executable, "-m", "bentoml", "models", "list", "recnb-challenger", "-o", "json"], capture_output=True,
                         text=True, env=env, timeout=120)
    return [m["tag"] for m in json.loads(out.stdout or "[]")]


def test_retrain_gates_against_the_champion_and_registers_only_a_passing_challenger(packaged, shop_log):
    folder, env = shop_log["folder"], packaged["env"]
    sweep, before = tiny_sweep(folder, "loop"), shop_log["experiment"].read_text()
    known = set(challengers(env))   # the session's store: the A/B tests package a challenger of their own
    args = ["retrain", sweep, "--experiment", shop_log["experiment"], "--log", shop_log["log"], "--out", folder / "round",
            "--audit", folder / "audit.jsonl", "--mode", "interleave"]
    failed = recnb(*args, "--margin", "1.0", env=env)     # no model beats its champion by 1.0 NDCG
    assert failed.returncode == 1 and "nothing registered" in failed.stderr, failed.stdout[-2000:] + failed.stderr[-2000:]
    assert shop_log["experiment"].read_text() == before and set(challengers(env)) == known
    metrics = json.loads((folder / "round" / "a" / "metrics.json").read_text())
    manifest = json.loads((folder / "round" / "a" / "manifest.json").read_text())
    assert "champion" in metrics["valid"] and "judgements from feedback" in manifest["data"]["source"]
    feedback = yaml.safe_load((folder / "round" / "a" / "params.yaml").read_text())["data"]["feedback"]
    assert feedback["path"] == str(folder / "round" / "feedback.csv")

    passed = recnb(*args, "--margin", "-1.0", env=env)    # the same clicks: the finished run is reused, only the gate differs
    assert passed.returncode == 0, passed.stdout[-2000:] + passed.stderr[-2000:]
    assert "skip a (finished)" in passed.stdout
    registered = sorted(set(challengers(env)) - known)
    assert len(registered) == 1
    following = yaml.safe_load(shop_log["experiment"].read_text())
    assert (following["name"], following["mode"]) == ("shop-r2", "interleave")
    assert [a["model"] for a in following["arms"]] == [packaged["tag"], registered[0]]
    assert yaml.safe_load((folder / "experiment.shop.yaml").read_text())["name"] == "shop"
    events = [e["event"] for e in audit(folder / "audit.jsonl")]
    assert events == ["retrain_data", "gate_failed", "retrain_data", "gate_passed", "challenger_registered"], events
    gate = next(e for e in audit(folder / "audit.jsonl") if e["event"] == "gate_failed")["gate"]
    champion = next(c for c in gate if c["baseline"] == "champion")
    assert champion["margin"] == 1.0 and not champion["passed"] and champion["baseline_valid"] == metrics["valid"]["champion"]["ndcg@10"]


def test_ray_backend_gives_the_local_leaderboard(tmp_path):
    pytest.importorskip("ray")
    sweep = tiny_sweep(tmp_path, "backends", cpus=2)   # the whole machine per run: the same threads as the local run
    local = recnb("sweep", sweep, "--out", tmp_path / "local", env=None)
    on_ray = recnb("sweep", sweep, "--out", tmp_path / "ray", "--backend", "ray", env=None)
    assert local.returncode == 0 and on_ray.returncode == 0, local.stderr[-2000:] + on_ray.stdout[-2000:] + on_ray.stderr[-2000:]
    assert "queued a on Ray (2 CPU, 0 GPU)" in on_ray.stdout
    boards = [json.loads((tmp_path / b / "leaderboard.json").read_text()) for b in ("local", "ray")]
    assert boards[0] == boards[1] and boards[0][0]["status"] == "finished"
    too_big = tiny_sweep(tmp_path, "too-big", gpus=1)
    refused = recnb("sweep", too_big, "--out", tmp_path / "too-big", "--backend", "ray", env=None)
    assert refused.returncode == 1 and "asks for 1 CPU and 1 GPU" in refused.stdout, refused.stdout[-2000:]


def test_retrain_refuses_what_it_cannot_use_before_anything_runs(tmp_path):
    "A missing log, an unknown champion, a bad mode, a broken experiment file: exit 2 with the fix, no folder written."
    experiment = tmp_path / "experiment.yaml"
    experiment.write_text(yaml.safe_dump({"name": "shop", "salt": "salt-of-the-shop", "keep_queries": True, "arms": [
        {"name": "champion", "model": "recnb:nosuchmodel", "share": 0.5}, {"name": "challenger", "model": "recnb:other", "share": 0.5}]}))
    (tmp_path / "ab.sqlite").write_bytes(b"")
    env = {**__import__("os").environ, "BENTOML_HOME": str(tmp_path / "bentoml")}
    def refused(*extra, log=tmp_path / "ab.sqlite", file=experiment):
        done = recnb("retrain", "params/sweep-default.yaml", "--experiment", file, "--log", log, "--out", tmp_path / "out", *extra, env=env)
        assert done.returncode == 2 and not (tmp_path / "out").exists(), done.stdout + done.stderr
        return done.stderr
    assert "no such feedback log" in refused(log=tmp_path / "missing.sqlite")
    assert "recnb:nosuchmodel" in refused() and "not in the BentoML store" in refused()
    assert "--mode is split or interleave" in refused("--mode", "shuffle")
    (tmp_path / "broken.yaml").write_bytes(b"name: [unclosed\n\xff")
    assert "broken.yaml" in refused(file=tmp_path / "broken.yaml")
