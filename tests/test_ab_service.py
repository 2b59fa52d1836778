"""Champion and challenger in a real `bentoml serve`: two packages at 90/10 (sticky, shares, arm, model and request id in
every answer, every answer logged, per-arm metrics), feedback and its 4xx, no raw shopper id on disk, simulated shoppers,
report and promotion from the command line, interleaving, and `kill -9` during a stream of feedback."""
import asyncio, json, os, re, signal, threading, time
from pathlib import Path
import httpx
import pytest
import yaml
from conftest import recnb_cli as recnb, serve

pytestmark = pytest.mark.integration  # real bentoml serve processes

SECRET = "ab-test-secret-4d1e9a"
USERS = 10_000


@pytest.fixture(scope="module")
def arms(packaged):
    "The champion and a challenger: the same run packaged again under a name of its own (recnb:latest stays the champion)."
    out = recnb("package", packaged["run_dir"], "--name", "recnb-challenger", env=packaged["env"])
    assert out.returncode == 0, out.stderr[-2000:]
    return packaged["tag"], out.stdout.strip().splitlines()[-1]


def experiment_file(folder: Path, arms, mode: str, shares=(0.9, 0.1)) -> Path:
    path = folder / f"{mode}.yaml"
    path.write_text(yaml.safe_dump({"name": f"test-{mode}", "mode": mode, "salt": "a-fixed-test-salt",
                                    "arms": [{"name": "champion", "model": arms[0], "share": shares[0]},
                                             {"name": "challenger", "model": arms[1], "share": shares[1]}]}))
    return path


def serve_experiment(packaged, folder: Path, experiment: Path, **env):
    return serve(packaged, folder / f"{experiment.stem}.log", RECNB_EXPERIMENT=str(experiment), RECNB_AB_SECRET=SECRET,
                 RECNB_FEEDBACK_LOG=str(folder / f"{experiment.stem}.sqlite"), **env)


@pytest.fixture(scope="module")
def split(packaged, arms, tmp_path_factory):
    "A 90/10 split served by two workers (both write the log)."
    folder = tmp_path_factory.mktemp("split")
    experiment = experiment_file(folder, arms, "split")
    process, url = serve_experiment(packaged, folder, experiment, RECNB_WORKERS="2")
    try: yield {"url": url, "experiment": experiment, "log": folder / "split.sqlite", "folder": folder}
    finally: process.stop()


def post(url, path, body, **kw):
    return httpx.post(f"{url}{path}", json=body, timeout=30, **kw)


async def ask_all(url: str, bodies: list[dict], concurrency: int = 16) -> list[dict]:
    "POST /similar for each body, `concurrency` at a time; every answer must be 200."
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        async def one(body):
            async with limit:
                answer = await client.post("/similar", json=body)
                assert answer.status_code == 200, answer.text
                return answer.json()
        return await asyncio.gather(*(one(b) for b in bodies))


def test_two_packages_at_90_10_sticky_with_arm_model_and_request_id_in_every_answer(split, arms, packaged):
    from recnb.ab.arms import assign, load_experiment
    from recnb.serve.feedback import FeedbackLog
    experiment = load_experiment(split["experiment"])
    item = httpx.get(f"{split['url']}/info").json()
    assert [a["model"] for a in item["experiment"]["arms"]] == list(arms)
    assert all(a["load_s"] > 0 and "rss_mib" in a for a in item["experiment"]["arms"])   # each arm's cost is stated
    first = post(split["url"], "/search", {"query": "cordless drill", "k": 3}).json()
    seed = first["items"][0]["item_id"]
    answers = asyncio.run(ask_all(split["url"], [{"item_id": seed, "k": 2, "user": f"user-{i}"} for i in range(USERS)]))
    tags = dict(zip(("champion", "challenger"), arms))
    for i, answer in enumerate(answers):   # each user gets the arm the experiment's hash gives them, and it says so
        assert answer["arm"] == assign(experiment, f"user-{i}").name, (i, answer)
        assert answer["model"] == tags[answer["arm"]] and {h["arm"] for h in answer["items"]} == {answer["arm"]}
    ids = [a["request_id"] for a in answers] + [first["request_id"]]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    share = sum(a["arm"] == "challenger" for a in answers) / USERS
    assert abs(share - 0.1) < 0.01, share
    # sticky: the same users again, now through the header, get the same arms
    again = [httpx.post(f"{split['url']}/similar", json={"item_id": seed, "k": 2}, headers={"X-Recnb-User": f"user-{i}"},
                        timeout=30).json()["arm"] for i in range(200)]
    assert again == [a["arm"] for a in answers[:200]]
    assert first["arm"] == "champion"   # no shopper: the champion
    log = FeedbackLog(split["log"], SECRET.encode())
    logged = log.requests()
    assert set(ids) <= set(logged["request_id"])   # every answer was logged before it was returned
    assert logged.set_index("request_id")["unit"].isna()[first["request_id"]]
    metrics = httpx.get(f"{split['url']}/metrics").text
    counted = {m.group(1): float(m.group(2)) for m in
               re.finditer(r'recnb_arm_answers_total\{arm="(\w+)",assigned="true",endpoint="/similar"\} ([\d.e+]+)', metrics)}
    assert counted == {arm: sum(a["arm"] == arm for a in answers) + sum(a == arm for a in again) for arm in tags}, counted
    assert re.search(r'recnb_arm_answers_total\{arm="champion",assigned="false",endpoint="/search"\} 1.0', metrics)


