"""Champion and challenger on Home Depot (issue 25): A/A false positives, detection of the fine-tuned + BM25 model
against BM25, and the shoppers a split and interleaving need to reach significance, with recnb's own click simulator
(`recnb.ab.clicks`) and statistics (`recnb.ab.ab_report`).

Run from the repository root (2 shared CPU cores: 44 minutes the first time, almost all of it the fine-tuning run;
the run and the rankings are cached under bench/out/, so a rerun only simulates, about 2 minutes):

    HF_HUB_OFFLINE=1 WANDB_MODE=offline nice -n 10 python bench/bench_ab_homedepot.py
    python bench/bench_ab_homedepot.py --aa-runs 200 --aa-shoppers 500 --reps 10 --largest 25600 --workers 2

Steps:
1. train: `recnb.run.experiment.run` on params/homedepot.yaml with `train.max_steps` (default 60) and
   `train.max_val_queries` (default 100), baselines BM25 only, tracker disabled, the full 54,667-item catalog; the run
   directory is bench/out/ab_homedepot_run (skipped when its metrics.json was written by the same parameters).
2. rankings: the Home Depot test queries that have a judged item with gain > 0 (the seeded query split of the run),
   ranked top 10 over the whole catalog by `BM25Ranker` (champion) and by `model_rankers(..., fuse_with_bm25=True)`'s
   `fine-tuned+bm25` on the run's saved index (challenger); cached in bench/out/ab_homedepot_rankings.json.
3. A/A: BM25 in both arms, `--aa-runs` split experiments (own salt and click seed each) of `--aa-shoppers` shoppers ×
   3 queries: the share with fixed-horizon p < 0.05 (click-through over shoppers), the share whose always-valid mSPRT p
   (`report(...)["sequential"]`, read at 20 points) < 0.05, and the same ranker interleaved with itself (binomial test).
4. detection and shoppers needed: nbs/ab/24_ab_report.ipynb's `shoppers_needed` on Home Depot: from 25 shoppers, doubling,
   10 experiments per size; the first size where at least 8 of 10 have p < 0.05 (split: `compare(..., "ctr")`,
   interleave: `interleaving(...)`), and the ratio split / interleave.
Writes bench/out/ab_homedepot.json and prints a table.
"""
from __future__ import annotations
import argparse, json, os, sys, time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
from pathlib import Path
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
DATA = ROOT.parent / "shared" / "datasets" / "homedepot-search-relevance"
sys.path.insert(0, str(ROOT / "bench"))


def train_params(steps: int, val_queries: int):
    "params/homedepot.yaml, shortened: the only changes are these overrides."
    from recnb.params import load_params
    return load_params(ROOT / "params" / "homedepot.yaml", {
        "name": "ab-homedepot", "data.path": str(DATA), "train.max_steps": steps, "train.max_val_queries": val_queries,
        "eval.baselines": ["bm25"], "eval.fuse_with_bm25": True, "tracker": "disabled"})


def train(run_dir: Path, steps: int, val_queries: int) -> dict:
    "The short fine-tuning run, or the finished one with the same parameters."
    import yaml
    from recnb.run.experiment import run
    params = train_params(steps, val_queries)
    done = run_dir / "metrics.json"
    if done.is_file() and yaml.safe_load((run_dir / "params.yaml").read_text()) == params.model_dump(mode="json"):
        return {"cached": True, "metrics": json.loads(done.read_text()), "manifest": json.loads((run_dir / "manifest.json").read_text())}
    metrics = run(params, run_dir)
    return {"cached": False, "metrics": metrics, "manifest": json.loads((run_dir / "manifest.json").read_text())}


