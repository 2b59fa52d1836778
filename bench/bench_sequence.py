"""The sequence model of a finished recommendation run next to its baselines and the published figures, history masked
(recnb's way: a shopper's own items are never recommended) and unmasked (the way RecBole-based papers count).

    python bench/bench_sequence.py RUN_DIR [--published 'SASRec (sampled softmax)=0.0531' ...]
"""
from __future__ import annotations
import argparse, json, time
from pathlib import Path
from machine import cpu_name
from recnb.rank.evaluate import evaluate_recommendation
from recnb.run.experiment import load_run_data
from recnb.params import load_params
from recnb.train.sequence import SequenceRanker


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--published", action="append", default=[], help="'name=test NDCG@10' from a paper, printed beside")
    args = parser.parse_args()
    params = load_params(args.run_dir / "params.yaml")
    metrics = json.loads((args.run_dir / "metrics.json").read_text())
    manifest = json.loads((args.run_dir / "manifest.json").read_text())
    data = load_run_data(params)
    print(f"{data!r}; CPU: {cpu_name()}; stages (s): {manifest['seconds']}; sequence fit: {manifest['training'].get('sequence')}")
    started = time.perf_counter()
    unmasked = evaluate_recommendation(data, {"sasrec, history not masked": SequenceRanker.load(args.run_dir / "sequence", mask_history=False)},
                                       "test", params.eval.metrics)
    print(f"unmasked evaluation: {time.perf_counter() - started:.1f} s")
    columns = params.eval.metrics
    print("| ranker | " + " | ".join(f"test {m}" for m in columns) + " | valid " + columns[0] + " |")
    print("|---|" + "---:|" * (len(columns) + 1))
    for name, row in {**metrics["test"], **unmasked}.items():
        star = " (the run's model)" if name == metrics["model"] else ""
        cells = " | ".join(f"{row[m]:.4f}" for m in columns)
        valid = metrics["valid"].get(name, {}).get(columns[0])
        print(f"| {name}{star} | {cells} | {'' if valid is None else f'{valid:.4f}'} |")
    for entry in args.published:
        name, value = entry.rsplit("=", 1)
        print(f"| published: {name} | {float(value):.4f} |" + " |" * len(columns))


if __name__ == "__main__":
    main()
