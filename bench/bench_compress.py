"""Encoder variants for serving: the run's torch encoder, ONNX Runtime fp32 and int8, and a distilled int8 student, side by side.

python bench/bench_compress.py RUN_DIR [--kinds onnx onnx-int8 student-int8] [--json out.json]
For each variant: texts/s encoding one query per call (the package's test queries) and 64 per call (catalog titles),
size on disk, and NDCG@10 over the whole catalog (re-encoded by that variant; the student keeps the run's item vectors)
on validation and test, for the dense ranker alone and for the run's served ranker, all through `recnb.serve.compress.compress_encoder`, as `recnb package` does.
"""
from __future__ import annotations
import argparse, json, sys, tempfile, time
from pathlib import Path
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_name  # noqa: E402


def texts_per_s(encoder, texts: list[str], per_call: int, rounds: int = 2) -> float:
    "Texts encoded per second, `per_call` texts per `encode` call (best of `rounds` passes)."
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for i in range(0, len(texts), per_call): encoder.encode(texts[i:i + per_call], batch_size=per_call)
        best = max(best, len(texts) / (time.perf_counter() - start))
    return round(best, 1)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--kinds", nargs="+", default=["onnx", "onnx-int8", "student-int8"],
                   help="compressed variants to measure next to torch (student-int8 distils for minutes on a CPU)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    import os, torch
    from recnb.serve.compress import compress_encoder
    from recnb.index.encoder import Encoder
    from recnb.run.experiment import load_run_data
    from recnb.params import load_params
    from recnb.index.scorer import ItemIndex
    params = load_params(args.run_dir / "params.yaml")
    ranker = json.loads((args.run_dir / "metrics.json").read_text())["model"]
    data = load_run_data(params)
    tuned = Encoder(args.run_dir / "model", device="cpu")
    index = ItemIndex.load(args.run_dir / "index", device="cpu")
    queries = data.queries_in("test")["query"].astype(str).tolist()[:300]
    titles = list(np.random.default_rng(0).choice(data.catalog.texts(), 64 * 20, replace=False))
    bm25 = None
    if ranker == "fine-tuned+bm25":
        from recnb.rank.baselines import BM25Ranker
        bm25 = BM25Ranker(data.catalog)
    torch_mb = sum(f.stat().st_size for f in (args.run_dir / "model").glob("*.safetensors")) / 1e6
    out = {"machine": f"{cpu_name()}, {os.cpu_count()} cores", "run": str(args.run_dir), "ranker": ranker, "items": len(index),
           "torch_threads": torch.get_num_threads(), "variants": {}}
    print(f"{out['machine']}; {args.run_dir.name}: {ranker}, {len(index):,} items", flush=True)
    records = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kinds:
            encoder, _, records[kind] = compress_encoder(tuned, index, data, kind, Path(tmp) / kind, ranker, params.eval.fusion,
                                                         params.train.history_items, bm25=bm25)
            out["variants"][kind] = {"one_query_per_s": texts_per_s(encoder, queries, 1), "batch64_per_s": texts_per_s(encoder, titles, 64),
                                     "mb": records[kind]["file_mb"], "re-encode_s": records[kind]["seconds"]["total"]}
            if "student" in records[kind]: out["variants"][kind]["student"] = records[kind]["student"]
            print(kind, out["variants"][kind], flush=True)
    out["variants"]["torch"] = {"one_query_per_s": texts_per_s(tuned, queries, 1), "batch64_per_s": texts_per_s(tuned, titles, 64),
                                "mb": round(torch_mb, 1), "precision": tuned.precision}
    for kind in ("torch", *args.kinds):
        record = records[args.kinds[0] if kind == "torch" else kind]
        column = "torch" if kind == "torch" else kind
        out["variants"][kind]["ndcg@10"] = {split: {name: v[column] for name, v in by.items()} for split, by in record["ndcg@10"].items()}
        if kind != "torch": out["variants"][kind].update(query_cosine=record["query_cosine"], item_cosine=record["item_cosine"])
    assert len({r["ndcg@10"]["test"][ranker]["torch"] for r in records.values()}) == 1, "the torch encoder scored differently"
    print("| variant | 1 query/call (texts/s) | 64/call (texts/s) | size MB | test NDCG@10 dense | test NDCG@10 served | valid NDCG@10 served |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for kind, v in out["variants"].items():
        test, valid = v["ndcg@10"]["test"], v["ndcg@10"]["valid"]
        print(f"| {kind} | {v['one_query_per_s']} | {v['batch64_per_s']} | {v['mb']} | {test['fine-tuned']:.4f} | {test[ranker]:.4f} | {valid[ranker]:.4f} |")
    if args.json: args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
