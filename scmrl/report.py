"""Per-epoch console table rows and the end-of-run PNGs (loss/accuracy curves, confusion matrix)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from avdata.progress import console


def print_epoch(row: dict[str, Any]) -> None:
    parts = [f"epoch {row['epoch']:>3}", f"lr {row['lr']:.2e}", f"loss {row.get('train_loss', float('nan')):.4f}",
             f"train {row['train_acc']:.4f}"]
    for split in ("val", "test"):
        if f"{split}_acc" in row:
            parts.append(f"{split} {row[f'{split}_acc']:.4f}")
    parts.append(f"{row['samples_per_s']:.1f} samples/s")
    console.print(" | ".join(parts), highlight=False)


def plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    ax1.plot(ep, [r.get("train_loss", float("nan")) for r in history], label="train loss")
    ax1.set_xlabel("epoch"), ax1.legend()
    for key in ("train_acc", "val_acc", "test_acc"):
        pts = [(r["epoch"], r[key]) for r in history if key in r]
        if pts:
            ax2.plot(*zip(*pts), label=key.replace("_", " "))
    ax2.set_xlabel("epoch"), ax2.set_ylim(0, 1), ax2.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_confusion(conf: list[list[int]], classes: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    m = np.asarray(conf)
    fig, ax = plt.subplots(figsize=(1 + 0.6 * len(classes), 1 + 0.6 * len(classes)), dpi=100)
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right"), ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted"), ax.set_ylabel("true")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
