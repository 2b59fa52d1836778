"""Why exact search of 1,000 queries does not beat faiss on this CPU: the kernels torch offers, timed beside faiss.

python bench/probe_batch1000.py [--items 50000] [--queries 1000] [--repeats 5]
Random unit vectors (d=384), the same as bench_scorer.py's. Times, medians after a 0.3 s rest each:
faiss IndexFlatIP's whole search; torch fp32 `mm` alone (recnb's steps, no top-k); torch's int8 kernels
(fbgemm `quantized.linear_dynamic`, 7-bit activations so no pair of products saturates on AVX2).
Then, for an int8 first pass, the provable error bound against the error actually seen, and how many candidates
per query that bound forces into the exact re-score.
"""
from __future__ import annotations
import argparse, time, warnings
import numpy as np
import torch
import faiss
from bench_scorer import unit_vectors  # the same seeded data as the scorer benchmark

def median_ms(run, repeats, pause=0.3):
    run(); times = []
    for _ in range(repeats):
        time.sleep(pause); t = time.perf_counter(); run(); times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=50000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--step", type=int, default=4096, help="items per matmul (recnb's chunk_size)")
    p.add_argument("--block", type=int, default=512, help="queries per matmul (recnb: max_scores // chunk_size)")
    a = p.parse_args()
    warnings.filterwarnings("ignore", message=".*quantize.*deprecated")
    items, queries = unit_vectors(a.items, a.dim, 0), unit_vectors(a.queries, a.dim, 1)
    V, Q = torch.from_numpy(items), torch.from_numpy(queries)
    ops = 2 * a.items * a.queries * a.dim / 1e9
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), faiss {faiss.__version__}; "
          f"{a.queries:,} queries × {a.items:,} items × d {a.dim} = {ops:.1f} GFLOP")

    flat = faiss.IndexFlatIP(a.dim); flat.add(items)
    faiss_ms = median_ms(lambda: flat.search(queries, 10), a.repeats)
    print(f"faiss IndexFlatIP, whole search (top-10):  {faiss_ms:7.1f} ms  {ops / faiss_ms * 1e3:6.1f} GFLOP/s effective")

    out = torch.empty(a.block, a.step)
    def fp32_mm():
        for first in range(0, a.queries, a.block):
            q = Q[first:first + a.block]
            for start in range(0, a.items, a.step):
                v = V[start:start + a.step]
                torch.mm(q, v.T, out=out[: len(q), : len(v)])
    mm_ms = median_ms(fp32_mm, a.repeats)
    print(f"torch fp32 mm alone, no top-k:             {mm_ms:7.1f} ms  {ops / mm_ms * 1e3:6.1f} GFLOP/s  = {faiss_ms / mm_ms:.2f}× faiss's whole search")

    # int8 items (one scale per step: the fastest variant), queries quantised inside the op to 7 bits (reduce_range),
    # fp32 scores out. The bound below uses one scale per item instead (the tightest): both favour int8.
    torch.backends.quantized.engine = "fbgemm"
    packed = []
    for start in range(0, a.items, a.step):
        v = V[start:start + a.step]
        packed.append(torch.ops.quantized.linear_prepack(torch.quantize_per_tensor(v, v.abs().max().item() / 127, 0, torch.qint8), None))
    def int8_scores():
        return [torch.ops.quantized.linear_dynamic(Q[f:f + a.block], w, True) for f in range(0, a.queries, a.block) for w in packed]
    int8_ms = median_ms(int8_scores, a.repeats)
    print(f"torch int8 fbgemm linear_dynamic alone:    {int8_ms:7.1f} ms  {ops / int8_ms * 1e3:6.1f} GOP/s     = {faiss_ms / int8_ms:.2f}× faiss's whole search")

    # the exact bound for that first pass: |q·v − a| ≤ (s/2)·‖v‖₁ + ‖q̃‖·‖v − ṽ‖, s the 7-bit query step
    scales = V.abs().amax(1) / 127
    v_int8 = torch.round(V / scales[:, None]) * scales[:, None]
    item_error = (V - v_int8).norm(dim=1).max().item()
    sample = Q[:200]
    step = (max(sample.max().item(), 0) - min(sample.min().item(), 0)) / 127
    bound = step / 2 * V.abs().sum(1).max().item() + (sample.norm(dim=1).max().item() + step / 2 * a.dim ** 0.5) * item_error
    approx = torch.ops.quantized.linear_dynamic(sample, torch.ops.quantized.linear_prepack(
        torch.quantize_per_channel(V, scales.double(), torch.zeros(len(V), dtype=torch.int64), 0, torch.qint8), None), True)
    exact = sample @ V.T
    kth = approx.topk(10, dim=1).values[:, -1:]
    candidates = (approx >= kth - 2 * bound).sum(1).float()
    print(f"int8 first pass on {len(sample)} queries: provable error bound {bound:.4f}, largest error seen "
          f"{(approx - exact).abs().max().item():.4f}, score spread (std) {exact.std().item():.4f}")
    print(f"  candidates the bound forces into the exact re-score: median {candidates.median().item():.0f}, "
          f"90th percentile {candidates.quantile(0.9).item():.0f} per query (of {a.items:,} items; top-10 wanted)")

    # what those candidates cost on top of the int8 pass: keep the scores over a per-query threshold, re-score exactly
    threshold = kth.median().item() - 2 * bound
    def int8_and_select():
        for first in range(0, a.queries, a.block):
            for w in packed: (torch.ops.quantized.linear_dynamic(Q[first:first + a.block], w, True) >= threshold).nonzero()
    select_ms = median_ms(int8_and_select, a.repeats) - int8_ms
    n_candidates = int(candidates.median().item())
    positions = torch.randint(0, a.items, (a.queries, n_candidates))
    def rescore():  # the fastest way found: a small gather + matrix-vector product per query (64-query bmm: 8× slower)
        for i in range(a.queries):
            torch.mv(V.index_select(0, positions[i]), Q[i])
    rescore_ms = median_ms(rescore, a.repeats)
    total = int8_ms + select_ms + rescore_ms
    print(f"  threshold + nonzero over all int8 scores: + {select_ms:6.1f} ms; exact re-score of {n_candidates:,} candidates × "
          f"{a.queries:,} queries: {rescore_ms:6.1f} ms")
    print(f"  int8 pass + selection + re-score ≥ {total:.1f} ms = {faiss_ms / total:.2f}× faiss (before any top-k or merging)")

if __name__ == "__main__":
    main()
