"""Test-wide settings: no progress bars, headless plotting, nothing touches the network or user caches."""

from __future__ import annotations

import os

os.environ.setdefault("AVDATA_NO_PROGRESS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one intra-op thread per test process: the suite runs one process per core
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
