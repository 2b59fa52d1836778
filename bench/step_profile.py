"""Where a training step's time goes: a Lightning callback for `recnb.train.model.fit(callbacks=[...])` (used by bench_train.py).

For `steps` training steps after `skip` warm-up steps it records, per step:
- data wait: host time between the end of one step and the start of the next (fetching and collating the batch);
- step wall: from the step's start to its end, the device synchronised at both ends, so queued GPU work is counted;
- device busy: the summed time of the GPU kernels the step ran (torch.profiler), on CUDA only;
- kernels launched per step (CUDA), and the host operators with the most self time.
On a GPU, step wall minus device busy is time the GPU waits for the host inside the step. Synchronising costs the
overlap of host and device, so the profiled steps are not the ones whose throughput is reported.
"""
from __future__ import annotations
import time
import pytorch_lightning as pl
import torch


class StepProfile(pl.Callback):
    def __init__(self, skip: int = 5, steps: int = 10, top: int = 8):
        self.skip, self.steps, self.top = skip, steps, top
        self.data_wait, self.step_wall, self.profile, self._end, self._start, self._profiler = [], [], {}, None, None, None

    def _sync(self, module):
        if module.device.type == "cuda": torch.cuda.synchronize(module.device)

    def _profiling(self, batch_idx): return self.skip <= batch_idx < self.skip + self.steps

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if not self._profiling(batch_idx): return
        if self._profiler is None:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if module.device.type == "cuda": activities.append(torch.profiler.ProfilerActivity.CUDA)
            self._profiler = torch.profiler.profile(activities=activities)
            self._profiler.__enter__()
        self._sync(module)
        now = time.perf_counter()
        if self._end is not None: self.data_wait.append(now - self._end)
        self._start = now

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if not self._profiling(batch_idx): return
        self._sync(module)
        self._end = time.perf_counter()
        self.step_wall.append(self._end - self._start)
        if batch_idx == self.skip + self.steps - 1: self._finish(module)

    def _finish(self, module):
        self._profiler.__exit__(None, None, None)
        events = self._profiler.key_averages()
        n = len(self.step_wall)
        cuda = module.device.type == "cuda"
        device_us = sum(e.self_device_time_total for e in events if cuda) if cuda else 0.0
        kernels = sum(e.count for e in events if cuda and e.self_device_time_total > 0)
        host = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[: self.top]
        mean = lambda xs: sum(xs) / max(len(xs), 1)
        self.profile = {
            "steps": n, "device": str(module.device),
            "step_wall_ms": 1e3 * mean(self.step_wall), "data_wait_ms": 1e3 * mean(self.data_wait),
            "device_busy_ms": device_us / 1e3 / n if cuda else None,
            "kernels_per_step": kernels / n if cuda else None,
            "top_host_ops_ms_per_step": {e.key: round(e.self_cpu_time_total / 1e3 / n, 2) for e in host},
        }

    def summary(self) -> str:
        p = self.profile
        if not p: return "step profile: not reached (too few steps)"
        line = f"step profile over {p['steps']} steps on {p['device']}: step {p['step_wall_ms']:.1f} ms, data wait {p['data_wait_ms']:.1f} ms"
        if p["device_busy_ms"] is not None:
            line += (f", GPU busy {p['device_busy_ms']:.1f} ms ({p['device_busy_ms'] / p['step_wall_ms']:.0%} of the step), "
                     f"{p['kernels_per_step']:.0f} kernels per step")
        return line + "\n  host ops with most self time (ms/step): " + ", ".join(f"{k} {v}" for k, v in p["top_host_ops_ms_per_step"].items())
