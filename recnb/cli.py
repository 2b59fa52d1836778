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
def evaluate(
    name: str = typer.Argument("synthetic", help="dataset: synthetic, synthetic-rec, homedepot, amazon-scientific, amazon-beauty, ..."),
    path: Optional[Path] = typer.Option(None, help="dataset file or folder; under the datasets_dir setting when omitted"),
    split: str = typer.Option("test", help="queries (or leave-last-out targets) to score: valid or test"),
    rankers: str = typer.Option("", help="comma-separated; search: bm25,zero-shot,hybrid-rrf,hybrid-blend; recommendation: popularity,zero-shot"),
    model: Optional[str] = typer.Option(None, help="encoder: Hugging Face id or local directory; the default_model setting when omitted"),
    max_items: int = typer.Option(0, help="evaluate on a seeded slice of this many items (whole queries kept); 0 = full catalog"),
    seed: int = typer.Option(0, help="split seed (and slice seed)"),
    gain: str = typer.Option("linear", help="NDCG gain: linear or exponential"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the results as JSON here"),
):
    "Score BM25, the zero-shot encoder and hybrids (or popularity for recommendation) on a dataset split and print the table."
    from recnb.data import DataError, RecData, load_dataset, sample_search_data, summarize
    from recnb.evaluate import evaluate_recommendation, evaluate_search, search_rankers
    from recnb.metrics import metric_table
    try:
        kw = {"seed": seed} if name in ("synthetic", "synthetic-rec", "homedepot", "wands") else {}
        data = load_dataset(name, path, **kw)
    except (DataError, ValueError) as e:
        typer.secho(f"error: {e}", fg="red", err=True); raise typer.Exit(2)
    chosen = [r for r in rankers.split(",") if r]
    encoder = None
    def get_encoder():
        from recnb.encoder import Encoder
        return Encoder(model)
    if isinstance(data, RecData):
        from recnb.baselines import DenseRanker, PopularityRanker
        chosen = chosen or (["popularity", "zero-shot"] if data.catalog.has_text else ["popularity"])
        built = {}
        for r in chosen:
            if r == "popularity": built[r] = PopularityRanker(data.split().train)
            elif r == "zero-shot": built[r] = DenseRanker(get_encoder(), data.catalog)
            else: typer.secho(f"error: unknown recommendation ranker {r!r}", fg="red", err=True); raise typer.Exit(2)
        results = evaluate_recommendation(data, built, split)
    else:
        if max_items: data = sample_search_data(data, max_items, seed)
        chosen = chosen or ["bm25", "zero-shot", "hybrid-rrf", "hybrid-blend"]
        try:
            if set(chosen) - {"bm25"}: encoder = get_encoder()
            built = search_rankers(data, chosen, encoder)
        except ValueError as e:
            typer.secho(f"error: {e}", fg="red", err=True); raise typer.Exit(2)
        results = evaluate_search(data, built, split, gain=gain)
    summary = summarize(data)
    typer.echo(f"{name}: {summary['items']:,} items, split '{split}'" + (f", {len(data.queries_in(split)):,} queries" if not isinstance(data, RecData) else f", {summary['users']:,} shoppers"))
    typer.echo(metric_table(results).to_string())
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps({"dataset": name, "split": split, "items": summary["items"], "results": results}, indent=2))


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