def rankings(run_dir: Path, cache: Path, fingerprint: str) -> dict:
    "Champion (BM25) and challenger (fine-tuned+bm25) top 10 of every judged test query, and the test qrels."
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached["fingerprint"] == fingerprint and cached["run_dir"] == str(run_dir): return cached
    from recnb.rank.baselines import BM25Ranker
    from recnb.data.datasets import load_dataset
    from recnb.index.encoder import Encoder
    from recnb.rank.evaluate import model_rankers
    from recnb.rank.metrics import evaluate
    from recnb.params import Params
    from recnb.index.scorer import ItemIndex
    import yaml
    params = Params.model_validate(yaml.safe_load((run_dir / "params.yaml").read_text()))
    data = load_dataset("homedepot", DATA, seed=params.seed, fractions=params.data.fractions)
    if data.fingerprint() != fingerprint: raise SystemExit(f"the dataset's fingerprint differs from the run's ({fingerprint})")
    qrels = data.qrels("test")
    queries = data.queries_in("test")
    queries = queries[queries["query_id"].isin(qrels)]
    bm25 = BM25Ranker(data.catalog)
    tuned = Encoder(str(run_dir / "model"))
    index = ItemIndex.load(run_dir / "index")
    ours = model_rankers("search", tuned, index, data.catalog, fuse_with_bm25=True, fusion=params.eval.fusion, bm25=bm25)
    texts, keys = queries["query"].tolist(), queries["query_id"].astype(str).tolist()
    out = {"fingerprint": fingerprint, "run_dir": str(run_dir), "items": len(data.catalog), "queries": len(keys),
           "fusion": params.eval.fusion, "qrels": {str(q): {str(i): float(g) for i, g in r.items()} for q, r in qrels.items()},
           "answers": {}, "ndcg@10": {}}
    for arm, ranker in (("champion", bm25), ("challenger", ours["fine-tuned+bm25"])):
        found = ranker.rank(texts, k=10)
        out["answers"][arm] = dict(zip(keys, [list(map(str, ids)) for ids in found.ids]))
        out["ndcg@10"][arm] = evaluate(out["answers"][arm], out["qrels"], ["ndcg@10"])["ndcg@10"]
    cache.write_text(json.dumps(out))
    return out


def experiment(mode: str = "split", salt: str = "sim", min_effect: float = 0.03):
    "Two arms at 50/50, as in nbs/ab/24_ab_report.ipynb (min_effect is the mSPRT's τ)."
    from recnb.ab.arms import Arm, Experiment
    return Experiment(name="homedepot", mode=mode, salt=f"{salt}-salt-of-the-shop", min_effect=min_effect,
                      arms=[Arm(name="champion", model="recnb:bm25", share=0.5), Arm(name="challenger", model="recnb:fine-tuned-bm25", share=0.5)])


def aa(answers: dict, qrels: dict, runs: int, shoppers: int, queries: int, min_effect: float) -> dict:
    "False-positive rates of the same ranker in both arms: split (fixed horizon, mSPRT) and interleaved with itself."
    from recnb.ab.ab_report import answers_of, compare, interleaving, report
    from recnb.ab.clicks import simulate_log
    same = {"champion": answers["champion"], "challenger": answers["champion"]}
    fixed, sequential, mixed, ctrs, p_fixed = [], [], [], [], []
    for i in range(runs):
        e = experiment("split", f"aa-{i}", min_effect)
        r, f = simulate_log(e, same, qrels, units=shoppers, queries_per_unit=queries, seed=i)
        result = report(r, f, e)
        p = compare(answers_of(r, f), "ctr", "champion", "challenger")["p"]
        assert p == result["comparisons"]["ctr"]["p"]
        fixed.append(p < 0.05); p_fixed.append(p)
        sequential.append(result["sequential"]["always_valid_p"] < 0.05)
        ctrs.append(result["arms"]["champion"]["ctr"])
        e = experiment("interleave", f"aa-interleave-{i}", min_effect)
        r, f = simulate_log(e, same, qrels, units=shoppers, queries_per_unit=queries, seed=100_000 + i)
        mixed.append(interleaving(answers_of(r, f), "champion", "challenger")["p"] < 0.05)
    return {"runs": runs, "shoppers": shoppers, "queries_per_shopper": queries,
            "fixed_horizon_fp": float(np.mean(fixed)), "fixed_horizon_false_positives": int(np.sum(fixed)),
            "msprt_fp": float(np.mean(sequential)), "msprt_false_positives": int(np.sum(sequential)), "msprt_tau": min_effect,
            "interleave_fp": float(np.mean(mixed)), "interleave_false_positives": int(np.sum(mixed)),
            "p_uniform_ks": float(__import__("scipy").stats.kstest(p_fixed, "uniform").pvalue),
            "mean_ctr": float(np.mean(ctrs))}


