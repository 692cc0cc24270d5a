"""The recipe contract: a dataset recipe lists its work items and turns one item into sample fields.

The engine (`avdata.prepare.engine`) does everything else (parallelism, shards, resume, manifest, card),
so a recipe stays a small module: `plan()` says which clips go to which split, `process()` is a pure
function of one item and the options, which makes the output independent of how many processes ran.
`avdata prepare <name>` is generated from the recipe: one flag per field of `options_type` (each field's
help, choices and bounds in its `opt(...)` metadata), plus `raw_help`, `samples_per_shard` and, where
`reference` is set, `--protocol` (see `avdata.prepare.protocol`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar


SCMRL_CITATION = """@article{he2025scmrl,
  title={Enhancing Audio-Visual Spiking Neural Networks through Semantic-Alignment and Cross-Modal Residual Learning},
  author={He, Xiang and Zhao, Dongcheng and Li, Yiting and Shen, Guobin and Kong, Qingqun and Zeng, Yi},
  journal={arXiv preprint arXiv:2502.12488}, year={2025}
}"""


class SkipSample(Exception):
    """Raised by `process()` for input that cannot make a sample (the engine records the reason)."""

    def __init__(self, reason: str, path: str | None = None) -> None:
        self.reason = reason
        self.path = path
        super().__init__(f"{path}: {reason}" if path else reason)


@dataclass(frozen=True)
class WorkItem:
    """One sample to make. `sources` maps a role ("video", "audio", ...) to a path relative to the raw root."""

    key: str
    split: str
    label: int
    sources: dict[str, str]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    items: list[WorkItem]
    skipped: list[dict[str, Any]] = field(default_factory=list)  # {"key","split","path","reason"}
    # extra facts for the manifest; `clips_expected` / `clips_found` (any recipe may set them) make the
    # prepare summary warn when the raw folder holds only part of the dataset, and every line of
    # `warnings` (see :meth:`warn`) is shown by the summary: nothing asked for is cut short silently
    notes: dict[str, Any] = field(default_factory=dict)

    def warn(self, message: str) -> None:
        """Record that the plan gives less than the options asked for (kept in manifest.json, shown by the
        prepare summary)."""
        self.notes.setdefault("warnings", []).append(message)


@dataclass
class ItemContext:
    """What `process()` gets besides the item: the raw root, the options, the sources' sha256, and `stats`,
    where `process()` may put numbers about the sample (e.g. the share of events a crop dropped) that the
    engine summarises per split in the manifest (`sample_stats`, see `avdata.shards.manifest`)."""

    raw: Path
    options: Any
    source_sha256: dict[str, str]
    stats: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class CardInfo:
    """Facts for the dataset card (README.md in the shards folder)."""

    title: str
    description: str
    license: str  # human-readable licence statement
    license_id: str  # Hugging Face licence id, e.g. "odbl", "cc-by-4.0", "other"
    homepage: str
    citation: str
    task_categories: tuple[str, ...] = ("audio-classification", "video-classification")
    tags: tuple[str, ...] = ()
    # with license_id "other" the Hub's card template asks for a short name and a link to the terms
    license_name: str = ""
    license_link: str = ""


@dataclass(frozen=True)
class ModelDefaults:
    """What the S-CMRL trainer and `scmrl-convert` take for a dataset unless told otherwise: the paper's
    per-dataset settings (docs/reference.md §1-§3), declared with the dataset so that a new dataset brings
    its own. The trainer's options override each of them."""

    embed_dim: int  # embedding size C
    tau_s: float  # temperature of the semantic-alignment loss
    time_steps: int  # T of the authors' runs (`scmrl-convert`'s default; the trainer's for static data)
    image_size: int  # the side of the network's square inputs in the authors' runs
    #: event data: the trainer's default T is the number of bins stored in the shards, not `time_steps`
    time_steps_from_bins: bool = False


