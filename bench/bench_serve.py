"""/search under load: recnb's BentoML service with and without adaptive batching vs the plain per-request peer.

python bench/bench_serve.py --model recnb:TAG [--rates 10,20,50,100,150,200] [--duration 60] [--json out.json]
With a two-stage package (`recnb.train.rerank`), `recnb-first-stage` serves the same package with its second stage off
(RECNB_RERANK_TIMEOUT_MS=0), `--rerank-top-n` serves it shallower than evaluated (RECNB_RERANK_TOP_N), and each recnb
contender's re-ranked and fallen-back queries are printed.
An open-model load (fixed arrival rate: request i is sent at i/rate s whatever the answers do; asyncio + aiohttp, or httpx
with --client httpx, the load generator of the fifteenth to eighteenth sessions) on
127.0.0.1, the same seeded query stream for every contender, rates rising until the contender saturates (p99 over
--slo-ms, errors, or under 90 % of the offered rate answered). Each server is started, warmed and stopped by its PID.
"""
from __future__ import annotations
import argparse, asyncio, contextlib, json, os, signal, socket, subprocess, sys, time
from pathlib import Path
import httpx
import numpy as np
from machine import cpu_name

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def machine_name() -> str:
    return f"{cpu_name()}, {os.cpu_count()} cores"


