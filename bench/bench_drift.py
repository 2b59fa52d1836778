"""Query drift on a packaged model: false alarms on held-out in-distribution queries, detections on another shop's.

python bench/bench_drift.py --model recnb:TAG --other wands [--window 100] [--step 10] [--json out.json]
The reference and thresholds are exactly the service's (recnb.serve.monitoring.DriftReference over the package's
validation queries). Every window of `window` consecutive test queries of the package's own dataset (never in the
reference) counts as normal traffic; every window of the other dataset's queries as drifted traffic. Also times one
DriftMonitor.observe per query (the service's per-batch cost).
"""
from __future__ import annotations
import argparse, json, time
from pathlib import Path
import numpy as np


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--other", default="wands", help="dataset whose queries play drifted traffic, or a CSV/TSV file with a `query` column")
    p.add_argument("--window", type=int, default=100)
    p.add_argument("--step", type=int, default=10)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    import bentoml
    from safetensors.torch import load_file
    from recnb.data.datasets import load_dataset
    from recnb.run.experiment import load_run_data
    from recnb.params import load_params
    from recnb.serve.monitoring import DriftMonitor, DriftReference
    from recnb.serve.serving import PackagedModel
    stored = bentoml.models.get(args.model)
    served = PackagedModel(stored.path, device="cpu")
    reference = load_file(str(Path(stored.path) / "reference.safetensors"))
    drift = DriftReference(reference["query_vectors"], reference["top_scores"], window=args.window)
    own = load_run_data(load_params(Path(served.info["run_dir"]) / "params.yaml")).queries_in("test")["query"].tolist()
    if Path(args.other).is_file():
        from recnb.data.tables import read_table
        other = read_table(Path(args.other), sep="\t" if Path(args.other).read_text().split("\n", 1)[0].count("\t") else None)["query"].astype(str).tolist()
    else: other = load_dataset(args.other).queries_in("test")["query"].tolist()
    out = {"model": str(stored.tag), "dataset": served.info["dataset"], "other": args.other, "window": args.window,
           "reference_queries": len(reference["query_vectors"]), "thresholds": drift.thresholds}
    for name, queries in (("in_distribution", own), ("other_shop", other)):
        _, vectors, best = served.rank_queries(queries, k=1)
        vectors, best = vectors.numpy(), best.numpy()
        alarms, maxima = [], {k: 0.0 for k in drift.thresholds}
        for start in range(0, len(queries) - args.window + 1, args.step):
            monitor = DriftMonitor(drift)
            ratios = monitor.ratios(monitor.observe(vectors[start:start + args.window], best[start:start + args.window]))
            alarms.append(max(ratios.values()) > 1)
            maxima = {k: max(maxima[k], ratios[k]) for k in ratios}
        out[name] = {"queries": len(queries), "windows": len(alarms), "alarm_rate": float(np.mean(alarms)),
                     "max_ratio": {k: round(v, 3) for k, v in maxima.items()}}
        print(f"{name:16s} {len(queries):5d} queries, {len(alarms):4d} windows of {args.window}: alarm rate "
              f"{np.mean(alarms):.3f}; largest ratio per signal {out[name]['max_ratio']}")
    monitor = DriftMonitor(drift)
    monitor.observe(vectors[:args.window], best[:args.window])
    start = time.perf_counter()
    for i in range(200): monitor.observe(vectors[i % len(vectors)][None], best[i % len(best)][None])
    out["observe_ms"] = round((time.perf_counter() - start) / 200 * 1000, 3)
    print(f"DriftMonitor.observe of one query with a full window: {out['observe_ms']} ms")
    if args.json: args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
