"""The recipe contract: a dataset recipe lists its work items and turns one item into sample fields.

The engine (`avdata/prepare.py`) does everything else (parallelism, shards, resume, manifest, card), so
a recipe stays a small module: `plan()` says which clips go to which split, `process()` is a pure
function of one item and the options, which makes the output independent of how many processes ran.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar


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
    notes: dict[str, Any] = field(default_factory=dict)  # extra facts for the manifest (coverage, ...)


@dataclass
class ItemContext:
    """What `process()` gets besides the item: the raw root, the options, the sources' sha256, and `stats`,
    where `process()` may put numbers about the sample (e.g. the share of events a crop dropped) that the
    engine summarises per split in the manifest (`sample_stats`, see avdata/manifest.py)."""

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


class Recipe:
    """Base class. Subclasses set the class attributes and implement plan/process/features."""

    name: ClassVar[str]
    classes: ClassVar[list[str]]
    card: ClassVar[CardInfo]
    options_type: ClassVar[type]
    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")

    def plan(self, raw: Path, options: Any) -> Plan:
        raise NotImplementedError

    def features(self, options: Any) -> dict[str, dict[str, Any]]:
        raise NotImplementedError

    # process must be picklable: recipes expose a module-level function
    process: ClassVar[Callable[[WorkItem, ItemContext], dict[str, bytes]]]

    @staticmethod
    def warm(options: Any) -> None:
        """Load what `process` needs (tables, lists) once per worker process; the engine calls it as the
        workers start, while the parent is still planning. Default: nothing to load."""

    def prepare_raw(self, raw: Path, workdir: Path, options: Any) -> Path:
        """Turn what the user passed as --raw into a folder (e.g. unpack a zip); default: as given."""
        return raw


def options_dict(options: Any) -> dict[str, Any]:
    """Options as a plain JSON-able dict (dataclass fields, sorted)."""
    d = dataclasses.asdict(options) if dataclasses.is_dataclass(options) else dict(options)
    return json.loads(json.dumps(d, sort_keys=True))


def sample_json(meta: dict[str, Any]) -> bytes:
    """Canonical JSON bytes for a sample's `.json` field."""
    return (json.dumps(meta, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def cls_bytes(label: int) -> bytes:
    return str(int(label)).encode("ascii")


_REGISTRY: dict[str, str] = {
    "cremad": "avdata.datasets.cremad.recipe:CremadRecipe",
    "urbansound8k-av": "avdata.datasets.urbansound8k_av.recipe:UrbanSound8kAVRecipe",
    "mnistdvs-ntidigits": "avdata.datasets.mnistdvs_ntidigits.recipe:MnistDvsNTidigitsRecipe",
}


def register_recipe(name: str, target: str) -> None:
    """Add a recipe ("module:Class") to the registry, e.g. a lab's own dataset or a test recipe."""
    _REGISTRY[name] = target


def recipe_names() -> list[str]:
    return list(_REGISTRY)


def get_recipe(name: str) -> Recipe:
    import importlib

    if name not in _REGISTRY:
        raise KeyError(f"unknown dataset {name!r}; choose one of {', '.join(_REGISTRY)}")
    module, cls = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)()
