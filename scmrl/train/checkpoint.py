"""Checkpoints: written atomically (temporary name in the same folder, fsync, rename), holding everything a
run needs to continue exactly: model, optimizer and schedule state, epoch, global step, RNG states, best
metrics and the metric history, plus the model/train configuration and the classes (so `scmrl-eval`
can rebuild the network from the file alone).

Checkpoints are shared, so reading one must never run code: everything in them is a tensor, number,
string, list, tuple or dict (the RNG states too), and they are read with ``torch.load(weights_only=True)``.
Checkpoints written before the RNG states were stored as tensors hold numpy arrays; they are read through
a narrow allow-list of the numpy types such a state needs, and nothing else."""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avdata.atomic import atomic_open
from avdata.errors import AvdataError

__all__ = ["CHECKPOINT_NAME", "BEST_NAME", "save_checkpoint", "load_checkpoint", "capture_rng", "restore_rng"]

CHECKPOINT_NAME = "checkpoint.pt"  # the latest epoch (resume)
BEST_NAME = "best.pt"  # the validation-best epoch (weights and configs only)


def capture_rng() -> dict[str, Any]:
    """Every RNG state as tensors, numbers and strings (what weights_only loading accepts)."""
    py_version, py_words, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": int(py_version), "state": torch.tensor(py_words, dtype=torch.int64),
                   "gauss": py_gauss},
        "numpy": {"name": str(np_name), "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    py, npy = state["python"], state["numpy"]
    if isinstance(py, dict):
        random.setstate((py["version"], tuple(int(w) for w in py["state"].tolist()), py["gauss"]))
    else:  # the older layout: the tuples themselves
        random.setstate(py)
    if isinstance(npy, dict):
        np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                             npy["gauss"]))
    else:
        np.random.set_state(npy)
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """torch.save to `<path>.tmp`, fsync, rename: a crash never leaves a half-written checkpoint."""
    path = Path(path)
    with atomic_open(path, "wb") as f:
        out = _WriteErrors(f)
        try:
            torch.save(payload, out)
        except RuntimeError:
            if out.error is not None:  # torch reports a failed write as "[enforce fail at inline_container.cc]"
                raise out.error from None
            raise
    return path


class _WriteErrors:
    """A file that remembers the OSError of a failed write (a full disk), which torch.save hides."""

    def __init__(self, f) -> None:
        self.f = f
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.f.flush()


def _legacy_numpy_globals() -> list[Any]:
    """The numpy types a numpy RNG state (a uint32 array) pickles to, and nothing else."""
    names = [("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct"),
             ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.dtypes", "UInt32DType")]
    found = []
    for module, name in names:
        try:
            mod = __import__(module, fromlist=[name])
        except ImportError:
            continue
        if hasattr(mod, name):
            found.append(getattr(mod, name))
    return found


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint without running code from it (``weights_only=True``); a file that asks to run
    anything else is refused with a message naming it."""
    path = Path(path)
    if not path.exists():
        raise AvdataError(f"{path}: no such checkpoint")
    try:
        with torch.serialization.safe_globals(_legacy_numpy_globals()):
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "weights_only" in text or "Unsupported global" in text or "GLOBAL" in text:
            first = next((line.strip() for line in text.splitlines() if "Unsupported" in line
                          or "GLOBAL" in line), "")
            raise AvdataError(
                f"{path}: refused: this checkpoint holds objects that would run code when loaded ({first}); "
                "scmrl checkpoints hold only tensors, numbers and strings. Load only checkpoints you made or "
                "trust; this one was not made by scmrl, or was tampered with") from exc
        raise AvdataError(f"{path}: not a readable checkpoint ({exc})") from exc
    except Exception as exc:  # a truncated or foreign file
        raise AvdataError(f"{path}: not a readable checkpoint ({exc})") from exc
    if not isinstance(ckpt, dict):
        raise AvdataError(f"{path}: not an scmrl checkpoint (it holds a {type(ckpt).__name__}, not a dict)")
    return ckpt
