"What the `recnb` commands share: failing with a message, running a sweep and reporting its winner and gate (hand-written)."
from __future__ import annotations
from pathlib import Path
from typing import Optional
import typer


def fail(message: str, code: int = 2):
    "Print `message` in red on stderr and exit with `code`."
    typer.secho(message, fg="red", err=True)
    raise typer.Exit(code)


def sweep_and_gate(sweep_file: Path, jobs: int = 1, resume: bool = False, out: Optional[Path] = None, kernel: Optional[str] = None,
                   backend: str = "local", address: Optional[str] = None, exit_on_fail: bool = True,
                   index: Optional[int] = None) -> Path:
    "Run every parameter set of a sweep (progress printed), print the leaderboard, the winner and the gate; the sweep folder."
    import time
    from recnb.params import ParamsError
    from recnb.run.sweep import pick_winner, run_sweep, sweep_dir, expand
    try: spec, _ = expand(sweep_file)
    except ParamsError as e: fail(f"error: {e}")
    out = out or sweep_dir(sweep_file, spec)
    start = time.time()
    try: board = run_sweep(sweep_file, out, jobs=jobs, resume=resume, kernel=kernel, echo=typer.echo, backend=backend, address=address, index=index)
    except (ValueError, ConnectionError) as e: fail(f"error: {e}")
    typer.echo(board.to_string())
    typer.echo(f"sweep took {time.time() - start:.0f} s")
    report_winner(pick_winner(out), exit_on_fail)
    return out


def report_winner(verdict: dict, exit_on_fail: bool = True):
    "Print a sweep's winner and each gate check; exit 1 when there is no winner or it fails the gate (unless told not to)."
    if verdict["winner"] is None:
        if exit_on_fail: fail(f"no winner: {verdict.get('reason')}", 1)
        return typer.secho(f"no winner: {verdict.get('reason')}", fg="red", err=True)
    typer.echo(f"winner: {verdict['winner']} ({verdict['model']}), valid {verdict['metric']} {verdict['valid']:.4f}, test {verdict['test']:.4f}")
    for check in verdict["gate"]:
        if "baseline_valid" in check:
            typer.echo(f"  gate vs {check['baseline']}: {check['model_valid']:.4f} ≥ {check['baseline_valid']:.4f} + {check['margin']} → {'pass' if check['passed'] else 'FAIL'}")
        else: typer.echo(f"  gate vs {check['baseline']}: FAIL ({check['reason']})")
    if not verdict["passed"]:
        if exit_on_fail: fail("the winner does not pass the gate: refused", 1)
        return typer.secho("the winner does not pass the gate: refused", fg="red", err=True)
    typer.echo("gate: passed")
