"""Test-wide settings: no progress bars, headless plotting, nothing touches the network or user caches."""

from __future__ import annotations

import os

os.environ.setdefault("AVDATA_NO_PROGRESS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
