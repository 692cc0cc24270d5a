"""`avdata prepare <dataset>` (one command per registered recipe, its flags generated from the recipe's
options dataclass) and `avdata merge`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

import typer

from avdata.cli.dataset_group import dataset_command, dataset_group
from avdata.cli.errors import fail
from avdata.cli.help_format import typer_app
from avdata.errors import AvdataError
from avdata.option_fields import opt
from avdata.progress import console, setup_logging

_VERBOSE_HELP = "Log every file handled."  # prepare's and merge's --verbose


@dataclasses.dataclass
class PrepareRunOptions:
    """The options every dataset's prepare command takes (run settings, which do not change the output bytes
    except --samples-per-shard), declared once; --raw's help and --samples-per-shard's default are the
    recipe's (see `_overrides`), and --protocol is there only where the recipe has a `reference`."""

    raw: Path = opt(help="Folder of raw files (the recipe says which).")
    out: Path = opt(help="Output shards folder (created). A rerun into it resumes.")
    jobs: int = opt(1, short="j", min=1, help="Parallel worker processes. Output bytes do not depend on it.")
    part: Optional[str] = opt(None, help="Prepare only part i/N (0-based i) of the shards, e.g. for a cluster "
                              "array job; then `avdata merge` the outputs. 'auto': i and N from a Slurm array "
                              "(SLURM_ARRAY_TASK_ID/COUNT) or a Kubernetes Indexed Job (JOB_COMPLETION_INDEX, "
                              "with --part-count).")
    part_count: Optional[int] = opt(None, min=1, help="N for --part auto where the scheduler does not say it "
                                    "(Kubernetes); default: $AVDATA_PART_COUNT.")
    executor: str = opt("local", help="local (a process pool of --jobs) or dask (each shard a task of a Dask "
                        "cluster; needs Dask distributed, the project's dask extra). Output bytes do not depend on it.")
    scheduler: Optional[str] = opt(None, help="With --executor dask: a running Dask scheduler's address "
                                   "(tcp://host:8786); without it a local cluster of --jobs worker processes is "
                                   "started. --raw and --out must be on a file system shared with every worker.")
    strict: bool = opt(False, negatable=False, help="Stop at the first bad clip instead of skipping and recording "
                       "it.")
    overwrite: bool = opt(False, negatable=False, help="Replace shards in --out that were made with other "
                          "options.")
    verbose: bool = opt(False, short="v", negatable=False, help=_VERBOSE_HELP)
    samples_per_shard: int = opt(256, min=1, help="Samples per shard file.")
    protocol: str = opt("ours", help="ours | reference: the authors' data, with no validation split (and their "
                        "split, spectrogram and sample counts, which are checked).")


def _overrides(recipe: Any) -> dict[str, dict[str, Any]]:
    """The recipe's --raw help and --samples-per-shard default; --val-fraction's default comes from
    --protocol, so where the recipe has a `reference` the flag itself defaults to None."""
    out: dict[str, dict[str, Any]] = {"raw": {"help": recipe.raw_help},
                                      "samples_per_shard": {"default": recipe.samples_per_shard}}
    if recipe.reference is None:
        return out
    field = {f.name: f for f in dataclasses.fields(recipe.options_type)}.get("val_fraction")
    if field is None:
        raise TypeError(f"{recipe.__name__}: `reference` is set, so its options need a val_fraction field")
    out["val_fraction"] = {"default": None, "help": field.metadata.get("help", "") +
                           f" Default: {field.default}; 0 with --protocol reference."}
    return out


def build_prepare_command(name: str) -> Any:
    """`avdata prepare <name>`: the common flags (`PrepareRunOptions`), then the recipe's option fields."""
    from avdata.datasets.registry import recipe_class

    recipe = recipe_class(name)

    def body(run: PrepareRunOptions, options: Any) -> None:
        if recipe.reference is not None:
            from avdata.prepare.protocol import resolve_prepare_protocol

            try:
                values = dataclasses.asdict(options)
                sets = resolve_prepare_protocol(run.protocol, name, values.pop("val_fraction"), **values)
            except AvdataError as exc:
                fail(exc)
            options = dataclasses.replace(options, **sets)
        _run(name, options, run)

    return dataset_command(name, (PrepareRunOptions, recipe.options_type), body, help=recipe.summary or None,
                           exclude=() if recipe.reference is not None else ("protocol",),
                           overrides=_overrides(recipe))