def test_bad_feedback_gets_its_4xx_and_repeats_are_idempotent(split):
    url = split["url"]
    answer = post(url, "/search", {"query": "patio chair", "k": 3, "user": "shopper-fb"}).json()
    good = {"request_id": answer["request_id"], "item_id": answer["items"][0]["item_id"], "event": "click"}
    first, repeat = post(url, "/feedback", good), post(url, "/feedback", good)
    assert first.status_code == repeat.status_code == 200 and (first.json()["new"], repeat.json()["new"]) == (True, False)
    cases = [
        ({**good, "request_id": "no-such-request"}, 422, "no-such-request"),
        ({**good, "item_id": "not-shown-item"}, 422, "not-shown-item"),
        ({**good, "event": "like"}, 400, "event"),
        ({**good, "extra": 1}, 400, "extra"),
        ({k: v for k, v in good.items() if k != "item_id"}, 400, "item_id"),
        ({**good, "request_id": "x" * 65}, 400, "request_id"),
        ({**good, "item_id": 7}, 400, "item_id"),
    ]
    for body, status, words in cases:
        refused = post(url, "/feedback", body)
        assert refused.status_code == status and words in refused.json()["error"], (body, refused.status_code, refused.text)
    not_json = httpx.post(f"{url}/feedback", content=b"{not json", headers={"Content-Type": "application/json"}, timeout=30)
    assert not_json.status_code == 400, not_json.text
    bad_header = httpx.post(f"{url}/search", json={"query": "drill"}, headers={"X-Recnb-User": "\u200b".encode()}, timeout=30)
    assert bad_header.status_code == 400 and "X-Recnb-User" in bad_header.json()["error"], bad_header.text
    metrics = httpx.get(f"{url}/metrics").text
    assert re.search(r'recnb_feedback_events_total\{arm="(champion|challenger)",event="click"\} 1.0', metrics), metrics[-2000:]


def test_the_log_holds_no_raw_shopper_id(split):
    from recnb.serve.feedback import unit_key
    post(split["url"], "/search", {"query": "drill", "user": "alice@example.com"})
    raw = b"".join(p.read_bytes() for p in split["folder"].glob("split.sqlite*"))
    assert raw and b"alice@example.com" not in raw and b"user-42" not in raw and b"shopper-fb" not in raw
    assert unit_key(SECRET.encode(), "alice@example.com").encode() in raw


