"""MNISTDVS-NTIDIGITS: MNIST-DVS event recordings paired with N-TIDIGITS18 spoken digits (10 classes).

Sources in the raw folder: the MNIST-DVS zips `grabbed_data<d>.zip` (or their unpacked folders
`grabbed_data<d>/scale<s>/*.aedat`, or the recordings under their own names `mnist_<d>_scale<ss>_*.aedat` in
any folder; a second copy of a recording is recorded as skipped) and the N-TIDIGITS18 HDF5 file. As the
reference: the MNIST-DVS recordings of each digit are shuffled (seed 42) and `per_class` of them taken, the
first half train and the second half test; the single-digit N-TIDIGITS samples of each class and split
(sorted by id) are tiled to as many; the i-th visual and i-th audio sample of a class are paired. 'o' (oh)
has no MNIST counterpart and is dropped; 'z' is 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from avdata.option_fields import opt
from avdata.datasets.options import seed_option, val_fraction_option
from avdata.datasets.recipe import (SCMRL_CITATION, CardInfo, ItemContext, Plan, Recipe, SkipSample, WorkItem,
                                    ModelDefaults, cls_bytes, sample_json, source_records)
from avdata.errors import AvdataError
from avdata.fetch.unpack import unpack_zip
from avdata.media.events import EventRangeError, bin_channels, bin_dvs, read_aedat2, reduce_to_sensor
from avdata.media.ntidigits import NTidigitsFile, ntidigits_label
from avdata.shards.npy import encode_npy
from avdata.datasets.splits import seeded_shuffle, stratified_holdout

CLASSES = [str(d) for d in range(10)]
DIGIT_OF = {"z": 0, **{str(d): d for d in range(1, 10)}, "0": 0}
AEDAT_RE = re.compile(r"(^|/)grabbed_data(\d)/scale(\d+)/[^/]+\.aedat$", re.IGNORECASE)
#: The recordings' own names (`mnist_<digit>_scale<ss>_<nnnn>.aedat`), which say digit and scale wherever
#: the file lies: copies outside the zips' folders (a mirror's flat folder) are read too.
AEDAT_NAME_RE = re.compile(r"(^|/)mnist_(\d)_scale(\d+)_[^/]*\.aedat$", re.IGNORECASE)


def digit_and_scale(rel: str) -> tuple[int, int] | None:
    """(digit, scale) of an MNIST-DVS recording from its folders or its own name; None for another file."""
    m = AEDAT_RE.search(rel) or AEDAT_NAME_RE.search(rel)
    return (int(m.group(2)), int(m.group(3))) if m else None

CITATION = """@article{serrano2015poker,
  title={Poker-DVS and MNIST-DVS. Their History, How They Were Made, and Other Details},
  author={Serrano-Gotarredona, Teresa and Linares-Barranco, Bernab{\\'e}},
  journal={Frontiers in Neuroscience}, volume={9}, pages={481}, year={2015}
}
@article{anumula2018feature,
  title={Feature Representations for Neuromorphic Audio Spike Streams},
  author={Anumula, Jithendar and Neil, Daniel and Delbruck, Tobi and Liu, Shih-Chii},
  journal={Frontiers in Neuroscience}, volume={12}, pages={23}, year={2018}
}"""


#: --keep-events members: (field, dtype, meaning), one column of the raw events each.
RAW_EVENT_COLUMNS = [
    ("visual_events.t.npy", "int64", "raw DVS event times, us from the first event (128x128 sensor)"),
    ("visual_events.x.npy", "int16", "raw DVS event x (0-127)"),
    ("visual_events.y.npy", "int16", "raw DVS event y (0-127)"),
    ("visual_events.p.npy", "int8", "raw DVS event polarity (0 OFF, 1 ON)"),
    ("audio_events.t.npy", "float64", "raw cochlea event times, s"),
    ("audio_events.channel.npy", "int16", "raw cochlea event channel (0-63)"),
]


@dataclass
class EventOptions:
    """The flags of `avdata prepare mnistdvs-ntidigits` (all recorded in the manifest)."""

    bins: int = opt(16, min=1, help="Time bins T per sample (equal windows over each recording).")
    scale: int = opt(16, choices=(4, 8, 16), help="MNIST-DVS digit scale to use.")
    sensor: str = opt("downsample", choices=("downsample", "crop"), help="How the 128x128 DVS becomes 28x28: "
                      "downsample (x*28//128) or crop (the central 28x28 window; events outside it are dropped, "
                      "and the share dropped is recorded per sample and per split and shown in the summary).")
    per_class: int = opt(1000, min=2, help="MNIST-DVS recordings per class (half train, half test; the "
                         "reference uses 1000).")
    val_fraction: float = val_fraction_option()
    seed: int = seed_option()
    keep_events: bool = opt(False, help="Also store the raw events of both modalities.")


def digit_of(label: str) -> int | None:
    """N-TIDIGITS label string -> class for an isolated digit; None for 'o' and multi-digit strings."""
    label = label.strip().lower()
    if len(label) != 1 or label not in DIGIT_OF:
        return None
    return DIGIT_OF[label]


def find_h5(raw: Path) -> Path:
    cands = sorted(p for p in raw.rglob("*") if p.suffix.lower() in (".hdf5", ".h5"))
    named = [p for p in cands if "tidigit" in p.name.lower()]
    if named or cands:
        return (named or cands)[0]
    raise AvdataError(f"{raw}: no N-TIDIGITS18 HDF5 file found; fetch it with `avdata download ntidigits --to {raw}`")


@lru_cache(maxsize=4)
def _h5(path: str) -> NTidigitsFile:
    return NTidigitsFile(path)


def ntidigits_index(h5_path: Path, split: str) -> list[tuple[str, int]]:
    """(sample id, class) of every isolated-digit sample of a split, sorted by id."""
    with NTidigitsFile(h5_path) as f:  # not the cached handle: worker processes fork after this
        ids = f.ids(split)
    out = []
    for sid in ids:
        d = digit_of(ntidigits_label(sid))
        if d is not None:
            out.append((sid, d))
    return sorted(out)


class MnistDvsNTidigitsRecipe(Recipe):
    name = "mnistdvs-ntidigits"
    classes = CLASSES
    options_type = EventOptions
    summary = "MNISTDVS-NTIDIGITS: binned DVS digit events paired with binned cochlea spoken-digit events."
    raw_help = ("Folder holding the MNIST-DVS zips grabbed_data0..9.zip (or their unpacked folders) and the "
                "N-TIDIGITS18 HDF5 file.")
    samples_per_shard = 1000
    reference = {"per_class": 1000}
    # docs/reference.md §1: C 256 (of the 32-512 swept), tau_s 0.1, T 16; the trainer takes the stored bins
    model_defaults = ModelDefaults(embed_dim=256, tau_s=0.1, time_steps=16, image_size=28, time_steps_from_bins=True)
    card = CardInfo(
        title="MNISTDVS-NTIDIGITS neuromorphic audio-visual shards (avdata)",
        description=(
            "MNIST-DVS digit recordings from a DVS128 event camera paired with N-TIDIGITS18 spoken digits from a "
            "64-channel silicon cochlea, as in S-CMRL (arXiv 2502.12488). Each sample holds both event streams "
            "binned into T time windows as integer counts."
        ),
        license=("MNIST-DVS: free for research use from the IMSE-CNM CAVIAR site; N-TIDIGITS18: see its "
                 "distribution terms (TIDIGITS is an LDC corpus). Check both before redistributing shards."),
        license_id="other",
        license_name="mnist-dvs-and-n-tidigits18-terms",
        license_link="http://www2.imse-cnm.csic.es/caviar/MNISTDVS.html",
        homepage="http://www2.imse-cnm.csic.es/caviar/MNISTDVS.html",
        citation=CITATION + "\n" + SCMRL_CITATION,
        task_categories=("audio-classification", "image-classification"),
        tags=("neuromorphic", "event-camera", "spiking-neural-networks"),
    )

    def prepare_raw(self, raw: Path, workdir: Path, options: EventOptions) -> Path:
        """Unpack the chosen scale's AEDAT files from the MNIST-DVS zips (once; other scales stay zipped)."""
        zips = sorted(raw.glob("grabbed_data[0-9].zip")) if raw.is_dir() else []
        if not zips:
            return raw
        target = workdir / "mnistdvs"

        def chosen_scale(name: str) -> bool:
            found = digit_and_scale(name)
            return found is not None and found[1] == options.scale

        for z in zips:
            unpack_zip(z, target, keep=chosen_scale)  # safely (avdata.fetch.unpack); once per zip and scale
        h5 = find_h5(raw)
        link = target / h5.name
        if not link.exists():
            link.symlink_to(h5.resolve())
        return target

    def plan(self, raw: Path, options: EventOptions) -> Plan:
        if options.scale not in (4, 8, 16):
            raise AvdataError(f"--scale must be 4, 8 or 16, got {options.scale}")
        if options.sensor not in ("downsample", "crop"):
            raise AvdataError(f"--sensor must be 'downsample' or 'crop', got {options.sensor!r}")
        recordings: dict[int, list[str]] = {d: [] for d in range(10)}
        first_copy: dict[str, str] = {}  # file name -> the copy used (a zip's folder and a flat copy of it)
        duplicates: list[dict[str, Any]] = []
        # the zips' own layout first: the copy used is the one `grabbed_data<d>/scale<s>/` holds
        for p in sorted(raw.rglob("*.aedat"),
                        key=lambda p: (not AEDAT_RE.search(p.relative_to(raw).as_posix()), len(p.parts), p)):
            rel = p.relative_to(raw).as_posix()
            found = digit_and_scale(rel)
            if found is None or found[1] != options.scale:
                continue
            if p.name.lower() in first_copy:
                duplicates.append({"key": re.sub(r"[^A-Za-z0-9_\-]", "_", p.stem), "split": "", "path": rel,
                                   "reason": f"a second copy of {p.name}: {first_copy[p.name.lower()]} is used"})
                continue
            first_copy[p.name.lower()] = rel
            recordings[found[0]].append(rel)
        if not any(recordings.values()):
            raise AvdataError(f"{raw}: no MNIST-DVS scale{options.scale} recordings (grabbed_data<d>/scale"
                              f"{options.scale}/*.aedat, mnist_<d>_scale{options.scale:02d}_*.aedat or "
                              "grabbed_data<d>.zip); fetch them with "
                              f"`avdata download mnistdvs --to {raw}`")
        h5 = find_h5(raw)
        h5_rel = h5.relative_to(raw).as_posix() if h5.is_relative_to(raw) else str(h5)
        audio = {split: ntidigits_index(raw / h5_rel, split) for split in ("train", "test")}
        pairs: list[tuple[str, str, int, str, str, str]] = []  # key, split, digit, aedat, audio id, audio split
        notes: dict[str, Any] = {"visual_per_class": {}, "audio_per_class": {}}
        plan = Plan([], duplicates, notes)
        short = {d: len(recordings[d]) for d in range(10) if len(recordings[d]) < options.per_class}
        if short:
            plan.warn(f"--per-class {options.per_class}: only "
                      + ", ".join(f"{n} (digit {d})" for d, n in short.items())
                      + f" MNIST-DVS scale{options.scale} recordings found; all of those are used (of an odd "
                      "count, all but one)")
        for d in range(10):
            chosen = seeded_shuffle(recordings[d], options.seed, f"mnistdvs:{d}")[: options.per_class]
            half = len(chosen) // 2
            if len(chosen) % 2:  # half train, half test: an odd count leaves one out, said rather than lost
                plan.skipped.append({"key": f"unpaired_{d}", "split": "", "path": chosen[-1], "reason":
                                     f"odd one out: {len(chosen)} digit-{d} recordings, half train and half test"})
            notes["visual_per_class"][str(d)] = len(chosen)
            for split, part in (("train", chosen[:half]), ("test", chosen[half: 2 * half])):
                ids = [sid for sid, cls in audio[split] if cls == d]
                notes["audio_per_class"].setdefault(split, {})[str(d)] = len(ids)
                if part and not ids:
                    raise AvdataError(f"{h5}: no isolated '{d}' samples in its {split} split to pair with")
                for i, rec in enumerate(part):
                    pairs.append((f"{split}_{d}_{i:04d}", split, d, rec, ids[i % len(ids)], split))
        # whole N-TIDIGITS recordings are held out: tiled, one is in several train pairs, and a val pair
        # whose sound the network trained on (beside another digit picture) is no held-out sample
        audio_of = {p[0]: p[4] for p in pairs}
        val = stratified_holdout([(p[0], p[2]) for p in pairs if p[1] == "train"], options.val_fraction, options.seed,
                                 group=audio_of.__getitem__)
        plan.items = [WorkItem(key, "val" if key in val else split, d, {"visual": rec, "audio": h5_rel},
                               {"audio_id": aid, "audio_split": asplit, "visual_file": rec})
                      for key, split, d, rec, aid, asplit in pairs]
        return plan

    def features(self, options: EventOptions) -> dict[str, dict[str, Any]]:
        t = options.bins
        feats: dict[str, dict[str, Any]] = {
            "cls": {"dtype": "int", "shape": [], "meaning": "digit 0-9 (from the audio label; 'z' is 0)"},
            "json": {"dtype": "json", "shape": [], "meaning": "pairing, source files and ids, event counts"},
            "visual.npy": {"dtype": "uint16", "shape": [t, 2, 28, 28],
                           "meaning": f"MNIST-DVS scale {options.scale} events reduced to 28x28 by "
                                      f"{options.sensor}, counted in {t} equal time bins; channel 0 OFF, 1 ON"},
            "audio.npy": {"dtype": "uint16", "shape": [t, 64],
                          "meaning": f"N-TIDIGITS18 cochlea events counted per channel in {t} equal time bins"},
        }
        if options.keep_events:  # one plain array per column: readers such as `datasets` cannot type records
            for name, dtype, meaning in RAW_EVENT_COLUMNS:
                feats[name] = {"dtype": dtype, "shape": ["E"], "meaning": meaning}
        return feats

    @staticmethod
    def process(item: WorkItem, ctx: ItemContext) -> dict[str, bytes]:
        opts: EventOptions = ctx.options
        events = read_aedat2(ctx.raw / item.sources["visual"])
        if len(events) == 0:
            raise SkipSample("recording holds no events", item.sources["visual"])
        reduced = reduce_to_sensor(events, size=28, method=opts.sensor)
        # a crop silently loses the digit's edges (about 10-20% of a real scale-4 recording, far more at
        # scale 16): say how much, per sample here and per split in the manifest
        crop = {}
        if opts.sensor == "crop":
            dropped = round(1.0 - len(reduced) / len(events), 6)
            crop = {"visual_events_kept": int(len(reduced)), "crop_dropped_share": dropped}
            ctx.stats["crop_dropped_share"] = dropped
        split, sid = item.meta["audio_split"], item.meta["audio_id"]
        addresses, timestamps = _h5(str(ctx.raw / item.sources["audio"])).sample(split, sid)  # checked, budgeted
        if addresses.size == 0:
            raise SkipSample(f"N-TIDIGITS sample {sid} holds no events", item.sources["audio"])
        try:
            visual = bin_dvs(reduced, opts.bins, 28)
        except EventRangeError as exc:
            raise SkipSample(f"MNIST-DVS recording: {exc}", item.sources["visual"]) from exc
        try:
            audio = bin_channels(timestamps, addresses, opts.bins, 64)
        except EventRangeError as exc:
            raise SkipSample(f"N-TIDIGITS sample {sid}: {exc}", item.sources["audio"]) from exc
        meta = {"key": item.key, "label": item.label, "label_name": CLASSES[item.label], "split": item.split,
                "visual_file": item.sources["visual"], "audio_id": sid, "audio_split": split,
                "visual_events": int(len(events)), **crop, "audio_events": int(addresses.size),
                "visual_duration_s": round(float(events["t"][-1] - events["t"][0]) / 1e6, 6),
                "audio_duration_s": round(float(timestamps.max() - timestamps.min()), 6),
                "sources": source_records(ctx.source_sha256)}
        fields = {"cls": cls_bytes(item.label), "json": sample_json(meta),
                  "visual.npy": encode_npy(visual), "audio.npy": encode_npy(audio)}
        if opts.keep_events:
            columns = [events["t"], events["x"], events["y"], events["p"], timestamps, addresses.astype(np.int16)]
            for (name, dtype, _), column in zip(RAW_EVENT_COLUMNS, columns):
                fields[name] = encode_npy(np.ascontiguousarray(column, dtype=dtype))
        return fields


RECIPE = MnistDvsNTidigitsRecipe
