"""Trial for issue 28 (not kit code): a cross-encoder that re-ranks a served package's first stage, on Home Depot.

python bench/trial_rerank.py [--model recnb-hd:TAG] [--init run|base] [--pool mean|cls] [--minutes 20] [--depth 30]
The package's own served ranker (`PackagedModel.rank_queries`) gives every query of the run's dataset its top 100.
A cross-encoder (the run's fine-tuned MiniLM, or the shipped one, with a linear head on the pooled (query, title) tokens)
is trained for a time budget on the training queries: softmax cross entropy of one judged item (gain >= 1, drawn by
gain) against `--negatives` items of the first stage's top `--depth` that are unjudged or judged irrelevant, bf16
autocast on the CPU, AdamW with linear warm-up and decay. Then it scores the top 50 of every validation and test
query, and NDCG@10 (the kit's `recnb.rank.metrics.evaluate`) is printed for the first stage, the cross-encoder's order,
reciprocal-rank fusion with the first stage, and blends of the two min-max-normalised scores, re-ranking the top 20, 30, 50.
"""
import argparse, json, math, random, time
from pathlib import Path
import numpy as np, torch, bentoml
from transformers import AutoTokenizer, AutoModel
from recnb.serve.serving import PackagedModel
from recnb.run.experiment import load_run_data
from recnb.params import load_params
from recnb.rank.metrics import evaluate
from recnb.index.encoder import resolve_model

p = argparse.ArgumentParser()
p.add_argument("--model", default="recnb-hd:latest", help="a Home Depot package written by `recnb package`")
p.add_argument("--depth", type=int, default=30, help="negatives are drawn from the first stage's top DEPTH")
p.add_argument("--minutes", type=float, default=20)
p.add_argument("--batch-queries", type=int, default=16)
p.add_argument("--negatives", type=int, default=5)
p.add_argument("--lr", type=float, default=1e-4)
p.add_argument("--max-length", type=int, default=48)
p.add_argument("--init", choices=("run", "base"), default="run", help="base: the shipped MiniLM; run: the run's fine-tuned encoder")
p.add_argument("--pool", choices=("mean", "cls"), default="mean")
p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out" / "rerank")
args = p.parse_args()
torch.manual_seed(0); random.seed(0)
args.out.mkdir(parents=True, exist_ok=True)
t0 = time.time()
pm = PackagedModel(bentoml.models.get(args.model).path)
data = load_run_data(load_params(Path(pm.info["run_dir"]) / "params.yaml"))
def title(i): return pm.titles[pm.position[i]]

def first_stage(split):
    q = data.queries_in(split)
    ids, texts = q["query_id"].tolist(), q["query"].tolist()
    out = {}
    for s in range(0, len(texts), 64):
        r, _, _ = pm.rank_queries(texts[s:s + 64], k=100)
        out.update(zip(ids[s:s + 64], r.ids))
        first_scores.update(zip(ids[s:s + 64], r.scores))
    return dict(zip(ids, texts)), out
first_scores = {}
cand, text = {}, {}
for split in ("train", "valid", "test"):
    text[split], cand[split] = first_stage(split)
print(f"first stage done in {time.time() - t0:.0f} s", flush=True)
qrels = {s: data.qrels(s) for s in ("train", "valid", "test")}
for s in ("valid", "test"):
    print(s, "first stage", {k: round(v, 4) for k, v in evaluate(cand[s], qrels[s]).items()}, flush=True)

