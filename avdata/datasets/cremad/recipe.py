"""CREMA-D: 7,442 clips of 91 actors speaking 12 sentences in 6 emotions (VideoFlash FLV + AudioWAV).

Sources: `VideoFlash/<clip>.flv` and `AudioWAV/<clip>.wav` under the raw folder (as `avdata download
cremad` or a `git lfs clone` lays them out). Labels in the reference's order: ANG 0, DIS 1, FEA 2,
HAP 3, NEU 4, SAD 5.
"""

from __future__ import annotations

import csv
import itertools
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from avdata.option_fields import opt
from avdata.datasets.options import (frame_format_option, jpeg_quality_option, seed_option, spec_dtype_option,
                                     spectrogram_option, val_fraction_option)
from avdata.datasets.recipe import (SCMRL_CITATION, CardInfo, ItemContext, Plan, Recipe, SkipSample, WorkItem,
                                    ModelDefaults, cls_bytes, sample_json, source_records)
from avdata.errors import AvdataError
from avdata.media.audio import SPEC_PRESETS, audio_features, spectrogram_bins
from avdata.shards.frames import frame_counts, frame_fields, frames_feature, spec_field, spec_feature
from avdata.datasets.cremad.sources import LISTS, pinned_files
from avdata.datasets.splits import group_holdout, stratified_holdout
from avdata.media.video import read_frames
from avdata.datasets.options import max_decoded_mb_option
from avdata.media.budget import mb_bytes

