"""A two-stage package as served: NDCG@10 of its `/search` ranking and the second stage's time per query, at several depths.

python bench/bench_rerank.py --model recnb-hd2:TAG [--depths 20,50] [--json out.json]
Loads the package as the service does (`PackagedModel`: its compressed encoder, BM25, and the cross-encoder as packaged),
lifts the time budget (every query re-ranked), and ranks every validation and test query of the run's dataset in
batches of 64 through `rank_queries`, the service's own path, once per depth (`top_n`). Prints NDCG@10 of the first
stage alone (budget 0) and of the two-stage search at each depth, and milliseconds per query of each pass.
"""
from __future__ import annotations
import argparse, json, time
from pathlib import Path
from machine import cpu_name

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--model", required=True, help="a two-stage package written by `recnb package`")
p.add_argument("--depths", default="20,50", help="top_n values re-ranked")
p.add_argument("--json", type=Path)
args = p.parse_args()
import bentoml
from recnb.params import load_params
from recnb.rank.metrics import evaluate
from recnb.run.experiment import load_run_data
from recnb.serve.serving import PackagedModel

model = PackagedModel(bentoml.models.get(args.model).path)
if model.second is None: raise SystemExit(f"{args.model} is not a two-stage package")
data = load_run_data(load_params(Path(model.info["run_dir"]) / "params.yaml"))
out = {"machine": cpu_name(), "model": args.model, "cross_encoder": model.describe()["rerank"]["format"], "rows": []}
print(f"{out['machine']}; {args.model}; cross-encoder {out['cross_encoder']}; first stage {model.info['rerank']['first_stage']}")
for depth, budget in [(None, 0.0)] + [(int(d), float("inf")) for d in args.depths.split(",")]:
    if depth: model.second.top_n = depth
    model.rerank_timeout_s = budget
    row = {"top_n": depth or 0}
    for split in ("valid", "test"):
        targets = data.targets(split)
        texts, keys = list(targets.inputs), list(targets.keys)
        began, ranked = time.perf_counter(), {}
        for s in range(0, len(texts), 64):
            ranking, _, _ = model.rank_queries(texts[s:s + 64], k=100)
            ranked.update(zip(map(str, keys[s:s + 64]), ranking.ids))
        row[f"{split}_ms_per_query"] = round((time.perf_counter() - began) * 1000 / len(texts), 1)
        row[f"{split}_ndcg@10"] = round(evaluate(ranked, targets.qrels, ["ndcg@10"])["ndcg@10"], 4)
    out["rows"].append(row)
    print(("first stage alone" if not depth else f"two-stage, top {depth}").ljust(20), row, flush=True)
if args.json: args.json.write_text(json.dumps(out, indent=1))
