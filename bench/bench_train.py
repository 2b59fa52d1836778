"""Fine-tuning on Home Depot: recnb (Lightning two-tower) vs sentence-transformers' trainer, same device, same run.

Both start from all-MiniLM-L6-v2 and train on the same (query, positive title) pairs from the train queries
(relevance ≥ 2.5, i.e. gain ≥ 1.5), with the same batch size, number of steps, device and precision (bf16 mixed
precision on a GPU, fp32 on a CPU unless --precision says otherwise).

Throughput is training pairs per second from the first training step to the last, the device synchronised at both
ends, data loading included, for both (recnb: `FitResult.pairs_per_second`; sentence-transformers: a callback on its
trainer). GPU memory is the peak allocated by each. A step profile (`step_profile.StepProfile`: data wait, step wall,
GPU busy, top host operators) comes from a separate short recnb fit, so its synchronisation does not slow the
timed ones. With --eval every model is then scored on the test queries over the FULL catalog next to BM25 and
zero-shot (slow on a CPU: six catalog encodings).

    python bench/bench_train.py --device cuda --steps 400 --json bench/out/train-gpu.json
    python bench/bench_train.py --items 5000 --steps 30 --negatives none   # a quick CPU throughput check
    python bench/bench_train.py --steps 300 --eval --json bench/out/train.json   # ~1 hour on 2 cores
    python bench/bench_train.py --profile-only   # just the step profile (also runs an older recnb: PYTHONPATH=...)
    python bench/bench_train.py --items 10000 --steps 60 --negatives none --precision bf16-mixed --rounds 3

With --rounds N each contender trains N times, every time in a fresh process, the contenders alternating, and the
medians are compared: on a small shared machine one process's later fits ran up to 1.6× slower than its first, and
single runs of the same fit varied by 20 %.
"""
from __future__ import annotations
import argparse, json, os, shutil, time
from pathlib import Path
from machine import cpu_name

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")


def peak_memory_gb(device) -> float | None:
    import torch
    return torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None


def reset_peak(device):
    import torch
    if device.type == "cuda": torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats(device)


def st_pairs_per_second(data, examples, args, device, out: Path) -> tuple[float, float | None, Path]:
    "sentence-transformers' trainer (MultipleNegativesRankingLoss, in-batch negatives) on the same pairs and steps."
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments, losses
    from transformers import TrainerCallback
    from recnb.index.encoder import resolve_model

    class Span(TrainerCallback):
        "Seconds from the first step's start to the end of training, the device synchronised at both ends."
        start, seconds = None, 0.0
        def _now(self):
            if device.type == "cuda": torch.cuda.synchronize(device)
            return time.perf_counter()
        def on_step_begin(self, *a, **k):
            if self.start is None: self.start = self._now()
        def on_train_end(self, *a, **k): self.seconds = self._now() - self.start

    torch.manual_seed(0)
    st = SentenceTransformer(resolve_model(None), device=str(device))
    texts = data.catalog.texts()
    pairs = Dataset.from_dict({"anchor": examples.queries, "positive": [texts[p] for p in examples.positives]})
    bf16 = args.precision.startswith("bf16")
    training = SentenceTransformerTrainingArguments(
        output_dir=str(out / "st-trainer"), per_device_train_batch_size=args.batch_size, max_steps=args.steps,
        learning_rate=args.lr_st, warmup_ratio=0.1, bf16=bf16, use_cpu=device.type == "cpu", seed=0, data_seed=0,
        dataloader_drop_last=True, logging_steps=10_000, save_strategy="no", report_to="none", disable_tqdm=True)
    span = Span()
    reset_peak(device)
    trainer = SentenceTransformerTrainer(model=st, args=training, train_dataset=pairs,
                                         loss=losses.MultipleNegativesRankingLoss(st), callbacks=[span])
    trainer.train()
    memory = peak_memory_gb(device)
    st.save(str(out / "st-model"))
    return args.steps * args.batch_size / span.seconds, memory, out / "st-model"


