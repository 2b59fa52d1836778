"`recnb ab`: the champion/challenger report and the feedback log's retention (hand-written)."
from __future__ import annotations
from pathlib import Path
from typing import Optional
import typer
from recnb.cli_common import fail

ab = typer.Typer(no_args_is_help=True, help="champion and challenger: the A/B report and the log's retention")


def _experiment_and_log(experiment: Path, log: Path):
    from recnb.arms import load_experiment
    from recnb.feedback import FeedbackLog, secret_from_env
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
    from recnb.ab_report import report, write_report
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