class Server:
    "A server process in its own session, stopped by its PID (the whole process group)."
    def __init__(self, command: list[str], env: dict, cwd: Path, log: Path):
        self.port = free_port()
        self.log = open(log, "w")
        self.proc = subprocess.Popen([*command, *(["--port", str(self.port)] if {"bentoml", "recnb.cli"} & set(command) else [str(self.port)])],
                                     cwd=cwd, env={**os.environ, **env}, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.proc.poll() is not None: raise RuntimeError(f"server exited; see {log}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200: return
            except httpx.HTTPError: pass
            time.sleep(0.5)
        self.stop(); raise RuntimeError(f"server not ready in 180 s; see {log}")

    def stop(self):
        try: os.killpg(self.proc.pid, signal.SIGTERM); self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired: os.killpg(self.proc.pid, signal.SIGKILL); self.proc.wait()
        except ProcessLookupError: pass
        self.log.close()


def zipf_stream(queries: list[str], n: int, s: float, seed: int = 0) -> list[str]:
    "`n` queries drawn with probability ∝ 1 / rank^s over `queries` (their order is the rank): a head of repeated queries and a long tail."
    weights = 1.0 / np.arange(1, len(queries) + 1) ** s
    picks = np.random.default_rng(seed).choice(len(queries), size=n, p=weights / weights.sum())
    return [queries[i] for i in picks]


def metric_counts(url: str, metric: str, label: str, values: tuple) -> dict:
    "The service's counter `metric` so far (/metrics), summed over arms, by the values of `label`."
    import re
    text = httpx.get(f"{url}/metrics", timeout=10).text
    counts = dict.fromkeys(values, 0.0)
    for m in re.finditer(rf'{metric}_total\{{arm="[^"]*",{label}="({"|".join(values)})"\}} ([\d.e+]+)', text): counts[m.group(1)] += float(m.group(2))
    return counts


def cache_counts(url: str) -> dict:
    "Hits and misses of the answer cache so far."
    return metric_counts(url, "recnb_cache_lookups", "result", ("hit", "miss"))


def rerank_counts(url: str) -> dict:
    "Queries a two-stage model re-ranked and those that fell back to the first stage's order."
    return metric_counts(url, "recnb_rerank_queries", "outcome", ("reranked", "fallback"))


CLIENTS = ("aiohttp", "httpx")  # the load generator's HTTP client; aiohttp costs the measurement less (below)


@contextlib.asynccontextmanager
async def http_client(url: str, headers: dict, kind: str = "aiohttp"):
    "`post(path, body) -> (status, body bytes)` over one pooled client of `kind`; a failed request raises `CLIENT_ERRORS`."
    # The client's own time is inside every latency measured here: GET /livez (no work in the server) at 20/s took
    # p50 4.3-4.4 ms through httpx and 2.6-2.9 ms through aiohttp (AMD EPYC, 2 cores, the same server)
    if kind == "httpx":
        limits = httpx.Limits(max_connections=2000, max_keepalive_connections=2000)
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30, limits=limits) as client:
            async def post(path, body):
                r = await client.post(path, json=body); return r.status_code, r.content
            yield post
    else:
        import aiohttp
        async with aiohttp.ClientSession(base_url=url, headers=headers, timeout=aiohttp.ClientTimeout(total=30),
                                         connector=aiohttp.TCPConnector(limit=2000)) as session:
            async def post(path, body):
                async with session.post(path, json=body) as r: return r.status, await r.read()
            yield post


def _client_errors() -> tuple:
    import aiohttp
    return (httpx.HTTPError, aiohttp.ClientError, asyncio.TimeoutError)


async def load(url: str, queries: list[str], rate: float, duration: float, headers: dict, users: int = 0, client: str = "aiohttp") -> dict:
    "Send `rate` requests/s for `duration` s (open model; request i from shopper i mod `users` when users > 0); latency of each, errors by status."
    n = int(rate * duration)
    latencies, statuses, errors = [], {}, _client_errors()
    async with http_client(url, headers, client) as post:
        start = time.perf_counter()
        async def one(i):
            delay = start + i / rate - time.perf_counter()
            if delay > 0: await asyncio.sleep(delay)
            sent = time.perf_counter()
            try:
                body = {"query": queries[i % len(queries)], "k": 10, **({"user": f"shopper-{i % users}"} if users else {})}
                code, _ = await post("/search", body)
            except errors as e: code = type(e).__name__
            done = time.perf_counter()
            statuses[code] = statuses.get(code, 0) + 1
            if code == 200: latencies.append(done - sent)
            return done
        ends = await asyncio.gather(*(one(i) for i in range(n)))
        wall = max(ends) - start
    lat = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    ok = statuses.get(200, 0)
    return {"rate": rate, "sent": n, "ok": ok, "errors": n - ok, "statuses": {str(k): v for k, v in statuses.items()},
            "throughput": round(ok / wall, 1), "p50_ms": round(float(np.percentile(lat, 50)), 1),
            "p95_ms": round(float(np.percentile(lat, 95)), 1), "p99_ms": round(float(np.percentile(lat, 99)), 1)}


def saturated(row: dict, slo_ms: float) -> bool:
    return row["errors"] > 0 or row["p99_ms"] > slo_ms or row["throughput"] < 0.9 * row["rate"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="BentoML model tag written by `recnb package`")
    p.add_argument("--rates", default="10,20,50,100,150,200,300")
    p.add_argument("--duration", type=float, default=60)
    p.add_argument("--slo-ms", type=float, default=1000, help="p99 above this counts as saturated")
    p.add_argument("--contenders", default="recnb-batched,recnb-unbatched,peer-fastapi")
    p.add_argument("--overhead-rounds", type=int, default=2, help="monitoring on/off pairs at --overhead-rate (0: skip)")
    p.add_argument("--overhead-rate", type=float, default=20)
    p.add_argument("--stream", choices=("cycle", "zipf"), default="cycle",
                   help="cycle: the shuffled test queries in turn; zipf: drawn with probability ∝ 1/rank^--zipf-s (repeats)")
    p.add_argument("--zipf-s", type=float, default=1.0)
    p.add_argument("--client", choices=CLIENTS, default="aiohttp", help="the load generator's HTTP client")
    p.add_argument("--rerank-top-n", type=int, help="a two-stage package: items re-ranked per query (RECNB_RERANK_TOP_N), the run's when unset")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    import bentoml
    from recnb.run.experiment import load_run_data
    from recnb.params import load_params
    stored = bentoml.models.get(args.model)
    info = json.loads((Path(stored.path) / "package.json").read_text())
    data = load_run_data(load_params(Path(info["run_dir"]) / "params.yaml"))
    queries = data.queries_in("test")["query"].tolist()
    np.random.default_rng(0).shuffle(queries)
    if args.stream == "zipf": queries = zipf_stream(queries, 20_000, args.zipf_s)
    env = {"RECNB_MODEL": str(stored.tag), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if args.rerank_top_n: env["RECNB_RERANK_TOP_N"] = str(args.rerank_top_n)
    serve = [sys.executable, "-m", "bentoml", "serve", "service:RecnbService", "--host", "127.0.0.1"]
    commands = {   # recnb without its answer cache unless named: every query computed, as the peer does
        "recnb-batched": (serve, {"RECNB_BATCHING": "1", "RECNB_CACHE_SIZE": "0"}),
        "recnb-unbatched": (serve, {"RECNB_BATCHING": "0", "RECNB_CACHE_SIZE": "0"}),
        "recnb-cached": (serve, {"RECNB_BATCHING": "1"}),   # the service's default cache
        "peer-fastapi": ([sys.executable, str(ROOT / "bench" / "peer_service.py"), stored.path], {}),
        "recnb-no-monitoring": (serve, {"RECNB_MONITORING": "0", "RECNB_CACHE_SIZE": "0"}),
        "recnb-first-stage": (serve, {"RECNB_BATCHING": "1", "RECNB_CACHE_SIZE": "0", "RECNB_RERANK_TIMEOUT_MS": "0"}),  # a two-stage package, second stage off
    }
    out = {"machine": machine_name(), "model": str(stored.tag), "ranker": info["ranker"], "items": info["items"],
           "encoder": (info.get("encoder") or {"format": "torch"})["format"], "stream": args.stream,
           "zipf_s": args.zipf_s if args.stream == "zipf" else None, "duration_s": args.duration, "queries": len(set(queries)), "client": args.client,
           "rerank_top_n": args.rerank_top_n or (info.get("rerank") or {}).get("top_n"), "results": {}, "cache": {}}
    print(f"{out['machine']}; {out['model']} ({info['ranker']}, {info['items']:,} items, encoder {out['encoder']}); "
          f"{args.duration:.0f} s per rate; client {args.client}; stream {args.stream}" + (f" (s = {args.zipf_s})" if args.stream == "zipf" else ""))
    log_dir = ROOT / "bench" / "out"; log_dir.mkdir(parents=True, exist_ok=True)
    for name in [c for c in args.contenders.split(",") if c]:
        command, extra = commands[name]
        server = Server(command, {**env, **extra}, ROOT / "bentos", log_dir / f"serve-{name}.log")
        try:
            asyncio.run(load(server.url, queries, 10, 5, {}, client=args.client))  # warm up
            two_stage = name.startswith("recnb") and info.get("rerank")
            before = rerank_counts(server.url) if two_stage else {}
            rows = out["results"][name] = []
            for rate in map(float, args.rates.split(",")):
                row = asyncio.run(load(server.url, queries, rate, args.duration, {}, client=args.client))
                rows.append(row)
                print(f"{name:16s} {rate:6.0f}/s → {row['throughput']:7.1f}/s ok, p50 {row['p50_ms']:7.1f} p95 {row['p95_ms']:7.1f} "
                      f"p99 {row['p99_ms']:7.1f} ms, errors {row['errors']} {row['statuses']}", flush=True)
                if saturated(row, args.slo_ms): break
            if name.startswith("recnb"): out["cache"][name] = cache_counts(server.url)
            if two_stage:   # over the measured rates, the warm-up left out
                out.setdefault("rerank", {})[name] = {k: v - before[k] for k, v in rerank_counts(server.url).items()}
                print(f"{name:16s} second stage: {out['rerank'][name]}", flush=True)
        finally: server.stop()
    rounds = []
    for _ in range(args.overhead_rounds):  # monitoring on and off, alternated, same rate: its cost on /search latency
        pair = {}
        for name in ("recnb-batched", "recnb-no-monitoring"):
            command, extra = commands[name]
            server = Server(command, {**env, **extra}, ROOT / "bentos", log_dir / f"serve-{name}-overhead.log")
            try:
                asyncio.run(load(server.url, queries, 10, 5, {}, client=args.client))
                pair[name] = asyncio.run(load(server.url, queries, args.overhead_rate, args.duration, {}, client=args.client))
            finally: server.stop()
            print(f"overhead {name:20s} {args.overhead_rate:.0f}/s: p50 {pair[name]['p50_ms']} p99 {pair[name]['p99_ms']} ms, "
                  f"errors {pair[name]['errors']}", flush=True)
        rounds.append(pair)
    if rounds:
        on = float(np.median([r["recnb-batched"]["p99_ms"] for r in rounds]))
        off = float(np.median([r["recnb-no-monitoring"]["p99_ms"] for r in rounds]))
        out["monitoring_overhead"] = {"rate": args.overhead_rate, "rounds": rounds, "p99_on_ms": on, "p99_off_ms": off,
                                      "p99_ratio": round(on / off, 3)}
        print(f"monitoring at {args.overhead_rate:.0f}/s: median p99 {on:.1f} ms on vs {off:.1f} ms off = {on / off:.3f}×")
    for name, c in out["cache"].items():
        if c["hit"] + c["miss"]: print(f"{name}: answer cache hit ratio {c['hit'] / (c['hit'] + c['miss']):.3f} ({c['hit']:.0f} of {c['hit'] + c['miss']:.0f})")
    best = {n: max(r["throughput"] for r in rows) for n, rows in out["results"].items()}
    out["saturation_throughput"] = best
    if "peer-fastapi" in best:
        for n, v in best.items(): print(f"{n}: saturation throughput {v:.1f}/s = {v / best['peer-fastapi']:.2f}× the peer")
    if args.json: args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