def profile(data, args, out: Path, buckets) -> dict:
    "A short recnb fit with `StepProfile` on its steps 5 to 14 (whatever recnb is importable: before/after comparisons)."
    from step_profile import StepProfile
    from recnb.train.model import fit
    import recnb
    prof = StepProfile(skip=5, steps=10)
    run = out / "profile"; shutil.rmtree(run, ignore_errors=True)
    options = dict(length_buckets=buckets) if buckets else {}
    fit(data, run, epochs=1, max_steps=16, batch_size=args.batch_size, lr=args.lr, min_positive_gain=1.5,
        negatives=args.profile_negatives, precision=args.precision, accelerator=args.accelerator, tracker="disabled",
        max_val_queries=50, checkpoint_every_n_steps=10_000, callbacks=[prof], **options)
    print(f"[{recnb.__file__}] buckets={buckets or 'default'} negatives={args.profile_negatives}: " + prof.summary(), flush=True)
    return {"recnb": str(Path(recnb.__file__).parent), "buckets": buckets, "negatives": args.profile_negatives, **prof.profile}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu or cuda: where both train")
    ap.add_argument("--steps", type=int, default=300, help="optimiser steps for each (one epoch of 27k pairs at 64 is 428)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr-st", type=float, default=2e-5, help="sentence-transformers' recipe learning rate")
    ap.add_argument("--lr", type=float, default=5e-5, help="recnb learning rate")
    ap.add_argument("--negatives", default="none,bm25",
                    help="recnb runs, one per hard-negative choice (none = the same in-batch recipe as ST; bm25)")
    ap.add_argument("--buckets", default="auto", help="recnb length groups per side to time, comma-separated (auto: by device)")
    ap.add_argument("--precision", default=None, help="Lightning precision for recnb (ST follows it: bf16 or fp32); "
                    "default bf16-mixed on cuda, 32-true on cpu")
    ap.add_argument("--profile-negatives", default="bm25")
    ap.add_argument("--profile-only", action="store_true", help="only the step profile")
    ap.add_argument("--no-st", action="store_true", help="skip sentence-transformers")
    ap.add_argument("--eval", action="store_true", help="score every model on the full catalog's test queries")
    ap.add_argument("--out", type=Path, default=Path("bench/out/train"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--items", type=int, default=None, help="a sampled catalog of this many items (quick runs; default: all)")
    ap.add_argument("--rounds", type=int, default=1, help="train each contender this many times, each in a fresh process, alternating")
    ap.add_argument("--only", choices=["st", "recnb"], default=None, help="train only this contender (used by --rounds)")
    args = ap.parse_args()
    if args.rounds > 1: return rounds(args)

    import torch
    from recnb.data.bundles import sample_search_data
    from recnb.data.datasets import load_dataset
    from recnb.train.model import fit
    from recnb.train.pairs import search_examples

    device = torch.device(args.device)
    args.accelerator = "gpu" if device.type == "cuda" else "cpu"
    args.precision = args.precision or ("bf16-mixed" if device.type == "cuda" else "32-true")
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    machine = f"CPU {cpu_name()}, {os.cpu_count()} cores{gpu}"
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  {machine}; torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"precision {args.precision}", flush=True)
    data = load_dataset("homedepot")
    if args.items: data = sample_search_data(data, args.items)
    out = args.out; out.mkdir(parents=True, exist_ok=True)
    record = {"machine": machine, "device": str(device), "precision": args.precision, "batch_size": args.batch_size,
              "steps": args.steps, "torch": torch.__version__}
    if args.profile_only:
        record["profiles"] = [profile(data, args, out, None if b == "auto" else int(b)) for b in args.buckets.split(",")]
        if args.json: args.json.parent.mkdir(parents=True, exist_ok=True); args.json.write_text(json.dumps(record, indent=2))
        return
    examples = search_examples(data, "train", min_positive_gain=1.5)
    n_pairs = args.steps * args.batch_size
    assert n_pairs <= len(examples.queries), f"{args.steps} steps of {args.batch_size} need {n_pairs} pairs; there are {len(examples.queries)}"
    print(f"Home Depot: {len(data.catalog):,} items, {len(examples.queries):,} train pairs (gain ≥ 1.5); "
          f"{args.steps} steps × {args.batch_size} = {n_pairs:,} pairs each", flush=True)
    throughput, memory, models = {}, {}, {}

    if not args.no_st and args.only != "recnb":
        name = "sentence-transformers"
        throughput[name], memory[name], models[name] = st_pairs_per_second(data, examples, args, device, out)
        print(f"{name}: {throughput[name]:.1f} pairs/s, peak GPU memory {memory[name]} GB", flush=True)

    for negatives in args.negatives.split(",") if args.only != "st" else []:
        for buckets in args.buckets.split(","):
            name = f"recnb negatives={negatives} buckets={buckets}"
            run = out / f"recnb-{negatives}-{buckets}"
            shutil.rmtree(run, ignore_errors=True)
            reset_peak(device)
            options = {} if buckets == "auto" else {"length_buckets": int(buckets)}
            result = fit(data, run, epochs=1, max_steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                         min_positive_gain=1.5, negatives=negatives, precision=args.precision, accelerator=args.accelerator,
                         tracker="disabled", max_val_queries=300, checkpoint_every_n_steps=10_000, **options)
            throughput[name], memory[name], models[name] = result.pairs_per_second, peak_memory_gb(device), result.model_dir
            print(f"{name}: {result.pairs_per_second:.1f} pairs/s, peak GPU memory {memory[name]} GB; fit() wall "
                  f"{result.seconds:.0f} s incl. mining and one full-catalog validation", flush=True)

    if args.only is None: record["profiles"] = [profile(data, args, out, None)]
    print(f"\ntraining pairs/s (first step to last, data loading included; {args.steps} steps of {args.batch_size}, {record['precision']}):")
    for name, pps in throughput.items():
        ratio = f" = {pps / throughput['sentence-transformers']:.2f}x sentence-transformers" if "sentence-transformers" in throughput else ""
        print(f"  {name}: {pps:.1f} pairs/s{ratio}; peak GPU memory {memory[name]} GB")
    record.update(pairs=n_pairs, pairs_per_second=throughput, peak_gpu_memory_gb=memory, recnb={"lr": args.lr}, st={"lr": args.lr_st})
    if args.eval: record.update(evaluate(data, models, device))
    if args.json: args.json.parent.mkdir(parents=True, exist_ok=True); args.json.write_text(json.dumps(record, indent=2))


def rounds(args):
    "Each contender `args.rounds` times, each run in a fresh process, alternating; the medians and their ratio."
    import statistics, subprocess, sys, tempfile
    forward, skip = [], False  # this command's arguments less --rounds and --json
    for a in sys.argv[1:]:
        if skip or a.startswith(("--rounds=", "--json=")): skip = False; continue
        if a in ("--rounds", "--json"): skip = True; continue
        forward.append(a)
    runs = {}
    for r in range(args.rounds):
        for only in ("st", "recnb"):
            with tempfile.NamedTemporaryFile(suffix=".json") as f:
                subprocess.run([sys.executable, __file__, *forward, "--only", only, "--json", f.name], check=True)
                record = json.loads(Path(f.name).read_text())
            for name, pps in record["pairs_per_second"].items(): runs.setdefault(name, []).append(pps)
            print(f"round {r + 1}, {only}: " + ", ".join(f"{n} {v:.1f} pairs/s" for n, v in record["pairs_per_second"].items()), flush=True)
    medians = {name: statistics.median(v) for name, v in runs.items()}
    st = medians.get("sentence-transformers")
    print(f"\nmedians of {args.rounds} rounds ({record['machine']}; {args.steps} steps of {args.batch_size}, {record['precision']}):")
    for name, m in medians.items():
        print(f"  {name}: {m:.1f} pairs/s (runs {', '.join(f'{v:.1f}' for v in runs[name])})" + (f" = {m / st:.2f}x sentence-transformers" if st else ""))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**record, "rounds": args.rounds, "runs": runs, "pairs_per_second": medians}, indent=2))


