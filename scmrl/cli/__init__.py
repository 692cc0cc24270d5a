"""The trainer's command-line apps (`scmrl-train`, `scmrl-eval`, `scmrl-convert`): they parse options and call
scmrl, nothing more."""
