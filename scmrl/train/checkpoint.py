"""Checkpoints: written atomically (temporary name in the same folder, fsync, rename), holding everything a
run needs to continue exactly: model, optimizer and schedule state, epoch, global step, RNG states, best
metrics and the metric history, plus the model/train configuration and the classes (so `scmrl-eval`
can rebuild the network from the file alone).

Checkpoints are shared, so reading one must never run code: everything in them is a tensor, number,
string, list, tuple or dict (the RNG states too), and they are read with ``torch.load(weights_only=True)``.
Checkpoints written before the RNG states were stored as tensors hold numpy arrays; they are read through
a narrow allow-list of the numpy types such a state needs, and nothing else.

Before any of that, `check_archive` reads the file's zip directory (a torch checkpoint is a zip) and
refuses one whose members would unpack to far more than the file holds: torch allocates each member's
declared size up front, so a few MB of deflated zeros would otherwise take gigabytes of memory before
any check on the content could run.

After the load, every tensor must hold its elements in its own storage: torch.save records a tensor's
shape and strides beside its storage, so a 1.5 KB file can hold a zero-stride tensor of 10**12 elements
that any copy (a load_state_dict, a clone) would allocate in full. What a checkpoint says is checked
before it is used in `scmrl.train.checkpoint_fit`."""

from __future__ import annotations

import contextlib
import pickle
import random
import re
import os
import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from avdata.atomic import atomic_open
from avdata.errors import AvdataError
from avdata.shards.reader import open_regular

__all__ = ["CHECKPOINT_NAME", "BEST_NAME", "BEST_KEYS", "save_checkpoint", "load_checkpoint", "check_archive",
           "capture_rng", "restore_rng"]

CHECKPOINT_NAME = "checkpoint.pt"  # the latest epoch (resume)
BEST_NAME = "best.pt"  # the validation-best epoch (weights and configs only)
#: what best.pt holds of the epoch's checkpoint payload
BEST_KEYS = ("model", "epoch", "step", "model_config", "train_config", "classes", "dataset")


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


#: torch.save stores members uncompressed; a re-zipped checkpoint of float weights deflates to ~0.9x. So all
#: members together may unpack to at most this multiple of the file's size (plus ARCHIVE_SLACK) ...
MAX_UNPACKED_RATIO = 4
ARCHIVE_SLACK = 16 << 20
#: ... and no member of more than ARCHIVE_SLACK bytes may deflate better than this (zeros do: ~1000x).
MAX_MEMBER_RATIO = 20
#: The bookkeeping members beside data.pkl and data/<n> (version, byteorder, .data/serialization_id) are tiny.
MAX_SMALL_MEMBER = 4096
#: More members than any model's tensors; the zip directory of millions would itself take gigabytes to read.
MAX_MEMBERS = 200_000
_TENSOR_MEMBER = re.compile(r"data/\d+")


def check_archive(path: str | Path) -> None:
    """Refuse (AvdataError naming the file) a torch zip checkpoint whose directory does not look like one
    torch.save writes (`_check_open_archive`)."""
    path = Path(path)
    try:
        # a FIFO would block the open itself, and torch.load after it: refused as not a plain file
        with open_regular(path, buffering=0, expected="a checkpoint file") as f:  # a few small reads
            _check_open_archive(f, path)
    except OSError as exc:
        raise AvdataError(f"{path}: not a readable torch checkpoint ({exc})") from exc


def _check_open_archive(f: IO[bytes], path: Path) -> None:
    """The checks of `check_archive` on an opened file, left at its start: members under one folder, a
    data.pkl, tensor storages `data/<n>` and a few tiny bookkeeping files, unpacking to no more than
    MAX_UNPACKED_RATIO x the file's size. Only the zip directory is read. A file that does not start like a
    zip is left to torch.load, as torch does (the legacy format stores tensors as they are: nothing in it
    unpacks)."""
    try:
        size = os.fstat(f.fileno()).st_size
        if f.read(4) != b"PK\x03\x04":  # torch's own test for its zip format
            return
        # the end record alone: how many members the directory lists (zipfile's private reader of it,
        # which typeshed leaves out)
        end = zipfile._EndRecData(f)  # type: ignore[attr-defined]
        if end is None:
            raise zipfile.BadZipFile("no end of central directory record")
        listed = end[zipfile._ECD_ENTRIES_TOTAL]  # type: ignore[attr-defined]
        if listed > MAX_MEMBERS:
            raise AvdataError(f"{path}: refused before loading: its zip directory lists "
                              f"{listed:,} members, more than the {MAX_MEMBERS:,} a "
                              "checkpoint may hold")
        f.seek(0)
        members = zipfile.ZipFile(f).infolist()  # not closed: that would close f, which the caller owns
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise AvdataError(f"{path}: not a readable torch checkpoint (its zip directory: {exc}); is the file "
                          "complete?") from exc
    finally:
        with contextlib.suppress(OSError, ValueError):
            f.seek(0)
    problem = _archive_problem(members, size)
    if problem:
        raise AvdataError(f"{path}: refused before loading: {problem}. A checkpoint written by torch.save is "
                          "not like this; it was damaged, or made to exhaust memory")