#: For a recipe that declares none (a lab's own dataset): the CREMA-D settings for static audio-visual data.
STATIC_MODEL_DEFAULTS = ModelDefaults(embed_dim=256, tau_s=0.07, time_steps=4, image_size=128)
#: ... and for binned events, the MNISTDVS-NTIDIGITS ones.
EVENT_MODEL_DEFAULTS = ModelDefaults(embed_dim=256, tau_s=0.1, time_steps=16, image_size=28,
                                     time_steps_from_bins=True)


class Recipe:
    """Base class. Subclasses set the class attributes and implement plan/process/features."""

    name: ClassVar[str]
    classes: ClassVar[list[str]]
    card: ClassVar[CardInfo]
    options_type: ClassVar[type]  # a dataclass; its fields are the flags of `avdata prepare <name>`
    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")
    summary: ClassVar[str] = ""  # one line for `avdata prepare --help`
    raw_help: ClassVar[str] = "Folder of raw files as downloaded (or a zip, where the dataset allows)."
    samples_per_shard: ClassVar[int] = 256  # the default of --samples-per-shard
    # The authors' values of the options where `--protocol reference` differs from ours (checked, never
    # changed); None: the dataset has no --protocol (e.g. its validation split is published). Needs a
    # `val_fraction` option.
    reference: ClassVar[dict[str, Any] | None] = None
    # The model settings the trainer and the converter default to for this dataset; None: the static or
    # event defaults above, by the kind of data in the shards.
    model_defaults: ClassVar[ModelDefaults | None] = None

    def plan(self, raw: Path, options: Any) -> Plan:
        raise NotImplementedError

    def features(self, options: Any) -> dict[str, dict[str, Any]]:
        raise NotImplementedError

    # process must be picklable: a static method, which workers take from the recipe's class
    @staticmethod
    def process(item: WorkItem, ctx: ItemContext) -> dict[str, bytes]:
        raise NotImplementedError

    @staticmethod
    def warm(options: Any) -> None:
        """Load what `process` needs (tables, lists) once per worker process; the engine calls it as the
        workers start, while the parent is still planning. Default: nothing to load."""

    def prepare_raw(self, raw: Path, workdir: Path, options: Any) -> Path:
        """Turn what the user passed as --raw into a folder (e.g. unpack a zip); default: as given."""
        return raw


#: Metadata key of an option field that limits a run without shaping its output (`--max-decoded-mb`): left
#: out of `options_dict`, so of manifest.json and of the plan's fingerprint.
NOT_RECORDED = "not_recorded"


def options_dict(options: Any) -> dict[str, Any]:
    """Options as a plain JSON-able dict (dataclass fields, sorted), without NOT_RECORDED fields (limits that
    shape no output) and those that have no effect with the other options' values (a field's
    `applies_when`): the card's command repeats what is here."""
    # a plain bool: is_dataclass's narrowing would also admit a dataclass type, which asdict refuses
    is_dataclass = dataclasses.is_dataclass(options)
    d = dataclasses.asdict(options) if is_dataclass else dict(options)
    if is_dataclass:
        for f in dataclasses.fields(options):
            cond = f.metadata.get("applies_when")
            if f.metadata.get(NOT_RECORDED) or (cond is not None and d.get(cond[0]) != cond[1]):
                d.pop(f.name, None)
    return json.loads(json.dumps(d, sort_keys=True))


def sample_json(meta: dict[str, Any]) -> bytes:
    """Canonical JSON bytes for a sample's `.json` field."""
    return (json.dumps(meta, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def source_records(source_sha256: dict[str, str], **extra: Any) -> list[dict[str, Any]]:
    """A sample's source files as a list of {file, sha256, ...} records in file order: the json keeps the
    same fields in every sample (a dict keyed by file name would give every clip its own keys, which
    schema-inferring readers such as Hugging Face `datasets` turn into None). `extra`: per-file fields,
    each a function of (file, sha256)."""
    return [{"file": rel, "sha256": digest, **{k: f(rel, digest) for k, f in extra.items()}}
            for rel, digest in sorted(source_sha256.items())]


def cls_bytes(label: int) -> bytes:
    return str(int(label)).encode("ascii")
