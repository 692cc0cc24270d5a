"""`avdata prepare <dataset>` (one command per registered recipe, its flags generated from the recipe's
options dataclass) and `avdata merge`."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any, Optional

import typer

from avdata.cli.dataset_group import click_command, dataset_group
from avdata.cli.errors import fail
from avdata.cli.help_format import typer_app
from avdata.errors import AvdataError
from avdata.progress import console, setup_logging

VerboseOpt = typer.Option(False, "--verbose", "-v", help="Log every file handled.")

# The options every dataset's prepare command takes (run settings, which do not change the output bytes
# except --samples-per-shard), declared once; --raw's help and --samples-per-shard's default are the recipe's.
_COMMON: list[tuple[str, Any, Any]] = [
    ("out", Path, typer.Option(..., "--out", help="Output shards folder (created). A rerun into it resumes.")),
    ("jobs", int, typer.Option(1, "--jobs", "-j", min=1, help="Parallel worker processes. Output bytes do not "
                               "depend on it.")),
    ("part", Optional[str], typer.Option(None, "--part", help="Prepare only part i/N (0-based i) of the shards, "
                                         "e.g. for a cluster array job; then `avdata merge` the outputs. 'auto': i "
                                         "and N from a Slurm array (SLURM_ARRAY_TASK_ID/COUNT) or a Kubernetes "
                                         "Indexed Job (JOB_COMPLETION_INDEX, with --part-count).")),
    ("part_count", Optional[int], typer.Option(None, "--part-count", min=1, help="N for --part auto where the "
                                               "scheduler does not say it (Kubernetes); default: $AVDATA_PART_COUNT.")),
    ("executor", str, typer.Option("local", "--executor", help="local (a process pool of --jobs) or dask (each "
                                   "shard a task of a Dask cluster; needs the [dask] extra). Output bytes do not "
                                   "depend on it.")),
    ("scheduler", Optional[str], typer.Option(None, "--scheduler", help="With --executor dask: a running Dask "
                                              "scheduler's address (tcp://host:8786); without it a local cluster "
                                              "of --jobs worker processes is started. --raw and --out must be on "
                                              "a file system shared with every worker.")),
    ("strict", bool, typer.Option(False, "--strict", help="Stop at the first bad clip instead of skipping and "
                                  "recording it.")),
    ("overwrite", bool, typer.Option(False, "--overwrite", help="Replace shards in --out that were made with "
                                     "other options.")),
    ("verbose", bool, VerboseOpt),
]
_PROTOCOL = typer.Option("ours", "--protocol", help="ours | reference: the authors' data, with no validation split "
                         "(and their split, spectrogram and sample counts, which are checked).")


def _parameters(recipe: Any) -> list[inspect.Parameter]:
    keyword = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter("options", inspect.Parameter.POSITIONAL_OR_KEYWORD),
              inspect.Parameter("raw", keyword, annotation=Path,
                                default=typer.Option(..., "--raw", help=recipe.raw_help))]
    params += [inspect.Parameter(name, keyword, annotation=tp, default=default) for name, tp, default in _COMMON]
    params.append(inspect.Parameter("samples_per_shard", keyword, annotation=int, default=typer.Option(
        recipe.samples_per_shard, "--samples-per-shard", min=1, help="Samples per shard file.")))
    if recipe.reference is not None:
        params.append(inspect.Parameter("protocol", keyword, annotation=str, default=_PROTOCOL))
    return params


def _protocol_overrides(recipe: Any) -> dict[str, dict[str, Any]]:
    """--val-fraction's default comes from --protocol, so the flag itself defaults to None."""
    if recipe.reference is None:
        return {}
    field = {f.name: f for f in dataclasses.fields(recipe.options_type)}.get("val_fraction")
    if field is None:
        raise TypeError(f"{recipe.__name__}: `reference` is set, so its options need a val_fraction field")
    return {"val_fraction": {"default": None, "help": field.metadata.get("help", "") +
                             f" Default: {field.default}; 0 with --protocol reference."}}


