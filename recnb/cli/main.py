"The `recnb` command line (hand-written; everything it calls is generated from the notebooks)."
from __future__ import annotations
import json
from pathlib import Path
from typing import Optional
import typer
from recnb.cli.ab import ab
from recnb.cli.common import fail, report_winner, sweep_and_gate
from recnb.cli.demo import demo
from recnb.cli.loop import retrain, watch

DATASETS_HELP = ("dataset: synthetic, synthetic-rec, homedepot, wands, amazon-scientific, amazon-beauty, or table "
                 "(--path: a CSV/TSV/parquet file with one judged pair per row; columns named by --query-col, --item-id-col, "
                 "--text-cols, --grade-col, grades mapped by --gains or --gain-offset)")

TABLE_OPTIONS = "table only (your own judged file): "
QUERY_COL = typer.Option("query", help=TABLE_OPTIONS + "the query column")
ITEM_ID_COL = typer.Option("item_id", help=TABLE_OPTIONS + "the item id column; '' (or a text column): ids derived from the item text")
TEXT_COLS = typer.Option("title", help=TABLE_OPTIONS + "item text column(s), comma-separated, the title first")
GRADE_COL = typer.Option("gain", help=TABLE_OPTIONS + "the judgement column")
GAINS = typer.Option("", help=TABLE_OPTIONS + "label grades as label=gain pairs, e.g. Exact=2,Partial=1,Irrelevant=0")
GAIN_OFFSET = typer.Option(0.0, help=TABLE_OPTIONS + "added to numeric grades (e.g. -1 for a 1-3 scale)")
DUPLICATES = typer.Option("error", help=TABLE_OPTIONS + "a pair judged twice: error, max, mean or first")


def _table_kw(name, query_col, item_id_col, text_cols, grade_col, gains, gain_offset, duplicates) -> dict:
    "load_judged_table's column and gain mapping from the command line (dataset 'table' only)."
    if name != "table": return {}
    kw = {"query": query_col, "item_id": item_id_col or None, "text": text_cols.split(","), "grade": grade_col,
          "gain_offset": gain_offset, "duplicates": duplicates}
    if gains:
        try: kw["gains"] = {label: float(g) for label, g in (pair.split("=", 1) for pair in gains.split(","))}
        except ValueError: fail(f"error: --gains takes label=gain pairs separated by commas, e.g. Exact=2,Partial=1,Irrelevant=0; got {gains!r}")
    return kw


app = typer.Typer(add_completion=False, no_args_is_help=True, help="recnb: e-commerce search and recommendation, from notebook to service.")


@app.command()
def data(
    name: str = typer.Argument("synthetic", help=DATASETS_HELP),
    path: Optional[Path] = typer.Option(None, help="dataset file or folder; under the datasets_dir setting when omitted"),
    seed: int = typer.Option(0, help="split seed (and generator seed for synthetic)"),
    query_col: str = QUERY_COL, item_id_col: str = ITEM_ID_COL, text_cols: str = TEXT_COLS, grade_col: str = GRADE_COL,
    gains: str = GAINS, gain_offset: float = GAIN_OFFSET, duplicates: str = DUPLICATES,
):
    "Load a dataset, validate it and print its summary."
    from recnb.data.bundles import summarize
    from recnb.data.datasets import load_dataset
    from recnb.data.tables import DataError
    kw = _table_kw(name, query_col, item_id_col, text_cols, grade_col, gains, gain_offset, duplicates)
    try: bundle = load_dataset(name, path, seed=seed, **kw)
    except (DataError, ValueError) as e: fail(f"error: {e}")
    typer.echo(json.dumps(summarize(bundle), indent=2))


@app.command()
def fetch(
    name: str = typer.Argument(..., help="a public dataset: amazon-beauty, amazon-scientific, homedepot (checked; Kaggle login), wands"),
    to: Optional[Path] = typer.Option(None, help="the dataset's folder; its folder under the datasets_dir setting when omitted"),
    mirror: Optional[str] = typer.Option(None, help="http(s):// or file:// base holding <folder>/<file> copies "
                                                    "($RECNB_DATA_MIRROR when omitted); the upstream addresses otherwise"),
):
    "Download a public dataset into its folder, every file checked against its pinned sha256."
    from recnb.data.fetch import FetchError, fetch as fetch_dataset
    try: folder = fetch_dataset(name, to, mirror, progress=True)
    except FetchError as e: fail(f"error: {e}")
    typer.echo(f"{name}: every file in {folder} matches its pinned sha256; `recnb data {name}` summarises it")


