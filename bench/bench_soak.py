"""Soak and chaos: /search at a steady rate for a long time, one worker killed with SIGKILL in the middle.

python bench/bench_soak.py --model recnb:TAG [--rate 20] [--duration 600] [--kill-at 300] [--server recnb|bentoml] [--json out.json]
An open-model load (request i is sent at i/rate s whatever the answers do) of the package's own test queries on
127.0.0.1. Reports errors by class inside and outside the recovery window (requests in flight at the kill or sent after it,
until recovery), the recovery time (from the kill to the first request sent after which every request succeeds), p50/p99 before the kill and after recovery, and every
worker's RSS sampled every 10 s (flat: within 10 % after a warm-up). The server is started and stopped by its PID.
"""
from __future__ import annotations
import argparse, asyncio, json, os, signal, subprocess, time
from pathlib import Path
import httpx
import numpy as np
from bench_serve import ROOT, Server, machine_name


def children(parent: int) -> list[int]:
    "The server's child processes (BentoML's workers)."
    return [int(p) for p in subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout.split()]


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"): return int(line.split()[1]) / 1024
    except FileNotFoundError: return None


def workers(leader: int) -> list[int]:
    "The service's worker processes (children of the `bentoml serve` process that run the service)."
    found = []
    for pid in children(leader):
        try: command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except FileNotFoundError: continue
        if "worker" in command: found.append(pid)
    return found


async def soak(url: str, queries: list[str], rate: float, duration: float, kill_at: float, leader: int) -> dict:
    n = int(rate * duration)
    results: list[tuple[float, float, str]] = []   # (sent at s, latency ms, outcome: status code or exception class)
    samples, kill = [], {}
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        start = time.perf_counter()
        async def one(i):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            sent = time.perf_counter() - start
            try:
                answer = await client.post("/search", json={"query": queries[i % len(queries)], "k": 10})
                outcome = str(answer.status_code)
            except httpx.HTTPError as e: outcome = type(e).__name__
            results.append((sent, 1000 * (time.perf_counter() - start - sent), outcome))
        async def sampler():
            while (elapsed := time.perf_counter() - start) < duration:
                samples.append({"t": round(elapsed, 1), "rss_mb": {str(p): rss_mb(p) for p in workers(leader)}})
                await asyncio.sleep(10)
        async def killer():
            await asyncio.sleep(kill_at)
            victims = workers(leader)
            os.kill(victims[0], signal.SIGKILL)
            kill.update(t=time.perf_counter() - start, pid=victims[0])
        await asyncio.gather(sampler(), killer(), *(one(i) for i in range(n)))
    return {"results": sorted(results), "samples": samples, "kill": kill}


def summarise(raw: dict, warmup_s: float) -> dict:
    results, kill_t = raw["results"], raw["kill"]["t"]
    failed_after = [t for t, _, o in results if o != "200" and t >= kill_t]
    last_failure = max(failed_after, default=kill_t)
    recovered = min((t for t, _, o in results if o == "200" and t > last_failure), default=None)
    end = recovered if recovered is not None else float("inf")
    def in_window(sent, latency_ms): return sent + latency_ms / 1000 >= kill_t and sent < end   # in flight at the kill or sent after it
    inside = [o for t, l, o in results if in_window(t, l) and o != "200"]
    outside = [o for t, l, o in results if not in_window(t, l) and o != "200"]
    def classes(outcomes): return {o: outcomes.count(o) for o in sorted(set(outcomes))}
    def percentiles(rows):
        ms = np.array([l for _, l, o in rows if o == "200"])
        return {"p50_ms": round(float(np.percentile(ms, 50)), 1), "p99_ms": round(float(np.percentile(ms, 99)), 1), "n": len(ms)} if len(ms) else {}
    before = [r for r in results if warmup_s <= r[0] < kill_t]
    after = [r for r in results if recovered is not None and r[0] >= recovered + warmup_s]
    by_pid: dict[str, list[tuple[float, float]]] = {}
    for s in raw["samples"]:
        for pid, mb in s["rss_mb"].items():
            if mb is not None: by_pid.setdefault(pid, []).append((s["t"], mb))
    rss = {}
    for pid, series in by_pid.items():
        settled = [mb for t, mb in series if t - series[0][0] >= warmup_s]
        rss[pid] = {"first_t": series[0][0], "mb": [round(mb) for _, mb in series],
                    "settled_spread": round(max(settled) / min(settled) - 1, 3) if len(settled) > 1 else None}
    return {"requests": len(results), "kill_t": round(kill_t, 1), "recovery_s": None if recovered is None else round(recovered - kill_t, 2),
            "errors_in_recovery": classes(inside), "errors_outside_recovery": classes(outside),
            "before": percentiles(before), "after": percentiles(after), "rss": rss,
            "rss_flat": all(r["settled_spread"] is None or r["settled_spread"] <= 0.10 for r in rss.values())}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="BentoML model tag written by `recnb package`")
    p.add_argument("--rate", type=float, default=20)
    p.add_argument("--duration", type=float, default=600)
    p.add_argument("--kill-at", type=float, default=300)
    p.add_argument("--warmup", type=float, default=60, help="seconds after the start and after recovery left out of p99 and RSS")
    p.add_argument("--workers", type=int, default=1, help="RECNB_WORKERS: service processes (one is killed)")
    p.add_argument("--server", choices=["recnb", "bentoml"], default="recnb",
                   help="recnb serve (a dead worker noticed within 1 s) or plain bentoml serve (within 10 s)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    import bentoml
    from recnb.run.experiment import load_run_data
    from recnb.params import load_params
    info = json.loads((Path(bentoml.models.get(args.model).path) / "package.json").read_text())
    data = load_run_data(load_params(Path(info["run_dir"]) / "params.yaml"))
    queries = data.queries_in("test")["query"].astype(str).tolist()
    log = (args.json.with_suffix(".log") if args.json else Path("bench_soak.log"))
    command = {"recnb": ["python", "-m", "recnb.cli", "serve", args.model, "--host", "127.0.0.1"],
               "bentoml": ["python", "-m", "bentoml", "serve", "service:RecnbService", "--host", "127.0.0.1"]}[args.server]
    server = Server(command, {"RECNB_MODEL": args.model, "RECNB_WORKERS": str(args.workers)}, ROOT / "bentos", log)
    try: raw = asyncio.run(soak(server.url, queries, args.rate, args.duration, args.kill_at, server.proc.pid))
    finally: server.stop()
    summary = {"machine": machine_name(), "model": args.model, "items": info["items"], "rate": args.rate, "workers": args.workers, "server": args.server,
               "duration_s": args.duration, **summarise(raw, args.warmup)}
    print(json.dumps({k: v for k, v in summary.items() if k != "rss"}, indent=1))
    for pid, r in summary["rss"].items(): print(f"worker {pid} from t={r['first_t']} s: RSS MB {r['mb']} (spread after warm-up {r['settled_spread']})")
    if args.json: args.json.write_text(json.dumps({**summary, "raw": raw}, indent=1))


if __name__ == "__main__":
    main()
