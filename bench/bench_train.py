"""Fine-tuning on Home Depot: recnb (Lightning two-tower) vs sentence-transformers' standard recipe, same run.

Both start from all-MiniLM-L6-v2, train on the same (query, positive title) pairs from the train queries (relevance
≥ 2.5, i.e. gain ≥ 1.5), with the same batch size and number of steps on this machine. Both are then scored on the
test queries over the FULL catalog with the same encoder, scorer and metrics, next to BM25 and zero-shot.

    python bench/bench_train.py --json bench/out/train.json   # 300 steps: ~1 hour on 2 cores (six catalog encodings)
"""
from __future__ import annotations
import argparse, json, os, platform, subprocess, time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300, help="optimiser steps for each (one epoch of 27k pairs at 64 is 428)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr-st", type=float, default=2e-5, help="sentence-transformers' recipe learning rate")
    ap.add_argument("--lr", type=float, default=5e-5, help="recnb learning rate")
    ap.add_argument("--negatives", default="none,bm25",
                    help="recnb runs, one per hard-negative choice (none = the same in-batch recipe as ST; bm25)")
    ap.add_argument("--precision", default="32-true", help="recnb Lightning precision on CPU: 32-true or bf16-mixed")
    ap.add_argument("--out", type=Path, default=Path("bench/out/train"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--items", type=int, default=None, help="a sampled catalog of this many items (a quick smoke run; default: all)")
    args = ap.parse_args()

    import torch
    from recnb.baselines import BM25Ranker, DenseRanker
    from recnb.data import sample_search_data
    from recnb.datasets import load_dataset
    from recnb.encoder import Encoder, resolve_model
    from recnb.metrics import metric_table
    from recnb.model import fit
    from recnb.pairs import search_examples

    cpu = next((l.split(":", 1)[1].strip() for l in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
                if l.startswith("Model name")), platform.processor())
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  CPU: {cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
    data = load_dataset("homedepot")
    if args.items: data = sample_search_data(data, args.items)
    examples = search_examples(data, "train", min_positive_gain=1.5)
    n_pairs = min(args.steps * args.batch_size, len(examples.queries))
    print(f"Home Depot: {len(data.catalog):,} items, {len(data.queries_in('test')):,} test queries, "
          f"{len(examples.queries):,} train pairs (gain ≥ 1.5); budget {args.steps} steps × {args.batch_size} = {n_pairs:,} pairs", flush=True)
    out = args.out; out.mkdir(parents=True, exist_ok=True)
    throughput, wall = {}, {}

    # --- sentence-transformers' recipe -------------------------------------------------------------
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, losses, InputExample
    from torch.utils.data import DataLoader
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        "Seconds inside ST's training steps (forward, backward, update), to compare with recnb's own step clock."
        seconds, start = 0.0, None
        def on_step_begin(self, *a, **k): self.start = time.perf_counter()
        def on_step_end(self, *a, **k): self.seconds += time.perf_counter() - self.start
    clock, init = StepClock(), SentenceTransformerTrainer.__init__
    SentenceTransformerTrainer.__init__ = lambda self, *a, callbacks=None, **k: init(self, *a, callbacks=[*(callbacks or []), clock], **k)

    torch.manual_seed(0)
    st = SentenceTransformer(resolve_model(None), device="cpu")
    texts = data.catalog.texts()
    pairs = [InputExample(texts=[q, texts[p]]) for q, p in zip(examples.queries, examples.positives)]
    loader = DataLoader(pairs, shuffle=True, batch_size=args.batch_size, generator=torch.Generator().manual_seed(0))
    loss = losses.MultipleNegativesRankingLoss(st)
    start = time.perf_counter()
    st.fit(train_objectives=[(loader, loss)], epochs=1, steps_per_epoch=args.steps, warmup_steps=int(0.1 * args.steps),
           optimizer_params={"lr": args.lr_st}, show_progress_bar=False)
    wall["sentence-transformers"] = time.perf_counter() - start
    throughput["sentence-transformers"] = n_pairs / clock.seconds
    st.save(str(out / "st-model"))
    print(f"sentence-transformers: {throughput['sentence-transformers']:.1f} pairs/s in training steps, "
          f"{n_pairs / wall['sentence-transformers']:.1f} pairs/s over fit()", flush=True)

    # --- recnb ---------------------------------------------------------------------------------------
    models = {}
    for negatives in args.negatives.split(","):
        name = f"recnb negatives={negatives}"
        run = out / f"recnb-{negatives}"
        import shutil; shutil.rmtree(run, ignore_errors=True)
        result = fit(data, run, epochs=1, max_steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                     min_positive_gain=1.5, negatives=negatives, precision=args.precision, tracker="disabled",
                     max_val_queries=300, checkpoint_every_n_steps=10_000)
        throughput[name], wall[name] = result.pairs_per_second, result.seconds
        models[name] = result.model_dir
        print(f"{name}: {result.pairs_per_second:.1f} pairs/s in training steps (precision={args.precision}); fit() wall "
              f"{result.seconds:.0f} s incl. mining and one full-catalog validation", flush=True)

    # --- evaluation over the full catalog ------------------------------------------------------------
    # every ranker ranks the valid and test queries once; fusions with BM25 reuse those rankings. The blend weight
    # of each fusion is chosen on the validation queries (NDCG@10) and only then scored on test.
    from recnb.baselines import fuse
    from recnb.metrics import evaluate
    metrics = ["ndcg@10", "recall@10", "recall@100", "mrr@10"]
    def judged(split):
        qrels = data.qrels(split); queries = data.queries_in(split)
        queries = queries[queries["query_id"].isin(qrels)]
        return queries["query_id"].tolist(), queries["query"].tolist(), qrels
    splits = {split: judged(split) for split in ("valid", "test")}
    bm25 = BM25Ranker(data.catalog)
    encoders = {"zero-shot": Encoder(), "sentence-transformers recipe": Encoder(str(out / "st-model"))}
    encoders.update({name: Encoder(str(path)) for name, path in models.items()})
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
    print("\ntraining pairs/s (inside training steps; same pairs, batch size and steps):")
    for name, pps in throughput.items():
        print(f"  {name}: {pps:.1f} pairs/s = {pps / throughput['sentence-transformers']:.2f}x sentence-transformers")
    record = {"machine": cpu, "threads": torch.get_num_threads(), "steps": args.steps, "batch_size": args.batch_size,
              "pairs": n_pairs, "pairs_per_second_in_steps": throughput, "wall_seconds": wall, "results": results,
              "blend_weights": weights,
              "recnb": {"lr": args.lr, "precision": args.precision}, "st": {"lr": args.lr_st}}
    if args.json: args.json.parent.mkdir(parents=True, exist_ok=True); args.json.write_text(json.dumps(record, indent=2))

if __name__ == "__main__":
    main()