@app.command()
def evaluate(
    name: str = typer.Argument("synthetic", help=DATASETS_HELP),
    path: Optional[Path] = typer.Option(None, help="dataset file or folder; under the datasets_dir setting when omitted"),
    split: str = typer.Option("test", help="queries (or leave-last-out targets) to score: valid or test"),
    rankers: str = typer.Option("", help="comma-separated; search: bm25,zero-shot,hybrid-rrf,hybrid-blend; recommendation: popularity,co-occurrence,ease,zero-shot; all of the task's when omitted"),
    model: Optional[str] = typer.Option(None, help="encoder: Hugging Face id or local directory; the default_model setting when omitted"),
    max_items: int = typer.Option(0, help="evaluate on a seeded slice of this many items (whole queries kept); 0 = full catalog"),
    seed: int = typer.Option(0, help="split seed (and slice seed)"),
    gain: str = typer.Option("linear", help="NDCG gain: linear or exponential"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the results as JSON here"),
    query_col: str = QUERY_COL, item_id_col: str = ITEM_ID_COL, text_cols: str = TEXT_COLS, grade_col: str = GRADE_COL,
    gains: str = GAINS, gain_offset: float = GAIN_OFFSET, duplicates: str = DUPLICATES,
):
    "Score the baselines (search: BM25, the zero-shot encoder, hybrids; recommendation: popularity, co-occurrence, EASE, zero-shot) on a dataset split."
    from recnb.data.bundles import RecData, sample_search_data, summarize
    from recnb.data.datasets import load_dataset
    from recnb.data.tables import DataError
    from recnb.rank.evaluate import evaluate_recommendation, evaluate_search, rec_rankers, search_rankers
    from recnb.names import REC_RANKERS, SEARCH_RANKERS
    from recnb.rank.metrics import metric_table
    try:
        kw = _table_kw(name, query_col, item_id_col, text_cols, grade_col, gains, gain_offset, duplicates)
        data = load_dataset(name, path, seed=seed, **kw)
    except (DataError, ValueError) as e: fail(f"error: {e}")
    rec = isinstance(data, RecData)
    chosen = [r for r in rankers.split(",") if r] or (REC_RANKERS if rec else SEARCH_RANKERS)
    if rec and max_items: fail("error: --max-items slices search catalogs only")
    if not rec and max_items: data = sample_search_data(data, max_items, seed)
    try:
        encoder = None
        if set(chosen) & {"zero-shot", "hybrid-rrf", "hybrid-blend"}:
            from recnb.index.encoder import Encoder
            encoder = Encoder(model)
        built = (rec_rankers if rec else search_rankers)(data, chosen, encoder)  # each refuses the other task's names
    except ValueError as e: fail(f"error: {e}")
    results = evaluate_recommendation(data, built, split) if rec else evaluate_search(data, built, split, gain=gain)
    summary = summarize(data)
    typer.echo(f"{name}: {summary['items']:,} items, split '{split}'" + (f", {len(data.queries_in(split)):,} queries" if not isinstance(data, RecData) else f", {summary['users']:,} shoppers"))
    typer.echo(metric_table(results).to_string())
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps({"dataset": name, "split": split, "items": summary["items"], "results": results}, indent=2))