EMOTIONS = ["ANG", "DIS", "FEA", "HAP", "NEU", "SAD"]
EMOTION_NAMES = {"ANG": "anger", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
SENTENCES = {
    "IEO": "It's eleven o'clock",
    "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before",
    "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}
# Listed as broken by the dataset's own README; skipped by default (--known-bad keep processes them).
KNOWN_BAD = {
    "1076_MTI_NEU_XX": "CREMA-D README: video very short, no audio in the video (the WAV is fine)",
    "1076_MTI_SAD_XX": "CREMA-D README: bad in FLV, MP3 and WAV",
    "1064_TIE_SAD_XX": "CREMA-D README: FLV reports no duration",
    "1064_IEO_DIS_MD": "CREMA-D README: FLV about one minute long, holding all emotions",
}

CITATION = """@article{cao2014crema,
  title={CREMA-D: Crowd-sourced Emotional Multimodal Actors Dataset},
  author={Cao, Houwei and Cooper, David G and Keutmann, Michael K and Gur, Ruben C and Nenkova, Ani and Verma, Ragini},
  journal={IEEE Transactions on Affective Computing},
  volume={5}, number={4}, pages={377--390}, year={2014}
}"""


@dataclass
class CremadOptions:
    """Options that shape the output (all recorded in the manifest); the flags of `avdata prepare cremad`."""

    split: str = opt("standard", choices=("standard", "actor"), help="standard: the published 6,698/744 clip "
                     "split; actor: speaker-independent, seeded actors held out for test (and validation).")
    val_fraction: float = val_fraction_option()
    test_fraction: float = opt(0.1, min=0.0, max=0.9, help="With --split actor: fraction of actors held out "
                               "for test.", applies_when=("split", "actor"))
    seed: int = seed_option()
    frames: int | None = opt(None, min=1, help="Store K evenly spaced frames per clip instead of the "
                             "reference's first frame of each second.")
    frame_slots: int = opt(5, min=1, max=64, help="Without --frames: frames stored per sample (every sample "
                           "has the same members). Shorter clips repeat their last frame (json num_frames "
                           "counts the real ones); frames past this are dropped (json frames_dropped).")
    short_side: int = opt(256, min=16, help="Resize stored frames so the short side is this many pixels (256 lets "
                          "Resize(256)+CenterCrop(128) run at train time).")
    spectrogram: str = spectrogram_option()
    frame_format: str = frame_format_option()
    jpeg_quality: int = jpeg_quality_option()
    spec_dtype: str = spec_dtype_option()
    max_decoded_mb: int = max_decoded_mb_option()
    known_bad: str = opt("skip", choices=("skip", "keep"), help="The 4 clips CREMA-D's README lists as "
                         "broken: skip (and record) or keep (process them like any clip).")


@lru_cache(maxsize=None)
def _csv_split(name: str) -> dict[str, str]:
    with open(LISTS / name, newline="") as f:
        return {row[0]: row[1] for row in csv.reader(f) if row}


@lru_cache(maxsize=None)
def demographics() -> dict[str, dict[str, Any]]:
    with open(LISTS / "VideoDemographics.csv", newline="") as f:
        return {r["ActorID"]: {"age": int(r["Age"]), "sex": r["Sex"], "race": r["Race"], "ethnicity": r["Ethnicity"]}
                for r in csv.DictReader(f)}


_MODALITIES = ("Voice", "Face", "MultiModal")


@lru_cache(maxsize=None)
def _perceived_rows() -> dict[str, list[str]]:
    """summaryTable.csv rows by clip, kept as text (converting all 7,442 up front slowed every prepare)."""
    with open(LISTS / "summaryTable.csv", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        cols = [header.index("FileName")] + [header.index(f"{m}{x}") for m in _MODALITIES for x in ("Vote", "Level")]
        return {row[cols[0]]: [row[c] for c in cols[1:]] for row in reader if row}


#: A clip missing from VideoDemographics.csv: the same fields, marked unknown (age -1).
UNKNOWN_DEMOGRAPHICS = {"age": -1, "sex": "", "race": "", "ethnicity": ""}


def perceived(clip: str) -> dict[str, dict[str, Any]]:
    """Crowd-sourced perceived emotion of a clip per modality (summaryTable.csv); empty votes and levels
    when not listed (the same fields in every sample)."""
    row = _perceived_rows().get(clip)
    if row is None:
        return {m: {"votes": [], "levels": []} for m in _MODALITIES}
    # ties list several votes and levels separated by ':'
    return {m: {"votes": row[2 * i].split(":"), "levels": [float(x) for x in row[2 * i + 1].split(":") if x]}
            for i, m in enumerate(_MODALITIES)}


@lru_cache(maxsize=None)
def pinned_sha256() -> dict[str, str]:
    return {s.path: s.sha256 for s in pinned_files()}


def parse_clip(clip: str) -> dict[str, str]:
    actor, sentence, emotion, level = clip.split("_")
    return {"actor": actor, "sentence": sentence, "emotion": emotion, "level": level}


def all_clips() -> dict[str, str]:
    """clip -> its standard split ('train' or 'test'), 7,442 clips."""
    out = {c: "train" for c in _csv_split("train.csv")}
    out.update({c: "test" for c in _csv_split("test.csv")})
    return out


def assign_splits(clips: list[str], options: CremadOptions) -> dict[str, str]:
    """clip -> train / val / test under the chosen scheme (seeded, independent of which clips exist)."""
    standard = all_clips()
    if options.split == "standard":
        base = {c: standard[c] for c in clips}
        train = [c for c in clips if base[c] == "train"]
        val = stratified_holdout([(c, parse_clip(c)["emotion"]) for c in train], options.val_fraction, options.seed)
        return {c: ("val" if c in val else base[c]) for c in clips}
    if options.split == "actor":
        actors = sorted({c.split("_")[0] for c in standard})
        test_actors = group_holdout(actors, options.test_fraction, options.seed, "test-actors")
        rest = [a for a in actors if a not in test_actors]
        val_actors = group_holdout(rest, options.val_fraction, options.seed, "val-actors")
        out = {}
        for c in clips:
            a = c.split("_")[0]
            out[c] = "test" if a in test_actors else "val" if a in val_actors else "train"
        return out
    raise AvdataError(f"--split must be 'standard' or 'actor', got {options.split!r}")


def _regular_files(folder: Path) -> dict[str, list[str]]:
    """A folder's entries but folders, by stem (a link that loops or dangles too: its clip's skip says so)."""
    out: dict[str, list[str]] = {}
    try:
        with os.scandir(folder) as entries:
            for e in entries:
                if not e.is_dir(follow_symlinks=False):
                    out.setdefault(os.path.splitext(e.name)[0], []).append(e.name)
    except (FileNotFoundError, NotADirectoryError):
        pass
    return out


def _clip_file(files: dict[str, list[str]], clip: str, ext: str) -> tuple[str | None, list[str]]:
    """The clip's file with extension `ext` in any case (`.FLV` from a case-insensitive copy is the same
    file format), else None and the clip's files in other formats (for the skip's reason)."""
    names = sorted(files.get(clip, []), key=lambda n: (n != clip + ext, n))  # the exact name first
    match = next((n for n in names if n.lower() == (clip + ext).lower()), None)
    return match, ([] if match else names)


def frame_slots(options: CremadOptions) -> int:
    """K, the frames every sample stores: --frames when given, else --frame-slots (5 keeps every
    first-of-a-second frame of a clip up to 5 s long; the six real sample clips have 2-3)."""
    return options.frames if options.frames is not None else options.frame_slots


def _raw_folder_meant(raw: Path) -> Path | None:
    """The folder a user meant when --raw is one level off: the parent of VideoFlash/ or AudioWAV/ given
    itself, or the one subfolder (of the first 64 entries) that holds VideoFlash/."""
    if raw.name in ("VideoFlash", "AudioWAV") and (raw.parent / "VideoFlash").is_dir():
        return raw.parent
    try:
        with os.scandir(raw) as entries:
            subs = [Path(e.path) for e in itertools.islice(entries, 64) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return None
    found = [d for d in subs if (d / "VideoFlash").is_dir()]
    return found[0] if len(found) == 1 else None


class CremadRecipe(Recipe):
    name = "cremad"
    classes = EMOTIONS
    options_type = CremadOptions
    summary = "CREMA-D: FLV video frames + WAV spectrogram per clip, 6 emotion classes."
    reference = {"split": "standard", "spectrogram": "reference"}
    model_defaults = ModelDefaults(embed_dim=256, tau_s=0.07, time_steps=4, image_size=128)  # docs/reference.md §1
    card = CardInfo(
        title="CREMA-D audio-visual emotion shards (avdata)",
        description=(
            "CREMA-D (Crowd-sourced Emotional Multimodal Actors Dataset): 7,442 clips of 91 actors (48 male, "
            "43 female) speaking 12 sentences with 6 emotions (anger, disgust, fear, happy, neutral, sad) at "
            "up to 4 intensity levels. Each sample holds video frames and a log spectrogram of the speech, "
            "prepared for audio-visual classification as in S-CMRL (arXiv 2502.12488)."
        ),
        license=("Open Database License (ODbL) v1.0 for the database, Database Contents License (DbCL) v1.0 "
                 "for its contents: http://opendatacommons.org/licenses/odbl/1.0/ and "
                 "http://opendatacommons.org/licenses/dbcl/1.0/"),
        license_id="odbl",
        homepage="https://github.com/CheyneyComputerScience/CREMA-D",
        citation=CITATION + "\n" + SCMRL_CITATION,
        tags=("emotion-recognition", "audio-visual", "cremad"),
    )

    def plan(self, raw: Path, options: CremadOptions) -> Plan:
        if options.known_bad not in ("skip", "keep"):
            raise AvdataError(f"--known-bad must be 'skip' or 'keep', got {options.known_bad!r}")
        if raw.is_file():
            raise AvdataError(f"{raw}: a file; CREMA-D is read from a folder holding VideoFlash/ and AudioWAV/ (a "
                              "clone of its repository or an `avdata download cremad` folder): unpack it and pass "
                              "that folder as --raw")
        standard = all_clips()
        # one listing per folder instead of two stat calls for each of the 7,442 clips
        videos, audios = _regular_files(raw / "VideoFlash"), _regular_files(raw / "AudioWAV")
        present = {}
        video: str | None  # None in `present`: that modality's file is missing
        audio: str | None
        others: dict[str, list[str]] = {}  # clip -> its files in a format the recipe does not read
        for clip in sorted(standard):
            (v_name, v_other), (a_name, a_other) = _clip_file(videos, clip, ".flv"), _clip_file(audios, clip, ".wav")
            if v_name or a_name or v_other or a_other:
                present[clip] = (f"VideoFlash/{v_name}" if v_name else None, f"AudioWAV/{a_name}" if a_name else None)
                others[clip] = [f"VideoFlash/{n}" for n in v_other] + [f"AudioWAV/{n}" for n in a_other]
        if not present:
            meant = _raw_folder_meant(raw)
            raise AvdataError(
                f"{raw}: no CREMA-D files found (expected VideoFlash/*.flv and AudioWAV/*.wav); "
                + (f"pass --raw {meant}, which holds them" if meant else
                   "fetch them with `avdata download cremad --to DIR`")
            )
        splits = assign_splits(sorted(present), options)
        items, skipped = [], []
        for clip, (video, audio) in present.items():
            split = splits[clip]
            if video is None or audio is None:
                miss = f"VideoFlash/{clip}.flv" if video is None else f"AudioWAV/{clip}.wav"
                kind = miss.split("/")[0]
                other = [n for n in others[clip] if n.startswith(kind + "/")]
                reason = "missing modality: file not found" + (
                    f" ({', '.join(other)} is there: CREMA-D is read from its published {kind}/*"
                    f"{miss[-4:]} files, as the reference; fetch them with `avdata download cremad`)" if other else "")
                skipped.append({"key": clip, "split": split, "path": miss, "reason": reason})
                continue
            if clip in KNOWN_BAD and options.known_bad == "skip":
                skipped.append({"key": clip, "split": split, "path": video,
                                "reason": f"known defect ({KNOWN_BAD[clip]}); --known-bad keep to process it"})
                continue
            p = parse_clip(clip)
            items.append(WorkItem(clip, split, EMOTIONS.index(p["emotion"]), {"video": video, "audio": audio}))
        notes = {"clips_expected": len(standard), "clips_found": len(present)}
        return Plan(items, skipped, notes)

    @staticmethod
    def warm(options: CremadOptions) -> None:
        demographics(), _perceived_rows(), pinned_sha256()

    def features(self, options: CremadOptions) -> dict[str, dict[str, Any]]:
        frames = ("the first frame of each second, as the reference" if options.frames is None
                  else f"{options.frames} evenly spaced frames")
        bins, p = spectrogram_bins(options.spectrogram), SPEC_PRESETS[options.spectrogram]
        spec = (f"log(|STFT| + 1e-7) of the WAV resampled to {p['sr']:,} Hz, n_fft {p['n_fft']}, hop {p['hop']}: "
                f"{bins} linear bins x time (native length, not resized)" if options.spectrogram == "reference"
                else f"log-mel spectrogram: {bins} mel bins x time at {p['sr']:,} Hz (see "
                "avdata.media.audio.SPEC_PRESETS)")
        return {
            "cls": {"dtype": "int", "shape": [], "meaning": "class index (ANG 0, DIS 1, FEA 2, HAP 3, NEU 4, SAD 5)"},
            "json": {"dtype": "json", "shape": [], "meaning": "clip id, label, split, actor, sentence, level, "
                     "demographics, perceived-emotion votes, sources [{file, sha256, matches_pinned}], "
                     "num_frames, frames_dropped, durations; the same fields in every sample"},
            **frames_feature(options.frame_format, options.jpeg_quality, [frame_slots(options), "H", "W", 3],
                             f"RGB video frames, {frames}, resized to short side {options.short_side}"),
            **spec_feature(options.spec_dtype, bins, spec),
        }

    @staticmethod
    def process(item: WorkItem, ctx: ItemContext) -> dict[str, bytes]:
        opts: CremadOptions = ctx.options
        video, audio = ctx.raw / item.sources["video"], ctx.raw / item.sources["audio"]
        mode = "per_second" if opts.frames is None else "even"
        budget = mb_bytes(opts.max_decoded_mb)
        frames, times, vinfo = read_frames(video, mode=mode, k=opts.frames, short_side=opts.short_side,
                                           max_bytes=budget)
        if frames.shape[0] == 0:
            raise SkipSample("video decoded to zero frames", item.sources["video"])
        slots = frame_slots(opts)
        counts = frame_counts(frames.shape[0], slots)
        spec, ainfo = audio_features(audio, preset=opts.spectrogram, max_bytes=budget)
        p = parse_clip(item.key)
        pinned = pinned_sha256()
        meta = {
            "clip": item.key,
            "label": item.label,
            "label_name": p["emotion"],
            "emotion": EMOTION_NAMES[p["emotion"]],
            "split": item.split,
            "actor": int(p["actor"]),
            "sentence": p["sentence"],
            "sentence_text": SENTENCES.get(p["sentence"], ""),
            "level": p["level"],
            "level_name": LEVELS.get(p["level"], ""),
            "demographics": demographics().get(p["actor"], UNKNOWN_DEMOGRAPHICS),
            "perceived": perceived(item.key),
            "sources": source_records(ctx.source_sha256, matches_pinned=lambda rel, digest:  # `.FLV` as `.flv`
                                      pinned.get(rel[:-4] + rel[-4:].lower()) == digest),
            **counts,
            "video": {"codec": vinfo.codec, "width": vinfo.width, "height": vinfo.height, "fps": round(vinfo.fps, 4),
                      "duration_s": round(vinfo.duration_s, 4), "has_audio": vinfo.has_audio,
                      "frame_times_s": [round(t, 4) for t in times[:slots]]},
            "audio": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in ainfo.items()},
            "known_issue": KNOWN_BAD.get(item.key, ""),
        }
        return {
            "cls": cls_bytes(item.label),
            "json": sample_json(meta),
            **frame_fields(frames, opts.frame_format, opts.jpeg_quality, slots),
            **spec_field(spec, opts.spec_dtype),
        }


RECIPE = CremadRecipe
