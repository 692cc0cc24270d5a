"""Training and evaluation of the models in `scmrl.model` on shards read through `scmrl.data`.

- `config`: TrainConfig / EvalConfig (also the CLI's options), per-dataset defaults, `model_config`
- `protocol`: our training protocol and the authors' (`--protocol reference`), setting by setting
- `loop`: `train`, the epoch loop: set-up, evaluation, checkpoints, results
- `start`: fresh run, `--resume` from the run's checkpoint, or `--init-from` another's weights
- `loaders`: the run's training and evaluation loaders and the on-device batch transform
- `epoch`: one training epoch (optimizer steps, per-step learning rate, metrics summed over ranks)
- `evaluate`: accuracy and confusion over a split; `evaluate_checkpoint` behind scmrl-eval
- `results`: best-epoch bookkeeping and results.json
- `optim`, `schedule`: AdamW parameter groups; warm-up + cosine learning rate
- `checkpoint`: atomic, code-free checkpoint files
- `checkpoint_fit`: what a loaded checkpoint says (config, weights, eval settings), checked before use
- `convert`: the authors' checkpoints mapped onto our models (scmrl-convert)
- `distributed`: single process or DDP under torchrun, reductions over ranks
- `report`: metrics.jsonl, the epoch table, curves and confusion plots
- `cpu_memory`: glibc heap settings that keep CPU training steps fast
- `footprint`: before training, a probe's estimate of peak memory and epoch time; the batch that fits
"""
