"recnb installed from its wheel into a fresh virtual environment outside the repository: `recnb new`, then run, package and build the bento there."
import os, subprocess, sys, sysconfig
from pathlib import Path
import pytest
from conftest import ROOT

SMALL = ["--set", "data.n_items=300", "--set", "data.n_queries=120", "--set", "data.n_users=10", "--set", "train.epochs=1",
         "--set", "train.max_steps=3", "--set", "train.batch_size=16", "--set", "tracker=disabled"]


def run(*args, cwd, env, timeout=900):
    out = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{args}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.mark.integration
def test_wheel_outside_the_checkout_scaffolds_runs_and_packages(tmp_path):
    wheels = tmp_path / "wheels"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", wheels, ROOT, cwd=tmp_path, env=os.environ)
    wheel = next(wheels.glob("recnb-*.whl"))
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path, env=os.environ)
    python = venv / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path, env=os.environ).stdout.strip())
    # recnb's own code comes from the wheel; its dependencies (torch, transformers, …: gigabytes) from the test's
    # environment, appended after the venv's own site-packages (its .pth files, e.g. recnb's editable install, are not read)
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(python, "-m", "pip", "install", "--no-deps", "--no-index", wheel, cwd=tmp_path, env=os.environ)
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "BENTOML_HOME": str(tmp_path / "bentoml"),
           "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    env.pop("PYTHONPATH", None)
    where = run(python, "-c", "import recnb; print(recnb.__file__)", cwd=tmp_path, env=env).stdout.strip()
    assert where.startswith(str(site)), where  # not the checkout
    run(python, "-m", "ipykernel", "install", "--prefix", venv, "--name", "recnb-wheel", cwd=tmp_path, env=env)
    project = tmp_path / "shop"
    made = run(venv / "bin" / "recnb", "new", project, cwd=tmp_path, env=env)
    assert "nbs/experiment.ipynb" in made.stdout
    for name in ("nbs/experiment.ipynb", "params/default.yaml", "params/sweep-default.yaml", "settings.ini", "bentos/service.py",
                 "bentos/bentofile.yaml", "bentos/bentofile.gpu.yaml", "bentos/monitoring/alerts.yml", "bentos/monitoring/compose.yaml",
                 "deploy/kubernetes/deployment.yaml", "deploy/kubernetes/sweep/job.yaml", "README.md", ".gitignore"):
        assert (project / name).is_file() and not (project / name).is_symlink(), name
    assert "recnb build" in (project / "README.md").read_text() and "runs/" in (project / ".gitignore").read_text()
    assert "datasets_dir = datasets\n" in (project / "settings.ini").read_text()   # inside the project (`recnb fetch` fills it)
    env["JUPYTER_PATH"] = str(venv / "share" / "jupyter")
    run(venv / "bin" / "recnb", "run", "params/default.yaml", "--kernel", "recnb-wheel", *SMALL, cwd=project, env=env)
    assert (project / "runs" / "default" / "metrics.json").is_file()
    packaged = run(venv / "bin" / "recnb", "package", project / "runs" / "default", cwd=project, env=env)
    tag = packaged.stdout.strip().splitlines()[-1]
    assert tag.startswith("recnb:")
    built = run(venv / "bin" / "recnb", "build", cwd=project, env=env, timeout=600).stdout.strip().splitlines()[-1]
    assert built.startswith("recnb-service:"), built
    script = ("import bentoml, sys, yaml; b = bentoml.bentos.get(sys.argv[1]); print(b.path); "
              "print(*[m['tag'] for s in yaml.safe_load(open(b.path + '/bento.yaml'))['services'] for m in s['models']])")
    path, models = run(python, "-c", script, built, cwd=tmp_path, env=env).stdout.strip().splitlines()[-2:]
    assert models.split() == [tag]   # the model packaged in this project
    shipped = {p.relative_to(Path(path) / "src" / "recnb") for p in (Path(path) / "src" / "recnb").rglob("*.py")}
    installed = {p.relative_to(site / "recnb") for p in (site / "recnb").rglob("*.py") if "templates" not in p.parts}
    assert shipped == installed and (Path(path) / "src" / "bentos" / "service.py").is_file()   # the wheel's recnb, whole
