"""A tiny recipe over text files, to test the prepare engine apart from any media decoding."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avdata.datasets.recipe import CardInfo, ItemContext, Plan, Recipe, SkipSample, WorkItem, cls_bytes, sample_json
from avdata.shards.npy import encode_npy
from avdata.datasets.splits import stratified_holdout


@dataclass
class ToyOptions:
    val_fraction: float = 0.25
    seed: int = 42
    scale: int = 1


class ToyRecipe(Recipe):
    name = "toy"
    classes = ["a", "b"]
    options_type = ToyOptions
    card = CardInfo(title="toy", description="toy data", license="public domain", license_id="cc0-1.0",
                    homepage="http://127.0.0.1/", citation="@misc{toy}")

    def plan(self, raw: Path, options: ToyOptions) -> Plan:
        items = []
        files = sorted(raw.glob("*.txt"))
        labelled = [(f.stem, int(f.stem[-1]) % 2) for f in files]
        val = stratified_holdout(labelled, options.val_fraction, options.seed)
        for f in files:
            split = "test" if f.stem.startswith("t") else ("val" if f.stem in val else "train")
            items.append(WorkItem(f.stem, split, int(f.stem[-1]) % 2, {"text": f.name}))
        return Plan(items)

    def features(self, options: ToyOptions) -> dict:
        return {"cls": {"dtype": "int", "shape": []}, "json": {"dtype": "json", "shape": []},
                "x.npy": {"dtype": "int64", "shape": [3], "meaning": "numbers"}}

    @staticmethod
    def process(item: WorkItem, ctx: ItemContext) -> dict[str, bytes]:
        text = (ctx.raw / item.sources["text"]).read_text()
        if text.startswith("die-once"):  # a worker killed mid-clip the first time only (no marker file yet)
            marker = Path(text.split()[1])
            if not marker.exists():
                marker.touch()
                os.kill(os.getpid(), signal.SIGKILL)
            text = " ".join(text.split()[2:])
        if text.startswith("die ") and os.getpid() != int(text.split()[1]):  # a worker killed mid-clip
            os.kill(os.getpid(), signal.SIGKILL)
        if text.startswith("sleep"):  # a slow clip: lets a test stop the run while workers are busy
            time.sleep(float(text.split()[1]))
            text = "1 2 3"
        if text.startswith("bad"):
            raise SkipSample("unreadable toy file", item.sources["text"])
        x = np.array([int(v) * ctx.options.scale for v in text.split()], dtype=np.int64)
        meta = {"key": item.key, "split": item.split, "sha256": ctx.source_sha256}
        return {"cls": cls_bytes(item.label), "json": sample_json(meta), "x.npy": encode_npy(x)}


def make_toy_raw(root: Path, n_train: int = 20, n_test: int = 6, bad: tuple[str, ...] = ()) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    names = [f"s{i:03d}" for i in range(n_train)] + [f"t{i:03d}" for i in range(n_test)]
    for i, name in enumerate(names):
        (root / f"{name}.txt").write_text("bad" if name in bad else f"{i} {i + 1} {i + 2}")
    return root