def test_simulated_shoppers_report_and_promotion_from_the_command_line(split, packaged):
    from recnb.ab.ab_report import report
    from recnb.ab.arms import load_experiment
    from recnb.serve.feedback import FeedbackLog
    env = packaged["env"]
    simulated = recnb("ab", "simulate", split["url"], "--run", packaged["run_dir"], "--shoppers", 40, env=env)
    assert simulated.returncode == 0 and "40 simulated shoppers" in simulated.stdout, simulated.stderr[-2000:]
    log = FeedbackLog(split["log"], SECRET.encode())
    assert len(log.feedback()) > 0
    env = {**env, "RECNB_AB_SECRET": SECRET}
    printed = recnb("ab", "report", split["log"], "--experiment", split["experiment"], env=env)
    assert printed.returncode == 0 and "| champion |" in printed.stdout, printed.stderr[-2000:]
    verdict = report(log.requests(), log.feedback(), load_experiment(split["experiment"]))["verdict"]
    promoted = recnb("ab", "promote", split["log"], "--experiment", split["experiment"], env=env)
    if verdict != "challenger":   # the same model in both arms: the report should not find a winner, and promotion is refused
        assert promoted.returncode == 1 and "refused" in promoted.stderr, (verdict, promoted.stdout, promoted.stderr)
        assert not (split["folder"] / "split-promotion.json").exists()
        promoted = recnb("ab", "promote", split["log"], "--experiment", split["experiment"], "--force", env=env)
    assert promoted.returncode == 0 and "promoted challenger" in promoted.stdout, promoted.stderr[-2000:]
    decision = json.loads((split["folder"] / "split-promotion.json").read_text())
    assert decision["forced"] == (verdict != "challenger") and decision["report"]["verdict"] == verdict
    shown = httpx.get(f"{split['url']}/info").json()["experiment"]["promotion"]
    assert shown["promoted"] == "challenger" and shown["forced"] == decision["forced"]


@pytest.fixture(scope="module")
def interleaved(packaged, arms, tmp_path_factory):
    folder = tmp_path_factory.mktemp("interleave")
    experiment = experiment_file(folder, arms, "interleave", shares=(0.5, 0.5))
    process, url = serve_experiment(packaged, folder, experiment)
    try: yield {"url": url, "log": folder / "interleave.sqlite", "process": process}
    finally: process.stop()


def test_interleaving_answers_a_team_draft_with_each_item_attributed(interleaved, arms):
    url = interleaved["url"]
    for path, body in (("/search", {"query": "cordless drill"}), ("/similar", None)):
        if body is None: body = {"item_id": answer["items"][0]["item_id"]}
        answer = post(url, path, {**body, "k": 10, "user": "shopper-7"}).json()
        assert answer["arm"] == "interleaved" and answer["model"] == f"{arms[0]} {arms[1]}", answer
        picks = [h["arm"] for h in answer["items"]]
        assert set(picks) == {"champion", "challenger"} and abs(picks.count("champion") - picks.count("challenger")) <= 1
    assert post(url, "/search", {"query": "cordless drill"}).json()["arm"] == "champion"


def test_every_acknowledged_event_survives_kill_9(interleaved):
    "A stream of feedback from four clients; the service's whole process group gets SIGKILL mid-stream."
    from recnb.serve.feedback import FeedbackLog
    url = interleaved["url"]
    answers = [post(url, "/search", {"query": f"drill {i}", "k": 10, "user": f"shopper-{i}"}).json() for i in range(60)]
    events = [(a["request_id"], h["item_id"], e) for a in answers for h in a["items"] for e in ("click", "add_to_cart", "purchase")]
    acknowledged, lock, stop = [], threading.Lock(), threading.Event()
    def stream(part):
        with httpx.Client(base_url=url, timeout=10) as client:
            for request_id, item_id, event in part:
                if stop.is_set(): return
                try: answer = client.post("/feedback", json={"request_id": request_id, "item_id": item_id, "event": event})
                except httpx.HTTPError: return   # the service is gone
                if answer.status_code == 200:
                    with lock: acknowledged.append((request_id, item_id, event))
    clients = [threading.Thread(target=stream, args=(events[i::4],)) for i in range(4)]
    for c in clients: c.start()
    deadline = time.time() + 60
    while len(acknowledged) < 300 and time.time() < deadline: time.sleep(0.01)
    os.killpg(interleaved["process"].proc.pid, signal.SIGKILL)
    stop.set()
    for c in clients: c.join(timeout=30)
    assert 300 <= len(acknowledged) < len(events), len(acknowledged)   # killed mid-stream
    logged = FeedbackLog(interleaved["log"], SECRET.encode()).feedback()
    on_disk = set(zip(logged["request_id"], logged["item_id"], logged["event"]))
    missing = [e for e in acknowledged if e not in on_disk]
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged events are not in the log"
