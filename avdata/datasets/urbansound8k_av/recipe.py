"""UrbanSound8K-AV (SMMT, Guo et al., IEEE TCDS 2023): an image paired with each UrbanSound8K sound.

Sources: the Kaggle dataset lingyueguo/urbansound8k-av, as its zip or unpacked:
`Dataset_v3_vision/<class>/<name>.jpg` and `Dataset_v3_sound/<class>/<name>.wav`, paired by file name. A
class folder may be spelt in any case, with spaces or hyphens for underscores; any other folder there is
recorded as skipped (with its path) and a class left without pairs is a plan warning.
Split as the reference (the first 70% of each class's files train, the rest test), made reproducible by
sorting the names; a seeded, stratified validation part of whole recordings is carved from train. The cut
moves (by default; `--train-cut file` and `--protocol reference` keep the reference's) to the nearest
boundary between UrbanSound8K recordings (names
`<fsID>-<classID>-<occurrenceID>-<sliceID>`: the slices of one Freesound recording sort together), so that
no recording has slices in both train and test, as UrbanSound8K's authors ask (on the real file list a plain
cut put 146 of the 2,621 test slices, from 8 recordings, beside slices of the same recording in train).
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avdata.option_fields import opt
from avdata.datasets.options import (frame_format_option, jpeg_quality_option, seed_option, spec_dtype_option,
                                     spectrogram_option, val_fraction_option)
from avdata.datasets.recipe import (SCMRL_CITATION, CardInfo, ItemContext, Plan, Recipe, SkipSample, WorkItem,
                                    ModelDefaults, cls_bytes, sample_json, source_records)
from avdata.errors import AvdataError
from avdata.fetch.unpack import unpack_zip
from avdata.media.audio import audio_features, spectrogram_bins
from avdata.shards.frames import frame_counts, frame_fields, frames_feature, spec_field, spec_feature
from avdata.datasets.splits import first_fraction, stratified_holdout
from avdata.media.image import load_image
from avdata.datasets.options import max_decoded_mb_option
from avdata.media.budget import mb_bytes

CLASSES = ["air_conditioner", "car_horn", "children_playing", "dog_bark", "drilling", "engine_idling",
           "gun_shot", "jackhammer", "siren", "street_music"]
VISION, SOUND = "Dataset_v3_vision", "Dataset_v3_sound"
IMAGE_EXT = (".jpg", ".jpeg", ".png")

CITATION = """@article{guo2023transformer,
  title={Transformer-based Spiking Neural Networks for Multimodal Audio-Visual Classification},
  author={Guo, Lingyue and Gao, Zeyu and Qu, Jinye and Zheng, Suiwu and Jiang, Runhao and Lu, Yanfeng and Qiao, Hong},
  journal={IEEE Transactions on Cognitive and Developmental Systems}, year={2023}
}
@inproceedings{salamon2014dataset,
  title={A Dataset and Taxonomy for Urban Sound Research},
  author={Salamon, Justin and Jacoby, Christopher and Bello, Juan Pablo},
  booktitle={22nd ACM International Conference on Multimedia}, pages={1041--1044}, year={2014}
}"""


@dataclass
class UrbanSoundOptions:
    """The flags of `avdata prepare urbansound8k-av` (all recorded in the manifest)."""

    train_fraction: float = opt(0.7, min=0.05, max=0.95, help="First fraction of each class's files (sorted by "
                                "name) used for training, the rest for test, as the reference.")
    train_cut: str = opt("recording", choices=("recording", "file"), help="Where that cut falls: at the UrbanSound8K "
                         "recording boundary nearest to it, so no recording has slices in both train and test "
                         "(recording), or at the file, as the reference does (file; --protocol reference: 146 test "
                         "slices then share a recording with train slices, which inflates test accuracy).")
    val_fraction: float = val_fraction_option()
    seed: int = seed_option()
    short_side: int = opt(256, min=16, help="Resize images so the short side is this many pixels.")
    spectrogram: str = spectrogram_option()
    frame_format: str = frame_format_option()
    jpeg_quality: int = jpeg_quality_option()
    spec_dtype: str = spec_dtype_option()
    max_decoded_mb: int = max_decoded_mb_option()


#: UrbanSound8K's file names: the first field is the Freesound recording the slice was cut from.
US8K_NAME = re.compile(r"(\d+)-\d+-\d+-\d+")


def recording_of(key: str) -> str:
    """The recording a sample key (`<class>-<name>`) comes from: the fsID of an UrbanSound8K name, else the
    name itself (a file of its own)."""
    stem = key.split("-", 1)[-1]
    m = US8K_NAME.fullmatch(stem)
    return m.group(1) if m else stem


def sample_key(cls: str, stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-]", "_", f"{cls}-{stem}")


def find_root(raw: Path) -> Path:
    """The folder that holds Dataset_v3_vision and Dataset_v3_sound (the zip may add a top folder)."""
    for cand in [raw, *sorted(p for p in raw.iterdir() if p.is_dir()), *sorted(raw.glob("*/*"))]:
        if (cand / VISION).is_dir() and (cand / SOUND).is_dir():
            return cand
    raise AvdataError(
        f"{raw}: no {VISION}/ and {SOUND}/ folders found; pass the Kaggle zip of lingyueguo/urbansound8k-av "
        "or the folder it unpacks to (`avdata download urbansound8k-av --to DIR`)"
    )


def used_member(name: str) -> bool:
    """Zip members the plan reads: images under Dataset_v3_vision/ and WAVs under Dataset_v3_sound/."""
    parts = name.split("/")
    suffix = "." + parts[-1].rsplit(".", 1)[-1].lower() if "." in parts[-1] else ""
    return (VISION in parts[:-1] and suffix in IMAGE_EXT) or (SOUND in parts[:-1] and suffix == ".wav")


def _by_stem(paths: list[Path], suffixes: tuple[str, ...], cls: str, where: Callable[[Path], str],
             skipped: list[dict[str, Any]]) -> dict[str, Path]:
    """name stem -> file, for the files with one of `suffixes`; a second file of the same stem (x.jpg and
    x.png) is recorded in `skipped` rather than silently replacing the first."""
    out: dict[str, Path] = {}
    for p in paths:
        if p.suffix.lower() not in suffixes:
            continue
        if p.stem in out:
            skipped.append({"key": sample_key(cls, p.stem), "split": "", "path": where(p),
                            "reason": f"a second file named {p.stem!r}: {where(out[p.stem])} is used"})
            continue
        out[p.stem] = p
    return out


def _folder_class(name: str) -> str | None:
    """The class a folder under Dataset_v3_*/ holds: its name in any case, with spaces or hyphens for the
    underscores; None for any other folder."""
    norm = re.sub(r"[\s\-]+", "_", name.strip()).lower()
    return norm if norm in CLASSES else None


def class_folders(side: Path, where: Callable[[Path], str], skipped: list[dict[str, Any]]) -> dict[str, Path]:
    """class -> its folder under `side` (Dataset_v3_vision/ or Dataset_v3_sound/). A folder that names no
    class, or a second one for a class, is recorded in `skipped` with its path: its files are not read,
    and a silent omission would leave a class short without a word."""
    out: dict[str, Path] = {}
    folders = sorted((p for p in side.iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=lambda p: (p.name not in CLASSES, p.name))  # an exact name first
    for folder in folders:
        cls = _folder_class(folder.name)
        if cls is None and next(folder.iterdir(), None) is None:
            continue  # an empty folder drops nothing
        if cls is None or cls in out:
            why = (f"a second folder for class {cls!r}: {where(out[cls])}/ is used" if cls else
                   "not a class folder: UrbanSound8K-AV's are " + ", ".join(CLASSES) + "; its files are not read")
            skipped.append({"key": sample_key("folder", folder.name), "split": "", "path": where(folder) + "/",
                            "reason": why})
            continue
        out[cls] = folder
    return out


class UrbanSound8kAVRecipe(Recipe):
    name = "urbansound8k-av"
    classes = CLASSES
    options_type = UrbanSoundOptions
    summary = "UrbanSound8K-AV: each sound's paired image + spectrogram, 10 urban sound classes."
    raw_help = ("The Kaggle zip of lingyueguo/urbansound8k-av or the folder it unpacks to (holding "
                "Dataset_v3_vision/ and Dataset_v3_sound/).")
    reference = {"train_fraction": 0.7, "train_cut": "file", "spectrogram": "reference"}
    model_defaults = ModelDefaults(embed_dim=64, tau_s=0.08, time_steps=4, image_size=128)  # docs/reference.md §1
    card = CardInfo(
        title="UrbanSound8K-AV audio-visual shards (avdata)",
        description=(
            "UrbanSound8K-AV: the 8,732 UrbanSound8K sound excerpts (10 urban sound classes), each paired with an "
            "image of its class by the SMMT work (Guo et al., IEEE TCDS 2023). Each sample holds the image and a "
            "log spectrogram of the sound, for audio-visual classification as in S-CMRL (arXiv 2502.12488)."
        ),
        license=("UrbanSound8K is released under CC BY-NC 3.0 for non-commercial use; check the licence of the "
                 "Kaggle dataset lingyueguo/urbansound8k-av for the images before redistributing."),
        license_id="cc-by-nc-3.0",
        homepage="https://www.kaggle.com/datasets/lingyueguo/urbansound8k-av",
        citation=CITATION + "\n" + SCMRL_CITATION,
        task_categories=("audio-classification", "image-classification"),
        tags=("audio-visual", "urbansound8k"),
    )

    def prepare_raw(self, raw: Path, workdir: Path, options: Any) -> Path:
        if raw.is_file() and zipfile.is_zipfile(raw):
            target = workdir / "urbansound8k-av"
            # only the pairs' files: nothing else the zip holds is written (a member the plan never reads
            # could be a zip bomb); refuses members outside target and links; resumes; once per zip
            unpack_zip(raw, target, keep=used_member)
            return target
        if raw.is_file():
            raise AvdataError(f"{raw}: not a zip file; pass the Kaggle zip or the folder it unpacks to")
        return raw

    def plan(self, raw: Path, options: UrbanSoundOptions) -> Plan:
        root = find_root(raw)
        rel = root.relative_to(raw)
        pairs: list[tuple[str, int, str, str, str]] = []  # key, label, stem, image, sound
        skipped: list[dict[str, Any]] = []

        def where(path: Path) -> str:
            return (rel / path.relative_to(root)).as_posix()

        image_dirs = class_folders(root / VISION, where, skipped)
        sound_dirs = class_folders(root / SOUND, where, skipped)
        for label, cls in enumerate(CLASSES):
            images = _by_stem(sorted(image_dirs[cls].glob("*")) if cls in image_dirs else [], IMAGE_EXT, cls,
                              where, skipped)
            sounds = _by_stem(sorted(sound_dirs[cls].glob("*")) if cls in sound_dirs else [], (".wav",), cls,
                              where, skipped)
            for stem in sorted(set(images) ^ set(sounds)):
                present = images[stem] if stem in images else sounds[stem]
                other = "sound" if stem in images else "image"
                skipped.append({"key": sample_key(cls, stem), "split": "",
                                "reason": f"unpaired: no {other} with this name", "path": where(present)})
            used: dict[str, str] = {}  # key -> the image that has it
            for stem in sorted(set(images) & set(sounds)):
                key, image = sample_key(cls, stem), where(images[stem])
                if key in used:  # names differing only in characters a key cannot hold ('1 2', '1_2')
                    skipped.append({"key": key, "split": "", "path": image,
                                    "reason": f"duplicate sample key: {image} and {used[key]} both map to "
                                              f"{key!r}; rename one of them to keep both"})
                    continue
                used[key] = image
                pairs.append((key, label, stem, image, where(sounds[stem])))
        if not pairs:
            raise AvdataError(f"{root}: no image/sound pairs found")
        plan = Plan([], skipped, {"pairs_found": len(pairs)})
        empty = [cls for label, cls in enumerate(CLASSES) if not any(p[1] == label for p in pairs)]
        if empty:
            plan.warn("no image/sound pairs for class " + ", ".join(empty) + f" (no {VISION}/<class>/ and "
                      f"{SOUND}/<class>/ files of the same name)")
        split_of: dict[str, str] = {}
        for label in range(len(CLASSES)):
            keys = [p[0] for p in pairs if p[1] == label]
            train, test = first_fraction(keys, options.train_fraction,
                                         group=recording_of if options.train_cut == "recording" else None)
            split_of.update({k: "train" for k in train})
            split_of.update({k: "test" for k in test})
        val = stratified_holdout([(p[0], p[1]) for p in pairs if split_of[p[0]] == "train"],
                                 options.val_fraction, options.seed, group=recording_of)
        plan.items = [WorkItem(key, "val" if key in val else split_of[key], label, {"image": img, "audio": snd},
                               {"class": CLASSES[label], "name": stem})
                      for key, label, stem, img, snd in pairs]
        return plan

    def features(self, options: UrbanSoundOptions) -> dict[str, dict[str, Any]]:
        bins = spectrogram_bins(options.spectrogram)
        return {
            "cls": {"dtype": "int", "shape": [], "meaning": "class index: " + ", ".join(CLASSES)},
            "json": {"dtype": "json", "shape": [], "meaning": "name, class, split, sources [{file, sha256}], "
                     "num_frames (1), frames_dropped (0), audio info"},
            **frames_feature(options.frame_format, options.jpeg_quality, [1, "H", "W", 3],
                             f"the paired image, RGB, short side {options.short_side}"),
            **spec_feature(options.spec_dtype, bins,
                           f"{options.spectrogram} log spectrogram of the sound (resampled, mixed down)"),
        }

    @staticmethod
    def process(item: WorkItem, ctx: ItemContext) -> dict[str, bytes]:
        opts: UrbanSoundOptions = ctx.options
        budget = mb_bytes(opts.max_decoded_mb)
        image = load_image(ctx.raw / item.sources["image"], opts.short_side, max_bytes=budget)
        spec, ainfo = audio_features(ctx.raw / item.sources["audio"], preset=opts.spectrogram, max_bytes=budget)
        if spec.size == 0:
            raise SkipSample("sound too short for one spectrogram frame", item.sources["audio"])
        meta = {"key": item.key, "name": item.meta["name"], "label": item.label, "label_name": item.meta["class"],
                "split": item.split, "sources": source_records(ctx.source_sha256), **frame_counts(1, 1),
                "audio": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in ainfo.items()}}
        return {"cls": cls_bytes(item.label), "json": sample_json(meta),
                **frame_fields(image[None], opts.frame_format, opts.jpeg_quality, 1),
                **spec_field(spec, opts.spec_dtype)}


RECIPE = UrbanSound8kAVRecipe