def _parse_sets(sets: list[str]) -> dict:
    import yaml
    from recnb.params import ParamsLoader
    out = {}
    for item in sets:
        if "=" not in item: fail(f"error: --set takes key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.load(value, Loader=ParamsLoader)
    return out


@app.command("run")
def run_command(
    params_file: Path = typer.Argument(..., help="a parameter file, e.g. params/default.yaml"),
    run_dir: Optional[Path] = typer.Option(None, help="where the run goes; runs_dir/<name> when omitted"),
    set_: list[str] = typer.Option([], "--set", help="override a parameter: --set train.lr=3e-5 (repeatable)"),
    kernel: Optional[str] = typer.Option(None, help="Jupyter kernel; the kernel_name setting when omitted"),
):
    "Run the experiment notebook for one parameter file with papermill (live output); writes the run directory."
    from recnb.config import load_settings
    from recnb.params import ParamsError, load_params
    from recnb.run.sweep import run_with_papermill
    overrides = _parse_sets(set_)
    try: params = load_params(params_file, overrides)
    except ParamsError as e: fail(f"error: {e}")
    run_dir = run_dir or Path(load_settings().runs_dir) / params.name
    typer.echo(f"recnb run {params.name!r} → {run_dir}")
    code = run_with_papermill(params_file, run_dir, kernel, overrides=overrides)
    if code: fail(f"run failed (papermill exit code {code}); the executed notebook is {run_dir / 'executed.ipynb'}", code)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    from recnb.rank.metrics import metric_table
    typer.echo(f"model: {metrics['model']}\n" + metric_table(metrics["valid"]).to_string())


@app.command()
def sweep(
    sweep_file: Path = typer.Argument(..., help="a sweep file, e.g. params/sweep-default.yaml"),
    jobs: int = typer.Option(1, help="parameter sets run at once, each its own papermill process"),
    resume: bool = typer.Option(False, help="skip runs that already finished"),
    out: Optional[Path] = typer.Option(None, help="sweep folder; runs_dir/<sweep name> when omitted"),
    kernel: Optional[str] = typer.Option(None, help="Jupyter kernel; the kernel_name setting when omitted"),
    backend: str = typer.Option("local", help="local (--jobs at once), or ray: each set a Ray task asking for its resources.cpus/gpus"),
    address: Optional[str] = typer.Option(None, help="ray: the cluster's address (ray.init); a local Ray when omitted. Run folders must be on a shared disk"),
    index: Optional[int] = typer.Option(None, help="run only the set at this position (0 = the first; a Kubernetes Indexed Job's JOB_COMPLETION_INDEX)"),
):
    "Run every parameter set of a sweep, rank them on validation, pick the winner and apply the gate."
    sweep_and_gate(sweep_file, jobs=jobs, resume=resume, out=out, kernel=kernel, backend=backend, address=address, index=index)




@app.command()
def leaderboard(out: Path = typer.Argument(..., help="a sweep folder")):
    "Print (and rewrite) a sweep's leaderboard, sorted by the validation metric."
    from recnb.run.sweep import leaderboard as board
    if not out.is_dir(): fail(f"error: {out} is not a sweep folder")
    typer.echo(board(out).to_string())
    typer.echo(f"written: {out / 'leaderboard.csv'}, {out / 'leaderboard.png'}")


@app.command()
def winner(out: Path = typer.Argument(..., help="a sweep folder")):
    "Name the sweep's winner (chosen on validation) and apply the gate; exit 1 if it fails."
    from recnb.run.sweep import pick_winner
    if not out.is_dir(): fail(f"error: {out} is not a sweep folder")
    report_winner(pick_winner(out))


@app.command()
def package(
    path: Path = typer.Argument(..., help="a run directory, or a sweep folder (its winner is packaged)"),
    force: bool = typer.Option(False, help="package a sweep winner that failed the gate (recorded in the model card)"),
    name: str = typer.Option("recnb", help="BentoML model name (the service loads RECNB_MODEL, recnb:latest by default)"),
    encoder: str = typer.Option("auto", help="how the package holds its encoder: torch, onnx, onnx-int8, student-int8 (a student "
                                "with half the layers distilled from the run's encoder, int8; trains for minutes on a CPU), or auto "
                                "(the fastest of onnx-int8, onnx and torch that keeps validation NDCG@10 within --max-ndcg-loss of torch)"),
    max_ndcg_loss: Optional[float] = typer.Option(None, help="validation NDCG@10 a compressed encoder may lose against the torch "
                                                  "encoder; recnb.serve.compress.MAX_NDCG_LOSS when omitted"),
):
    "Store a finished run in BentoML's model store (BENTOML_HOME) with its index, catalog, monitoring reference and model card."
    from recnb.serve.deploy import PackageError, package as package_run
    margin = {} if max_ndcg_loss is None else {"max_ndcg_loss": max_ndcg_loss}
    try: tag = package_run(path, force=force, name=name, encoder=encoder, **margin)
    except PackageError as e: fail(f"error: {e}")
    import bentoml
    typer.echo(f"packaged {tag}\n  model card: {Path(bentoml.models.get(tag).path) / 'README.md'}\n"
               f"  serve it:   recnb serve {tag}   (or: cd bentos && RECNB_MODEL={tag} bentoml serve service:RecnbService)")
    typer.echo(tag)


@app.command()
def verify(tag: str = typer.Argument("recnb:latest", help="a BentoML model tag written by `recnb package`")):
    "Check a stored package offline as the service does at load: every file's sha256 and unit-length item vectors."
    import bentoml
    from recnb.run.verify import PackageRefused, verify_package
    try: path = bentoml.models.get(tag).path
    except bentoml.exceptions.NotFound: fail(f"error: no model {tag!r} in the BentoML store (BENTOML_HOME); `bentoml models list` shows them")
    try: info = verify_package(path)
    except PackageRefused as e: fail(f"refused: {e}")
    forced = " (packaged with --force past a failed gate)" if info.get("forced") else ""
    typer.echo(f"verified {tag}: {len(info['files'])} files match their sha256, {info['items']:,} unit-length item vectors{forced}")


@app.command()
def serve(
    tag: str = typer.Argument("recnb:latest", help="the packaged model (a BentoML tag written by `recnb package`)"),
    host: str = typer.Option("127.0.0.1", help="address to listen on (0.0.0.0: every interface)"),
    port: int = typer.Option(3000, help="port to listen on"),
    workers: Optional[int] = typer.Option(None, help="worker processes (RECNB_WORKERS; 1 when neither is set)"),
    worker_check_s: float = typer.Option(1.0, help="how often a dead worker is noticed and restarted (BentoML's own: every 10 s)"),
    experiment: Optional[Path] = typer.Option(None, help="an experiment file: serve its arms (TAG is ignored), log to RECNB_FEEDBACK_LOG"),
):
    "Serve a packaged model: `bentoml serve service:RecnbService` from the project's bentos/ folder, a dead worker restarted within a second."
    import os
    import bentoml
    from recnb.serve.bentoml_hooks import serve as serve_bentoml
    from recnb.config import project_root
    tags = [tag]
    if experiment is not None:
        from recnb.ab.arms import load_experiment
        from recnb.serve.feedback import secret_from_env
        from recnb.params import ParamsError
        try: tags = [a.model for a in load_experiment(experiment).arms]; secret_from_env()
        except (ParamsError, ValueError) as e: fail(f"error: {e}")
        os.environ["RECNB_EXPERIMENT"] = str(experiment.resolve())
    missing = []
    for name in dict.fromkeys(tags):
        try: bentoml.models.get(name)
        except bentoml.exceptions.NotFound: missing.append(name)
    if missing: fail(f"error: no model {', '.join(map(repr, missing))} in the BentoML store (BENTOML_HOME); `bentoml models list` shows them")
    bentos = project_root() / "bentos"
    if not (bentos / "service.py").is_file(): fail(f"error: no {bentos / 'service.py'}; run recnb serve inside a recnb project (`recnb new` makes one)")
    if worker_check_s <= 0: fail("error: --worker-check-s must be positive")
    os.environ["RECNB_MODEL"] = tag
    if workers is not None: os.environ["RECNB_WORKERS"] = str(workers)
    os.chdir(bentos)
    serve_bentoml(["service:RecnbService", "--host", host, "--port", str(port)], worker_check_s)


@app.command()
def build(
    image: str = typer.Option("cpu", help="cpu (torch from the PyTorch CPU index) or gpu (CUDA base image: bentos/bentofile.gpu.yaml)"),
):
    "Build the service's bento from this project (its bentos/ and the recnb in use); `bentoml containerize TAG` makes the image."
    from recnb.config import project_root
    from recnb.serve.build import BuildError, build_bento
    try: tag = build_bento(project_root(), image)
    except BuildError as e: fail(f"error: {e}")
    typer.echo(f"built {tag}\n  image: bentoml containerize {tag}   (needs a Docker engine)")
    typer.echo(tag)


@app.command()
def new(
    directory: Path = typer.Argument(..., help="the new project's folder (created; must not exist or be empty)"),
):
    "Start a project outside recnb's checkout: experiment notebook, parameter sets, settings, service, monitoring, Kubernetes, README."
    import shutil
    from dataclasses import fields
    from recnb.config import SECTION, SETTINGS_FILE, Settings
    from recnb.run.sweep import PROJECT_TEMPLATE
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        fail(f"error: {directory} exists and is {'not empty' if directory.is_dir() else 'a file'}; choose a new folder")
    shutil.copytree(PROJECT_TEMPLATE, directory, dirs_exist_ok=True,  # links in a checkout, files in a wheel: copied as files
                    ignore=shutil.ignore_patterns("__init__.py", "__pycache__"))
    for template in directory.rglob("*.tmpl"): template.rename(template.with_suffix(""))  # kept out of the package's modules
    for hidden in directory.rglob("dot-*"): hidden.rename(hidden.with_name("." + hidden.name.removeprefix("dot-")))  # .gitignore
    inside = {"datasets_dir": "datasets"}   # the project's own folder, where `recnb fetch NAME` puts public datasets
    defaults = "\n".join(f"{f.name} = {inside.get(f.name, f.default)}" for f in fields(Settings))
    (directory / SETTINGS_FILE).write_text(f"# recnb's project-wide defaults; each can be overridden by RECNB_<KEY>.\n"
                                           f"# datasets_dir: where real datasets are looked up by name (`recnb fetch NAME` fills it).\n"
                                           f"[{SECTION}]\n{defaults}\n")
    typer.echo(f"new recnb project in {directory}:")
    for path in sorted(p for p in directory.rglob("*") if p.is_file()): typer.echo(f"  {path.relative_to(directory)}")
    typer.echo(f"next: cd {directory} && recnb run params/default.yaml   (the whole way, from sweep to Kubernetes: README.md)")


app.command()(demo)
app.command()(watch)
app.command()(retrain)
app.add_typer(ab, name="ab")
