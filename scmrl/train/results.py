"""What a run keeps track of across epochs (best validation and test epochs) and the results it ends with.

Both test figures are kept, clearly labelled: the test accuracy at the validation-best epoch (the model a
validation split selects) and the best test accuracy over epochs (the reference's figure, selected on the
test set; docs/reference.md §6).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from scmrl.model.config import ModelConfig

__all__ = ["RESULTS_NAME", "METRICS_NAME", "CURVES_NAME", "CONFUSION_NAME", "fresh_state", "update_best",
           "run_results"]

RESULTS_NAME = "results.json"
METRICS_NAME = "metrics.jsonl"
CURVES_NAME = "curves.png"
CONFUSION_NAME = "confusion.png"


def fresh_state() -> dict[str, Any]:
    """The state of a run before its first epoch (it is checkpointed with the weights)."""
    return {"epoch": 0, "step": 0, "history": [], "best_val_acc": None, "best_val_epoch": None,
            "test_acc_at_best_val": None, "best_test_acc": None, "best_test_epoch": None,
            "confusion_at_best_val": None, "confusion_last": None, "stopped_by_max_steps": False,
            "stopped_mid_epoch": False}


def update_best(state: dict[str, Any], row: dict[str, Any]) -> bool:
    """Track the validation-best epoch and the best test epoch; True when validation improved."""
    improved = False
    if row.get("val_acc") is not None and (state["best_val_acc"] is None or row["val_acc"] > state["best_val_acc"]):
        state["best_val_acc"], state["best_val_epoch"] = row["val_acc"], row["epoch"]
        state["test_acc_at_best_val"] = row.get("test_acc")
        state["confusion_at_best_val"] = state["confusion_last"] if row.get("test_acc") is not None else None
        improved = True
    if row.get("test_acc") is not None and (state["best_test_acc"] is None or row["test_acc"] > state["best_test_acc"]):
        state["best_test_acc"], state["best_test_epoch"] = row["test_acc"], row["epoch"]
    return improved


def run_results(state: dict[str, Any], mcfg: ModelConfig, dataset: str, eval_splits: list[str]) -> dict:
    """The contents of results.json."""
    last_test = next((r["test_acc"] for r in reversed(state["history"]) if r.get("test_acc") is not None), None)
    return {
        "dataset": dataset,
        "model": mcfg.model,
        "attention": mcfg.attention,
        "epochs": state["epoch"],
        "steps": state["step"],
        "stopped_by_max_steps": state["stopped_by_max_steps"],
        "test_acc_at_val_best_epoch": state["test_acc_at_best_val"],
        "val_best_acc": state["best_val_acc"],
        "val_best_epoch": state["best_val_epoch"],
        "best_test_acc_over_epochs": state["best_test_acc"],
        "best_test_epoch": state["best_test_epoch"],
        "test_acc_last_epoch": last_test,
        "selection": ("test_acc_at_val_best_epoch: the model chosen on the validation split (the honest figure); "
                      "best_test_acc_over_epochs: the best test accuracy over all epochs, selected on the test set "
                      "(the figure the reference reports)") if "val" in eval_splits else
                     ("no validation split: test_acc_at_val_best_epoch is not available; best_test_acc_over_epochs "
                      "is selected on the test set (the reference's figure); no best.pt is written (no model is "
                      "chosen on the test set): checkpoint.pt holds the last epoch's"),
        "model_config": asdict(mcfg),
    }
