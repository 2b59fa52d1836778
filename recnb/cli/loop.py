"`recnb watch` and `recnb retrain`: the loop from an alert to the next challenger (hand-written)."
from __future__ import annotations
from pathlib import Path
from typing import Optional
import typer
from recnb.cli.common import fail, sweep_and_gate


def watch(
    experiment: Optional[Path] = typer.Option(None, help="the experiment file the service runs: the retrain's champion and where it registers the challenger"),
    log: Optional[Path] = typer.Option(None, help="the experiment's feedback log (RECNB_FEEDBACK_LOG): the clicks the retrain learns from"),
    sweep: Path = typer.Option(Path("params/sweep-default.yaml"), help="the sweep the retrain runs"),
    backend: str = typer.Option("local", help="the retrain's sweep backend: local or ray (then --address, if any, from RAY_ADDRESS)"),
    command: Optional[str] = typer.Option(None, help="the retrain, shell words run in this folder (default: recnb retrain SWEEP --experiment --log --audit, or recnb sweep SWEEP without an experiment)"),
    audit: Optional[Path] = typer.Option(None, help="the audit log, appended (default: <runs_dir>/watch/audit.jsonl); it keeps the cooldown across restarts"),
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    port: int = typer.Option(3100, help="port to listen on (alertmanager.yml's webhook)"),
    retrain_on: str = typer.Option("QueryDrift", help="comma-separated alert names that start a retrain; the rest are only audited"),
    cooldown_s: float = typer.Option(3600.0, help="no retrain within this many seconds of the last start"),
    max_per_day: int = typer.Option(3, help="most retrains started in any 24 hours"),
    dry_run: bool = typer.Option(False, help="decide and audit, start nothing"),
    promote_every_s: float = typer.Option(60.0, help="with an experiment that says auto_promote: true, read its report this often and promote a winning challenger"),
):
    "Receive Alertmanager's notifications (bearer RECNB_WATCH_TOKEN): audit every alert, retrain on drift, one at a time, with a cooldown and a daily maximum."
    import os, shlex, sys
    import uvicorn
    from recnb.config import load_settings
    from recnb.loop.watch import TOKEN_ENV, AuditLog, Watcher, watch_app, watch_counter
    token = os.environ.get(TOKEN_ENV, "")
    if len(token) < 16: fail(f"error: set {TOKEN_ENV} to a token of at least 16 characters (Alertmanager presents it as its bearer token)")
    if cooldown_s < 0 or max_per_day < 1 or promote_every_s <= 0: fail("error: --cooldown-s must be at least 0, --max-per-day at least 1 and --promote-every-s positive")
    if (experiment is None) != (log is None): fail("error: give --experiment and --log together (the retrain needs both)")
    if backend not in ("local", "ray"): fail(f"error: --backend is local or ray, not {backend!r}")
    if experiment is not None:
        from recnb.ab.arms import load_experiment
        from recnb.params import ParamsError
        try: load_experiment(experiment)
        except ParamsError as e: fail(f"error: {e}")
    audit = audit or Path(load_settings().runs_dir) / "watch" / "audit.jsonl"
    python = [sys.executable, "-m", "recnb.cli"]
    words = (shlex.split(command) if command else
             [*python, "retrain", str(sweep), "--experiment", str(experiment), "--log", str(log), "--audit", str(audit),
              "--backend", backend] if experiment else
             [*python, "sweep", str(sweep), "--backend", backend])
    watcher = Watcher(AuditLog(audit), words, retrain_on=[a.strip() for a in retrain_on.split(",") if a.strip()],
                      cooldown_s=cooldown_s, max_per_day=max_per_day, dry_run=dry_run, counter=watch_counter())
    if experiment is not None:
        from recnb.loop.retrain import auto_promote
        watcher.promote_every(promote_every_s, lambda: auto_promote(experiment, log))
    typer.echo(f"recnb watch on http://{host}:{port}/alerts: retrain on {retrain_on} with `{shlex.join(words)}`"
               f"{' (dry run)' if dry_run else ''}; audit {audit}")
    try: uvicorn.run(watch_app(watcher, token), host=host, port=port, log_level="warning")
    finally: watcher.stop()