def _run(recipe_name: str, options: Any, run: PrepareRunOptions) -> None:
    """Prepare `options` of the recipe with the run settings `run`, print the result; Ctrl-C or `kill` keeps
    the finished shards."""
    from avdata.datasets.registry import get_recipe
    from avdata.prepare import engine
    from avdata.prepare.array_job import resolve_part
    from avdata.cli.stopping import interrupted
    from avdata.prepare.lifeline import sigterm_as_interrupt

    setup_logging(run.verbose)
    try:
        settings = engine.PrepareSettings(samples_per_shard=run.samples_per_shard, jobs=run.jobs,
                                          part=resolve_part(run.part, run.part_count), strict=run.strict,
                                          overwrite=run.overwrite, executor=run.executor, scheduler=run.scheduler)
        if run.scheduler and run.executor != "dask":
            raise AvdataError("--scheduler is the address of a Dask scheduler: it goes with --executor dask")
        with sigterm_as_interrupt():  # `kill` stops it as Ctrl-C does: workers stopped, finished shards kept
            result = engine.prepare(get_recipe(recipe_name), run.raw, run.out, options, settings)
    except AvdataError as exc:
        fail(exc)
    except KeyboardInterrupt as exc:
        interrupted(f"finished shards in {run.out} are kept; run the same command again to go on", exc)
    print_prepare_result(result)


def print_prepare_result(result: Any, generated: bool = False) -> None:
    """Per-split counts and every skipped clip with its reason, on the console (a PrepareResult).
    generated: the raw folder was made by `avdata demo`, a sample of the dataset by design, so the
    warning about a partial copy of the dataset does not apply."""
    from rich.markup import escape

    from avdata.class_counts_table import class_counts_table

    console.print(f"[bold]{result.out}[/]: {len(result.written)} shard(s) written, {len(result.kept)} kept")
    if not result.complete or result.manifest is None:
        console.print("part done; the manifest is written once all parts are (`avdata merge`)")
        return
    m = result.manifest
    console.print(class_counts_table(f"{m.dataset}: samples per split and class", m.classes,
                                     {split: e.class_counts for split, e in m.splits.items()},
                                     {split: e.num_samples for split, e in m.splits.items()}))
    for split, entry in m.splits.items():
        for name, st in (entry.sample_stats or {}).items():
            console.print(f"{split} {name}: min {st['min']:.4f}, median {st['median']:.4f}, max {st['max']:.4f} "
                          f"(mean {st['mean']:.4f}) over {st['samples']} samples", markup=False, soft_wrap=True)
    notes = m.notes or {}
    found, expected = notes.get("clips_found"), notes.get("clips_expected")
    if not generated and isinstance(found, int) and isinstance(expected, int) and found < expected:
        console.print(f"[yellow]only {found:,} of the {expected:,} clips the dataset lists are in the raw folder[/]: "
                      "a partial copy (or the wrong --raw); `avdata verify-raw` names what is missing")
    for warning in notes.get("warnings") or []:
        console.print(f"[yellow]note:[/] {escape(str(warning))}")
    if m.skipped:
        console.print(f"[yellow]{len(m.skipped)} clip(s) skipped[/] (listed in manifest.json):")
        for s in m.skipped:
            where = f" ({s['split']})" if s.get("split") else ""
            console.print(f"  {s['key']}{where}: {s['path']}: {s['reason']}", markup=False)


def _recipe_names() -> list[str]:
    from avdata.datasets.registry import recipe_names

    return recipe_names()


prepare_app = typer_app(
    cls=dataset_group(_recipe_names, build_prepare_command),
    help="Convert raw data into WebDataset shards per split, with manifest.json and a dataset card.",
    no_args_is_help=True,
)


def merge_cmd(
    out: Path = typer.Argument(..., metavar="OUT", help="Shards folder to complete (parts may already be in it)."),
    parts: Optional[list[Path]] = typer.Option(None, "--from", help="Part output folders made elsewhere, "
                                               "copied into OUT (repeat the option)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help=_VERBOSE_HELP),
) -> None:
    """Join `prepare --part i/N` outputs into one folder with one manifest.json and dataset card."""
    from avdata.cli.stopping import interrupted
    from avdata.prepare.lifeline import sigterm_as_interrupt
    from avdata.prepare.merge import assemble_locked, merge

    setup_logging(verbose)
    try:
        with sigterm_as_interrupt():  # `kill` stops it as Ctrl-C does: copied shards kept, none half-written
            manifest = merge(out, parts) if parts else assemble_locked(out)
    except AvdataError as exc:
        fail(exc)
    except KeyboardInterrupt as exc:
        interrupted(f"the shards copied into {out} are kept; run the same command again to go on", exc)
    total = sum(s.num_samples for s in manifest.splits.values())
    console.print(f"merged {out}: {total} samples in {len(manifest.splits)} split(s)")


def register(app: typer.Typer) -> None:
    app.add_typer(prepare_app, name="prepare")
    app.command("merge")(merge_cmd)
