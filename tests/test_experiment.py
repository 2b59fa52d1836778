"The experiment notebook under papermill and nbval, parameter validation, run directories and reproducibility."
import json, os, subprocess, sys
from pathlib import Path
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["--set", "data.n_items=300", "--set", "data.n_queries=80", "--set", "data.n_users=10",
         "--set", "train.epochs=1", "--set", "train.max_steps=3", "--set", "train.batch_size=16"]


def recnb(*args, env=None, timeout=900):
    return subprocess.run([sys.executable, "-m", "recnb.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})})


def test_bad_parameters_are_all_listed_before_any_compute(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: broken\nlearning_rate: 0.1\ntrain:\n  lr: -1\n  epochs: two\n  negatives: random\n"
                   "eval:\n  baselines: [bm25, bm42]\n")
    out = recnb("run", bad, "--run-dir", tmp_path / "never")
    assert out.returncode == 2
    for key in ("learning_rate", "train.lr", "train.epochs", "train.negatives", "bm42"):
        assert f"{bad}: " in out.stderr and key in out.stderr, out.stderr
    assert not (tmp_path / "never").exists()
    assert "Traceback" not in out.stderr
    missing = recnb("run", tmp_path / "nope.yaml")
    assert missing.returncode == 2 and "file not found" in missing.stderr


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "default"
    out = recnb("run", "params/default.yaml", "--run-dir", run_dir, *SMALL, "--set", "tracker=offline", "--set", "train.lr=3e-5",
                env={"WANDB_MODE": "offline"})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return run_dir


@pytest.mark.integration  # papermill
def test_papermill_run_writes_the_run_directory(first_run):
    names = {p.name for p in first_run.iterdir()}
    assert {"params.yaml", "executed.ipynb", "metrics.json", "manifest.json", "model", "index", "history.json", "wandb"} <= names
    metrics = json.loads((first_run / "metrics.json").read_text())
    for split in ("valid", "test"):
        assert {"bm25", "zero-shot", "hybrid-rrf", "fine-tuned", "fine-tuned+bm25"} <= set(metrics[split])
        assert 0 <= metrics[split]["fine-tuned"]["ndcg@10"] <= 1
    manifest = json.loads((first_run / "manifest.json").read_text())
    assert manifest["commit"] and manifest["data"]["fingerprint"] and manifest["packages"]["torch"]
    assert set(manifest["seconds"]) >= {"data", "baselines", "train", "index", "evaluate"}
    assert list((first_run / "wandb").glob("offline-run-*")), "the offline wandb run is in the run directory"
    assert (first_run / "model" / "model.safetensors").exists()
    from recnb.params import load_params
    assert load_params(first_run / "params.yaml").train.lr == 3e-5   # `--set` as the help writes it reaches the kernel a number
    import nbformat
    nb = nbformat.read(first_run / "executed.ipynb", as_version=4)
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    at = tags.index(["injected-parameters"])
    assert "parameters" in tags[at - 1], "papermill injects right after the cell tagged `parameters` (kept by nbdev-clean)"


@pytest.mark.integration  # papermill
def test_run_reproduces_from_its_params_yaml(first_run, tmp_path):
    again = tmp_path / "again"
    out = recnb("run", first_run / "params.yaml", "--run-dir", again)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    first = json.loads((first_run / "metrics.json").read_text())
    second = json.loads((again / "metrics.json").read_text())
    for split in ("valid", "test"):
        for ranker, values in first[split].items():
            assert {k: v for k, v in values.items() if k != "seconds"} == \
                   {k: v for k, v in second[split][ranker].items() if k != "seconds"}, (split, ranker)


@pytest.mark.integration  # papermill
def test_experiment_notebook_passes_nbval():
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "--nbval-lax", "-p", "no:cacheprovider",
                          "--nbval-kernel-name", "recnb", str(ROOT / "nbs" / "experiment.ipynb")],
                         capture_output=True, text=True, timeout=900, cwd=ROOT,
                         env={**os.environ, "IN_TEST": "1", "RECNB_RUNS_DIR": "/tmp/recnb-nbval-runs"})
    assert out.returncode == 0, out.stdout[-3000:]
    assert " passed" in out.stdout
