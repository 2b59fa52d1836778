"""The service tried the way an attacker would, over real sockets to a real `bentoml serve`: every bad request gets the documented
answer fast, metric labels stay bounded, a damaged package is refused with its file named, TLS, and a clean restart
after the server's main process is killed."""
import asyncio, json, os, shutil, signal, socket, subprocess, sys, time, uuid
from pathlib import Path
import httpx
import pytest
from conftest import ROOT, Process, free_port, recnb_cli as recnb, serve

pytestmark = pytest.mark.integration  # real bentoml serve processes

API_KEY = "hardening-key-51c2"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
ERROR_KEYS = {"error", "status", "problems"}


@pytest.fixture(scope="module")
def server(packaged, tmp_path_factory):
    "The packaged synthetic model served with the API key set; its log is read by the tests."
    log = tmp_path_factory.mktemp("hardened") / "serve.log"
    process, url = serve(packaged, log, RECNB_API_KEY=API_KEY)
    try: yield {"url": url, "log": log, "pid": process.proc.pid}
    finally: process.stop()


def raw(url: str, request: bytes, timeout: float = 15) -> tuple[int, dict, bytes]:
    "Send bytes as they are (no client to correct them); the status, headers and body of the answer."
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536): data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {k.lower(): v for k, v in (l.decode("latin-1").split(": ", 1) for l in lines[1:] if b": " in l)}
    return int(lines[0].split()[1]), headers, body


def post_raw(url, path, body: bytes, headers: bytes = b"", content_type=b"application/json") -> tuple[int, dict, bytes]:
    return raw(url, b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: " + content_type +
               b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n" + headers + b"\r\n" + body)


def documented(status: int, body: bytes, words: str = "") -> dict:
    error = json.loads(body)
    assert set(error) == ERROR_KEYS and error["status"] == status, error
    assert words in error["error"], (words, error)
    return error


def post(url, path, body, headers=AUTH, **kw):
    return httpx.post(f"{url}{path}", json=body, headers=headers, timeout=30, **kw)


def test_headers_that_are_not_utf8_get_401_at_once(server):
    for header in (b"X-API-Key: \xff", b"Authorization: Bearer \xff\xfe", b"Authorization: \xff"):
        started = time.perf_counter()
        status, headers, body = post_raw(server["url"], "/search", b'{"query": "drill"}', header + b"\r\n")
        assert status == 401 and time.perf_counter() - started < 5, (header, status, body)
        documented(401, body, "API key")
        assert headers["www-authenticate"] == "Bearer"


def test_the_bearer_scheme_in_any_case(server):
    for scheme in ("bearer", "BEARER", "Bearer"):
        answer = post(server["url"], "/search", {"query": "drill", "k": 2}, headers={"Authorization": f"{scheme} {API_KEY}"})
        assert answer.status_code == 200, (scheme, answer.text)
    assert post(server["url"], "/search", {"query": "drill"}, headers={"Authorization": f"Basic {API_KEY}"}).status_code == 401


def test_search_batch_has_a_documented_limit(server):
    url = server["url"]
    from recnb.serve.serving import MAX_BATCH_QUERIES
    answer = post(url, "/search_batch", {"queries": ["drill"] * 800})
    assert answer.status_code == 400 and f"at most {MAX_BATCH_QUERIES} items" in answer.json()["error"], answer.text
    answer = post(url, "/search_batch", {"queries": []})
    assert answer.status_code == 400 and "queries" in answer.json()["error"], answer.text
    long = [f"cordless drill {i} " + "with a battery and a case " * 37 for i in range(100)]  # 100 queries of ~1,000 characters
    assert all(len(q) <= 1000 for q in long)
    answer = post(url, "/search_batch", {"queries": long}, headers=AUTH)
    assert answer.status_code == 200 and len(answer.json()) == 100, answer.text[:300]
    answer = post(url, "/search_batch", {"queries": ["drill"] * MAX_BATCH_QUERIES})
    assert answer.status_code == 200 and len(answer.json()) == MAX_BATCH_QUERIES


@pytest.mark.parametrize("path,body,field", [
    ("/search", {"query": "drill", "top_k": 3}, "top_k"),
    ("/recommend", {"history": ["P000001"], "n": 3}, "n"),
    ("/similar", {"item_id": "P000001", "k": 3, "extra": True}, "extra"),
    ("/search_batch", {"queries": ["drill"], "k": 3}, "k"),
    ("/search", {"query": "\u0000"}, "query"),
    ("/search", {"query": "\u200b\u200b"}, "query"),
    ("/search", {"query": "\u202e\u2066\u2069"}, "query"),
    ("/search_batch", {"queries": ["drill", "\u200b"]}, "queries.1"),
])
def test_unknown_fields_and_invisible_queries_are_400(server, path, body, field):
    answer = post(server["url"], path, body)
    assert answer.status_code == 400, answer.text
    error = documented(400, answer.content)
    assert field in [p["field"] for p in error["problems"]], error


def test_json_bodies_only(server):
    url, body = server["url"], b'{"query": "drill"}'
    auth = f"Authorization: Bearer {API_KEY}\r\n".encode()
    for content_type in (b"text/plain", b"application/x-www-form-urlencoded", b"multipart/form-data; boundary=x",
                         b"application/json; charset=latin-1"):
        status, _, answer = post_raw(url, "/search", body, auth, content_type)
        assert status == 415, (content_type, status, answer)
        documented(415, answer, "application/json")
    import gzip
    status, _, answer = post_raw(url, "/search", gzip.compress(body), auth + b"Content-Encoding: gzip\r\n")
    documented(415, answer, "uncompressed")
    status, _, answer = post_raw(url, "/search", body, auth, b"application/json; charset=utf-8")
    assert status == 200, answer


def test_a_client_that_disconnects_mid_upload_is_not_a_server_error(server):
    url = server["url"]
    def errors() -> float:
        text = httpx.get(f"{url}/metrics", timeout=10).text
        return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
                   if l.startswith("bentoml_service_request_total{") and 'http_response_code="5' in l and "/search" in l)
    before = errors()
    host, port = url.removeprefix("http://").split(":")
    for _ in range(5):
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer " +
                      API_KEY.encode() + b"\r\nContent-Length: 1000\r\n\r\n{\"query\": \"dr")
    time.sleep(1.0)
    assert post(url, "/search", {"query": "drill"}).status_code == 200
    assert errors() == before


