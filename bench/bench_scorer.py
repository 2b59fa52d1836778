"""Exact top-k inner product: recnb ItemIndex (calibrated) vs plain torch vs faiss IndexFlatIP vs numpy, same run.

python bench/bench_scorer.py [--sizes 50000,500000,1000000] [--batches 1,64,1000] [--repeats 3] [--k 10]
                             [--device cpu|cuda] [--contenders recnb,torch,faiss,numpy] [--json results.json]
Random unit vectors (d=384, seeded). recnb calibrates (`ItemIndex.tune`) once per catalog before the timed runs, and
the calibration's time is printed. Contenders are interleaved within each repeat; medians are reported. recnb and
plain torch run on `--device`; faiss (faiss-cpu, optional: skipped when it is not installed) and numpy on the CPU.
Ids are compared per query with plain torch's (the same ordered top k), faiss's (same order) and numpy's (same set).
"""
from __future__ import annotations
import argparse, json, os, time
from dataclasses import asdict
import numpy as np
import torch
from recnb.index.precision import exact_sums
from recnb.index.scorer import ItemIndex
from machine import cpu_name

try: import faiss
except ImportError: faiss = None

CONTENDERS = ("recnb", "torch", "faiss", "numpy")

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

def plain_torch_top_k(items: torch.Tensor, queries: torch.Tensor, k: int, max_scores: int = 1 << 28) -> torch.Tensor:
    "Plain torch: fp32 `q @ V.T` (no TF32) + `topk`, queries in chunks of at most 1 GB of scores (on a GPU ≤ a quarter of free memory)."
    if items.is_cuda: max_scores = min(max_scores, torch.cuda.mem_get_info(items.device)[0] // 16)
    rows = max(1, max_scores // len(items))
    with exact_sums(items.device), torch.inference_mode():
        return torch.cat([(queries[f:f + rows] @ items.T).topk(k, dim=1).indices for f in range(0, len(queries), rows)]).cpu()

def machine(device: torch.device) -> dict:
    "What the numbers depend on."
    return dict(cpu=cpu_name(), cores=os.cpu_count(), cpu_capability=torch.backends.cpu.get_cpu_capability(),
                gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None, device=str(device),
                torch=torch.__version__, threads=torch.get_num_threads(), faiss=faiss.__version__ if faiss else None,
                numpy=np.__version__, load_average=os.getloadavg()[0])

def read_ms(x: torch.Tensor, sync, repeats: int = 5) -> float:
    "Median ms to read `x` once (a sum over it, synchronised): the floor of a single query that reads all of it."
    x.sum(); sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter(); x.sum(); sync(); times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e3

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="50000,500000,1000000")
    p.add_argument("--batches", default="1,64,1000")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where recnb and plain torch score (faiss and numpy stay on the CPU)")
    p.add_argument("--contenders", default=",".join(CONTENDERS), help="comma-separated, from " + ", ".join(CONTENDERS) +
                   " (recnb always runs; e.g. recnb,torch,faiss leaves out numpy, slow at 1M items)")
    p.add_argument("--json", help="also write the machine, the calibrations and every row to this JSON file")
    p.add_argument("--pause", type=float, default=0.3, help="seconds of rest before each timed call, so no contender "
                   "runs while the previous one's BLAS/OpenMP threads still spin (OpenBLAS's halved recnb's speed)")
    p.add_argument("--single", type=int, default=30, help="queries timed one by one for batch 1")
    a = p.parse_args()
    sizes, batches = [int(s) for s in a.sizes.split(",")], [int(b) for b in a.batches.split(",")]
    wanted = ["recnb"] + [c for c in dict.fromkeys(a.contenders.split(",")) if c and c != "recnb"]
    if set(wanted) - set(CONTENDERS): p.error(f"--contenders: unknown {sorted(set(wanted) - set(CONTENDERS))}; choose from {CONTENDERS}")
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available(): p.error("--device cuda: torch sees no CUDA device")
    if "faiss" in wanted and faiss is None:
        print("faiss is not installed: its column is skipped (pip install faiss-cpu to include it)")
        wanted.remove("faiss")
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    info = machine(device)
    print(f"CPU {info['cpu']} ({info['cores']} cores, {info['cpu_capability']}); GPU {info['gpu'] or 'none used'}; "
          f"load average {info['load_average']:.2f}; torch {info['torch']} ({info['threads']} threads), "
          f"faiss {info['faiss'] or 'not installed'}, numpy {info['numpy']}; k={a.k}, d={a.dim}, device {device}; "
          f"contenders {', '.join(wanted)}", flush=True)
    all_queries = unit_vectors(max(batches) + a.single, a.dim, seed=1)
    rows, calibrations = [], []
    for n in sizes:
        items = unit_vectors(n, a.dim, seed=0)
        index = ItemIndex(torch.from_numpy(items), [str(i) for i in range(n)], device=device)
        sync(); t = time.perf_counter(); tuned = index.tune(k=a.k); sync(); tune_s = time.perf_counter() - t
        calibrations.append(dict(n=n, seconds=tune_s, plans={b: asdict(p) for b, p in tuned.plans.items()},
                                 ms_per_query={b: {f"{c.method} {c.chunk_size}/{c.max_scores}": ms for c, ms in times.items()}
                                               for b, times in tuned.timings.items()}))
        print(f"n={n:>9,} calibration {tune_s:.2f} s: " + ", ".join(f"batch {b} → {p.method} {p.chunk_size}/{p.max_scores}"
                                                               for b, p in tuned.plans.items()), flush=True)
        for b, times in calibrations[-1]["ms_per_query"].items():
            print(f"  batch class {b}: " + ", ".join(f"{c} {ms:.3f}" for c, ms in times.items()) + " ms/query", flush=True)
        # a single query reads the whole matrix at least once: the time to read it is the floor of batch 1
        copies = {"fp32": index.vectors} | ({str(index.low_dtype).removeprefix("torch."): index.vectors_low} if index.vectors_low is not None else {})
        reads = {name: read_ms(x, sync) for name, x in copies.items()}
        calibrations[-1]["read_ms"] = reads
        print("  reading the items once (a sum, synchronised): " + ", ".join(
            f"{name} {copies[name].nbytes / 1e9:.2f} GB in {ms:.2f} ms ({copies[name].nbytes / ms / 1e6:.0f} GB/s)" for name, ms in reads.items()), flush=True)
        flat = None
        if "faiss" in wanted: flat = faiss.IndexFlatIP(a.dim); flat.add(items)
        for b in batches:
            if b == 1:  # a single query at a time, several of them
                batch_list = [all_queries[i:i + 1] for i in range(a.single)]
            else:
                batch_list = [all_queries[:b]]
            n_q = sum(len(q) for q in batch_list)
            on_device = [torch.from_numpy(q).to(device) for q in batch_list]
            run = {
                "recnb": lambda: [index.search(q, a.k).indices.numpy() for q in on_device],
                "torch": lambda: [plain_torch_top_k(index.vectors, q, a.k).numpy() for q in on_device],
                "faiss": lambda: [flat.search(q, a.k)[1] for q in batch_list],
                "numpy": lambda: [numpy_top_k(items, q, a.k) for q in batch_list],
            }
            contenders = {name: run[name] for name in wanted}
            if device.type == "cuda":  # the first call on a GPU pays for kernel loads and cuBLAS handles: not timed
                for name in ("recnb", "torch"):
                    if name in contenders: contenders[name]()
            times, results = {name: [] for name in contenders}, {}
            for rep in range(a.repeats):
                for name, call in contenders.items():
                    time.sleep(a.pause)
                    sync(); t = time.perf_counter(); results[name] = call(); sync(); times[name].append(time.perf_counter() - t)
            found = {name: np.concatenate(r) for name, r in results.items()}
            ours = found["recnb"]
            same = {name: float((ours == found[name]).all(axis=1).mean()) if name != "numpy" else
                    float((np.sort(ours, 1) == np.sort(found[name], 1)).all(axis=1).mean()) for name in found if name != "recnb"}
            qps = {name: n_q / np.median(t) for name, t in times.items()}
            row = dict(n=n, batch=b, device=str(device), plan=index.plan_for(b).method, **{f"{k}_qps": v for k, v in qps.items()},
                       **{f"recnb_vs_{k}": qps["recnb"] / v for k, v in qps.items() if k != "recnb"},
                       **{f"same_ids_{k}": v for k, v in same.items()}, load_average=os.getloadavg()[0])
            rows.append(row)
            print(f"n={n:>9,} batch={b:>5}  recnb ({row['plan']}) {qps['recnb']:9.1f} q/s"
                  + "".join(f"  {k} {v:9.1f}" for k, v in qps.items() if k != "recnb")
                  + "".join(f"  recnb/{k} {qps['recnb'] / v:5.2f}" for k, v in qps.items() if k != "recnb")
                  + ("  same ids as " + ", ".join(f"{k} {v:.3f}" for k, v in same.items()) if same else "")
                  + f"  (load {row['load_average']:.2f})", flush=True)
            if b == 1:
                per_query = {k: 1e3 / v for k, v in qps.items() if k in ("recnb", "torch")}
                print("  batch 1: " + ", ".join(f"{k} {ms:.3f} ms/query" for k, ms in per_query.items()) + "; reading "
                      + ", ".join(f"the {name} copy {ms:.3f} ms" for name, ms in reads.items()), flush=True)
        print(f"  fallbacks to the exact pass at n={n:,}: {index.fallbacks}", flush=True)
        del index, flat, items
    if a.json:
        with open(a.json, "w") as f: json.dump(dict(machine=info, args=vars(a), calibrations=calibrations, rows=rows), f, indent=1)
        print(f"wrote {a.json}")
    return rows

if __name__ == "__main__":
    main()
