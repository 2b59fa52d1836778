"Fine-tuning: a run killed mid-epoch resumes from its checkpoint and finishes; CPU runs are reproducible."
import json, os, subprocess, sys, textwrap
from pathlib import Path
import pytest
import pytorch_lightning as pl
import torch

SMALL = "synthetic(n_items=300, n_queries=100, n_users=10, seed=0).search"
# about 10 steps per epoch: the kill at step 7 lands mid-epoch
FIT = ("dict(epochs=2, batch_size=16, tracker='disabled', checkpoint_every_n_steps=2, negatives='bm25', max_val_queries=20,"
       " max_positives_per_query=2)")


def _script(out: Path, kill_at_step: int | None) -> str:
    return textwrap.dedent(f"""
        import os, signal, json
        import pytorch_lightning as pl
        from recnb.data.synthetic import synthetic
        from recnb.train.model import fit
        class Kill(pl.Callback):
            def on_train_batch_end(self, trainer, *args):
                if {kill_at_step!r} is not None and trainer.global_step == {kill_at_step!r}:
                    os.kill(os.getpid(), signal.SIGKILL)   # no clean-up, like a lost machine
        r = fit({SMALL}, {str(out)!r}, callbacks=[Kill()], **{FIT})
        print(json.dumps({{"resumed_from": r.resumed_from, "history": r.history, "best": r.best_score}}))
    """)


def test_killed_run_resumes_and_finishes(tmp_path):
    out = tmp_path / "run"
    killed = subprocess.run([sys.executable, "-c", _script(out, kill_at_step=7)], capture_output=True, text=True, timeout=1200)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (out / "checkpoints" / "last.ckpt").exists() and not (out / "model").exists()
    saved = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert 0 < saved["global_step"] < 7 and saved["global_step"] % 2 == 0
    resumed = subprocess.run([sys.executable, "-c", _script(out, kill_at_step=None)], capture_output=True, text=True, timeout=1200)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert result["resumed_from"].endswith("last.ckpt")
    assert [row["epoch"] for row in result["history"]] == [0, 1]
    assert (out / "model" / "model.safetensors").exists() and (out / "model" / "tokenizer.json").exists()


def test_same_seed_same_weights_and_validation_metrics_on_cpu(tmp_path):
    from safetensors.torch import load_file
    from recnb.data.synthetic import synthetic
    from recnb.train.model import fit
    data = synthetic(n_items=300, n_queries=100, n_users=10, seed=0).search
    runs = [fit(data, tmp_path / f"r{i}", epochs=1, batch_size=16, max_steps=4, tracker="disabled", max_val_queries=20,
                negatives="bm25") for i in range(2)]
    keys = ("val_ndcg@10", "val_loss")
    first, second = ([{k: row[k] for k in keys} for row in r.history] for r in runs)
    assert first == second and first
    weights = [load_file(r.model_dir / "model.safetensors") for r in runs]
    assert weights[0].keys() == weights[1].keys() and all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_trained_model_loads_as_an_encoder_and_is_not_retrained(tmp_path):
    from recnb.data.synthetic import synthetic
    from recnb.index.encoder import Encoder
    from recnb.train.model import fit
    data = synthetic(n_items=200, n_queries=60, n_users=5, seed=2).search
    result = fit(data, tmp_path / "m", epochs=1, batch_size=16, max_steps=2, tracker="disabled", max_val_queries=10)
    vectors = Encoder(str(result.model_dir)).encode(["grey velvet sofa"])
    assert vectors.shape == (1, 384)
    assert not (tmp_path / "m" / "checkpoints").exists(), "checkpoints are removed once the model is saved"
    weights = result.model_dir / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    again = fit(data, tmp_path / "m", epochs=1, batch_size=16, max_steps=2, tracker="disabled", max_val_queries=10)
    assert again.resumed_from.endswith("fit.json") and weights.stat().st_mtime_ns == stamp, "a finished fit is not redone"
    assert (again.best_score, again.history) == (result.best_score, result.history)


def test_checkpoints_of_other_parameters_are_not_resumed(tmp_path):
    from recnb.data.synthetic import synthetic
    from recnb.train.model import fit
    data = synthetic(n_items=200, n_queries=60, n_users=5, seed=2).search
    common = dict(epochs=1, batch_size=16, max_steps=2, tracker="disabled", max_val_queries=10, checkpoint_every_n_steps=1)
    first = fit(data, tmp_path / "m", lr=5e-5, keep_checkpoints=True, **common)
    assert first.resumed_from is None and (tmp_path / "m" / "checkpoints" / "last.ckpt").exists()
    other = fit(data, tmp_path / "m", lr=1e-4, **common)
    assert other.resumed_from is None, "a run with another learning rate must start afresh"
    assert [row["epoch"] for row in other.history] == [0]


