"""The closed loop on the synthetic shop's drift scenario: what a retrain on the shop's clicks adds.

python bench/bench_loop.py [--families "Outdoor & Patio,Bath"] [--units 400] [--json out.json]
The champion is trained on the synthetic shop without the queries whose wanted items (gain 2) lie in the drifted
families. Shoppers then ask half of those queries (the traffic) and click on the champion's top 10 through the
position-biased click model (recnb.clicks); the log becomes judgements (recnb.logged: cascade reading). A retrain
with the same recipe learns from the original judgements plus those clicks; one without them learns from the
original judgements alone. All are scored by NDCG@10 with the true judgements on the other half of the drifted
queries (never asked, never clicked), on the asked half, and on the original test queries.
"""
from __future__ import annotations
import argparse, json, tempfile, time
from pathlib import Path
import pandas as pd


def drifted_queries(data, families: set[str]) -> set[str]:
    "Queries whose wanted items (the highest gain) mostly lie in `families`."
    wanted = data.judgements[data.judgements["gain"] >= data.judgements["gain"].max()]
    category = data.catalog.items.set_index("item_id")["category"]
    share = wanted.assign(inside=wanted["item_id"].map(category).isin(families)).groupby("query_id")["inside"].mean()
    return set(share[share > 0.5].index)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", default="Outdoor & Patio,Bath")
    p.add_argument("--units", type=int, default=400, help="simulated shoppers, 3 queries each")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    from machine import cpu_name
    from recnb.arms import Arm, Experiment
    from recnb.clicks import simulate_log
    from recnb.data import SearchData
    from recnb.encoder import Encoder
    from recnb.evaluate import evaluate_search, model_rankers
    from recnb.logged import judgements_from_log, with_feedback
    from recnb.model import fit
    from recnb.params import load_params
    from recnb.scorer import ItemIndex
    from recnb.synthetic import synthetic
    params = load_params(Path(__file__).resolve().parent.parent / "params" / "default.yaml")
    shop = synthetic(params.data.n_items, params.data.n_queries, 0, seed=params.seed).search
    drifted = drifted_queries(shop, set(args.families.split(",")))
    ids = sorted(drifted)
    asked, held_out = set(ids[::2]), set(ids[1::2])
    keep = ~shop.queries["query_id"].isin(drifted)
    before = SearchData(shop.name, shop.catalog, shop.queries[keep].reset_index(drop=True),
                        shop.judgements[shop.judgements["query_id"].isin(shop.queries[keep]["query_id"])].reset_index(drop=True), shop.source)
    scored = shop.queries.assign(split=shop.queries["query_id"].map(lambda q: "valid" if q in held_out else "train" if q in asked else "test"))
    truth = SearchData(shop.name, shop.catalog, scored, shop.judgements)   # valid: held-out drifted, train: asked drifted
    folder = Path(tempfile.mkdtemp())
    def trained(data, name):
        started = time.perf_counter()
        result = fit(data, folder / name, params.train, seed=params.seed, tracker="disabled")
        encoder = Encoder(str(result.model_dir))
        ranker = model_rankers("search", encoder, ItemIndex.build(encoder, data.catalog), data.catalog, fuse_with_bm25=True)["fine-tuned+bm25"]
        return ranker, time.perf_counter() - started
    champion, champion_s = trained(before, "champion")
    texts = dict(zip(shop.queries["query_id"], shop.queries["query"]))
    qrels = {texts[q]: j for q, j in shop.qrels().items() if q in asked}
    answers = dict(zip(qrels, champion.rank(list(qrels), k=10).ids))
    answers = {q: list(r) for q, r in answers.items()}
    experiment = Experiment(name="drift", salt="drift-scenario", keep_queries=True,
                            arms=[Arm(name="champion", model="champion", share=0.5), Arm(name="challenger", model="champion", share=0.5)])
    requests, events = simulate_log(experiment, {"champion": answers, "challenger": answers}, qrels, units=args.units, seed=7)
    judged = judgements_from_log(requests, events)
    with_clicks, with_s = trained(with_feedback(before, judged, 0.3, "simulated clicks"), "with-clicks")
    without_clicks, without_s = trained(before, "without-clicks")
    rows = {}
    for name, ranker in (("champion", champion), ("retrained with clicks", with_clicks), ("retrained without clicks", without_clicks)):
        rows[name] = {label: evaluate_search(bundle, {name: ranker}, split, ["ndcg@10"])[name]["ndcg@10"]
                      for label, bundle, split in (("drifted, held out", truth, "valid"), ("drifted, asked", truth, "train"),
                                                   ("original test", before, "test"))}
    result = {"cpu": cpu_name(), "families": args.families, "drifted_queries": len(drifted), "asked": len(asked),
              "held_out": len(held_out), "answers": len(requests), "clicks": int((events["event"] == "click").sum()),
              "judgements": len(judged), "wanted": int((judged["gain"] >= 2).sum()), "ndcg@10": rows,
              "train_seconds": {"champion": round(champion_s, 1), "with clicks": round(with_s, 1), "without clicks": round(without_s, 1)}}
    print(json.dumps(result, indent=2))
    print(pd.DataFrame(rows).T.round(4).to_string())
    if args.json: args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