def test_metrics_keep_their_size_whatever_the_paths(server):
    url = server["url"]
    with httpx.Client(base_url=url, timeout=10) as client:
        for i in range(5): client.get(f"/warm-{i}"); client.post(f"/warm-{i}", json={})
        lines = len(client.get("/metrics").text.splitlines())
        for i in range(1000):
            path = f"/x-{uuid.uuid4()}"
            answer = client.post(path, json={}, headers=AUTH) if i % 3 == 0 else client.get(path, headers={} if i % 2 else AUTH)
            assert answer.status_code == 404 and set(answer.json()) == ERROR_KEYS
        after = client.get("/metrics").text
        assert client.get("/static_content/swagger-ui.css").status_code == 200
    assert len(after.splitlines()) == lines, (lines, len(after.splitlines()))
    assert 'recnb_rejected_requests_total{endpoint="(other)",status="404"}' in after and "/x-" not in after


def test_unknown_docs_assets_are_404_and_not_counted_by_path(server):
    with httpx.Client(base_url=server["url"], timeout=10) as client:
        client.get("/static_content/warm")
        lines = len(client.get("/metrics").text.splitlines())
        for i in range(100): assert client.get(f"/static_content/{uuid.uuid4()}.js").status_code == 404
        assert len(client.get("/metrics").text.splitlines()) == lines


def test_rejections_are_one_line_each_without_the_request_content(server):
    url, marker = server["url"], f"secret-{uuid.uuid4().hex[:8]}"
    for body in ({"query": marker, "k": 0}, {"query": marker, "top_k": 1}, {"history": [marker], "k": 5}):
        assert post(url, "/search" if "query" in body else "/recommend", body).status_code in (400, 422)
    post_raw(url, "/search", json.dumps({"query": marker}).encode(), content_type=b"text/plain")
    time.sleep(0.5)
    log = server["log"].read_text()
    assert marker not in log and "Traceback" not in log, log[-3000:]
    assert "rejected method=POST path=/search status=400" in log and "fields=k" in log and "status=415" in log


def test_the_docs_ui_and_a_valid_openapi_document(server):
    url = server["url"]
    page = httpx.get(f"{url}/docs", timeout=10, follow_redirects=True)
    assert page.status_code == 200 and "swagger" in page.text.lower()
    spec = httpx.get(f"{url}/docs.json", timeout=10).json()
    from openapi_spec_validator import validate
    validate(spec)
    text = json.dumps(spec)
    assert '"example": "cordless drill"' in text


def test_bentomls_own_client_still_works(server):
    import bentoml
    with bentoml.SyncHTTPClient(server["url"], token=API_KEY) as client:
        answer = client.search(query="cordless drill", k=3)
    assert len(answer["items"]) == 3


