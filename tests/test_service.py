"The deploy half over real HTTP: `recnb package`, a real `bentoml serve` on 127.0.0.1, answers equal to the offline scorer, every bad request's 4xx, the API key."
import asyncio, json, subprocess, sys
from pathlib import Path
import httpx
import pytest
from conftest import ROOT, package_path, recnb_cli as recnb, serve, served_parts

pytestmark = pytest.mark.integration  # a real bentoml serve and bentoml build

API_KEY = "test-key-7f3a"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def store(packaged): return packaged


@pytest.fixture(scope="module")
def server(packaged):
    "`bentoml serve` on a free loopback port with the API key set; stopped by its PID, no process left behind."
    process, url = serve(packaged, packaged["run_dir"].parent / "serve.log", RECNB_API_KEY=API_KEY)
    try: yield url
    finally: process.stop()


@pytest.fixture(scope="module")
def offline(store):
    "The package's encoder and index (compressed by `recnb package` as `recnb.serve.compress` measured) and the run's data."
    from recnb.run.experiment import load_run_data
    return {**served_parts(store["path"]), "data": load_run_data(store["params"])}


def post(url, path, body, headers=AUTH, **kw):
    return httpx.post(f"{url}{path}", json=body, headers=headers, timeout=30, **kw)


def test_search_answers_equal_the_offline_scorer_alone_and_batched(server, offline):
    queries = offline["data"].queries_in("valid")["query"].tolist()[:12]
    expected = offline["index"].search(offline["encoder"].encode(queries), k=10)
    def check(answers):
        for q, a, ids, scores in zip(queries, answers, expected.ids, expected.scores.tolist()):
            assert a.status_code == 200, a.text
            items = a.json()["items"]
            assert [i["item_id"] for i in items] == ids, q
            assert max(abs(i["score"] - s) for i, s in zip(items, scores)) < 1e-5, q
            titles = offline["data"].catalog.titles(ids)
            assert [i["title"] for i in items] == titles
    check([post(server, "/search", {"query": q, "k": 10}) for q in queries])
    async def together():  # concurrent requests are joined into batches by the batchable API
        async with httpx.AsyncClient(base_url=server, headers=AUTH, timeout=30) as client:
            return await asyncio.gather(*(client.post("/search", json={"query": q, "k": 10}) for q in queries))
    check(asyncio.run(together()))


def test_the_list_endpoint_ranks_each_query_like_the_scorer(server, offline):
    queries = offline["data"].queries_in("test")["query"].tolist()[:5]
    expected = offline["index"].search(offline["encoder"].encode(queries), k=100)
    answer = post(server, "/search_batch", {"queries": queries})
    assert answer.status_code == 200, answer.text
    rows = answer.json()
    assert [r["ids"] for r in rows] == expected.ids
    assert post(server, "/search_batch", {"queries": ["drill", " "]}).status_code == 400


def test_recommend_and_similar_equal_the_offline_rankers(server, offline, store):
    from recnb.rank.baselines import DenseRanker
    data, index = offline["data"], offline["index"]
    dense = DenseRanker(offline["encoder"], index=index)
    histories = [index.ids[i:i + 3] for i in (0, 10, 50)]
    for history in histories:
        answer = post(server, "/recommend", {"history": history, "k": 7})
        assert answer.status_code == 200, answer.text
        got = answer.json()
        assert [i["item_id"] for i in got["items"]] == dense.rank_histories([history], k=7).ids[0]
        assert not set(history) & {i["item_id"] for i in got["items"]}
        assert got["model"] == store["tag"] and got["took_ms"] >= 0
    item = index.ids[5]
    answer = post(server, "/similar", {"item_id": item, "k": 5}).json()
    vector = index.vectors[5][None]
    assert [i["item_id"] for i in answer["items"]] == index.search(vector, k=5, exclude=[[item]]).ids[0]
    assert item not in [i["item_id"] for i in answer["items"]]


