"""Test-wide settings: no progress bars, headless plotting, nothing touches the network or user caches."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("AVDATA_NO_PROGRESS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one intra-op thread per test process: the suite runs one process per core
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def hf_offline(tmp_path, monkeypatch):
    """Offline, with every datasets cache under tmp_path; returns the cache_dir to pass."""
    datasets = pytest.importorskip("datasets")
    import datasets.config as cfg

    cache = tmp_path / "hf"
    for var, value in {"HF_HOME": cache, "HF_DATASETS_CACHE": cache / "datasets", "HF_HUB_CACHE": cache / "hub",
                       "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}.items():
        monkeypatch.setenv(var, str(value))
    monkeypatch.setattr(cfg, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(cfg, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(cfg, "HF_CACHE_HOME", str(cache))
    monkeypatch.setattr(cfg, "HF_DATASETS_CACHE", cache / "datasets")
    monkeypatch.setattr(cfg, "HF_MODULES_CACHE", cache / "modules")
    monkeypatch.setattr(cfg, "DOWNLOADED_DATASETS_PATH", cache / "datasets" / "downloads")
    monkeypatch.setattr(cfg, "EXTRACTED_DATASETS_PATH", cache / "datasets" / "downloads" / "extracted")
    datasets.disable_progress_bars()
    return str(cache / "datasets")
