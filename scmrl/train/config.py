"""What a training run is asked to do (`TrainConfig`, whose fields are also `scmrl-train`'s options) and the
network it builds for given shards (`model_config`: per-dataset defaults from the manifest, then the options).

Each field's help, flag and bounds live in its metadata (`avdata.option_fields.opt`), so the CLI
is generated from this one declaration; the model's settings are declared on `ModelConfig` and taken over
under the same names (`model_option`). `EvalConfig` holds `scmrl-eval`'s options, sharing the fields the
two commands have in common. This module imports no torch, so `--help` answers at once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from avdata.errors import AvdataError
from avdata.option_fields import check_bounds, opt

from scmrl.model.choices import ATTENTIONS
from scmrl.model.config import ModelConfig
from scmrl.train.protocol import PROTOCOLS, Protocol, get_protocol
from scmrl.train.schedule import BASE_LR

#: The largest input side: 4x the stored frames' short side (256). A checkpoint's train_config is held to it
#: too (scmrl.train.checkpoint_fit), so a stranger's file cannot make evaluation resize every input to any side.
MAX_IMAGE_SIZE = 1024
MIN_IMAGE_SIZE = 16  # two stride-2 stages and a patch still leave tokens

if TYPE_CHECKING:
    from avdata.shards.location import ShardsLocation
    from avdata.shards.manifest import Manifest

__all__ = ["TrainConfig", "EvalConfig", "LIBRARY_ONLY", "MODEL_OPTIONS", "NOISE_ON", "model_option",
           "resolve_protocol", "model_config"]

NOISE_ON = ("train", "eval", "both")

#: ModelConfig's settings that a run sets (those declared with their command-line description)
MODEL_OPTIONS = tuple(f.name for f in dataclasses.fields(ModelConfig) if f.metadata)


def model_option(name: str, *, default: Any = dataclasses.MISSING, default_help: str | None = None) -> Any:
    """TrainConfig's field for ModelConfig's setting `name`, with the help, flag and bounds ModelConfig
    declares, so that each is written once. `default` replaces the model's where the run decides later (None:
    the dataset's or the protocol's), and `default_help` is the sentence appended to the help to say so."""
    f = next(f for f in dataclasses.fields(ModelConfig) if f.name == name)
    meta = dict(f.metadata)
    if default_help:
        meta["help"] = f"{meta['help']} {default_help}"
    return opt(f.default if default is dataclasses.MISSING else default, **meta)


@dataclass
class TrainConfig:
    """A training run: the recipe of docs/reference.md §2 by default (see `scmrl.train.loop`)."""

    shards: str = opt(help="Shards made by `avdata prepare`: a local folder, its URL (http(s)://, s3://, gs://, "
                      "hf://datasets/OWNER/NAME), or .tar files (comma-separated or a glob; split read from "
                      "<split>-NNNNNN.tar).")
    out: str = opt(help="Run folder: checkpoint.pt, best.pt (the validation-best epoch, when the shards have a "
                   "validation split), metrics.jsonl, results.json, curves.png, confusion.png.")
    model: str = model_option("model")
    attention: str | None = model_option("attention", default=None, default_help="Default: spatiotemporal; with "
                                          "--protocol reference spatiotemporal-reference.")
    residual_proj: bool = model_option("residual_proj")
    protocol: str = opt("ours", choices=PROTOCOLS, help="reference: train as the authors' code does (no "
                        "validation split, float32, no decay on biases/norms, per-epoch cosine, linear lr scaling "
                        "below batch 128, one video frame per clip, PIL spectrogram resize, noise on training "
                        "inputs, their temporal-attention layout, T 16 for event data; README: protocol table).")
    epochs: int = opt(100, min=1, help="Training epochs.")
    batch_size: int | None = opt(None, min=1, help="Batch per process (drop-last in training). Default: 128; on CPU "
                                 "the largest of 128, 64, 32, ... that the memory estimate printed at the start "
                                 "fits in the available memory; never above the training samples a process has.")
    lr: float | None = opt(None, min=0, help="Peak learning rate. Default: 5e-3 * global batch / 1024 from batch 128 "
                           "up; below, 6.25e-4 * sqrt(global batch / 128) (so 1.1e-4 at batch 4; --protocol "
                           "reference: linear at every batch).")
    base_lr: float = opt(BASE_LR, min=0, help="Peak learning rate per 1024 samples of global batch, when lr is None.")
    weight_decay: float = opt(1e-4, min=0, help="AdamW weight decay.")
    warmup_epochs: float = opt(5.0, min=0, help="Linear warm-up epochs (from 1e-6).")
    warmup_lr: float = opt(1e-6, min=0, help="Learning rate at the start of the warm-up.")
    min_lr: float = opt(1e-5, min=0, help="Learning rate at the end of the cosine decay.")
    embed_dim: int | None = model_option("embed_dim", default=None, default_help="Default: the one the shards' "
                                          "dataset declares (its recipe's model_defaults; the paper's: CREMA-D 256, "
                                          "UrbanSound8K-AV 64).")
    heads: int = model_option("heads")
    mlp_ratio: float = model_option("mlp_ratio")
    time_steps: int | None = model_option("time_steps", default=None, default_help="Default: 4; event data: its "
                                           "stored bins.")
    image_size: int = opt(128, min=MIN_IMAGE_SIZE, max=MAX_IMAGE_SIZE,
                          help="Side in pixels of the square spectrogram and image inputs (static data).")
    alpha: float = model_option("alpha")
    tau_s: float | None = model_option("tau_s", default=None, default_help="Default: the one the shards' dataset "
                                       "declares (its recipe's model_defaults; the paper's: 0.07 CREMA-D, 0.08 "
                                       "UrbanSound8K-AV, 0.1 event data).")
    sao_weight: float = model_option("sao_weight")
    label_smoothing: float = model_option("label_smoothing")
    tau: float = model_option("tau")
    threshold: float = model_option("threshold")
    attn_threshold: float = model_option("attn_threshold")
    detach_membrane: bool = model_option("detach_membrane")
    surrogate_alpha: float = model_option("surrogate_alpha")
    lif: str = model_option("lif")
    compile: bool = opt(False, help="CPU training: compile the LIF neurons' elementwise passes with torch.compile "
                        "(inductor, needs a C++ compiler; a few seconds per layer in the first step). Same spikes, "
                        "gradients to float rounding; without a working compiler it warns and runs as without.")
    frames_per_step: bool = opt(False, help="One stored frame per time step instead of one random frame repeated "
                                "over T.")
    noise_snr: float | None = opt(None, help="Add Gaussian noise at this SNR (dB) to the visual input.")
    noise_on: str = opt("eval", choices=NOISE_ON, help="Where --noise-snr applies (--protocol reference: train).")
    workers: int | None = opt(0, min=0, help="DataLoader worker processes per process and split (0: read in the "
                              "training process; None: a resumed run's own count, else from the CPUs).")
    shuffle_buffer: int | None = opt(None, min=1, help="Training shuffle buffer in samples: for shards written in "
                                     "random order (avdata prepare) each DataLoader worker's own, of this size; for "
                                     "other shards one per process over all its workers, every batch drawn from it. "
                                     "Default: a quarter of the samples the process reads an epoch, at least 1,000 "
                                     "(or all of them) and at most 4,096. 1 turns it off.")
    device: str = opt("auto", help="auto | cpu | cuda.")
    amp: bool = opt(True, help="bf16 autocast on CUDA (CPU always runs float32; --protocol reference: float32).")
    seed: int = opt(42, help="Seed of initialisation, data order, frame choice and augmentation.")
    resume: bool = opt(False, help="Continue the run in --out from its last checkpoint.")
    init_from: str | None = opt(None, help="Start from the weights of this checkpoint (fine-tuning; e.g. one "
                                "written by scmrl-convert); the architecture options must match it.")
    max_steps: int | None = opt(None, min=1, help="Stop after this many optimizer steps in total (smoke runs); "
                                "the run is evaluated and checkpointed.")
    stop_after_epochs: int | None = opt(None, min=1, help="End this invocation after N epochs (a job time limit); "
                                        "continue with --resume.")
    eval_every: int = opt(1, min=1, help="Evaluate val/test every N epochs (and after the last).")
    classes: list[str] | None = opt(None, help="Class names in label order, for .tar files without a "
                                    "manifest.json beside them.")
    io_retries: int = opt(4, min=0, help="Retries of a shard that cannot be opened or breaks off (remote "
                          "shards), before the run stops.")
    io_backoff: float = opt(0.5, min=0.0, help="Seconds before the first retry, doubled for each further one "
                            "(at most 8 s).")

    def __post_init__(self) -> None:
        # paths are kept as plain strings: the config is stored in checkpoints, which hold no Python objects
        self.out = str(Path(self.out))
        if self.init_from is not None:
            self.init_from = str(Path(self.init_from))
        if self.noise_on not in NOISE_ON:
            raise AvdataError(f"--noise-on must be train, eval or both, got {self.noise_on!r}")
        check_bounds(self)  # the declared bounds (--epochs >= 1, --lr >= 0, ...) and finite floats
        if self.attention is not None and self.attention not in ATTENTIONS:  # named now, not after the shards load
            raise AvdataError(f"--attention {self.attention!r}: expected one of {', '.join(ATTENTIONS)}")
        get_protocol(self.protocol)


# fields the library takes but scmrl-train does not offer as flags (the recipe's fixed values)
LIBRARY_ONLY = ("base_lr", "warmup_lr", "mlp_ratio", "surrogate_alpha")


def _as_in_train(name: str, **changes: Any) -> Any:
    """A field declared as TrainConfig's field `name` (default, help, flag, bounds), with `changes`."""
    f = next(f for f in dataclasses.fields(TrainConfig) if f.name == name)
    default = changes.pop("default", f.default)
    return opt(default, **{**f.metadata, **changes})


