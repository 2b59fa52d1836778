"""The cross-encoder's pairs in one padded batch against groups of similar length: time per query served and per training step.

python bench/bench_rerank_groups.py --model recnb-hd2:TAG [--depths 20,50] [--queries 150] [--json out.json]
Takes the package's first-stage top `depth` for validation queries, then scores each query's candidates with the
packaged cross-encoder both ways: every pair padded to the longest (the kit before length groups) and in
`length_buckets_for` groups (`CrossEncoder.batches`, what the service does); the scores must agree. With the run's
trained torch cross-encoder (`rerank/` of the package's run) it also times training steps of 16 queries × 6 titles,
forward and backward in bf16 autocast where the CPU computes bf16 natively, both ways. Prints milliseconds and ratios.
"""
from __future__ import annotations
import argparse, json, time
from pathlib import Path
import numpy as np
import torch
from machine import cpu_name

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--model", required=True, help="a two-stage package written by `recnb package`")
p.add_argument("--depths", default="20,50")
p.add_argument("--queries", type=int, default=150)
p.add_argument("--json", type=Path)
args = p.parse_args()
import bentoml
from recnb.config import native_bf16
from recnb.params import load_params
from recnb.run.experiment import load_run_data
from recnb.serve.serving import PackagedModel
from recnb.train.rerank import load

model = PackagedModel(bentoml.models.get(args.model).path)
data = load_run_data(load_params(Path(model.info["run_dir"]) / "params.yaml"))
cross, titles = model.second.cross, model.second.titles
texts = list(data.targets("valid").inputs)[: args.queries]
model.rerank_timeout_s = 0.0
found = model.rank_queries(texts, k=100)[0].ids
out = {"machine": cpu_name(), "model": args.model, "serving": [], "training": {}}
print(f"{out['machine']}; {args.model}; cross-encoder {model.describe()['rerank']['format']}; {len(texts)} validation queries")

def one_batch(scorer, queries, items):
    "Every pair padded to the longest, in one pass: the kit before length groups."
    tokens = scorer.tokens(queries, items)
    if hasattr(scorer, "session"): return scorer.session.run(None, {k: v.numpy() for k, v in tokens.items()})[0]
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=native_bf16(torch.device("cpu"))):
        return scorer(**tokens).float().numpy()

for depth in map(int, args.depths.split(",")):
    pairs = [([q] * len(ids[:depth]), [titles[i] for i in ids[:depth]]) for q, ids in zip(texts, found)]
    row, scores = {"depth": depth}, {}
    for way, scorer in (("one batch", lambda q, t: one_batch(cross, q, t)), ("length groups", cross.score)):
        scorer(*pairs[0])   # warm
        began = time.perf_counter(); scores[way] = [scorer(q, t) for q, t in pairs]
        row[f"{way} ms/query"] = round((time.perf_counter() - began) * 1000 / len(pairs), 1)
    row["speed-up"] = round(row["one batch ms/query"] / row["length groups ms/query"], 2)
    row["max score difference"] = float(max(np.abs(a - b).max() for a, b in zip(*scores.values())))
    out["serving"].append(row); print(row, flush=True)

trained = load(Path(model.info["run_dir"]) / "rerank").train()
rng = np.random.default_rng(0)
steps = []
for _ in range(8):
    chosen = rng.choice(len(texts), 16, replace=False)
    steps.append(([texts[i] for i in chosen for _ in range(6)], [titles[found[i][j]] for i in chosen for j in rng.choice(30, 6, replace=False)]))
optimizer = torch.optim.SGD(trained.parameters(), lr=0.0)   # the step's work without changing the weights
for way in ("one batch", "length groups", "one batch", "length groups"):
    times = []
    for queries, items in steps:
        began = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=native_bf16(torch.device("cpu"))):
            scores = trained(**trained.tokens(queries, items)) if way == "one batch" else trained.scores(*trained.batches(queries, items))
        torch.nn.functional.cross_entropy(scores.float().view(16, 6), torch.zeros(16, dtype=torch.long)).backward()
        optimizer.step(); optimizer.zero_grad()
        times.append(time.perf_counter() - began)
    out["training"].setdefault(f"{way} s/step", []).append(round(float(np.median(times[1:])), 3))
out["training"]["speed-up"] = round(min(out["training"]["one batch s/step"]) / min(out["training"]["length groups s/step"]), 2)
print("training, 16 queries × 6 titles:", out["training"])
if args.json: args.json.write_text(json.dumps(out, indent=1))