path = resolve_model(None) if args.init == "base" else str(Path(pm.info["run_dir"]) / "model")
tok = AutoTokenizer.from_pretrained(path)
class Cross(torch.nn.Module):
    def __init__(self, path):
        super().__init__()
        self.body = AutoModel.from_pretrained(path)
        self.head = torch.nn.Linear(self.body.config.hidden_size, 1)
        torch.nn.init.normal_(self.head.weight, std=0.02); torch.nn.init.zeros_(self.head.bias)
    def forward(self, input_ids, attention_mask, token_type_ids=None):
        h = self.body(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
        if args.pool == "cls": pooled = h[:, 0]
        else:
            m = attention_mask.unsqueeze(-1).to(h.dtype); pooled = (h * m).sum(1) / m.sum(1)
        return self.head(pooled).squeeze(-1)
model = Cross(path)
groups = []
for q, gains in qrels["train"].items():
    pos = [i for i, g in gains.items() if g >= 1.0]
    if not pos or q not in cand["train"]: continue
    neg = [i for i in cand["train"][q][:args.depth] if gains.get(i, 0) <= 0.34]
    if len(neg) < args.negatives: continue
    groups.append((text["train"][q], pos, gains, neg))
print(f"{len(groups)} training queries", flush=True)
opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
# steps from the time budget, estimated after 10 steps; linear warmup 10 %, linear decay
def encode(pairs):
    return tok([a for a, _ in pairs], [b for _, b in pairs], truncation=True, max_length=args.max_length, padding=True, return_tensors="pt")
def lr_at(step):
    if total_steps is None: return args.lr * (step + 1) / 100
    warm = max(10, total_steps // 10)
    if step < warm: return args.lr * (step + 1) / warm
    return args.lr * max(0.0, (total_steps - step) / (total_steps - warm))
model.train(); step, losses, pairs_done, start = 0, [], 0, time.time()
total_steps = None
order = list(range(len(groups))); random.shuffle(order)
while True:
    if total_steps is not None and step >= total_steps: break
    batch = [groups[order[(step * args.batch_queries + j) % len(order)]] for j in range(args.batch_queries)]
    pairs = []
    for qt, pos, gains, neg in batch:
        pick = random.choices(pos, weights=[gains[i] for i in pos])[0]
        pairs += [(qt, title(pick))] + [(qt, title(i)) for i in random.sample(neg, args.negatives)]
    if total_steps is None and step == 10:
        per_step = (time.time() - start) / 10
        total_steps = max(20, int(args.minutes * 60 / per_step))
        print(f"{per_step:.2f} s per step ({len(pairs) / per_step:.0f} pairs/s): {total_steps} steps", flush=True)
    for g in opt.param_groups: g["lr"] = lr_at(step)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = model(**encode(pairs)).float().view(len(batch), 1 + args.negatives)
    loss = torch.nn.functional.cross_entropy(scores, torch.zeros(len(batch), dtype=torch.long))
    opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step()
    losses.append(loss.item()); step += 1; pairs_done += len(pairs)
    if step % 25 == 0: print(f"step {step} loss {np.mean(losses[-25:]):.3f} (uniform {math.log(1 + args.negatives):.3f}) {time.time() - start:.0f} s", flush=True)
train_s = time.time() - start
model.eval()
def ce_scores(split, depth):
    out, t, n = {}, time.time(), 0
    for q in cand[split]:
        top = cand[split][q][:depth]
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            out[q] = model(**encode([(text[split][q], title(i)) for i in top])).float().view(-1).numpy()
        n += len(top)
    return out, n / (time.time() - t)
def minmax(x):
    x = np.asarray(x, dtype=float); span = x.max() - x.min()
    return (x - x.min()) / span if span > 0 else np.zeros_like(x)
def runs(split, scores, depth):
    out = {"reranked": {}, "rrf": {}}
    for w in (0.25, 0.5, 1.0, 2.0, 4.0): out[f"blend{w}"] = {}
    for q, s in scores.items():
        top, s = cand[split][q][:depth], s[:depth]
        rest = cand[split][q][depth:]
        order = np.argsort(-s, kind="stable")
        out["reranked"][q] = [top[i] for i in order] + rest
        rank_ce = np.empty(len(top)); rank_ce[order] = np.arange(len(top))
        rrf = 1 / (60 + rank_ce) + 1 / (60 + np.arange(len(top)))
        out["rrf"][q] = [top[i] for i in np.argsort(-rrf, kind="stable")] + rest
        ce, fs = minmax(s), minmax(first_scores[q][:depth])
        for w in (0.25, 0.5, 1.0, 2.0, 4.0):
            out[f"blend{w}"][q] = [top[i] for i in np.argsort(-(ce + w * fs), kind="stable")] + rest
    return out
result = {"args": {k: str(v) for k, v in vars(args).items()}, "train_s": round(train_s), "steps": step,
          "pairs_per_s_train": round(pairs_done / train_s, 1), "final_loss": float(np.mean(losses[-50:]))}
for split in ("valid", "test"):
    scores, speed = ce_scores(split, 50)
    sub = {q: qrels[split][q] for q in scores if q in qrels[split]}
    result[split] = {"pairs_per_s": round(speed, 1), "first": evaluate({q: cand[split][q] for q in scores}, sub)["ndcg@10"]}
    for depth in (20, 30, 50):
        for name, run in runs(split, scores, depth).items():
            result[split][f"{name}@{depth}"] = evaluate(run, sub)["ndcg@10"]
    print(split, json.dumps({k: round(v, 4) for k, v in result[split].items()}), flush=True)
(args.out / f"result-{args.init}-{args.pool}-{args.depth}-{int(args.minutes)}.json").write_text(json.dumps(result, indent=1))
torch.save(model.state_dict(), args.out / f"cross-{args.init}-{args.pool}.pt")
print(f"done in {time.time() - t0:.0f} s", flush=True)
