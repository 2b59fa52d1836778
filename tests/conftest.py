import os
from pathlib import Path
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

from recnb.config import load_settings

DATASETS = Path(load_settings().datasets_dir)


def dataset_dir(name: str) -> Path:
    "A real dataset folder under ../shared/datasets; the test fails (not skips) when it is missing."
    path = DATASETS / name
    assert path.is_dir(), f"real dataset {path} is missing: tests read ../shared/datasets"
    return path


@pytest.fixture(scope="session")
def homedepot():
    from recnb.data import load_dataset
    return load_dataset("homedepot", dataset_dir("homedepot-search-relevance"))
