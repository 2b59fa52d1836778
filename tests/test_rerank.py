"The two-stage search end to end: a run trains and scores the cross-encoder, `recnb package` carries it, `bentoml serve` re-ranks within its budget and counts what fell back."
import json, re, time
import httpx
import pytest
from conftest import package_path, recnb_cli, serve

SETTINGS = {"name": "two-stage", "data": {"n_items": 300, "n_queries": 400, "n_users": 10}, "tracker": "disabled",
            "train": {"epochs": 1, "max_steps": 4, "batch_size": 16},
            "rerank": {"steps": 12, "batch_queries": 8, "negatives": 3, "depth": 20, "top_n": 20, "max_length": 32, "lr": 2e-4},
            "eval": {"baselines": ["bm25"], "model_ranker": "two-stage"}}


@pytest.fixture(scope="module")
def two_stage(tmp_path_factory):
    "A small two-stage run of the synthetic shop, packaged (torch encoder) into a fresh BentoML store."
    import os
    from recnb.run.experiment import run
    from recnb.params import validate_params
    base = tmp_path_factory.mktemp("two-stage")
    params = validate_params(SETTINGS)
    metrics = run(params, base / "run")
    env = {**os.environ, "BENTOML_HOME": str(base / "bentoml"), "HF_HUB_OFFLINE": "1"}
    out = recnb_cli("package", base / "run", "--encoder", "torch", env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    tag = out.stdout.strip().splitlines()[-1]
    return {"run_dir": base / "run", "params": params, "metrics": metrics, "env": env, "tag": tag, "path": package_path(env, tag)}


def test_a_run_scores_the_two_stage_search_next_to_its_first_stage(two_stage):
    metrics, run_dir = two_stage["metrics"], two_stage["run_dir"]
    for split in ("valid", "test"):
        assert {"bm25", "fine-tuned", "fine-tuned+bm25", "two-stage"} <= set(metrics[split])
        assert 0 < metrics[split]["two-stage"]["ndcg@10"] <= 1
    assert metrics["model"] == "two-stage"
    fit = json.loads((run_dir / "manifest.json").read_text())["training"]["rerank"]
    assert fit["steps"] == 12 and fit["first_stage"] in ("fine-tuned", "fine-tuned+bm25")
    assert {p.name for p in (run_dir / "rerank").iterdir()} >= {"model.safetensors", "rerank.json", "config.json"}


def test_the_champion_two_stage_reranks_as_its_run_did(two_stage):
    "A challenger's run re-evaluates a two-stage champion (run or package) with its own cross-encoder and settings."
    from recnb.run.experiment import champion_ranker, load_run_data
    from recnb.rank.evaluate import evaluate_search
    data = load_run_data(two_stage["params"])
    for champion in (two_stage["run_dir"], two_stage["path"]):
        found = evaluate_search(data, {"champion": champion_ranker(champion, data)}, "valid", ["ndcg@10"])
        assert abs(found["champion"]["ndcg@10"] - two_stage["metrics"]["valid"]["two-stage"]["ndcg@10"]) < 1e-9


def test_the_package_carries_the_cross_encoder_and_refuses_it_damaged(two_stage, tmp_path):
    import shutil
    from recnb.serve.serving import PackagedModel
    info = json.loads((two_stage["path"] / "package.json").read_text())
    assert info["ranker"] == "two-stage" and info["rerank"]["top_n"] == 20 and info["rerank"]["timeout_ms"] == 250.0
    assert "rerank/model.safetensors" in info["files"]
    assert "second stage: a cross-encoder (torch) re-scores the top 20" in (two_stage["path"] / "README.md").read_text()
    damaged = tmp_path / "package"
    shutil.copytree(two_stage["path"], damaged)
    weights = damaged / "rerank" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100] + b"\0" * 100)
    with pytest.raises(ValueError, match="rerank/model.safetensors"): PackagedModel(damaged)


def test_package_refuses_a_two_stage_run_without_its_reranker(two_stage, tmp_path):
    import shutil
    run_dir = tmp_path / "run"
    shutil.copytree(two_stage["run_dir"], run_dir)
    shutil.rmtree(run_dir / "rerank")
    out = recnb_cli("package", run_dir, "--encoder", "torch", env=two_stage["env"])
    assert out.returncode != 0 and "rerank.json: missing" in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]


def _counts(url: str) -> dict:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {m[1]: float(m[2]) for m in re.finditer(r'recnb_rerank_queries_total\{arm="champion",outcome="(\w+)"\} ([\d.e+]+)', text)}


