"""/search p99 with an experiment's two arms and its feedback log against one arm without a log.

python bench/bench_ab_serve.py --model recnb:TAG [--challenger recnb:TAG2] [--rate 20] [--duration 60] [--rounds 3]
    [--order one-arm,split-logged,interleave-logged] [--json out.json]
An open-model load at --rate requests/s (bench_serve.load: the package's test queries, shoppers cycling over 2,000 ids)
on 127.0.0.1, alternating in each round: `one-arm` (RECNB_MODEL, no experiment: nothing logged), `split-logged` (a 50/50
split of --model and --challenger, every answer written to the SQLite log with full sync before it is returned) and
`interleave-logged` (both models rank every request). The challenger defaults to the same run packaged again (as recnb-challenger). Each
server is started, warmed and stopped by its PID; the log is deleted before each start.
"""
from __future__ import annotations
import argparse, asyncio, json, sys, tempfile
from pathlib import Path
import numpy as np
import yaml
from bench_serve import ROOT, Server, load, machine_name


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="the champion: a BentoML tag written by `recnb package`")
    p.add_argument("--challenger", help="the challenger's tag (default: --model's run packaged again)")
    p.add_argument("--rate", type=float, default=20)
    p.add_argument("--duration", type=float, default=60)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--order", default="one-arm,split-logged,interleave-logged", help="contenders, in the order each round runs them")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    import bentoml
    from recnb.serve.deploy import package
    from recnb.run.experiment import load_run_data
    from recnb.params import load_params
    champion = bentoml.models.get(args.model)
    info = json.loads((Path(champion.path) / "package.json").read_text())
    challenger = args.challenger or package(info["run_dir"], name="recnb-challenger")   # recnb:latest stays the champion
    queries = load_run_data(load_params(Path(info["run_dir"]) / "params.yaml")).queries_in("test")["query"].tolist()
    np.random.default_rng(0).shuffle(queries)
    folder = Path(tempfile.mkdtemp(prefix="bench-ab-"))
    experiments = {}
    for mode in ("split", "interleave"):
        experiments[mode] = folder / f"{mode}.yaml"
        experiments[mode].write_text(yaml.safe_dump({"name": f"bench-{mode}", "mode": mode, "salt": "bench-ab-salt",
                                                     "arms": [{"name": "champion", "model": str(champion.tag), "share": 0.5},
                                                              {"name": "challenger", "model": str(challenger), "share": 0.5}]}))
    base = {"RECNB_MODEL": str(champion.tag), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    known = {"one-arm": {}, **{f"{m}-logged": {"RECNB_EXPERIMENT": str(experiments[m]), "RECNB_AB_SECRET": "bench-secret-0123456789",
                                               "RECNB_FEEDBACK_LOG": str(folder / f"{m}.sqlite")} for m in experiments}}
    contenders = {name: known[name] for name in args.order.split(",")}
    command = [sys.executable, "-m", "bentoml", "serve", "service:RecnbService", "--host", "127.0.0.1"]
    out = {"machine": machine_name(), "champion": str(champion.tag), "challenger": str(challenger), "ranker": info["ranker"],
           "items": info["items"], "rate": args.rate, "duration_s": args.duration, "rounds": []}
    print(f"{out['machine']}; {out['champion']} vs {out['challenger']} ({info['ranker']}, {info['items']:,} items); "
          f"{args.rate:.0f}/s for {args.duration:.0f} s per contender and round")
    log_dir = ROOT / "bench" / "out"; log_dir.mkdir(parents=True, exist_ok=True)
    for r in range(args.rounds):
        row = {}
        for name, extra in contenders.items():
            for f in folder.glob("*.sqlite*"): f.unlink()
            server = Server(command, {**base, **extra}, ROOT / "bentos", log_dir / f"serve-ab-{name}.log")
            try:
                asyncio.run(load(server.url, queries, 10, 5, {}, users=args.users))  # warm up
                row[name] = asyncio.run(load(server.url, queries, args.rate, args.duration, {}, users=args.users))
            finally: server.stop()
            print(f"round {r + 1} {name:18s} p50 {row[name]['p50_ms']:6.1f} p99 {row[name]['p99_ms']:6.1f} ms, errors {row[name]['errors']}", flush=True)
        out["rounds"].append(row)
    medians = {name: float(np.median([row[name]["p99_ms"] for row in out["rounds"]])) for name in contenders}
    out["median_p99_ms"] = medians
    out["p99_ratio_to_one_arm"] = {name: round(v / medians["one-arm"], 3) for name, v in medians.items()} if "one-arm" in medians else {}
    for name, ratio in out["p99_ratio_to_one_arm"].items(): print(f"{name:18s} median p99 {medians[name]:6.1f} ms = {ratio:.3f}× one arm")
    if args.json: args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