def test_info_names_the_model(server, store):
    info = httpx.get(f"{server}/info", headers=AUTH, timeout=10).json()
    assert info["tag"] == store["tag"] and info["dataset"] == "synthetic" and info["items"] == 300
    assert info["device"] == "cpu" and info["ranker"] == "fine-tuned" and info["task"] == "search"
    assert info["gate"] == {"applied": False, "passed": None, "forced": False} and info["limits"]["max_batch_queries"] == 128
    assert info["metrics"]["valid"]["fine-tuned"]["ndcg@10"] == json.loads((store["run_dir"] / "metrics.json").read_text())["valid"]["fine-tuned"]["ndcg@10"]


BAD_REQUESTS = [  # (path, JSON body or raw bytes, status, words the error must contain)
    ("/search", {"query": "", "k": 5}, 400, "query"),
    ("/search", {"query": "   \t ", "k": 5}, 400, "query"),
    ("/search", {"query": "drill " * 20_000, "k": 5}, 400, "at most 1000 characters"),
    ("/search", {"query": "drill", "k": 0}, 400, "greater than or equal to 1"),
    ("/search", {"query": "drill", "k": -3}, 400, "k"),
    ("/search", {"query": "drill", "k": 101}, 400, "less than or equal to 100"),
    ("/search", {"query": "drill", "k": "10"}, 400, "valid integer"),
    ("/search", {"query": 42, "k": 5}, 400, "valid string"),
    ("/search", {"k": 5}, 400, "query: Field required"),
    ("/search", b'{"query": "drill", ', 400, "JSON"),
    ("/search", b"not json at all", 400, "JSON"),
    ("/recommend", {"history": [], "k": 5}, 400, "history"),
    ("/recommend", {"history": ["P000001"] * 201, "k": 5}, 400, "at most 200 items"),
    ("/recommend", {"history": ["P000001", "no-such-item", "nor-this"], "k": 5}, 422, "'no-such-item', 'nor-this'"),
    ("/recommend", {"history": "P000001", "k": 5}, 400, "valid array"),
    ("/recommend", {"k": 5}, 400, "history: Field required"),
    ("/similar", {"item_id": "no-such-item", "k": 5}, 422, "unknown item id(s): 'no-such-item'"),
    ("/similar", {"item_id": ["P000001"], "k": 5}, 400, "valid string"),
    ("/similar", {"item_id": "P000001", "k": 1.5}, 400, "k"),
]


def test_every_bad_request_gets_its_4xx_with_one_error_body(server):
    for path, body, status, words in BAD_REQUESTS:
        if isinstance(body, bytes):
            answer = httpx.post(f"{server}{path}", content=body, headers={**AUTH, "content-type": "application/json"}, timeout=30)
        else: answer = post(server, path, body)
        assert answer.status_code == status, (path, str(body)[:80], answer.status_code, answer.text[:300])
        error = answer.json()
        assert set(error) == {"error", "status", "problems"} and error["status"] == status, error
        assert words in error["error"], (path, str(body)[:80], error)
    assert post(server, "/search", {"query": "drill", "k": 5}).status_code == 200  # still serving


def test_api_key_guards_the_api_routes_only(server):
    for path, body in [("/search", {"query": "drill"}), ("/recommend", {"history": ["P000001"]}), ("/similar", {"item_id": "P000001"})]:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}):
            answer = post(server, path, body, headers=headers)
            assert answer.status_code == 401 and "API key" in answer.json()["error"], answer.text
    assert httpx.get(f"{server}/info", timeout=10).status_code == 401
    assert post(server, "/search", {"query": "drill"}, headers={"X-API-Key": API_KEY}).status_code == 200
    for path in ("/livez", "/readyz", "/metrics"):
        assert httpx.get(f"{server}{path}", timeout=10).status_code == 200, path