def test_the_service_reranks_within_its_budget_and_counts_fallbacks(two_stage, tmp_path):
    from recnb.serve.serving import PackagedModel
    from recnb.train.rerank import RerankedRanker
    model = PackagedModel(two_stage["path"])
    model.rerank_timeout_s = 600.0   # what is checked here is the order, not the budget (a loaded CI machine is slow)
    queries = ["cotton shirt", "red leather sofa", "garden hose"]
    reranked, _, _ = model.rank_queries(queries, k=10)
    assert isinstance(model.second, RerankedRanker) and reranked.reranked == [True] * 3
    model.rerank_timeout_s = 0.0
    fallback, _, _ = model.rank_queries(queries, k=10)
    assert fallback.reranked == [False] * 3
    assert fallback.ids != reranked.ids                                         # the second stage changes the order
    assert fallback.ids == model.ranker.rank(queries, k=10).ids                 # the fallback is the first stage's order
    model.rerank_timeout_s = 600.0
    waited, _, _ = model.rank_queries(queries, k=10, since=time.perf_counter() - 601)   # the oldest request waited out the budget
    assert waited.reranked == [False] * 3 and waited.ids == fallback.ids
    model.rerank_timeout_s, model.second.top_n = 600.0, 5   # served shallower than evaluated: only the first 5 re-ordered
    shallow, _, _ = model.rank_queries(queries, k=10)
    assert [ids[5:] for ids in shallow.ids] == [ids[5:] for ids in fallback.ids]
    server, url = serve(two_stage, tmp_path / "serve.log", RECNB_RERANK_TIMEOUT_MS="600000", RECNB_RERANK_TOP_N="5")
    try:
        with httpx.Client(timeout=30) as client:
            got = [client.post(f"{url}/search", json={"query": q, "k": 10}) for q in queries]
            assert all(r.status_code == 200 for r in got), [r.text for r in got]
            assert [[h["item_id"] for h in r.json()["items"]] for r in got] == shallow.ids
            info = client.get(f"{url}/info").json()
            assert info["rerank"] == {"first_stage": model.info["rerank"]["first_stage"], "top_n": 5, "format": "torch", "weight": 1.0,
                                      "timeout_ms": 600000.0}
        assert _counts(url) == {"reranked": 3.0}
    finally: server.stop()
    server, url = serve(two_stage, tmp_path / "serve-off.log", RECNB_RERANK_TIMEOUT_MS="0", RECNB_CACHE_SIZE="0")
    try:
        with httpx.Client(timeout=30) as client:
            got = [client.post(f"{url}/search", json={"query": q, "k": 10}).json() for q in queries]
            assert [[h["item_id"] for h in r["items"]] for r in got] == fallback.ids
            assert client.get(f"{url}/info").json()["rerank"]["timeout_ms"] == 0.0
        assert _counts(url) == {"fallback": 3.0}
    finally: server.stop()


@pytest.mark.parametrize("name, value, says", [("RECNB_RERANK_TIMEOUT_MS", "soon", "give milliseconds"),
                                               ("RECNB_RERANK_TOP_N", "1", "give the items re-ranked per query, 2 to 100"),
                                               ("RECNB_MAX_BATCH", "lots", "give the most queries ranked in one pass")])
def test_a_bad_serving_setting_stops_the_service_before_it_starts(two_stage, name, value, says):
    import subprocess, sys
    from conftest import ROOT
    out = subprocess.run([sys.executable, "-c", "import service"], cwd=ROOT / "bentos", capture_output=True, text=True, timeout=120,
                         env={**two_stage["env"], "RECNB_MODEL": two_stage["tag"], name: value})
    assert out.returncode != 0 and f"recnb: {name}={value}: {says}" in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr


def test_a_second_stage_a_run_cannot_train_is_refused_before_training(tmp_path):
    from recnb.run.experiment import run
    from recnb.params import ParamsError, validate_params
    params = validate_params({"data": {"name": "synthetic-rec", "n_items": 200, "n_users": 60}, "tracker": "disabled",
                              "rerank": {"steps": 5}, "eval": {"model_ranker": "two-stage"}})
    with pytest.raises(ValueError) as refused: run(params, tmp_path / "run")
    assert "rerank.steps: synthetic is a recommendation dataset" in str(refused.value)
    assert "eval.model_ranker 'two-stage' needs a search dataset and rerank.steps above 0" in str(refused.value)
    assert not (tmp_path / "run" / "model").exists()
    with pytest.raises(ParamsError, match="max_negative_gain .0.5. must be below min_positive_gain"):
        validate_params({"rerank": {"min_positive_gain": 0.5, "max_negative_gain": 0.5}})
    with pytest.raises(ParamsError, match="rerank.top_n: Input should be less than or equal to 100"):
        validate_params({"rerank": {"top_n": 101}})
    with pytest.raises(ParamsError, match=r"first_score: depth \(30\) must be at least top_n \(50\)"):
        validate_params({"rerank": {"first_score": True, "depth": 30, "top_n": 50}})
    with pytest.raises(ParamsError, match=r"graded \(6\) must be at most negatives \(5\)"):
        validate_params({"rerank": {"graded": 6}})


def test_an_int8_cross_encoder_is_packaged_only_as_measured(two_stage):
    "Unless --encoder torch, the package measures the int8 copy's two-stage search on validation and keeps it within the margin."
    from recnb.serve.serving import PackagedModel
    from recnb.train.rerank import OnnxCrossEncoder
    for encoder, margin in (("onnx", "0.9"), ("auto", "0")):   # auto: a first stage that loses anything keeps torch, not refused
        out = recnb_cli("package", two_stage["run_dir"], "--encoder", encoder, "--max-ndcg-loss", margin, env=two_stage["env"])
        assert out.returncode == 0, out.stderr[-3000:]
        path = package_path(two_stage["env"], out.stdout.strip().splitlines()[-1])
        record = json.loads((path / "package.json").read_text())["rerank"]["encoder"]
        tried = record if record["format"] == "onnx-int8" else record["tried"][0]
        assert set(tried["valid"]) == {"torch", "onnx-int8"}
        assert abs(tried["loss"] - (tried["valid"]["torch"] - tried["valid"]["onnx-int8"])) < 1e-5
        assert (record["format"] == "onnx-int8") == (tried["loss"] <= float(margin))
        if record["format"] == "onnx-int8":
            assert isinstance(PackagedModel(path).second.cross, OnnxCrossEncoder) and (path / "rerank" / "cross.onnx").is_file()
            assert not (path / "rerank" / "model.safetensors").exists()
        else: assert (path / "rerank" / "model.safetensors").is_file()
        if margin == "0.9": assert record["format"] == "onnx-int8"
