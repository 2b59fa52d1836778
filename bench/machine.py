"""The machine a benchmark ran on, for its printout (CPUs differ between sessions: name them with every result)."""
from __future__ import annotations
import os, platform, subprocess


def cpu_name() -> str:
    "lscpu's 'Model name', else what the platform says."
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, env=os.environ | {"LC_ALL": "C"}).stdout
        return next(l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"