def build_prepare_command(name: str) -> Any:
    """`avdata prepare <name>`: the recipe's option fields as flags, plus the common ones."""
    from avdata.datasets.registry import recipe_class

    from avdata.cli.dataclass_options import command_from

    recipe = recipe_class(name)

    def body(options: Any, *, raw: Path, out: Path, jobs: int, part: Optional[str], part_count: Optional[int],
             executor: str, scheduler: Optional[str], strict: bool, overwrite: bool, verbose: bool,
             samples_per_shard: int, protocol: str | None = None) -> None:
        if recipe.reference is not None:
            from avdata.prepare.protocol import resolve_prepare_protocol

            try:
                values = dataclasses.asdict(options)
                val = resolve_prepare_protocol(protocol, name, values.pop("val_fraction"), **values)
            except AvdataError as exc:
                fail(exc)
            options = dataclasses.replace(options, val_fraction=val)
        _run(name, raw, out, options, jobs, samples_per_shard, part, strict, overwrite, verbose,
             part_count=part_count, executor=executor, scheduler=scheduler)

    body.__signature__ = inspect.Signature(_parameters(recipe))  # type: ignore[attr-defined]
    command = command_from(recipe.options_type, body, overrides=_protocol_overrides(recipe))
    return click_command(name, command, help=recipe.summary or None)


def _run(recipe_name: str, raw: Path, out: Path, options: Any, jobs: int, samples_per_shard: int,
         part: Optional[str], strict: bool, overwrite: bool, verbose: bool, part_count: Optional[int] = None,
         executor: str = "local", scheduler: Optional[str] = None) -> None:
    from avdata.datasets.registry import get_recipe
    from avdata.prepare import engine
    from avdata.prepare.array_job import resolve_part
    from avdata.prepare.lifeline import Terminated, sigterm_as_interrupt

    setup_logging(verbose)
    try:
        settings = engine.PrepareSettings(samples_per_shard=samples_per_shard, jobs=jobs,
                                          part=resolve_part(part, part_count), strict=strict, overwrite=overwrite,
                                          executor=executor, scheduler=scheduler)
        if scheduler and executor != "dask":
            raise AvdataError("--scheduler is the address of a Dask scheduler: it goes with --executor dask")
        with sigterm_as_interrupt():  # `kill` stops it as Ctrl-C does: workers stopped, finished shards kept
            result = engine.prepare(get_recipe(recipe_name), raw, out, options, settings)
    except AvdataError as exc:
        fail(exc)
    except KeyboardInterrupt as exc:
        console.print(f"interrupted: finished shards in {out} are kept; run the same command again to go on")
        raise typer.Exit(143 if isinstance(exc, Terminated) else 130)
    print_summary(result)


def print_summary(result: Any, generated: bool = False) -> None:
    """Per-split counts and every skipped clip with its reason, on the console (a PrepareResult).
    generated: the raw folder was made by `avdata demo`, a sample of the dataset by design, so the
    warning about a partial copy of the dataset does not apply."""
    from rich.markup import escape
    from rich.table import Table

    console.print(f"[bold]{result.out}[/]: {len(result.written)} shard(s) written, {len(result.kept)} kept")
    if not result.complete or result.manifest is None:
        console.print("part done; the manifest is written once all parts are (`avdata merge`)")
        return
    m = result.manifest
    # one row per class: AVE's 28 classes or UrbanSound's long names do not fit as columns of a terminal
    table = Table(title=f"{m.dataset}: samples per split and class")
    table.add_column("label", justify="right", no_wrap=True)
    table.add_column("class")
    for split in m.splits:
        table.add_column(split, justify="right", no_wrap=True)
    for i, c in enumerate(m.classes):
        table.add_row(str(i), c, *(str(entry.class_counts[c]) for entry in m.splits.values()))
    table.add_row("", "[bold]all[/]", *(str(entry.num_samples) for entry in m.splits.values()))
    console.print(table)
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
        fail(exc)
    total = sum(s.num_samples for s in manifest.splits.values())
    console.print(f"merged {out}: {total} samples in {len(manifest.splits)} split(s)")


def register(app: typer.Typer) -> None:
    app.add_typer(prepare_app, name="prepare")
    app.command("merge")(merge_cmd)
