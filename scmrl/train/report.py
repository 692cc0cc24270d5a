"""What a run reports: metrics.jsonl (one JSON object per epoch), a rich table row per epoch, the
final summary (both test accuracies, clearly labelled), and PNGs of the loss/accuracy curves and of the
test confusion matrix (matplotlib, Agg backend, fixed pixel sizes)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

from rich.markup import escape
from rich.table import Table

from avdata.atomic import atomic_open, atomic_write_text
from avdata.errors import naming_path
from avdata.printable import printable
from avdata.progress import console

__all__ = ["write_metrics", "append_metrics", "read_metrics", "EpochTable", "print_run_results", "print_eval",
           "plot_curves", "plot_confusion", "CURVES_SIZE", "confusion_size"]

CURVES_SIZE = (1200, 450)  # pixels of curves.png


def append_metrics(path: str | Path, row: dict[str, Any]) -> None:
    with naming_path(path), open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")


def write_metrics(path: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    """Rewrite metrics.jsonl from a history (on resume: drops lines of an epoch that was not checkpointed)."""
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def _fmt(v: Any, spec: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec)


class EpochTable:
    """One rich table row per epoch, the header printed with the first row."""

    def __init__(self, loss_parts: Sequence[str] = ("ce",), with_val: bool = True, with_test: bool = True) -> None:
        self.loss_parts = [p for p in loss_parts if p != "loss"]
        self.with_val, self.with_test = with_val, with_test
        self.printed = False

    def _table(self, header: bool) -> Table:
        t = Table(show_header=header, box=None, pad_edge=False, padding=(0, 1))
        cols = [("epoch", 6), ("lr", 9), ("loss", 8), *[(p, max(8, len(p))) for p in self.loss_parts], ("train acc", 9)]
        if self.with_val:
            cols.append(("val acc", 8))
        if self.with_test:
            cols.append(("test acc", 8))
        cols += [("samples/s", 10), ("time s", 7)]
        for name, width in cols:
            t.add_column(name, justify="right", min_width=width, max_width=width, no_wrap=True)
        self.width = sum(max(w, len(n)) + 2 for n, w in cols) + 2
        return t

    def row(self, r: dict[str, Any]) -> None:
        t = self._table(not self.printed)
        cells = [str(r["epoch"]), _fmt(r.get("lr"), ".2e"), _fmt(r.get("train_loss"), ".4f"),
                 *[_fmt(r.get(f"train_{p}"), ".4f") for p in self.loss_parts], _fmt(r.get("train_acc"), ".4f")]
        if self.with_val:
            cells.append(_fmt(r.get("val_acc"), ".4f"))
        if self.with_test:
            cells.append(_fmt(r.get("test_acc"), ".4f"))
        cells += [_fmt(r.get("samples_per_s"), ".1f"), _fmt(r.get("seconds"), ".1f")]
        t.add_row(*cells)
        console.print(t, width=max(console.width, self.width), crop=False)  # keep every column
        self.printed = True


def print_run_results(results: dict[str, Any]) -> None:
    """The end-of-run summary: the honest (validation-selected) and the reference's test accuracy."""
    # the dataset and class names come from the manifest: printed escaped, never as markup ("[/x]" fails)
    dataset = escape(printable(results.get("dataset")))
    t = Table(title=f"{results.get('model')} on {dataset}: {results.get('epochs')} epochs",
              show_header=True, box=None, padding=(0, 2))
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_column("epoch", justify="right")
    t.add_row("test accuracy at the validation-best epoch (model selected on val)",
              _fmt(results.get("test_acc_at_val_best_epoch"), ".4f"), _fmt(results.get("val_best_epoch"), "d"))
    t.add_row("best test accuracy over epochs (the reference's figure, selected on test)",
              _fmt(results.get("best_test_acc_over_epochs"), ".4f"), _fmt(results.get("best_test_epoch"), "d"))
    t.add_row("validation accuracy at its best epoch", _fmt(results.get("val_best_acc"), ".4f"),
              _fmt(results.get("val_best_epoch"), "d"))
    t.add_row("test accuracy at the last epoch", _fmt(results.get("test_acc_last_epoch"), ".4f"),
              _fmt(results.get("epochs"), "d"))
    console.print(t)


def print_eval(res: dict[str, Any], split: str) -> None:
    console.print(f"{split}: accuracy [bold]{res['accuracy']:.4f}[/] ({res['correct']} of {res['samples']} samples)",
                  highlight=False)
    t = Table(show_header=True, box=None, padding=(0, 2))
    t.add_column("class")
    t.add_column("samples", justify="right")
    t.add_column("accuracy", justify="right")
    for name, n, acc in zip(res["classes"], res["class_samples"], res["per_class"]):
        t.add_row(escape(printable(name)), str(n), _fmt(acc, ".4f"))
    console.print(t)


def _save_png(fig: Any, path: str | Path) -> None:
    """Drawn under a temporary name and renamed: a run stopped while drawing (Ctrl-C, kill) leaves the previous
    PNG whole, never a truncated one."""
    with naming_path(path), atomic_open(path, "wb") as f:
        fig.savefig(f, dpi=100, format="png")


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Loss parts (left) and train/val/test accuracy (right) per epoch; CURVES_SIZE pixels."""
    plt = _plt()
    w, h = CURVES_SIZE
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(w / 100, h / 100), dpi=100)
    ep = [r["epoch"] for r in history]
    keys = sorted({k for r in history for k in r if k.startswith("train_") and k not in
                   ("train_acc", "train_samples")})
    for k in keys:
        ax1.plot(ep, [r.get(k, float("nan")) for r in history], marker=".", label=k.replace("train_", "train "))
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.grid(alpha=0.3)
    if keys:
        ax1.legend()
    for key in ("train_acc", "val_acc", "test_acc"):
        pts = [(r["epoch"], r[key]) for r in history if r.get(key) is not None]
        if pts:
            xs, ys = zip(*pts)
            ax2.plot(xs, ys, marker=".", label=key.replace("_", " "))
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy")
    ax2.set_ylim(0, 1)
    ax2.grid(alpha=0.3)
    ax2.legend()
    if title:
        fig.suptitle(title, parse_math=False)  # it names the manifest's dataset: text, never mathtext
    fig.tight_layout()
    _save_png(fig, path)
    plt.close(fig)
    return Path(path)


def confusion_size(num_classes: int) -> tuple[int, int]:
    side = int(100 * max(4.0, 1.5 + 0.55 * num_classes))
    return side, side


def plot_confusion(conf: Sequence[Sequence[int]], classes: Sequence[str], path: str | Path,
                   title: str = "test confusion matrix") -> Path:
    """Counts with row-normalised colour (true class rows, predicted columns); confusion_size pixels."""
    import numpy as np

    plt = _plt()
    m = np.asarray(conf, dtype=np.int64)
    rows = m.sum(1, keepdims=True)
    frac = m / np.maximum(rows, 1)
    w, h = confusion_size(len(classes))
    fig, ax = plt.subplots(figsize=(w / 100, h / 100), dpi=100)
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    # class names come from the manifest: drawn as text, never as mathtext ("$\frac{" fails the draw)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", parse_math=False)
    ax.set_yticks(range(len(classes)), classes, parse_math=False)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, parse_math=False)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if frac[i, j] > 0.5 else "black")
    fig.tight_layout()
    _save_png(fig, path)
    plt.close(fig)
    return Path(path)