def evaluate(data, models: dict, device) -> dict:
    "Every model and BM25 on the test queries over the full catalog; fusions with BM25 weighted on the validation queries."
    from recnb.rank.baselines import BM25Ranker, DenseRanker
    from recnb.index.encoder import Encoder
    from recnb.rank.metrics import metric_table
    # --- evaluation over the full catalog ------------------------------------------------------------
    # every ranker ranks the valid and test queries once; fusions with BM25 reuse those rankings. The blend weight
    # of each fusion is chosen on the validation queries (NDCG@10) and only then scored on test.
    from recnb.rank.baselines import fuse
    from recnb.rank.metrics import evaluate
    metrics = ["ndcg@10", "recall@10", "recall@100", "mrr@10"]
    def judged(split):
        qrels = data.qrels(split); queries = data.queries_in(split)
        queries = queries[queries["query_id"].isin(qrels)]
        return queries["query_id"].tolist(), queries["query"].tolist(), qrels
    splits = {split: judged(split) for split in ("valid", "test")}
    bm25 = BM25Ranker(data.catalog)
    encoders = {"zero-shot": Encoder(device=device)}
    encoders.update({name: Encoder(str(path), device=device) for name, path in models.items()})
    rankings = {"bm25": {s: bm25.rank(q, k=100) for s, (_, q, _) in splits.items()}}
    for name, encoder in encoders.items():
        ranker = DenseRanker(encoder, data.catalog, name=name)
        rankings[name] = {s: ranker.rank(q, k=100) for s, (_, q, _) in splits.items()}
        print(f"encoded the catalog with {name}", flush=True)
    score = lambda ranking, split: evaluate(ranking.as_run(splits[split][0]), splits[split][2], metrics)
    results, weights = {"bm25": score(rankings["bm25"]["test"], "test")}, {}
    alphas = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8]  # weight of the encoder; BM25 gets 1 − α
    for name in encoders:
        results[name] = score(rankings[name]["test"], "test")
        pair = lambda split, how, w: fuse([rankings["bm25"][split], rankings[name][split]], w, how, k=100)
        results[f"{name} + bm25 (rrf)"] = score(pair("test", "rrf", [1, 1]), "test")
        valid = {a: score(pair("valid", "blend", [1 - a, a]), "valid")["ndcg@10"] for a in alphas}
        best = max(alphas, key=lambda a: (valid[a], -abs(a - 0.5)))
        weights[name] = {"alpha": best, "valid ndcg@10 per alpha": valid}
        results[f"{name} + bm25 (blend, α={best} from valid)"] = score(pair("test", "blend", [1 - best, best]), "test")
    print(metric_table(results).to_string())
    return {"results": results, "blend_weights": weights}


if __name__ == "__main__":
    main()
