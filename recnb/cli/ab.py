"`recnb ab`: the champion/challenger report and the feedback log's retention (hand-written)."
from __future__ import annotations
from pathlib import Path
from typing import Optional
import typer
from recnb.cli.common import fail

ab = typer.Typer(no_args_is_help=True, help="champion and challenger: the A/B report and the log's retention")


def _experiment_and_log(experiment: Path, log: Path):
    from recnb.ab.arms import load_experiment
    from recnb.serve.feedback import FeedbackLog, secret_from_env
    from recnb.params import ParamsError
    try: spec = load_experiment(experiment)
    except ParamsError as e: fail(str(e))
    if not log.is_file(): fail(f"error: {log}: no such feedback log")
    try: secret = secret_from_env()
    except ValueError as e: fail(f"error: {e}")
    return spec, FeedbackLog(log, secret, keep_queries=spec.keep_queries)


@ab.command("report")
def ab_report(
    log: Path = typer.Argument(..., help="the experiment's feedback log (SQLite, written by the service)"),
    experiment: Path = typer.Option(..., help="the experiment file (YAML) the service ran"),
    out: Optional[Path] = typer.Option(None, help="folder for report.json, report.md and effect.png; beside the log when omitted"),
):
    "Per arm requests, shoppers, click-through, conversion and MRR; the difference over shoppers, the always-valid test, sample ratio and size."
    from recnb.ab.ab_report import report, write_report
    spec, feedback_log = _experiment_and_log(experiment, log)
    requests, feedback = feedback_log.requests(), feedback_log.feedback()
    if requests.empty: fail(f"error: {log}: no requests logged yet")
    typer.echo(write_report(report(requests, feedback, spec), out or log.parent / f"{log.stem}-report").read_text())


@ab.command("prune")
def ab_prune(
    log: Path = typer.Argument(..., help="the experiment's feedback log"),
    experiment: Path = typer.Option(..., help="the experiment file: its retention_days"),
):
    "Delete requests older than the experiment's retention_days, with their feedback."
    spec, feedback_log = _experiment_and_log(experiment, log)
    requests, events = feedback_log.prune(spec.retention_days)
    typer.echo(f"pruned {requests:,} requests and {events:,} feedback events older than {spec.retention_days} days from {log}")


@ab.command("promote")
def ab_promote(
    log: Path = typer.Argument(..., help="the experiment's feedback log"),
    experiment: Path = typer.Option(..., help="the experiment file (YAML) the service ran"),
    force: bool = typer.Option(False, help="promote although the report does not say the challenger wins (recorded)"),
):
    "Make the challenger the champion when the report says it wins: the decision and the report are written beside the log."
    from recnb.ab.ab_report import report, write_report
    from recnb.ab.ab_serving import promote, promotion_path
    spec, feedback_log = _experiment_and_log(experiment, log)
    requests = feedback_log.requests()
    if requests.empty: fail(f"error: {log}: no requests logged yet")
    result = report(requests, feedback_log.feedback(), spec)
    write_report(result, log.parent / f"{log.stem}-report")
    try: decision = promote(log, spec, result, force=force)
    except ValueError as e: fail(f"refused: {e}", 1)   # like a failed gate
    forced = " (forced past the report's verdict: recorded)" if decision["forced"] else ""
    typer.echo(f"promoted {decision['promoted']} ({decision['model']}) over {decision['previous_champion']} "
               f"({decision['previous_model']}){forced}\n  decision: {promotion_path(log)}\n"
               f"  /info shows it now; the service answers everyone with {decision['model']} from its next start")


@ab.command("simulate")
def ab_simulate(
    url: str = typer.Argument(..., help="the running service, e.g. http://127.0.0.1:3000"),
    run: Path = typer.Option(..., help="a run directory: its test queries and judgements are what shoppers ask and want"),
    shoppers: int = typer.Option(200, min=1, help="simulated shoppers"),
    queries_per_shopper: int = typer.Option(3, min=1),
    seed: int = typer.Option(0, help="the shoppers' and their clicks' seed"),
):
    "Simulated shoppers search the live service and send their clicks and purchases to POST /feedback (RECNB_API_KEY if set)."
    import os
    import httpx
    from recnb.ab.clicks import simulate_shoppers
    from recnb.run.experiment import load_run_data
    from recnb.params import ParamsError, load_params
    try: params = load_params(run / "params.yaml")
    except ParamsError as e: fail(str(e))
    data = load_run_data(params)
    if not hasattr(data, "qrels"): fail(f"error: {run} is a {params.data.name} run: shoppers need a search dataset's judged queries")
    queries = dict(zip(data.queries_in("test")["query_id"], data.queries_in("test")["query"]))
    key = os.environ.get("RECNB_API_KEY")
    with httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {key}"} if key else {}) as client:
        try: seen = simulate_shoppers(client, queries, data.qrels("test"), shoppers, queries_per_shopper, seed=seed)
        except (RuntimeError, httpx.HTTPError) as e: fail(f"error: {e}")
    typer.echo(f"{seen['shoppers']:,} simulated shoppers: answers {seen['answers']}, events {seen['events']}")
