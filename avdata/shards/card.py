"""The dataset card: README.md in a shards folder.

Its YAML header is the one the Hugging Face Hub reads (license, task categories, size category and a
`configs` entry mapping each split to its shard files), so the folder pushed as-is to a dataset
repository, or loaded locally with `datasets.load_dataset(folder)`, shows the right splits.
"""

from __future__ import annotations

from typing import Any

import yaml

from avdata.shards.manifest import Manifest

# The Hub's size_categories values (datasets/utils/resources/size_categories.json); anything else fails
# the Hub's metadata validation.
SIZE_BOUNDS = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
               (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
               (10_000_000_000, "1B<n<10B"), (100_000_000_000, "10B<n<100B"), (1_000_000_000_000, "100B<n<1T")]


def size_category(n: int) -> str:
    for bound, name in SIZE_BOUNDS:
        if n < bound:
            return name
    return "n>1T"


def normalized_command(manifest: Manifest) -> str:
    """The prepare command that reproduces this folder, with the machine-specific paths as placeholders."""
    parts = ["avdata", "prepare", manifest.dataset, "--raw", "RAW", "--out", "OUT"]
    for key, value in sorted(manifest.options.items()):
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + key.replace("_", "-"))
        elif value is None:
            continue
        elif isinstance(value, (list, tuple)):
            parts += [flag, ",".join(str(v) for v in value)]
        else:
            parts += [flag, str(value)]
    return " ".join(parts)


def hub_data_files(manifest: Manifest) -> list[dict[str, Any]]:
    """Each split's shards for the card's `configs`, leaving out shards that hold no sample (every clip of
    them skipped) and splits with none: `datasets` infers the columns from the first listed shard of the
    last split and fails on an empty one, and refuses to load a split with no rows at all."""
    files = [{"split": split, "path": [s.file for s in entry.shards if s.num_samples > 0]}
             for split, entry in manifest.splits.items()]
    return [f for f in files if f["path"]]


def card_yaml(manifest: Manifest, card: dict[str, Any]) -> dict[str, Any]:
    total = sum(s.num_samples for s in manifest.splits.values())
    data_files = hub_data_files(manifest)
    licence: dict[str, Any] = {"license": card["license_id"]}
    if card["license_id"] == "other":  # the Hub's card template asks what "other" is and where its terms are
        licence["license_name"] = card.get("license_name") or "other"
        licence["license_link"] = card.get("license_link") or card.get("homepage", "")
    return {
        **licence,
        "pretty_name": card["title"],
        "task_categories": list(card["task_categories"]),
        "size_categories": [size_category(total)],
        "tags": ["webdataset", "avdata", *card.get("tags", ())],
        **({"configs": [{"config_name": "default", "data_files": data_files}]} if data_files else {}),
    }


def _first_shard(manifest: Manifest) -> str:
    """The shard the card's snippet reads: the first that holds a sample, so that `next(iter(ds))` gives one."""
    for entry in manifest.splits.values():
        for shard in entry.shards:
            if shard.num_samples > 0:
                return shard.file
    return "train-000000.tar"


def render_card(manifest: Manifest, card: dict[str, Any], command: str | None = None) -> str:
    """README.md text for a shards folder (deterministic: no dates, no absolute paths)."""
    header = yaml.safe_dump(card_yaml(manifest, card), sort_keys=False, allow_unicode=True)
    classes = manifest.classes
    lines = [
        "---", header.rstrip("\n"), "---", "",
        f"# {card['title']}", "",
        card["description"].strip(), "",
        "## Contents", "",
        "| split | samples | shards | " + " | ".join(classes) + " |",
        "|---|---|---|" + "---|" * len(classes),
    ]
    for split, entry in manifest.splits.items():
        counts = " | ".join(str(entry.class_counts.get(c, 0)) for c in classes)
        lines.append(f"| {split} | {entry.num_samples} | {len(entry.shards)} | {counts} |")
    empty = [split for split, entry in manifest.splits.items() if entry.num_samples == 0]
    if empty:
        lines += ["", "No sample of " + ", ".join(f"`{s}`" for s in empty) + " was kept (see the skipped clips "
                  "below), so the YAML `configs` leave it out: `datasets` cannot load a split with no rows."]
    stats = [(split, name, st) for split, entry in manifest.splits.items()
             for name, st in (entry.sample_stats or {}).items()]
    if stats:  # e.g. the share of events a crop dropped: a user should see it before training on the shards
        lines += ["", "Measured on each sample (per-sample values in its json):", ""]
        lines += [f"- {split} `{name}`: min {st['min']}, median {st['median']}, mean {st['mean']}, max {st['max']}"
                  for split, name, st in stats]
    lines += ["", "Classes (index: name): " + ", ".join(f"{i}: {c}" for i, c in enumerate(classes)), "",
              "## Sample fields", "", "| field | dtype | shape | meaning |", "|---|---|---|---|"]
    for name, feat in manifest.features.items():
        shape = "[" + ", ".join(str(d) for d in feat.get("shape", [])) + "]" if feat.get("shape") else ""
        lines.append(f"| `{name}` | {feat.get('dtype', '')} | {shape} | {feat.get('meaning', '')} |")
    skipped = manifest.skipped
    lines += ["", "## How it was made", "",
              f"Made by avdata {manifest.tool['version']} with:", "", "```",
              command or normalized_command(manifest), "```", "",
              "Every option used, the sha256 and byte count of every shard and the sha256 of every source "
              "file are in `manifest.json`. Check a copy with `avdata verify <folder>`.", ""]
    if skipped:
        lines += [f"{len(skipped)} source clip(s) were skipped (reasons in `manifest.json`):", ""]
        lines += [f"- `{s['key']}` ({s.get('split', '')}): {s['reason']}" for s in skipped[:50]]
        if len(skipped) > 50:
            lines.append(f"- ... and {len(skipped) - 50} more")
        lines.append("")
    lines += ["## Reading it", "",
              "Every sample has the same members and the same json fields, so stock webdataset, Hugging Face "
              "`datasets` (`load_dataset(\"<this folder>\")`, also with `streaming=True`) and the trainer read "
              "all of them. Where a sample has K frame members, its json `num_frames` says how many are the "
              "clip's own (the rest repeat its last frame).", "",
              "```python", "import os",
              "os.environ[\"WDS_SECURE\"] = \"1\"  # shards from others: never unpickle .pyd/.pickle members "
              "(set before importing webdataset)",
              "import webdataset as wds",
              "ds = wds.WebDataset(\"" + _first_shard(manifest) + "\", shardshuffle=False).decode(\"rgb8\")",
              "sample = next(iter(ds))  # .npy -> numpy array, .jpg -> uint8 [H, W, 3] array, .cls -> int, "
              ".json -> dict",
              "```", "", "or train on it: `scmrl-train --shards <this folder or its URL>`.", "",
              "## License", "", card["license"].strip(), "", f"Source: {card['homepage']}", "",
              "## Citation", "", "```bibtex", card["citation"].strip(), "```", ""]
    return "\n".join(lines)