def test_package_refuses_an_unfinished_run(tmp_path, store):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "params.yaml").write_text("name: half\n")
    out = recnb("package", tmp_path / "half", env=store["env"])
    assert out.returncode == 2 and "metrics.json, manifest.json, model, index missing" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_bento_builds_offline_and_its_dockerfiles_install_the_right_torch(store, tmp_path):
    env = store["env"]
    for bentofile, base, cpu_index in [("bentos/bentofile.yaml", "FROM python:3.11-slim", True),
                                       ("bentos/bentofile.gpu.yaml", "FROM nvidia/cuda:", False)]:
        out = subprocess.run([sys.executable, "-m", "bentoml", "build", "-f", bentofile, "--output", "tag", "."], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        bento_tag = out.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
        script = ("import bentoml, sys; b = bentoml.bentos.get(sys.argv[1]); "
                  "bentoml.container.get_containerfile(sys.argv[1], output_path=sys.argv[2]); print(b.path)")
        dockerfile = tmp_path / f"Dockerfile.{bento_tag.replace(':', '-')}"
        found = subprocess.run([sys.executable, "-c", script, bento_tag, str(dockerfile)], env=env, capture_output=True,
                               text=True, timeout=120)
        assert found.returncode == 0, found.stderr[-3000:]
        bento = Path(found.stdout.strip().splitlines()[-1])
        text = dockerfile.read_text()
        installs = "env/python/requirements.txt" in text or (
            "env/python/install.sh" in text and "requirements.txt" in (bento / "env" / "python" / "install.sh").read_text())
        assert base in text and installs, text[:2000]
        requirements = (bento / "env" / "python" / "requirements.txt").read_text().splitlines()
        assert "torch==2.13.0" in requirements
        assert ("--extra-index-url https://download.pytorch.org/whl/cpu" in requirements) == cpu_index
        recorded = [m["tag"] for s in __import__("yaml").safe_load((bento / "bento.yaml").read_text())["services"] for m in s["models"]]
        assert recorded == [store["tag"]]
        shipped = {p.relative_to(bento / "src") for p in (bento / "src" / "recnb").rglob("*.py")}
        assert shipped == {p.relative_to(ROOT) for p in (ROOT / "recnb").rglob("*.py")}, "every stage's modules go into the image"


def test_recnb_build_without_the_model_says_how_to_package_it(tmp_path):
    import os
    out = recnb("build", env={**os.environ, "BENTOML_HOME": str(tmp_path / "empty")})
    assert out.returncode == 2 and "recnb:latest could not be found" in out.stderr and "recnb package RUN_DIR" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    out = recnb("build", "--image", "tpu", env={**os.environ, "BENTOML_HOME": str(tmp_path / "empty")})
    assert out.returncode == 2 and "image must be one of ['cpu', 'gpu']" in out.stderr, out.stderr


def test_service_requirements_are_a_subset_of_the_project_dependencies():
    import re, tomllib
    declared = {re.split(r"[<>=\[ ]", d)[0].lower().replace("_", "-")
                for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    for line in (ROOT / "bentos" / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert re.split(r"[<>=\[ ]", line)[0].lower().replace("_", "-") in declared, line


def test_a_recommendation_package_serves_what_its_run_evaluated(tmp_path):
    "A recommendation run (the synthetic shoppers) packaged and served: /recommend answers as the run's ranker did offline."
    import os
    from recnb.rank.evaluate import model_rankers
    from recnb.run.experiment import load_run_data, run
    from recnb.params import validate_params
    params = validate_params({"name": "shoppers", "data": {"name": "synthetic-rec", "n_items": 300, "n_users": 60},
                              "train": {"epochs": 1, "max_steps": 3, "batch_size": 16}, "tracker": "disabled",
                              "eval": {"model_ranker": "fine-tuned"}})  # the query tower over the history text
    run_dir = tmp_path / "shoppers"
    run(params, run_dir)
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "HF_HUB_OFFLINE": "1"}
    out = recnb("package", run_dir, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    package = {"env": env, "tag": out.stdout.strip().splitlines()[-1]}
    data = load_run_data(params)
    parts = served_parts(package_path(env, package["tag"]))
    ranker = model_rankers("recommendation", parts["encoder"], parts["index"], data.catalog, params.train.history_items)["fine-tuned"]
    process, url = serve(package, tmp_path / "serve.log")
    try:
        info = httpx.get(f"{url}/info", timeout=30).json()
        assert (info["task"], info["ranker"]) == ("recommendation", "fine-tuned")
        histories = [h for _, h, _ in data.split().test[:6]]
        for history in histories:  # one shopper per request, as the service encodes them (bf16 results depend on the batch)
            expected = ranker.rank_histories([history], k=10)
            ids, scores = expected.ids[0], expected.scores[0]
            answer = post(url, "/recommend", {"history": history, "k": 10}, headers={})
            assert answer.status_code == 200, answer.text
            items = answer.json()["items"]
            assert [i["item_id"] for i in items] == ids
            assert max(abs(i["score"] - s) for i, s in zip(items, scores)) < 1e-5
            assert not set(history) & set(ids)
    finally: process.stop()


def test_the_answer_cache_never_answers_for_another_model(packaged, tmp_path):
    """Two models in one service (an experiment's arms): a query one arm cached is computed afresh by the other, each answer
    is its own model's, and repeats (in any case and spacing) are hits counted in /metrics."""
    import re, yaml
    from recnb.ab.arms import assign, load_experiment
    from recnb.rank.baselines import DenseRanker
    from recnb.run.experiment import load_run_data, run
    from recnb.params import validate_params
    zero = tmp_path / "zero"   # the same shop, not fine-tuned: another model with other answers
    run(validate_params({**packaged["params"].model_dump(mode="json"), "name": "zero", "train": {"epochs": 0}}), zero)
    out = recnb("package", zero, "--name", "recnb-zero", env=packaged["env"])
    assert out.returncode == 0, out.stderr[-2000:]
    tags = {"champion": packaged["tag"], "challenger": out.stdout.strip().splitlines()[-1]}
    experiment = tmp_path / "cache.yaml"
    experiment.write_text(yaml.safe_dump({"name": "cache", "mode": "split", "salt": "cache-test-salt", "arms": [
        {"name": arm, "model": tag, "share": 0.5} for arm, tag in tags.items()]}))
    users = {}
    for i in range(100):
        users.setdefault(assign(load_experiment(experiment), f"u{i}").name, f"u{i}")
    data = load_run_data(packaged["params"])
    expected = {arm: DenseRanker(**served_parts(package_path(packaged["env"], tag))).rank for arm, tag in tags.items()}
    process, url = serve(packaged, tmp_path / "serve.log", RECNB_EXPERIMENT=str(experiment), RECNB_AB_SECRET="cache-test-secret-0042",
                         RECNB_FEEDBACK_LOG=str(tmp_path / "cache.sqlite"))
    try:
        query = data.queries_in("test")["query"].iloc[0]
        answers = []
        for arm, variant in [("champion", query), ("challenger", query), ("champion", query.upper()), ("challenger", f"  {query}  ")]:
            got = post(url, "/search", {"query": variant, "k": 10, "user": users[arm]}).json()
            assert got["arm"] == arm and got["model"] == tags[arm], got
            ranked = expected[arm]([query], 10)
            assert [i["item_id"] for i in got["items"]] == ranked.ids[0], (arm, variant)
            assert max(abs(i["score"] - s) for i, s in zip(got["items"], ranked.scores[0])) < 1e-5
            answers.append([i["item_id"] for i in got["items"]])
        assert answers[0] != answers[1]   # the two models rank differently, so a shared entry would show
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        counts = {m.group(1, 2): float(m.group(3)) for m in re.finditer(r'recnb_cache_lookups_total\{arm="(\w+)",result="(\w+)"\} ([\d.]+)', metrics)}
        assert counts == {("champion", "miss"): 1, ("challenger", "miss"): 1, ("champion", "hit"): 1, ("challenger", "hit"): 1}, counts
    finally: process.stop()
