"""Fine-tuning on Home Depot: recnb (Lightning two-tower) vs sentence-transformers' standard recipe, same run.

Both start from all-MiniLM-L6-v2, train on the same (query, positive title) pairs from the train queries (relevance
≥ 2.5, i.e. gain ≥ 1.5), with the same batch size and number of steps on this machine. Both are then scored on the
test queries over the FULL catalog with the same encoder, scorer and metrics, next to BM25 and zero-shot.

    python bench/bench_train.py --steps 100 --batch-size 64     # ~30 min on 2 cores (four encodings of the catalog)
"""
from __future__ import annotations
import argparse, json, os, platform, tempfile, time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=100, help="optimiser steps for both (one epoch of 27k pairs at 64 is 428)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr-st", type=float, default=2e-5, help="sentence-transformers' recipe learning rate")
    ap.add_argument("--lr", type=float, default=5e-5, help="recnb learning rate")
    ap.add_argument("--negatives", default="bm25", help="recnb hard negatives: none, bm25")
    ap.add_argument("--precision", default="32-true", help="recnb Lightning precision on CPU: 32-true or bf16-mixed")
    ap.add_argument("--out", type=Path, default=Path("bench/out/train"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import torch
    from recnb.baselines import BM25Ranker, DenseRanker, HybridRanker
    from recnb.data import load_dataset
    from recnb.encoder import Encoder, resolve_model
    from recnb.evaluate import evaluate_search
    from recnb.metrics import metric_table
    from recnb.model import fit, search_examples

    data = load_dataset("homedepot")
    examples = search_examples(data, "train", min_positive_gain=1.5)
    n_pairs = min(args.steps * args.batch_size, len(examples.queries))
    print(f"Home Depot: {len(data.catalog):,} items, {len(data.queries_in('test')):,} test queries, "
          f"{len(examples.queries):,} train pairs (gain ≥ 1.5); budget {args.steps} steps × {args.batch_size} = {n_pairs:,} pairs")
    results, timing = {}, {}
    out = args.out; out.mkdir(parents=True, exist_ok=True)

    # --- sentence-transformers' recipe -------------------------------------------------------------
    from sentence_transformers import SentenceTransformer, losses, InputExample
    from torch.utils.data import DataLoader
    torch.manual_seed(0)
    st = SentenceTransformer(resolve_model(None), device="cpu")
    texts = data.catalog.texts()
    pairs = [InputExample(texts=[q, texts[p]]) for q, p in zip(examples.queries, examples.positives)]
    loader = DataLoader(pairs, shuffle=True, batch_size=args.batch_size, generator=torch.Generator().manual_seed(0))
    loss = losses.MultipleNegativesRankingLoss(st)
    start = time.perf_counter()
    st.fit(train_objectives=[(loader, loss)], epochs=1, steps_per_epoch=args.steps, warmup_steps=int(0.1 * args.steps),
           optimizer_params={"lr": args.lr_st}, show_progress_bar=False)
    timing["sentence-transformers"] = time.perf_counter() - start
    st.save(str(out / "st-model"))
    print(f"sentence-transformers: {n_pairs / timing['sentence-transformers']:.1f} pairs/s")

    # --- recnb ---------------------------------------------------------------------------------------
    run = out / "recnb"
    import shutil; shutil.rmtree(run, ignore_errors=True)
    result = fit(data, run, epochs=1, max_steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                 min_positive_gain=1.5, negatives=args.negatives, precision=args.precision, tracker="disabled",
                 max_val_queries=300, checkpoint_every_n_steps=1000)
    timing["recnb"] = n_pairs / result.pairs_per_second
    timing["recnb fit() wall, incl. BM25 mining and one full-catalog validation"] = result.seconds
    print(f"recnb: {result.pairs_per_second:.1f} pairs/s over its training steps (negatives={args.negatives}, "
          f"precision={args.precision}); fit() wall {result.seconds:.0f} s")

    # --- evaluation over the full catalog ------------------------------------------------------------
    bm25 = BM25Ranker(data.catalog)
    zero = DenseRanker(Encoder(), data.catalog, name="zero-shot")
    st_ranker = DenseRanker(Encoder(str(out / "st-model")), data.catalog, name="st-recipe")
    ours = DenseRanker(Encoder(str(result.model_dir)), data.catalog, name="recnb")
    rankers = {"bm25": bm25, "zero-shot": zero, "hybrid bm25+zero-shot": HybridRanker([bm25, zero]),
               "sentence-transformers recipe": st_ranker, "recnb fine-tuned": ours,
               "recnb fine-tuned + bm25 (rrf)": HybridRanker([bm25, ours])}
    results = evaluate_search(data, rankers, "test")
    table = metric_table(results)
    print(table.to_string())
    ratio = timing["sentence-transformers"] / timing["recnb"]
    print(f"training throughput recnb / sentence-transformers: {ratio:.2f}x")
    record = {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "steps": args.steps, "batch_size": args.batch_size, "pairs": n_pairs, "seconds": timing,
              "pairs_per_second": {"sentence-transformers (fit wall)": n_pairs / timing["sentence-transformers"],
                                   "recnb (training steps)": result.pairs_per_second}, "results": results,
              "recnb": {"lr": args.lr, "negatives": args.negatives, "precision": args.precision},
              "st": {"lr": args.lr_st}}
    if args.json: args.json.parent.mkdir(parents=True, exist_ok=True); args.json.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