def power(answers: dict, qrels: dict, mode: str, reps: int, largest: int, queries: int, min_effect: float) -> dict:
    "nbs/ab/24_ab_report.ipynb's shoppers_needed on Home Depot, keeping every size's results."
    from recnb.ab.ab_report import answers_of, compare, interleaving
    from recnb.ab.clicks import simulate_log
    units, levels, needed = 25, [], None
    while units <= largest:
        start, significant, effects, ps = time.perf_counter(), 0, [], []
        for rep in range(reps):
            e = experiment(mode, f"{mode}-{units}-{rep}", min_effect)
            r, f = simulate_log(e, answers, qrels, units=units, queries_per_unit=queries, seed=1000 + rep)
            a = answers_of(r, f)
            if mode == "interleave":
                test = interleaving(a, "champion", "challenger"); p = test["p"]; effects.append(test["challenger_share"])
            else:
                test = compare(a, "ctr", "champion", "challenger"); p = test["p"]; effects.append(test["difference"])
            significant += p < 0.05; ps.append(p)
        levels.append({"shoppers": units, "significant": int(significant), "of": reps,
                       "mean_effect": float(np.mean(effects)), "median_p": float(np.median(ps)), "p": [float(x) for x in ps], "seconds": round(time.perf_counter() - start, 1)})
        print(f"  {mode:10s} {units:>7,} shoppers: {significant}/{reps} significant, mean "
              f"{'challenger share' if mode == 'interleave' else 'ctr difference'} {np.mean(effects):+.4f}", flush=True)
        if significant >= 0.8 * reps: needed = units; break
        units *= 2
    return {"needed": needed, "levels": levels}


def verdicts(answers: dict, qrels: dict, needed: dict, queries: int, min_effect: float) -> dict:
    "One full `report` per mode at the number of shoppers it needed (rep 0's salt and seed): what the report says."
    from recnb.ab.ab_report import report
    from recnb.ab.clicks import simulate_log
    out = {}
    for mode, units in needed.items():
        if units is None: continue
        e = experiment(mode, f"{mode}-{units}-0", min_effect)
        r, f = simulate_log(e, answers, qrels, units=units, queries_per_unit=queries, seed=1000)
        result = report(r, f, e)
        keep = {"shoppers": units, "verdict": result["verdict"], "arms": result["arms"]}
        if mode == "split":
            keep["ctr"] = {k: result["comparisons"]["ctr"][k] for k in ("champion", "challenger", "difference", "interval", "p")}
            keep["always_valid_p"] = result["sequential"]["always_valid_p"]
        else: keep["interleaving"] = result["interleaving"]
        out[mode] = keep
    return out