@dataclass
class EvalConfig:
    """What `scmrl-eval` evaluates: a saved model on a split of some shards."""

    checkpoint: Path = opt(help="best.pt or checkpoint.pt from a scmrl-train run, or the output of scmrl-convert.")
    shards: str = _as_in_train("shards")
    split: str = opt("test", help="Split to evaluate: train | val | test.")
    device: str = _as_in_train("device")
    batch_size: int = _as_in_train("batch_size", default=128, help="Evaluation batch size.")
    workers: int = _as_in_train("workers", default=2, help="DataLoader worker processes.")
    noise_snr: float | None = _as_in_train("noise_snr")
    classes: list[str] | None = _as_in_train("classes")

    def __post_init__(self) -> None:
        check_bounds(self)


def resolve_protocol(cfg: TrainConfig) -> tuple[TrainConfig, Protocol]:
    """The config with the protocol's fixed settings applied (precision, where noise goes), and the protocol."""
    proto = get_protocol(cfg.protocol)
    changes: dict[str, Any] = {}
    if not proto.amp:
        changes["amp"] = False
    if proto.noise_on is not None:
        changes["noise_on"] = proto.noise_on
    if cfg.attention is None:
        changes["attention"] = proto.attention
    return replace(cfg, **changes), proto


def model_config(cfg: TrainConfig, source: ShardsLocation | Manifest) -> ModelConfig:
    """The network for these shards (a ShardsLocation or its Manifest): the defaults the manifest's dataset
    declares (`avdata.datasets.registry.model_defaults`), overridden by the options."""
    from avdata.datasets.registry import model_defaults
    from avdata.shards.manifest import Manifest, data_kind, event_bins

    manifest = source if isinstance(source, Manifest) else source.manifest
    kind = data_kind(manifest)
    defaults = model_defaults(manifest.dataset, events=kind == "events")
    proto = get_protocol(cfg.protocol)
    # the options by their shared names; those left None are decided by the dataset and the protocol below
    common: dict[str, Any] = {name: getattr(cfg, name) for name in MODEL_OPTIONS}
    common.update(num_classes=len(manifest.classes), attention=cfg.attention or proto.attention,
                  embed_dim=cfg.embed_dim or defaults.embed_dim,
                  tau_s=cfg.tau_s if cfg.tau_s is not None else defaults.tau_s)
    if kind == "events":
        stored = event_bins(manifest) if defaults.time_steps_from_bins else defaults.time_steps
        common["time_steps"] = cfg.time_steps or proto.event_time_steps or stored
        return ModelConfig(**common, audio_channels=1, visual_channels=2, audio_size=28, visual_size=28,
                           embedding="shallow")
    common["time_steps"] = cfg.time_steps or defaults.time_steps
    return ModelConfig(**common, audio_channels=1, visual_channels=3, audio_size=cfg.image_size,
                       visual_size=cfg.image_size, embedding="sps")
