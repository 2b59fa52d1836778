"`recnb demo`: the whole kit on the embedded default, one command (hand-written)."
from __future__ import annotations
import json
from pathlib import Path
from typing import Optional
import typer
from recnb.cli.common import fail, sweep_and_gate


def demo(
    sweep_file: Optional[Path] = typer.Option(None, help="sweep file; the project's params/sweep-default.yaml when omitted"),
    keep_serving: bool = typer.Option(False, help="leave the service running at the end (and say how to stop it)"),
    port: int = typer.Option(3000, help="the service's port on 127.0.0.1"),
):
    "The whole kit on the embedded default: sweep → leaderboard → winner → gate → package → service → requests → a simulated A/B."
    import os, secrets, signal, subprocess, sys, time
    import httpx
    from recnb.config import project_root, write_yaml
    from recnb.params import load_params
    from recnb.run.experiment import load_run_data
    root = project_root()
    sweep_file = sweep_file or root / "params" / "sweep-default.yaml"
    start = time.perf_counter()
    def stage(text): typer.secho(f"\n== [{time.perf_counter() - start:5.0f} s] {text}", bold=True)
    stage(f"1/6 sweep {sweep_file} (each parameter set runs the experiment notebook with papermill)")
    out = sweep_and_gate(sweep_file, jobs=1, resume=True)
    stage(f"2/6 package the winner of {out} and the runner-up")
    tag, runner_up, card, info_run_dir = _package_winner_and_runner_up(out)
    experiment = out / "ab.yaml"
    write_yaml(experiment, {"name": "demo-ab", "mode": "split", "salt": secrets.token_hex(8), "min_effect": 0.05,
                            "arms": [{"name": "champion", "model": tag, "share": 0.5}, {"name": "challenger", "model": runner_up, "share": 0.5}]})
    os.environ.setdefault("RECNB_AB_SECRET", secrets.token_hex(16))   # the demo's own; set it to keep shoppers' keys stable
    os.environ["RECNB_FEEDBACK_LOG"] = str(out / "demo-ab.sqlite")
    (out / "demo-ab.sqlite").unlink(missing_ok=True)
    stage(f"3/6 start the service: recnb serve --experiment {experiment} (bentoml serve service:RecnbService) on 127.0.0.1:{port}")
    log = out / "service.log"
    server = subprocess.Popen([sys.executable, "-m", "recnb.cli", "serve", "--experiment", str(experiment), "--port", str(port)],
                              cwd=root, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_ready(server, url, log)
        typer.echo(f"ready (pid {server.pid}, log {log})")
        stage("4/6 a few real requests")
        data = load_run_data(load_params(Path(info_run_dir) / "params.yaml"))
        _show_requests(url, data, card)
        stage("5/6 a simulated A/B: shoppers search and click by a position-biased click model (recnb ab simulate)")
        from recnb.ab.clicks import simulate_shoppers
        from recnb.cli.ab import ab_report
        test = data.queries_in("test")
        with httpx.Client(base_url=url, timeout=30) as client:
            seen = simulate_shoppers(client, dict(zip(test["query_id"], test["query"])), data.qrels("test"), units=300)
        typer.echo(f"{seen['shoppers']} shoppers: answers {seen['answers']}, events {seen['events']}")
        ab_report(out / "demo-ab.sqlite", experiment, None)
    finally:
        if keep_serving and server.poll() is None:
            stage(f"6/6 the service keeps running at {url}: stop it with `kill -TERM -{server.pid}`")
        else:
            stage("6/6 stop the service")
            try: os.killpg(server.pid, signal.SIGTERM); server.wait(timeout=30)
            except subprocess.TimeoutExpired: os.killpg(server.pid, signal.SIGKILL); server.wait()
            except ProcessLookupError: pass
            typer.echo("stopped")
    typer.echo(f"demo finished in {time.perf_counter() - start:.0f} s")


def _package_winner_and_runner_up(out: Path) -> tuple[str, str, Path, str]:
    "Package the sweep's winner (recnb:latest) and its runner-up (the winner again when one run finished: an A/A test)."
    import bentoml
    from recnb.serve.deploy import package as package_run
    from recnb.run.sweep import leaderboard
    tag = package_run(out)
    board = leaderboard(out, write=False)   # best first on validation
    finished = board.loc[board["status"] == "finished", "run"].tolist()
    runner_up = package_run(out / finished[1], name="recnb-runner-up") if len(finished) > 1 else tag   # one run: an A/A test
    # (its own model name: recnb:latest, what `recnb serve` serves by default, stays the winner)
    info_run_dir = json.loads((Path(bentoml.models.get(tag).path) / "package.json").read_text())["run_dir"]
    card = Path(bentoml.models.get(tag).path) / "README.md"
    typer.echo(f"packaged {tag} (winner); model card: {card}")
    typer.echo(f"packaged {runner_up} (runner-up {finished[1]})" if runner_up != tag else "no runner-up: the A/B is an A/A test of the winner")
    return tag, runner_up, card, info_run_dir


def _wait_until_ready(server, url: str, log: Path):
    "Wait up to 120 s for the service's /readyz; stop with its log's path if it exits or never gets ready."
    import time
    import httpx
    for _ in range(240):
        if server.poll() is not None: fail(f"the service stopped; see {log}", 1)
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200: return
        except httpx.HTTPError: pass
        time.sleep(0.5)
    fail(f"the service was not ready in 120 s; see {log}", 1)


def _show_requests(url: str, data, card: Path):
    "Send a few real requests (held-out queries, a history, an item) and print each answer, then the served model."
    import time
    import httpx
    info = httpx.get(f"{url}/info", timeout=10).json()
    queries = data.queries_in("test")["query"].tolist()[:2]  # held-out shoppers' queries
    items = data.catalog.ids
    requests = [("/search", {"query": q, "k": 3}) for q in queries] + [
        ("/recommend", {"history": items[:2], "k": 3}), ("/similar", {"item_id": items[0], "k": 3})]
    for path, body in requests:
        sent = time.perf_counter()
        answer = httpx.post(f"{url}{path}", json=body, timeout=30)
        took = 1000 * (time.perf_counter() - sent)
        typer.echo(f"POST {path} {json.dumps(body)} → {answer.status_code} in {took:.1f} ms: arm {answer.json().get('arm')}")
        for item in answer.json().get("items", []): typer.echo(f"    {item['score']:.3f}  {item['item_id']}  {item['title']}")
    typer.echo(f"model {info['tag']} ({info['ranker']}, {info['items']:,} items, {info['device']}), valid "
               f"{info['metrics']['valid'][info['ranker']]['ndcg@10']:.4f} NDCG@10")
    typer.echo(f"metrics: {url}/metrics    docs: {url}/docs    model card: {card}")