def _archive_problem(members: list[zipfile.ZipInfo], size: int) -> str | None:
    """What is wrong with a checkpoint's zip directory, or None."""
    folders = {m.filename.split("/", 1)[0] for m in members}
    if len(folders) != 1 or any("/" not in m.filename for m in members):
        return f"its members are not under one folder ({', '.join(sorted(folders)[:3])})"
    (folder,) = folders
    names = [m.filename[len(folder) + 1:] for m in members]
    if "data.pkl" not in names:
        return f"no {folder}/data.pkl (the member a torch checkpoint is read from)"
    total = 0
    for m, name in zip(members, names):
        total += m.file_size
        if name != "data.pkl" and not _TENSOR_MEMBER.fullmatch(name) and m.file_size > MAX_SMALL_MEMBER:
            return f"member {m.filename} ({m.file_size:,} bytes) is not one a torch checkpoint holds"
        if m.file_size > ARCHIVE_SLACK and m.file_size > MAX_MEMBER_RATIO * max(m.compress_size, 1):
            return (f"member {m.filename} unpacks to {m.file_size:,} bytes from {m.compress_size:,} "
                    f"(more than {MAX_MEMBER_RATIO}x)")
    budget = MAX_UNPACKED_RATIO * size + ARCHIVE_SLACK
    if total > budget:
        return (f"its members unpack to {total:,} bytes, more than {budget:,} ({MAX_UNPACKED_RATIO}x the file's "
                f"{size:,} bytes plus {ARCHIVE_SLACK >> 20} MiB)")
    return None


def unpickling_reason(exc: pickle.UnpicklingError) -> tuple[bool, str]:
    """(whether the file asks for a global, i.e. would run code; torch's one-line reason). torch's own
    message also advises loading with weights_only=False, advice never passed on for a stranger's file."""
    text = str(exc)
    reason = "its pickle holds more than plain data"
    for line in text.splitlines():
        line = line.split("WeightsUnpickler error:", 1)[-1].split(". Please", 1)[0]
        line = line.split(" was not an allowed global", 1)[0].strip()
        if line and not any(m in line for m in ("weights_only", "Weights only", "documentation", "file an issue")):
            reason = line
            break
    runs_code = "GLOBAL" in text or "Unsupported global" in text
    return runs_code, reason[:200]


def load_weights_only(path: Path, map_location: str | torch.device, what: str, runs_code_advice: str) -> Any:
    """The one way a checkpoint file is read: its zip directory checked (`check_archive`), then
    ``torch.load(weights_only=True)``; a file that would run code is refused with `runs_code_advice`, any
    other unreadable file named as not a readable `what`."""
    path = Path(path)
    try:
        # one open for the check and the load: a file replaced between the two would be loaded unchecked
        f = open_regular(path, expected="a checkpoint file")
    except OSError as exc:
        raise AvdataError(f"{path}: not a readable {what} ({exc})") from exc
    try:
        with f:
            _check_open_archive(f, path)
            with torch.serialization.safe_globals(_legacy_numpy_globals()):
                obj = torch.load(f, map_location=map_location, weights_only=True)
    except AvdataError:
        raise
    except pickle.UnpicklingError as exc:
        runs_code, reason = unpickling_reason(exc)
        if runs_code:
            raise AvdataError(f"{path}: refused: {runs_code_advice.format(reason=reason)}") from exc
        raise AvdataError(f"{path}: not a readable {what} ({reason})") from exc
    except Exception as exc:  # a truncated or foreign file
        raise AvdataError(f"{path}: not a readable {what} ({type(exc).__name__}: {exc})") from exc
    problem = _tensor_problem(obj)
    if problem:
        raise AvdataError(f"{path}: refused: {problem}; torch.save writes each tensor with its elements, so this "
                          "file was damaged, or made to exhaust memory")
    return obj


def _tensor_problem(obj: Any) -> str | None:
    """The first tensor in a loaded checkpoint (dicts, lists and tuples walked without recursion) that
    is not a dense tensor whose storage holds its elements, described; or None."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, torch.Tensor):
            if item.layout != torch.strided:
                return f"it holds a tensor of layout {item.layout}"
            held = item.untyped_storage().nbytes()
            if item.numel() * item.element_size() > held:
                return (f"it holds a tensor of shape {tuple(item.shape)} ({item.numel():,} elements) over a "
                        f"storage of {held:,} bytes")
    return None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint without running code from it (``weights_only=True``); a file that asks to run
    anything else is refused with a message naming it."""
    path = Path(path)
    if not path.exists():
        raise AvdataError(f"{path}: no such checkpoint")
    if path.is_dir():  # a run folder given for its checkpoint
        held = [n for n in (BEST_NAME, CHECKPOINT_NAME) if (path / n).is_file()]
        raise AvdataError(f"{path}: a folder, not a checkpoint file; pass "
                          + (" or ".join(str(path / n) for n in held) if held else "the checkpoint file itself"))
    ckpt = load_weights_only(path, map_location, "checkpoint", (
        "this checkpoint holds objects that would run code when loaded ({reason}); scmrl checkpoints hold only "
        "tensors, numbers and strings. Load only checkpoints you made or trust; this one was not made by "
        "scmrl, or was tampered with"))
    if not isinstance(ckpt, dict):
        raise AvdataError(f"{path}: not an scmrl checkpoint (it holds a {type(ckpt).__name__}, not a dict)")
    return ckpt