class _StepsSeen(pl.Callback):
    "Whether each optimizer step ran fused, and the gradient norm it stepped with (after clipping)."
    def __init__(self): self.fused, self.norms = [], []
    def on_train_batch_end(self, trainer, module, *args):
        optimizer = trainer.optimizers[0]
        self.fused.append(bool(optimizer.defaults["fused"]))
        grads = [p.grad.double() for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        self.norms.append(sum(g.square().sum() for g in grads).sqrt().item())


def _mixed_precision_fit(out: Path, accelerator: str):
    "A few steps in bf16 autocast with gradient clipping: AdamW fused, gradients clipped, the loss finite, the model loads."
    import math
    from recnb.index.encoder import Encoder
    from recnb.train.model import fit
    from recnb.data.synthetic import synthetic
    data = synthetic(n_items=60, n_queries=20, n_users=5, seed=1).search
    steps = _StepsSeen()
    result = fit(data, out, epochs=1, batch_size=4, max_steps=2, max_length=16, max_val_queries=5, tracker="disabled",
                 precision="bf16-mixed", accelerator=accelerator, gradient_clip=1e-3, callbacks=[steps])
    assert result.history and all(math.isfinite(row[key]) for row in result.history for key in ("train_loss", "val_loss"))
    assert steps.fused == [True, True] and max(steps.norms) < 1.01e-3  # a fresh model's gradients are far larger
    assert Encoder(str(result.model_dir)).encode(["grey velvet sofa"]).shape == (1, 384)


def test_bf16_mixed_precision_fine_tunes_on_cpu(tmp_path):
    _mixed_precision_fit(tmp_path / "m", "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bf16_mixed_precision_fine_tunes_on_cuda(tmp_path):
    _mixed_precision_fit(tmp_path / "m", "gpu")


def _ddp_script(out: Path) -> str:
    "A user's training script: Lightning's `ddp` runs it once more for the second process, which prints its own line."
    return textwrap.dedent(f"""
        import json, math
        import torch.distributed as dist
        import recnb.train.model
        from recnb.data.datasets import load_dataset
        ranked = []  # full-catalog validations run by this process
        catalog_validation = recnb.train.model.catalog_validation
        def counted(*args, **kwargs):
            validate = catalog_validation(*args, **kwargs)
            return lambda module: ranked.append(1) or validate(module)
        recnb.train.model.catalog_validation = counted
        result = recnb.train.model.fit(load_dataset("synthetic", n_items=300, n_queries=80, n_users=50), {str(out)!r}, max_steps=4,
                                 batch_size=8, strategy="ddp", devices=2, accelerator="cpu", tracker="disabled")
        print("RESULT", json.dumps({{"rank": dist.get_rank(), "world": dist.get_world_size(), "validations": len(ranked),
                                    "best": result.best_score, "history": result.history,
                                    "model_dir": str(result.model_dir), "pairs_per_second": result.pairs_per_second}}), flush=True)
    """)


@pytest.mark.integration
def test_ddp_on_two_cpu_processes_validates_once_and_saves_one_model(tmp_path):
    import math, signal
    from recnb.index.encoder import Encoder
    out, script = tmp_path / "run", tmp_path / "train.py"
    script.write_text(_ddp_script(out))
    # its own session, so that a hang is ended with the second process (which Lightning starts) as well
    run = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           cwd=tmp_path, start_new_session=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    try: stdout, stderr = run.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL); run.communicate()
        pytest.fail("fit with strategy='ddp' on two CPU processes hung for 300 s")
    assert run.returncode == 0, stderr[-3000:]
    ranks = sorted((json.loads(line[len("RESULT "):]) for line in stdout.splitlines() if line.startswith("RESULT ")),
                   key=lambda r: r["rank"])
    assert [(r["rank"], r["world"]) for r in ranks] == [(0, 2), (1, 2)], stdout[-2000:]
    assert [r["validations"] for r in ranks] == [1, 0], "the whole catalog is ranked once per epoch, by rank 0 alone"
    first, second = ranks
    assert first["best"] == second["best"] and math.isfinite(first["best"]), "every rank sees rank 0's validation score"
    metrics = [[{k: v for k, v in row.items() if k != "seconds"} for row in r["history"]] for r in ranks]
    assert metrics[0] == metrics[1], "losses are averaged over the ranks, the score is rank 0's"
    (row,) = metrics[0]  # one validation, after the 4th step
    assert row["step"] == 4 and row["val_ndcg@10"] == round(first["best"], 6)
    assert math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"])
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints.json", "fit.json", "history.json", "model"]
    assert json.loads((out / "history.json").read_text()) == first["history"]
    assert json.loads((out / "fit.json").read_text())["best_score"] == first["best"]
    assert first["model_dir"] == second["model_dir"] == str(out / "model")
    assert first["pairs_per_second"] == second["pairs_per_second"] > 0, "the throughput of both processes together"
    assert Encoder(str(out / "model")).encode(["grey velvet sofa"]).shape == (1, 384)
