"""The closed loop on the synthetic shop's drift scenario (recnb.loop.scenario): what a retrain on the shop's clicks adds.

python bench/bench_loop.py [--units 400] [--json out.json]
The champion is fine-tuned (params/default.yaml's recipe) on the synthetic shop without the queries whose wanted items
lie in the drifted departments. Shoppers ask half of those queries and click on the champion's top 10 through the
position-biased click model; the log becomes judgements (recnb.data.logged, cascade reading). The same recipe is
retrained with and without those clicks. All three are scored by NDCG@10 with the true judgements on the drifted
queries never asked (held out), on the asked ones, and on the original test queries; the run is repeated per seed
of the simulated shoppers.
"""
from __future__ import annotations
import argparse, json, tempfile, time
from pathlib import Path


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--units", type=int, default=400, help="simulated shoppers, 3 queries each")
    p.add_argument("--seeds", default="7", help="comma-separated seeds of the simulated shoppers")
    p.add_argument("--retrain-negatives", default=None, help="the retrains' train.negatives (e.g. judged: skips above a click); the recipe's when omitted")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    from machine import cpu_name
    from recnb.ab.arms import Arm, Experiment
    from recnb.ab.clicks import simulate_log
    from recnb.data.logged import judgements_from_log, with_feedback
    from recnb.params import load_params
    from recnb.loop.scenario import drift_scenario, fit_rankers, ndcg_by_group, rankings
    from recnb.data.synthetic import synthetic
    params = load_params(Path(__file__).resolve().parent.parent / "params" / "default.yaml")
    shop = synthetic(params.data.n_items, params.data.n_queries, params.data.n_users, seed=params.seed).search
    scenario = drift_scenario(shop)
    folder = Path(tempfile.mkdtemp())
    def timed(data, name, **overrides):
        started = time.perf_counter()
        return fit_rankers(data, folder / name, params, **overrides)[0], round(time.perf_counter() - started, 1)
    retrain = {"negatives": args.retrain_negatives} if args.retrain_negatives else {}
    champion, champion_s = timed(scenario.before, "champion")
    without, without_s = timed(scenario.before, "without-clicks", **retrain)
    texts = dict(zip(scenario.drifted.queries["query_id"], scenario.drifted.queries["query"]))
    truth = {texts[q]: j for q, j in scenario.drifted.qrels("train").items()}
    shown = rankings(champion, list(truth))
    one_model = Experiment(name="drift", salt="drift-scenario", keep_queries=True,
                           arms=[Arm(name="champion", model="champion", share=0.5), Arm(name="challenger", model="champion", share=0.5)])
    result = {"cpu": cpu_name(), "retrain": retrain or "the recipe's", "drifted_queries": {"asked": len(scenario.drifted.queries_in("train")),
                                                      "held_out": len(scenario.drifted.queries_in("valid"))},
              "train_seconds": {"champion": champion_s, "without clicks": without_s}, "runs": []}
    for seed in map(int, args.seeds.split(",")):
        requests, events = simulate_log(one_model, {"champion": shown, "challenger": shown}, truth, units=args.units, seed=seed)
        judged = judgements_from_log(requests, events)
        challenger, with_s = timed(with_feedback(scenario.before, judged, 0.3, "simulated clicks"), f"with-clicks-{seed}", **retrain)
        table = ndcg_by_group(scenario, {"champion": champion, "retrained with clicks": challenger, "retrained without clicks": without})
        result["runs"].append({"seed": seed, "answers": len(requests), "clicks": int((events["event"] == "click").sum()),
                               "judgements": len(judged), "wanted": int((judged["gain"] >= 2).sum()), "train_seconds": with_s,
                               "ndcg@10": table.round(4).to_dict(orient="index")})
        print(f"seed {seed}: {len(requests)} answers, {len(judged)} judgements from clicks\n{table.round(4).to_string()}", flush=True)
    print(json.dumps(result, indent=2))
    if args.json: args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
