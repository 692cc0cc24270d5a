"""The training loop, evaluation, schedule, checkpoints, distributed set-up and reports."""