@pytest.fixture(scope="module")
def tight(packaged, tmp_path_factory):
    "The same package with one request in flight at most and a 1 s time limit."
    log = tmp_path_factory.mktemp("tight") / "serve.log"
    process, url = serve(packaged, log, RECNB_MAX_CONCURRENCY="1", RECNB_TIMEOUT_S="1")
    try: yield url
    finally: process.stop()


def test_429_and_504_get_the_documented_body(tight):
    long = [f"drill {i} " + "with a battery and a case " * 38 for i in range(128)]
    async def together():
        async with httpx.AsyncClient(base_url=tight, timeout=30) as client:
            return await asyncio.gather(*(client.post("/search_batch", json={"queries": long}) for _ in range(6)))
    answers = asyncio.run(together())
    statuses = sorted(a.status_code for a in answers)
    assert 429 in statuses and 504 in statuses, statuses
    for a in answers:
        if a.status_code == 429:
            documented(429, a.content, "too many requests"); assert a.headers["retry-after"] == "1"
        if a.status_code == 504: documented(504, a.content, "time limit")
    assert httpx.post(f"{tight}/search", json={"query": "drill"}, timeout=30).status_code == 200


def _damaged_copy(packaged: dict, name: str, damage: str) -> str:
    "A copy of the package under a new tag with one kind of damage; returns the tag."
    script = f"""
import json, shutil, sys, torch
from pathlib import Path
import bentoml
from safetensors.torch import save_file
from recnb.run.verify import file_digests
good = bentoml.models.get({packaged['tag']!r})
with bentoml.models.create({name!r}, labels=good.info.labels) as m:
    target = Path(m.path)
    for p in Path(good.path).iterdir():
        if p.name != "model.yaml": (shutil.copytree if p.is_dir() else shutil.copy)(p, target / p.name)
    damage = {damage!r}
    if damage == "shuffled-ids":
        ids = json.loads((target / "index" / "ids.json").read_text())
        (target / "index" / "ids.json").write_text(json.dumps(ids[1:] + ids[:1]))
    if damage == "random-vectors":  # of the right shape, with checksums recomputed: only the unit-length check can tell
        vectors = torch.randn(len(json.loads((target / "index" / "ids.json").read_text())), 384)
        save_file({{"vectors": vectors}}, str(target / "index" / "vectors.safetensors"))
        info = json.loads((target / "package.json").read_text()); info["files"] = file_digests(target)
        (target / "package.json").write_text(json.dumps(info))
    if damage == "truncated-weights":   # the encoder's weights, as packaged (a compressed encoder's graph, or torch's)
        weights = target / "model" / {weights_file(packaged)!r}
        weights.write_bytes(weights.read_bytes()[:1_000_000])
print(m.tag)
"""
    out = subprocess.run([sys.executable, "-c", script], env=packaged["env"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()[-1]


def weights_file(packaged) -> str:
    "The file of the package's encoder weights: the ONNX graph of a compressed encoder (the default), or torch's safetensors."
    return "encoder.onnx" if (packaged["path"] / "model" / "encoder.onnx").is_file() else "model.safetensors"


DAMAGES = [("shuffled-ids", "index/ids.json: its sha256 differs"),
           ("random-vectors", "item vectors are not unit length"),
           ("truncated-weights", "model/WEIGHTS: its sha256 differs")]


def test_recnb_verify_checks_a_package_offline(packaged):
    out = recnb("verify", packaged["tag"], env=packaged["env"])
    assert out.returncode == 0 and "verified" in out.stdout, out.stderr
    for damage, words in DAMAGES:
        tag = _damaged_copy(packaged, f"verify-{damage}", damage)
        out = recnb("verify", tag, env=packaged["env"])
        words = words.replace("WEIGHTS", weights_file(packaged))
        assert out.returncode == 2 and words in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]


def test_a_damaged_package_is_refused_not_served(packaged, tmp_path):
    for damage, words in DAMAGES:
        tag = _damaged_copy(packaged, f"served-{damage}", damage)
        words = words.replace("WEIGHTS", weights_file(packaged))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = tmp_path / f"{damage}.log"
        process = Process([sys.executable, "-m", "bentoml", "serve", "service:RecnbService", "--host", "127.0.0.1", "--port", str(port)],
                          {**packaged["env"], "RECNB_MODEL": tag}, ROOT / "bentos", log, f"{url}/livez")
        try:
            ready = httpx.get(f"{url}/readyz", timeout=10)
            assert ready.status_code == 503 and ready.headers["retry-after"] == "5", ready.text
            documented(503, ready.content, words)
            search = httpx.post(f"{url}/search", json={"query": "drill"}, timeout=10)
            documented(503, search.content, words)
            time.sleep(3)   # a restart loop would show more refusals and tracebacks by now
            text = log.read_text()
            assert text.count("recnb: refusing") == 1 and "Traceback" not in text, text[-3000:]
            assert httpx.get(f"{url}/livez", timeout=10).status_code == 200
        finally: process.stop()


def test_package_turns_bad_input_into_one_line_and_exit_2(packaged, tmp_path):
    env, run_dir = packaged["env"], packaged["run_dir"]
    out = recnb("package", run_dir, "--name", "Bad Name!", env=env)
    assert out.returncode == 2 and "--name 'Bad Name!'" in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]
    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken, ignore=shutil.ignore_patterns("wandb", "checkpoints"))
    metrics = (run_dir / "metrics.json").read_text()
    cases = [("metrics.json", metrics[:100], "metrics.json: not valid JSON"),
             ("metrics.json", json.dumps({k: v for k, v in json.loads(metrics).items() if k != "model"}), "metrics.json: has no 'model'")]
    for name, text, words in cases:
        (broken / name).write_text(text)
        out = recnb("package", broken, env=env)
        assert out.returncode == 2 and words in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    (broken / "metrics.json").write_text(metrics)
    weights = broken / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100_000])
    out = recnb("package", broken, env=env)
    assert out.returncode == 2 and "model.safetensors: not a complete safetensors file" in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr


def _self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def _running(pid: int) -> bool:
    "Whether a process runs (a zombie does not: PID 1 may not reap it here)."
    try: return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError: return False


def test_https_a_clean_restart_after_kill_9_of_the_main_process_and_a_dead_worker_replaced(packaged, tmp_path):
    import ssl
    cert, key = _self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    env = {**packaged["env"], "RECNB_MODEL": packaged["tag"], "RECNB_TLS_CERT": str(cert), "RECNB_TLS_KEY": str(key)}
    command = [sys.executable, "-m", "bentoml", "serve", "service:RecnbService", "--host", "127.0.0.1", "--port", str(port)]
    log = tmp_path / "tls.log"
    proc = subprocess.Popen(command, cwd=ROOT / "bentos", env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=2, verify=trust).status_code == 200: break
            except httpx.HTTPError: time.sleep(0.5)
        else: pytest.fail(log.read_text()[-3000:])
        answer = httpx.post(f"{url}/search", json={"query": "drill", "k": 2}, timeout=30, verify=trust)
        assert answer.status_code == 200 and len(answer.json()["items"]) == 2
        with pytest.raises(httpx.HTTPError): httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        workers = [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()]
        assert workers, "no worker found"
        os.kill(proc.pid, signal.SIGKILL); proc.wait(timeout=10)
        for _ in range(60):
            if not any(_running(p) for p in workers): break
            time.sleep(0.25)
        else: pytest.fail(f"workers {workers} outlived the killed server: {log.read_text()[-2000:]}")
    finally:
        try: os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError: pass
    plain = {k: v for k, v in env.items() if not k.startswith("RECNB_TLS_")}
    restarted = Process([sys.executable, "-m", "recnb.cli", "serve", packaged["tag"], "--port", str(port)], plain, ROOT,
                        tmp_path / "restart.log", f"http://127.0.0.1:{port}/readyz")  # the same port, free again
    try:   # recnb serve replaces a dead worker within a second (BentoML's own check: every 10 s)
        [worker] = _workers(restarted.proc.pid)
        os.kill(worker, signal.SIGKILL); killed = time.time()
        while not (replaced := [p for p in _workers(restarted.proc.pid) if p != worker]) and time.time() - killed < 5: time.sleep(0.05)
        assert replaced and time.time() - killed < 3, f"no new worker {time.time() - killed:.1f} s after the kill"
        while time.time() - killed < 90:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200: break
            except httpx.HTTPError: pass
            time.sleep(0.25)
        assert httpx.post(f"http://127.0.0.1:{port}/search", json={"query": "drill", "k": 2}, timeout=30).status_code == 200
    finally: restarted.stop()


def _workers(server: int) -> list[int]:
    "The service's worker processes under a server process."
    children = subprocess.run(["pgrep", "-P", str(server)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in children if _running(int(p)) and b"worker" in Path(f"/proc/{p}/cmdline").read_bytes()]