def _timed(f, *a):
    "f(*a) and its wall seconds (in a worker process)."
    start = time.perf_counter()
    return f(*a), round(time.perf_counter() - start, 1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="train.max_steps of the fine-tuning run")
    parser.add_argument("--val-queries", type=int, default=100, help="train.max_val_queries of the fine-tuning run")
    parser.add_argument("--run-dir", default=str(OUT / "ab_homedepot_run"))
    parser.add_argument("--aa-runs", type=int, default=200)
    parser.add_argument("--aa-shoppers", type=int, default=500)
    parser.add_argument("--queries", type=int, default=3, help="queries per shopper")
    parser.add_argument("--reps", type=int, default=10, help="experiments per shopper count")
    parser.add_argument("--largest", type=int, default=25600, help="the most shoppers tried")
    parser.add_argument("--min-effect", type=float, default=0.03, help="the experiment's min_effect (mSPRT τ)")
    parser.add_argument("--workers", type=int, default=2, help="processes for the A/A and the two power curves")
    parser.add_argument("--json", default=str(OUT / "ab_homedepot.json"))
    args = parser.parse_args(argv)
    from machine import cpu_name
    import torch
    OUT.mkdir(parents=True, exist_ok=True)
    seconds, started = {}, time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    load_before = os.getloadavg()

    clock = time.perf_counter()
    trained = train(Path(args.run_dir), args.steps, args.val_queries)
    seconds["train"] = round(time.perf_counter() - clock, 1)
    print(f"train: {'cached' if trained['cached'] else 'ran'} in {seconds['train']} s (run's own stages: {trained['manifest']['seconds']})", flush=True)

    clock = time.perf_counter()
    ranked = rankings(Path(args.run_dir), OUT / "ab_homedepot_rankings.json", trained["manifest"]["data"]["fingerprint"])
    seconds["rankings"] = round(time.perf_counter() - clock, 1)
    answers, qrels = ranked["answers"], ranked["qrels"]
    print(f"rankings: {ranked['queries']} test queries over {ranked['items']:,} items in {seconds['rankings']} s; NDCG@10 "
          f"champion {ranked['ndcg@10']['champion']:.4f}, challenger {ranked['ndcg@10']['challenger']:.4f}", flush=True)

    from concurrent.futures import ProcessPoolExecutor
    clock = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:   # the A/A and the two power curves are independent
        jobs = {mode: pool.submit(_timed, power, answers, qrels, mode, args.reps, args.largest, args.queries, args.min_effect)
                for mode in ("split", "interleave")}
        jobs["aa"] = pool.submit(_timed, aa, answers, qrels, args.aa_runs, args.aa_shoppers, args.queries, args.min_effect)
        done = {k: j.result() for k, j in jobs.items()}
    null, seconds["aa"] = done["aa"]
    curves, needed = {}, {}
    for mode in ("split", "interleave"):
        curves[mode], seconds[f"needed_{mode}"] = done[mode]
        needed[mode] = curves[mode]["needed"]
    seconds["simulations_wall"] = round(time.perf_counter() - clock, 1)
    print(f"A/A: {null} ({seconds['aa']} s)", flush=True)
    clock = time.perf_counter()
    reports = verdicts(answers, qrels, needed, args.queries, args.min_effect)
    seconds["reports"] = round(time.perf_counter() - clock, 1)
    ratio = needed["split"] / needed["interleave"] if needed["split"] and needed["interleave"] else None

    m = trained["metrics"]
    result = {"started": started, "cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
              "torch_threads": torch.get_num_threads(), "load_average_before": load_before, "load_average_after": os.getloadavg(),
              "args": vars(args), "training": {"cached": trained["cached"], "params": train_params(args.steps, args.val_queries).model_dump(mode="json"),
                                             "stages_s": trained["manifest"]["seconds"], "fit": trained["manifest"]["training"],
                                             "items": trained["manifest"]["data"]["items"],
                                             "test": {r: m["test"].get(r) for r in ("bm25", "fine-tuned", "fine-tuned+bm25")},
                                             "valid": {r: m["valid"].get(r) for r in ("bm25", "fine-tuned", "fine-tuned+bm25")},
                                             "model": m.get("model")},
              "rankings": {k: ranked[k] for k in ("items", "queries", "fusion", "ndcg@10")},
              "click_model": __import__("dataclasses").asdict(__import__("recnb.ab.clicks", fromlist=["ClickModel"]).ClickModel()),
              "aa": null, "power": curves, "shoppers_needed": needed, "ratio_split_over_interleave": ratio,
              "reports_at_needed": reports, "seconds": seconds}
    Path(args.json).write_text(json.dumps(result, indent=1, default=float))

    print(f"\nCPU: {result['cpu']}, {result['cores']} cores, torch {result['torch']} ({result['torch_threads']} threads); "
          f"load average before {load_before[0]:.2f}, after {result['load_average_after'][0]:.2f}")
    print(f"Home Depot: {ranked['queries']} test queries, {ranked['items']:,} items; champion BM25 NDCG@10 "
          f"{ranked['ndcg@10']['champion']:.4f}, challenger fine-tuned+bm25 {ranked['ndcg@10']['challenger']:.4f}")
    print(f"\nA/A ({null['runs']} experiments × {null['shoppers']} shoppers × {null['queries_per_shopper']} queries, mean CTR {null['mean_ctr']:.3f}):")
    print(f"  fixed-horizon false positives (p < 0.05): {null['fixed_horizon_false_positives']}/{null['runs']} = {null['fixed_horizon_fp']:.3f}")
    print(f"  always-valid mSPRT (τ {null['msprt_tau']}, 20 looks):     {null['msprt_false_positives']}/{null['runs']} = {null['msprt_fp']:.3f}")
    print(f"  interleaved with itself (binomial):     {null['interleave_false_positives']}/{null['runs']} = {null['interleave_fp']:.3f}")
    print("\n| shoppers | split significant | split mean CTR diff | interleave significant | interleave challenger share |")
    print("|---:|---:|---:|---:|---:|")
    rows = {}
    for mode in ("split", "interleave"):
        for level in curves[mode]["levels"]: rows.setdefault(level["shoppers"], {})[mode] = level
    for units in sorted(rows):
        s, i = rows[units].get("split"), rows[units].get("interleave")
        cell = lambda x, key, fmt: (f"{x['significant']}/{x['of']}", format(x["mean_effect"], fmt)) if x else ("—", "—")
        (ss, se), (is_, ie) = cell(s, "split", "+.4f"), cell(i, "interleave", ".3f")
        print(f"| {units:,} | {ss} | {se} | {is_} | {ie} |")
    print(f"\nshoppers needed (8 of 10 at p < 0.05): split {needed['split']}, interleave {needed['interleave']}; "
          f"ratio split / interleave: {ratio if ratio is None else round(ratio, 1)}")
    for mode, r in reports.items(): print(f"report at {r['shoppers']:,} shoppers ({mode}): verdict {r['verdict']}")
    print(f"wall seconds per step: {seconds}\nwrote {args.json}")


if __name__ == "__main__":
    main()
