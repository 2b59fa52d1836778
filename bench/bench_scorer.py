"""Exact top-k inner product: recnb ItemIndex vs faiss IndexFlatIP vs numpy (matmul + argpartition), same run.

python bench/bench_scorer.py [--sizes 50000,500000,1000000] [--batches 1,64,1000] [--repeats 3] [--k 10]
Random unit vectors (d=384, seeded). Contenders are interleaved within each repeat; medians are reported.
"""
from __future__ import annotations
import argparse, time
import numpy as np
import torch
import faiss
from recnb.scorer import ItemIndex

def unit_vectors(n, d, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x

def numpy_top_k(items, queries, k, block=256):
    "numpy matmul + argpartition + sort, queries in blocks so the score matrix stays bounded."
    out = []
    for first in range(0, len(queries), block):
        scores = queries[first:first + block] @ items.T
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1)
        out.append(np.take_along_axis(part, order, 1))
    return np.concatenate(out)

def bandwidth(items: np.ndarray, repeats=5):
    "(copy GB/s counting read+write bytes, read GB/s) over the fp32 item matrix, 2 threads (torch)."
    x = torch.from_numpy(items); y = torch.empty_like(x)
    y.copy_(x); copy, read = [], []
    for _ in range(repeats):
        t = time.perf_counter(); y.copy_(x); copy.append(time.perf_counter() - t)
        t = time.perf_counter(); x.sum(); read.append(time.perf_counter() - t)
    return 2 * x.nbytes / np.median(copy) / 1e9, x.nbytes / np.median(read) / 1e9

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="50000,500000,1000000")
    p.add_argument("--batches", default="1,64,1000")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--pause", type=float, default=0.3, help="seconds of rest before each timed call, so no contender "
                   "runs while the previous one's BLAS/OpenMP threads still spin (OpenBLAS's halved recnb's speed)")
    p.add_argument("--single", type=int, default=30, help="queries timed one by one for batch 1")
    a = p.parse_args()
    sizes, batches = [int(s) for s in a.sizes.split(",")], [int(b) for b in a.batches.split(",")]
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), faiss {faiss.__version__}, numpy {np.__version__}, k={a.k}, d={a.dim}")
    all_queries = unit_vectors(max(batches) * 1 + a.single, a.dim, seed=1)
    rows = []
    for n in sizes:
        items = unit_vectors(n, a.dim, seed=0)
        index = ItemIndex(torch.from_numpy(items), [str(i) for i in range(n)], device="cpu")
        flat = faiss.IndexFlatIP(a.dim); flat.add(items)
        if n == max(sizes): copy_bw, read_bw = bandwidth(items)
        for b in batches:
            if b == 1:  # a single query at a time, several of them
                batch_list = [all_queries[i:i + 1] for i in range(a.single)]
            else:
                batch_list = [all_queries[:b]]
            n_q = sum(len(q) for q in batch_list)
            contenders = {
                "recnb": lambda: [index.search(q, a.k).indices.numpy() for q in batch_list],
                "faiss": lambda: [flat.search(q, a.k)[1] for q in batch_list],
                "numpy": lambda: [numpy_top_k(items, q, a.k) for q in batch_list],
            }
            times = {name: [] for name in contenders}
            results = {}
            for rep in range(a.repeats):
                for name, run in contenders.items():
                    time.sleep(a.pause)
                    t = time.perf_counter(); results[name] = run(); times[name].append(time.perf_counter() - t)
            ours, theirs, plain = (np.concatenate(results[x]) for x in ("recnb", "faiss", "numpy"))
            same = float((ours == theirs).all(axis=1).mean())
            same_numpy = float((np.sort(ours, 1) == np.sort(plain, 1)).all(axis=1).mean())
            qps = {name: n_q / np.median(t) for name, t in times.items()}
            row = dict(n=n, batch=b, **{f"{k}_qps": v for k, v in qps.items()}, vs_faiss=qps["recnb"] / qps["faiss"],
                       vs_numpy=qps["recnb"] / qps["numpy"], same_ids_faiss=same, same_ids_numpy=same_numpy)
            rows.append(row)
            print(f"n={n:>9,} batch={b:>5}  recnb {qps['recnb']:9.1f} q/s  faiss {qps['faiss']:9.1f}  numpy {qps['numpy']:9.1f}"
                  f"  recnb/faiss {row['vs_faiss']:5.2f}  recnb/numpy {row['vs_numpy']:5.2f}  same ids as faiss {same:.3f}, numpy {same_numpy:.3f}", flush=True)
            if b == 1 and n == max(sizes):
                per_query = np.median(times["recnb"]) / n_q
                bound = items.nbytes / (copy_bw * 1e9)
                print(f"  batch-1 bound at n={n:,}: {items.nbytes / 1e9:.2f} GB fp32 matrix / copy bandwidth {copy_bw:.1f} GB/s = {bound * 1e3:.1f} ms"
                      f" (read bandwidth {read_bw:.1f} GB/s); recnb {per_query * 1e3:.1f} ms/query = {bound / per_query:.0%} of the bound"
                      f" (reads the {str(index.low_dtype).removeprefix('torch.')} copy: {items.nbytes / 2 / 1e9:.2f} GB)", flush=True)
        print(f"  fallbacks to the exact pass at n={n:,}: {index.fallbacks}", flush=True)
        del index, flat, items
    return rows

if __name__ == "__main__":
    main()
