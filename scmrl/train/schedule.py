"""Learning rate: linear warm-up from `warmup_lr` to the peak, then cosine down to `min_lr`, per step.

The schedule is a function of the (fractional) epoch, `epoch + i / steps_in_epoch`, so it is the same
whatever the number of steps an epoch has (which can change with the number of ranks or the shard order):

* epochs [0, warmup): lr = warmup_lr + (peak - warmup_lr) * e / warmup;
* epochs [warmup, epochs]: lr = min_lr + (peak - min_lr) * (1 + cos(pi * (e - warmup) / (epochs - warmup))) / 2,
  so the peak is reached exactly at the end of warm-up and min_lr at the end of training.

The recipe (docs/reference.md §2): peak = 5e-3 * global batch / 1024 (6.25e-4 at batch 128), 5 warm-up
epochs from 1e-6, minimum 1e-5, 100 epochs. Below the recipe's batch of 128 the default peak follows the
square-root rule from there (`scaled_lr`), so a small batch does not scale the rate to nothing; and
`lr_warnings` says when a run's schedule cannot train (a tiny peak, a warm-up as long as the run).

:class:`EpochCosine` is the authors' stepping (``--protocol reference``): timm's ``CosineLRScheduler``
stepped once per epoch, the rate constant within an epoch; warm-up epochs e < warmup get
``warmup_lr + e (peak - warmup_lr) / warmup``, and from then on the cosine counted from epoch 0, not
from the end of warm-up: ``min_lr + (peak - min_lr) (1 + cos(pi e / epochs)) / 2``.  So the peak is
never reached exactly and the last epoch runs just above ``min_lr``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

__all__ = ["BASE_LR", "REFERENCE_BATCH", "LOW_LR", "LR_RULES", "scaled_lr", "WarmupCosine", "EpochCosine", "SCHEDULES",
           "make_schedule", "lr_at", "lr_warnings"]

BASE_LR = 5e-3
REFERENCE_BATCH = 128  # the recipe's global batch (docs/reference.md §2)
#: A peak under this learns too little in a short run to tell a working setup from a broken one.
LOW_LR = 1e-4


#: how the default peak follows the global batch below the recipe's 128 (`scaled_lr`)
LR_RULES = ("sqrt-below-128", "linear")


def scaled_lr(global_batch: int, base: float = BASE_LR, rule: str = "sqrt-below-128") -> float:
    """The peak for a global batch: the linear rule base * batch / 1024 from the recipe's batch of 128 up;
    below it the square-root rule from there (the rule for Adam-type optimisers, Malladi et al. 2022), so
    batch 4 gets 1.1e-4 rather than the linear 2e-5 under which the network does not move. ``rule="linear"``
    (the authors' script, `--protocol reference`): base * batch / 1024 at every batch."""
    if global_batch >= REFERENCE_BATCH or rule == "linear":
        return base * global_batch / 1024
    return base * REFERENCE_BATCH / 1024 * math.sqrt(max(1, global_batch) / REFERENCE_BATCH)


@dataclass
class WarmupCosine:
    peak: float
    epochs: int
    warmup_epochs: float = 5.0
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5

    def lr(self, epoch: float) -> float:
        """The learning rate at fractional epoch `epoch` (clamped to [0, epochs])."""
        e = min(max(float(epoch), 0.0), float(self.epochs))
        warm = min(float(self.warmup_epochs), float(self.epochs))
        if e < warm:
            return self.warmup_lr + (self.peak - self.warmup_lr) * e / warm
        span = self.epochs - warm
        progress = 1.0 if span <= 0 else (e - warm) / span
        return self.min_lr + (self.peak - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def lr_at_step(self, epoch: int, step_in_epoch: int, steps_in_epoch: int) -> float:
        return self.lr(epoch + step_in_epoch / max(1, steps_in_epoch))

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)


@dataclass
class EpochCosine(WarmupCosine):
    """timm's per-epoch cosine with warm-up (the authors' schedule); same interface as WarmupCosine."""

    def lr(self, epoch: float) -> float:
        e = int(min(max(math.floor(epoch), 0), self.epochs))
        if e < self.warmup_epochs:
            return self.warmup_lr + e * (self.peak - self.warmup_lr) / self.warmup_epochs
        return self.min_lr + 0.5 * (self.peak - self.min_lr) * (1.0 + math.cos(math.pi * e / self.epochs))


SCHEDULES = {"per-step": WarmupCosine, "per-epoch": EpochCosine}


def make_schedule(kind: str, peak: float, epochs: int, warmup_epochs: float = 5.0, warmup_lr: float = 1e-6,
                  min_lr: float = 1e-5) -> WarmupCosine:
    """``per-step`` (ours) or ``per-epoch`` (the authors')."""
    if kind not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {kind!r}")
    return SCHEDULES[kind](peak, epochs, warmup_epochs, warmup_lr, min_lr)


def lr_at(step: int, steps_per_epoch: int, epochs: int, peak: float, warmup_epochs: float = 5,
          warmup_lr: float = 1e-6, min_lr: float = 1e-5) -> float:
    """The learning rate at global step `step` with a constant number of steps per epoch."""
    return WarmupCosine(peak, epochs, warmup_epochs, warmup_lr, min_lr).lr(step / max(1, steps_per_epoch))


def lr_warnings(sched: WarmupCosine, global_batch: int, given: bool) -> list[str]:
    """What in this schedule keeps a run from learning, each with its fix: the highest rate the run reaches
    (its peak, or less when the warm-up outlasts it) below LOW_LR, and a warm-up not shorter than the run."""
    out = []
    steps = 100
    reached = max(sched.lr(e * sched.epochs / steps) for e in range(steps))  # over the epochs actually trained
    if sched.warmup_epochs >= sched.epochs:
        out.append(f"--warmup-epochs {sched.warmup_epochs:g} is not shorter than --epochs {sched.epochs}: the rate "
                   f"only climbs (to {reached:.3g}, not the peak {sched.peak:.3g}) and never decays; pass "
                   f"--warmup-epochs {max(1, sched.epochs // 10)} or more --epochs")
    if reached < LOW_LR:
        why = "as given (--lr)" if given else f"scaled to the global batch {global_batch}"
        out.append(f"the learning rate peaks at {reached:.3g} ({why}): too small to learn much in {sched.epochs} "
                   f"epoch(s); pass --lr 1e-3 (or larger) for a short run on a small batch")
    return out
