import os, shutil, signal, socket, subprocess, sys, time
from pathlib import Path
import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")


def dataset_dir(name: str) -> Path:
    "A real dataset's folder (`recnb.data.datasets` names); the test skips, saying how to get it, or fails under RECNB_REQUIRE_DATA=1 (CI)."
    from recnb.data.datasets import REQUIRE_DATA, dataset_path, missing_dataset
    if (why := missing_dataset(name)) is None: return dataset_path(name)
    if os.environ.get(REQUIRE_DATA) == "1": pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope="session")
def homedepot():
    from recnb.data.datasets import load_dataset
    return load_dataset("homedepot", dataset_dir("homedepot"))


ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def recnb_cli(*args, env):
    return subprocess.run([sys.executable, "-m", "recnb.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=ROOT, env=env)


@pytest.fixture(scope="session")
def packaged(tmp_path_factory):
    "A small trained run of the synthetic shop (100 validation and 100 test queries), packaged with `recnb package` into a fresh BentoML store."
    from recnb.run.experiment import run
    from recnb.params import validate_params
    base = tmp_path_factory.mktemp("deploy")
    params = validate_params({"name": "served", "data": {"n_items": 300, "n_queries": 1000, "n_users": 40},
                              "train": {"epochs": 1, "max_steps": 4, "batch_size": 16}, "tracker": "disabled",
                              "eval": {"baselines": ["bm25", "zero-shot"], "model_ranker": "fine-tuned"}})
    run_dir = base / "served"
    run(params, run_dir)
    env = {**os.environ, "BENTOML_HOME": str(base / "bentoml"), "HF_HUB_OFFLINE": "1"}
    out = recnb_cli("package", run_dir, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    tag = out.stdout.strip().splitlines()[-1]
    assert tag.startswith("recnb:"), out.stdout
    return {"run_dir": run_dir, "params": params, "env": env, "tag": tag, "path": package_path(env, tag)}


def package_path(env: dict, tag: str) -> Path:
    "The folder of a package `recnb package` wrote into the store `env`'s BENTOML_HOME names."
    name, version = tag.split(":")
    return Path(env["BENTOML_HOME"]) / "models" / name / version


def served_parts(path: Path) -> dict:
    "A package's own encoder (torch or compressed, as packaged) and item index: what the service ranks with."
    from recnb.index.onnx_encoder import load_encoder
    from recnb.index.scorer import ItemIndex
    return {"encoder": load_encoder(path / "model", device="cpu"), "index": ItemIndex.load(path / "index", device="cpu")}


class Process:
    "A server started in its own session, waited for on `ready_url`, stopped by its PID (its whole process group)."
    def __init__(self, command: list[str], env: dict, cwd: Path, log: Path, ready_url: str, timeout: float = 120):
        self.log_path, self.log = log, open(log, "w")
        self.proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        import httpx
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None: self.stop(); pytest.fail(f"{command[:4]} exited:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(ready_url, timeout=2).status_code == 200: return
            except httpx.HTTPError: pass
            time.sleep(0.5)
        self.stop(); pytest.fail(f"{command[:4]} not ready within {timeout} s:\n{log.read_text()[-3000:]}")

    def stop(self):
        "Stop the process group and check nothing of it is left."
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try: self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired: os.killpg(self.proc.pid, signal.SIGKILL); self.proc.wait(timeout=10)
        except ProcessLookupError: pass
        for _ in range(20):
            try: os.killpg(self.proc.pid, 0); time.sleep(0.25)
            except ProcessLookupError: break
        else: os.killpg(self.proc.pid, signal.SIGKILL); raise AssertionError(f"processes of group {self.proc.pid} outlived SIGTERM")
        self.log.close()


def serve(packaged: dict, log: Path, **env) -> tuple[Process, str]:
    "`bentoml serve` of the packaged model on a free loopback port; returns the process and its URL."
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = Process([sys.executable, "-m", "bentoml", "serve", "service:RecnbService", "--host", "127.0.0.1", "--port", str(port)],
                      {**packaged["env"], "RECNB_MODEL": packaged["tag"], **env}, ROOT / "bentos", log, f"{url}/readyz")
    return process, url


ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


def start_alertmanager(folder: Path, watch_url: str, token: str, env: dict) -> tuple[Process, str]:
    "Alertmanager on a free loopback port with the committed alertmanager.yml pointed at `watch_url` (groups sent after 1 s)."
    port = free_port()
    config = yaml.safe_load((ROOT / "bentos" / "monitoring" / "alertmanager.yml").read_text())
    config["route"].update(group_wait="1s", group_interval="1s")
    hook = config["receivers"][0]["webhook_configs"][0]
    hook["url"] = f"{watch_url}/alerts"
    (folder / "token").write_text(token)
    hook["http_config"]["authorization"]["credentials_file"] = str(folder / "token")
    (folder / "alertmanager.yml").write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{port}"
    return Process([ALERTMANAGER, f"--config.file={folder / 'alertmanager.yml'}", f"--storage.path={folder / 'am'}",
                    f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="], env, folder,
                   folder / "alertmanager.log", f"{url}/-/ready", timeout=60), url


def wait_for_entries(entries, event: str, count: int = 1, timeout: float = 30, every: float = 0.25) -> list[dict]:
    "Poll `entries()` (audit entries, oldest first) until `count` of them are `event`; those entries."
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = [e for e in entries() if e["event"] == event]
        if len(found) >= count: return found
        time.sleep(every)
    raise AssertionError(f"no {count} × {event} within {timeout} s: {[e['event'] for e in entries()]}")
