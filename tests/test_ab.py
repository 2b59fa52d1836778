"""`recnb ab report` and `recnb ab prune` on a real feedback log (SQLite) filled with simulated shoppers of the synthetic shop."""
import os
from pathlib import Path
from conftest import recnb_cli as recnb

SECRET = "a secret of the test shop, 2026"


def _log_with_shoppers(tmp_path):
    from recnb.ab.arms import Arm, Experiment
    from recnb.rank.baselines import BM25Ranker
    from recnb.ab.clicks import simulate_log
    from recnb.serve.feedback import FeedbackLog
    from recnb.data.synthetic import synthetic
    shop = synthetic(n_items=300, n_queries=200, n_users=10, seed=5).search
    queries = shop.queries_in("test")
    good = dict(zip(queries["query_id"], BM25Ranker(shop.catalog).rank(queries["query"].tolist(), k=10).ids))
    upside_down = {q: ids[::-1] for q, ids in good.items()}
    experiment = Experiment(name="cli", salt="the-cli-test-salt", min_effect=0.05,
                            arms=[Arm(name="champion", model="recnb:a", share=0.5), Arm(name="challenger", model="recnb:b", share=0.5)])
    requests, feedback = simulate_log(experiment, {"champion": upside_down, "challenger": good}, shop.qrels("test"), units=200)
    log = FeedbackLog(tmp_path / "ab.sqlite", SECRET.encode())
    for r in requests.itertuples():
        log.record_request(r.request_id, r.experiment, r.route, r.arm, r.model, r.items, unit=r.unit, at=r.at)
    for f in feedback.itertuples(): log.record_feedback(f.request_id, f.item_id, f.event, at=f.at)
    (tmp_path / "ab.yaml").write_text(experiment.model_dump_json())   # JSON is YAML
    return tmp_path / "ab.sqlite", tmp_path / "ab.yaml", requests


def test_report_and_prune_from_a_real_log(tmp_path):
    log, experiment, requests = _log_with_shoppers(tmp_path)
    env = {**os.environ, "RECNB_AB_SECRET": SECRET}
    out = recnb("ab", "report", log, "--experiment", experiment, "--out", tmp_path / "report", env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("# cli: challenger") and "sample ratio" in out.stdout, out.stdout
    assert {p.name for p in (tmp_path / "report").iterdir()} == {"report.json", "report.md", "effect.png"}
    stored = b"".join(p.read_bytes() for p in (log, Path(f"{log}-wal")) if p.exists())
    assert len(stored) > 100_000 and b"shopper-0-1" not in stored and "shopper-0-1" in set(requests["unit"])  # units stored as HMACs only
    no_secret = recnb("ab", "report", log, "--experiment", experiment, env={k: v for k, v in env.items() if k != "RECNB_AB_SECRET"})
    assert no_secret.returncode == 2 and "RECNB_AB_SECRET" in no_secret.stderr and "Traceback" not in no_secret.stderr
    pruned = recnb("ab", "prune", log, "--experiment", experiment, env=env)   # simulated times are in 1970: all older than 30 days
    assert pruned.returncode == 0 and f"pruned {len(requests):,} requests" in pruned.stdout, pruned.stdout + pruned.stderr
    empty = recnb("ab", "report", log, "--experiment", experiment, env=env)
    assert empty.returncode == 2 and "no requests logged yet" in empty.stderr