def retrain(
    sweep_file: Path = typer.Argument(..., help="the sweep to run on the judgements and the shop's clicks, e.g. params/sweep-default.yaml"),
    experiment: Path = typer.Option(..., help="the experiment file the service runs: its champion is the model to beat; rewritten for the next round when a challenger passes"),
    log: Path = typer.Option(..., help="the experiment's feedback log (RECNB_FEEDBACK_LOG); the experiment must keep queries"),
    out: Optional[Path] = typer.Option(None, help="the retrain's folder; <runs_dir>/retrain-<UTC time> when omitted"),
    margin: float = typer.Option(0.0, help="the challenger must beat the champion's validation metric, re-evaluated on the same split, by this much"),
    share: float = typer.Option(0.1, help="split: the challenger's share of shoppers in the next round"),
    mode: Optional[str] = typer.Option(None, help="the next round: split or interleave (the current round's when omitted)"),
    valid_share: float = typer.Option(0.3, help="the newest share of the logged queries that joins validation"),
    min_examined: int = typer.Option(2, help="examined showings before a never-clicked item counts as judged irrelevant"),
    backend: str = typer.Option("local", help="the sweep's backend: local or ray"),
    address: Optional[str] = typer.Option(None, help="ray: the cluster's address"),
    audit: Optional[Path] = typer.Option(None, help="also append each step to this audit log (recnb watch passes its own)"),
):
    "Retrain on the clicks the shop logged: sweep, gate against the champion re-evaluated on the same split, package and register a challenger that passes."
    import time
    import bentoml
    from recnb.ab.arms import load_experiment
    from recnb.config import load_settings, write_json
    from recnb.serve.feedback import FeedbackLog
    from recnb.data.logged import judgements_from_log
    from recnb.params import ParamsError
    from recnb.loop.retrain import champion_model, prepare_retrain, register_challenger
    from recnb.loop.watch import AuditLog
    steps = AuditLog(audit) if audit else None
    def step(event: str, **fields):
        if steps is not None: steps.write(event, **fields)
    if mode not in (None, "split", "interleave"): fail(f"error: --mode is split or interleave, not {mode!r}")
    try: current = load_experiment(experiment)
    except ParamsError as e: fail(f"error: {e}")
    if not log.is_file(): fail(f"error: {log}: no such feedback log")
    champion = champion_model(current, log)
    try: champion_dir = bentoml.models.get(champion).path
    except bentoml.exceptions.NotFound: fail(f"error: the champion {champion!r} is not in the BentoML store (BENTOML_HOME)")
    feedback_log = FeedbackLog(log, secret=b"")   # reading needs no secret: units are stored as their HMAC already
    try: judged = judgements_from_log(feedback_log.requests(), feedback_log.feedback(), min_examined=min_examined)
    except ValueError as e: fail(f"error: {log}: {e}")
    finally: feedback_log.close()
    out = out or Path(load_settings().runs_dir) / f"retrain-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
    earlier = (out / "feedback.csv").read_bytes() if (out / "feedback.csv").is_file() else None
    try: sweep = prepare_retrain(sweep_file, out, judged, champion_dir, margin, valid_share)
    except ParamsError as e: fail(f"error: {e}")
    step("retrain_data", sweep=str(out), queries=int(judged["query"].nunique()), judgements=len(judged),
         wanted=int((judged["gain"] > 1).sum()), champion=champion)
    typer.echo(f"retrain in {out}: {judged['query'].nunique():,} logged queries, {len(judged):,} judgements from clicks; "
               f"champion {champion} (margin {margin})")
    from recnb.run.sweep import pick_winner
    resume = earlier == (out / "feedback.csv").read_bytes()   # the same clicks again: finished runs are kept (an interrupted retrain resumes)
    sweep_and_gate(sweep, out=out, resume=resume, backend=backend, address=address, exit_on_fail=False)
    verdict = pick_winner(out, write=False)
    outcome = {"experiment": current.name, "champion": champion, "verdict": verdict, "registered": None}
    if not verdict["passed"]:
        step("gate_failed", sweep=str(out), gate=verdict.get("gate", []), winner=verdict.get("winner"), champion=champion)
        write_json(out / "retrain.json", outcome)
        fail("the challenger does not pass the gate: nothing registered", 1)
    step("gate_passed", sweep=str(out), gate=verdict["gate"], winner=verdict["winner"], champion=champion)
    from recnb.serve.deploy import PackageError, package
    try: tag = package(out, name="recnb-challenger")
    except PackageError as e: fail(f"error: {e}")
    following = register_challenger(experiment, current, champion, tag, share, mode)
    outcome["registered"] = {"model": tag, "experiment": following.name, "mode": following.mode}
    write_json(out / "retrain.json", outcome)
    step("challenger_registered", model=tag, experiment=following.name, mode=following.mode, file=str(experiment))
    typer.echo(f"challenger {tag} registered in {experiment} (experiment {following.name}, {following.mode}); "
               "restart the service (recnb serve --experiment) to start the round")
