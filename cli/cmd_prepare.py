"""`avdata prepare <dataset>` and `avdata merge`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from avdata.errors import AvdataError
from avdata.progress import console, setup_logging
from avdata.cli.errors import fail

prepare_app = typer.Typer(
    help="Convert raw data into WebDataset shards per split, with manifest.json and a dataset card.",
    no_args_is_help=True,
)

RawOpt = typer.Option(..., "--raw", help="Folder of raw files as downloaded (or a zip, where the dataset allows).")
OutOpt = typer.Option(..., "--out", help="Output shards folder (created). A rerun into it resumes.")
JobsOpt = typer.Option(1, "--jobs", "-j", min=1, help="Parallel worker processes. Output bytes do not depend on it.")
PerShardOpt = typer.Option(256, "--samples-per-shard", min=1, help="Samples per shard file.")
PartOpt = typer.Option(None, "--part", help="Prepare only part i/N (0-based i) of the shards, e.g. for a cluster "
                       "array job; then `avdata merge` the outputs.")
StrictOpt = typer.Option(False, "--strict", help="Stop at the first bad clip instead of skipping and recording it.")
OverwriteOpt = typer.Option(False, "--overwrite", help="Replace shards in --out that were made with other options.")
ValOpt = typer.Option(None, "--val-fraction", min=0.0, max=0.99,
                      help="Fraction of the training part held out as a seeded validation split (0 keeps train "
                      "whole) [default: 0.1; --protocol reference: 0].")
ProtocolOpt = typer.Option("ours", "--protocol", help="ours | reference: the authors' data, with no validation "
                           "split (and their split, spectrogram and sample counts, which are checked).")
SeedOpt = typer.Option(42, "--seed", help="Seed of every random choice made while preparing: the splits, and the random order each split's samples are written in (recorded in manifest.json).")
VerboseOpt = typer.Option(False, "--verbose", "-v", help="Log every file handled.")


def _run(recipe_name: str, raw: Path, out: Path, options, jobs: int, samples_per_shard: int,
         part: Optional[str], strict: bool, overwrite: bool, verbose: bool) -> None:
    from avdata.prepare.lifeline import Terminated, sigterm_as_interrupt
    from avdata.prepare.engine import PrepareSettings, parse_part, prepare, print_summary
    from avdata.datasets.recipe import get_recipe

    setup_logging(verbose)
    try:
        settings = PrepareSettings(samples_per_shard=samples_per_shard, jobs=jobs, part=parse_part(part),
                                   strict=strict, overwrite=overwrite)
        with sigterm_as_interrupt():  # `kill` stops it as Ctrl-C does: workers stopped, finished shards kept
            result = prepare(get_recipe(recipe_name), raw, out, options, settings)
    except AvdataError as exc:
        fail(exc)
    except KeyboardInterrupt as exc:
        console.print(f"interrupted: finished shards in {out} are kept; run the same command again to go on")
        raise typer.Exit(143 if isinstance(exc, Terminated) else 130)
    print_summary(result)


@prepare_app.command("cremad")
def prepare_cremad(
    raw: Path = RawOpt,
    out: Path = OutOpt,
    split: str = typer.Option("standard", "--split", help="standard: the published 6,698/744 clip split; "
                              "actor: speaker-independent, seeded actors held out for test (and validation)."),
    val_fraction: Optional[float] = ValOpt,
    protocol: str = ProtocolOpt,
    test_fraction: float = typer.Option(0.1, "--test-fraction", min=0.0, max=0.9,
                                        help="With --split actor: fraction of actors held out for test."),
    seed: int = SeedOpt,
    frames: Optional[int] = typer.Option(None, "--frames", min=1, help="Store K evenly spaced frames per clip "
                                         "instead of the reference's first frame of each second."),
    short_side: int = typer.Option(256, "--short-side", min=16, help="Resize stored frames so the short side "
                                   "is this (256 lets Resize(256)+CenterCrop(128) run at train time)."),
    spectrogram: str = typer.Option("reference", "--spectrogram", help="reference: log linear STFT, 257 bins "
                                    "(n_fft 512, hop 353 at 22,050 Hz); logmel: 128 log-mel bins."),
    known_bad: str = typer.Option("skip", "--known-bad", help="The 4 clips CREMA-D's README lists as broken: "
                                  "skip (and record) or keep (process them like any clip)."),
    jobs: int = JobsOpt,
    samples_per_shard: int = PerShardOpt,
    part: Optional[str] = PartOpt,
    strict: bool = StrictOpt,
    overwrite: bool = OverwriteOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """CREMA-D: FLV video frames + WAV spectrogram per clip, 6 emotion classes."""
    from avdata.prepare.protocol import resolve_prepare_protocol
    from avdata.datasets.cremad.recipe import CremadOptions

    try:
        val_fraction = resolve_prepare_protocol(protocol, "cremad", val_fraction, split=split, spectrogram=spectrogram)
    except AvdataError as exc:
        fail(exc)
    opts = CremadOptions(split=split, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                         frames=frames, short_side=short_side, spectrogram=spectrogram, known_bad=known_bad)
    _run("cremad", raw, out, opts, jobs, samples_per_shard, part, strict, overwrite, verbose)


@prepare_app.command("urbansound8k-av")
def prepare_urbansound(
    raw: Path = typer.Option(..., "--raw", help="The Kaggle zip of lingyueguo/urbansound8k-av or the folder it "
                             "unpacks to (holding Dataset_v3_vision/ and Dataset_v3_sound/)."),
    out: Path = OutOpt,
    train_fraction: float = typer.Option(0.7, "--train-fraction", min=0.05, max=0.95,
                                         help="First fraction of each class's files (sorted by name) used for "
                                         "training, the rest for test, as the reference."),
    val_fraction: Optional[float] = ValOpt,
    protocol: str = ProtocolOpt,
    seed: int = SeedOpt,
    short_side: int = typer.Option(256, "--short-side", min=16, help="Resize images so the short side is this."),
    spectrogram: str = typer.Option("reference", "--spectrogram", help="reference (257-bin log STFT) or logmel."),
    jobs: int = JobsOpt,
    samples_per_shard: int = PerShardOpt,
    part: Optional[str] = PartOpt,
    strict: bool = StrictOpt,
    overwrite: bool = OverwriteOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """UrbanSound8K-AV: each sound's paired image + spectrogram, 10 urban sound classes."""
    from avdata.prepare.protocol import resolve_prepare_protocol
    from avdata.datasets.urbansound8k_av.recipe import UrbanSoundOptions

    try:
        val_fraction = resolve_prepare_protocol(protocol, "urbansound8k-av", val_fraction,
                                                train_fraction=train_fraction, spectrogram=spectrogram)
    except AvdataError as exc:
        fail(exc)
    opts = UrbanSoundOptions(train_fraction=train_fraction, val_fraction=val_fraction, seed=seed,
                             short_side=short_side, spectrogram=spectrogram)
    _run("urbansound8k-av", raw, out, opts, jobs, samples_per_shard, part, strict, overwrite, verbose)


