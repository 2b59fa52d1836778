"""Where one /search spends its time: each stage in-process, then the HTTP and BentoML part from a real `bentoml serve`.

python bench/bench_breakdown.py --model recnb:TAG [--queries 300] [--rates 1,20] [--duration 30] [--json out.json]
Stages (medians over the package's own test queries, one query per call, as a lone request runs): tokenising, the
encoder's forward pass, BM25, the exact scorer, fusion, monitoring (`ServiceMonitor.searched`) and the answer's
serialisation; then the served p50 at each rate, split into the handler's own time (`took_ms` of the answers) and the
rest (HTTP, BentoML, queuing). Run it on two packages of one run (`recnb package --encoder torch` and the default) for
before and after.
"""
from __future__ import annotations
import argparse, asyncio, json, statistics, sys, time
from pathlib import Path
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import CLIENTS, ROOT, Server, http_client, machine_name  # noqa: E402


def median_ms(fn, items) -> float:
    times = []
    for item in items:
        start = time.perf_counter(); fn(item); times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times), 3)


def stages(path: Path, queries: list[str]) -> dict:
    "Median ms of each stage of `rank_queries` and the answer around it, for one query at a time."
    from safetensors.torch import load_file
    from recnb.rank.baselines import Ranking, fuse, ranking_of
    from recnb.index.encoder import TokenTable
    from recnb.serve.monitoring import ServiceMonitor
    from recnb.serve.serving import MAX_K, Answer, PackagedModel
    model = PackagedModel(path, device="cpu")
    encoder, hybrid = model.encoder, model.hybrid
    depth = max(hybrid.depth, MAX_K) if hybrid else MAX_K
    for q in queries[:20]: model.rank_queries([q])   # warm
    vectors = {q: encoder.encode([q]) for q in queries}
    dense = {q: ranking_of(model.index.search(vectors[q], k=depth)) for q in queries}
    out = {"tokenise": median_ms(lambda q: TokenTable(encoder.tokenizer, [q], encoder.max_length).padded(np.arange(1)), queries),
           "encode (tokenise + forward)": median_ms(lambda q: encoder.encode([q]), queries),
           "scorer": median_ms(lambda q: model.index.search(vectors[q], k=depth), queries)}
    if hybrid:
        bm25 = {q: hybrid.rankers[0].rank([q], depth) for q in queries}
        out["bm25"] = median_ms(lambda q: hybrid.rankers[0].rank([q], depth), queries)
        out["fusion"] = median_ms(lambda q: fuse([bm25[q], dense[q]], hybrid.weights, hybrid.method, MAX_K, hybrid.rrf_c), queries)
    monitor = ServiceMonitor(model.describe(), load_file(str(path / "reference.safetensors")), arm="bench")
    best = {q: torch.tensor([dense[q].scores[0][0]]) for q in queries}
    out["monitoring"] = median_ms(lambda q: monitor.searched([q], vectors[q], best[q]), queries)
    ranking = model.rank_queries([queries[0]], k=10)[0]
    out["answer (hits + JSON)"] = median_ms(lambda q: Answer(items=model.hits(Ranking([ranking.ids[0][:10]], [ranking.scores[0][:10]])),
                                                             arm="champion", model=model.tag, request_id="0" * 32, took_ms=1.0).model_dump_json(), queries)
    out["rank_queries (all of the model's work)"] = median_ms(lambda q: model.rank_queries([q], k=MAX_K), queries)
    out["encoder"] = model.describe()["encoder"]["format"]
    return out


async def served(url: str, queries: list[str], rate: float, duration: float, client: str = "aiohttp") -> dict:
    "p50 of the client's latency and of the answers' own took_ms at `rate` requests/s (open model)."
    n, latencies, took = int(rate * duration), [], []
    async with http_client(url, {}, client) as post:
        start = time.perf_counter()
        async def one(i):
            delay = start + i / rate - time.perf_counter()
            if delay > 0: await asyncio.sleep(delay)
            sent = time.perf_counter()
            status, body = await post("/search", {"query": queries[i % len(queries)], "k": 10})
            if status == 200: latencies.append(time.perf_counter() - sent); took.append(json.loads(body)["took_ms"])
        await asyncio.gather(*(one(i) for i in range(n)))
    p50, handler = 1000 * float(np.median(latencies)), float(np.median(took))
    return {"rate": rate, "ok": len(latencies), "sent": n, "p50_ms": round(p50, 2), "p99_ms": round(1000 * float(np.percentile(latencies, 99)), 2),
            "handler_p50_ms": round(handler, 2), "outside_handler_ms": round(p50 - handler, 2)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--rates", default="1,20")
    p.add_argument("--duration", type=float, default=30)
    p.add_argument("--cache-size", default="0", help="RECNB_CACHE_SIZE of the served runs (0: every query computed)")
    p.add_argument("--client", choices=CLIENTS, default="aiohttp", help="the load generator's HTTP client")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    import bentoml
    from recnb.run.experiment import load_run_data
    from recnb.params import load_params
    stored = bentoml.models.get(args.model)
    info = json.loads((Path(stored.path) / "package.json").read_text())
    queries = load_run_data(load_params(Path(info["run_dir"]) / "params.yaml")).queries_in("test")["query"].tolist()
    np.random.default_rng(0).shuffle(queries)
    queries = queries[:args.queries]
    out = {"machine": machine_name(), "model": str(stored.tag), "ranker": info["ranker"], "items": info["items"],
           "stages_ms": stages(Path(stored.path), queries), "served": []}
    for name, ms in out["stages_ms"].items(): print(f"{name:40s} {ms}")
    env = {"RECNB_MODEL": str(stored.tag), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "RECNB_CACHE_SIZE": args.cache_size}
    (ROOT / "bench" / "out").mkdir(parents=True, exist_ok=True)
    server = Server([sys.executable, "-m", "bentoml", "serve", "service:RecnbService", "--host", "127.0.0.1"], env, ROOT / "bentos",
                    ROOT / "bench" / "out" / "serve-breakdown.log")
    try:
        import httpx
        out["served_scorer"] = httpx.get(f"{server.url}/info", timeout=10).json()["scorer"]   # the plan the service measured
        print("served scorer:", out["served_scorer"], flush=True)
        asyncio.run(served(server.url, queries, 10, 5, args.client))
        for rate in map(float, args.rates.split(",")):
            row = {**asyncio.run(served(server.url, queries, rate, args.duration, args.client)), "client": args.client}
            out["served"].append(row); print(row, flush=True)
    finally: server.stop()
    if args.json: args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
