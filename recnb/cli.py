"The `recnb` command line (hand-written; everything it calls is generated from the notebooks)."
from __future__ import annotations
import json
from pathlib import Path
from typing import Optional
import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="recnb: e-commerce search and recommendation, from notebook to service.")


@app.command()
def data(
    name: str = typer.Argument("synthetic", help="dataset name: synthetic, synthetic-rec, homedepot, wands, amazon-scientific, amazon-beauty"),
    path: Optional[Path] = typer.Option(None, help="dataset file or folder; under the datasets_dir setting when omitted"),
    seed: int = typer.Option(0, help="split seed (and generator seed for synthetic)"),
):
    "Load a dataset, validate it and print its summary."
    from recnb.data import DataError, load_dataset, summarize
    kw = {"seed": seed} if name in ("synthetic", "synthetic-rec", "homedepot", "wands") else {}
    try: bundle = load_dataset(name, path, **kw)
    except (DataError, ValueError) as e:
        typer.secho(f"error: {e}", fg="red", err=True); raise typer.Exit(2)
    typer.echo(json.dumps(summarize(bundle), indent=2))


@app.command()
def demo(seed: int = typer.Option(0, help="seed of the synthetic shop")):
    "The main job on the embedded default: build the synthetic shop and summarize it."
    import time
    from recnb.data import summarize, synthetic
    start = time.perf_counter()
    shop = synthetic(seed=seed)
    typer.echo(f"built the synthetic shop (seed {seed}) in {time.perf_counter() - start:.2f} s")
    typer.echo(json.dumps({"search": summarize(shop.search), "recommendation": summarize(shop.rec)}, indent=2))


if __name__ == "__main__":
    app()