@prepare_app.command("mnistdvs-ntidigits")
def prepare_events(
    raw: Path = typer.Option(..., "--raw", help="Folder holding the MNIST-DVS zips grabbed_data0..9.zip (or their "
                             "unpacked folders) and the N-TIDIGITS18 HDF5 file."),
    out: Path = OutOpt,
    bins: int = typer.Option(16, "--bins", min=1, help="Time bins T per sample (equal windows over each recording)."),
    scale: int = typer.Option(16, "--scale", help="MNIST-DVS digit scale to use: 4, 8 or 16."),
    sensor: str = typer.Option("downsample", "--sensor", help="How the 128x128 DVS becomes 28x28: downsample "
                               "(x*28//128) or crop (the central 28x28 window; events outside it are dropped, and the "
                               "share dropped is recorded per sample and per split and shown in the summary)."),
    per_class: int = typer.Option(1000, "--per-class", min=2, help="MNIST-DVS recordings per class "
                                  "(half train, half test; the reference uses 1000)."),
    val_fraction: Optional[float] = ValOpt,
    protocol: str = ProtocolOpt,
    seed: int = SeedOpt,
    keep_events: bool = typer.Option(False, "--keep-events", help="Also store the raw events of both modalities."),
    jobs: int = JobsOpt,
    samples_per_shard: int = typer.Option(1000, "--samples-per-shard", min=1, help="Samples per shard file."),
    part: Optional[str] = PartOpt,
    strict: bool = StrictOpt,
    overwrite: bool = OverwriteOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """MNISTDVS-NTIDIGITS: binned DVS digit events paired with binned cochlea spoken-digit events."""
    from avdata.prepare.protocol import resolve_prepare_protocol
    from avdata.datasets.mnistdvs_ntidigits.recipe import EventOptions

    try:
        val_fraction = resolve_prepare_protocol(protocol, "mnistdvs-ntidigits", val_fraction, per_class=per_class)
    except AvdataError as exc:
        fail(exc)
    opts = EventOptions(bins=bins, scale=scale, sensor=sensor, per_class=per_class, val_fraction=val_fraction,
                        seed=seed, keep_events=keep_events)
    _run("mnistdvs-ntidigits", raw, out, opts, jobs, samples_per_shard, part, strict, overwrite, verbose)


def merge_cmd(
    out: Path = typer.Argument(..., help="Shards folder to complete (parts may already be in it)."),
    parts: Optional[list[Path]] = typer.Option(None, "--from", help="Part output folders made elsewhere, "
                                               "copied into OUT (repeat the option)."),
    verbose: bool = VerboseOpt,
) -> None:
    """Join `prepare --part i/N` outputs into one folder with one manifest.json and dataset card."""
    from avdata.prepare.merge import assemble, merge

    setup_logging(verbose)
    try:
        manifest = merge(out, parts) if parts else assemble(out)
    except AvdataError as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2)
    total = sum(s["num_samples"] for s in manifest["splits"].values())
    console.print(f"merged {out}: {total} samples in {len(manifest['splits'])} split(s)")


def register(app: typer.Typer) -> None:
    app.add_typer(prepare_app, name="prepare")
    app.command("merge")(merge_cmd)
