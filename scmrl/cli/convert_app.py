"""`scmrl-convert REF_CKPT OUT`: parse options and call `scmrl.train.convert.convert_checkpoint`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from avdata.errors import AvdataError
from avdata.progress import console
from avdata.cli.errors import fail
from avdata.cli.stopping import start
from avdata.cli.help_format import typer_app, version_option
from scmrl.cli.torch_check import require_torch
from scmrl.model.choices import ATTENTIONS

convert_app = typer_app(help="Turn a checkpoint of the authors' S-CMRL code into one scmrl-eval reads.")


@convert_app.command()
def convert_cmd(
    ref_ckpt: Path = typer.Argument(..., metavar="REF_CKPT", help="State dict saved by the authors' code (read as "
                                    "plain tensors)."),
    out: Path = typer.Argument(..., metavar="OUT", help="Checkpoint to write (then: scmrl-eval --checkpoint OUT "
                               "--shards ...)."),
    dataset: str = typer.Option(..., "--dataset", help="The dataset it was trained on (cremad, "
                                "urbansound8k-av, mnistdvs-ntidigits, ...): class names, T, tau_s and input side "
                                "as its package declares them (the authors' values)."),
    classes: Optional[str] = typer.Option(None, "--classes", help="Comma-separated class names in label order "
                                          "(default: the dataset's)."),
    time_steps: Optional[int] = typer.Option(None, "--time-steps", min=1, help="T the checkpoint was trained with "
                                             "(default: the dataset's; 4, MNISTDVS-NTIDIGITS 16)."),
    heads: int = typer.Option(16, "--heads", min=1, help="Attention heads (not recorded in the weights)."),
    alpha: float = typer.Option(1.5, "--alpha", help="Cross-modal residual weight it was trained with."),
    attention: Optional[str] = typer.Option(None, "--attention", help="For their single-branch blocks: spatial "
                                            "or temporal-reference (the weights cannot tell); two-branch blocks: "
                                            "spatiotemporal-reference (default)."),
    version: bool = version_option(),
) -> None:
    """Map the authors' parameter names and layout onto this package's model (scmrl.train.convert)."""
    require_torch("scmrl-convert")
    from scmrl.train.convert import convert_checkpoint, dataset_preset

    try:
        if attention is not None and attention not in ATTENTIONS:  # before the file is read, named as typed
            raise AvdataError(f"--attention {attention!r}: expected one of {', '.join(ATTENTIONS)}")
        default_classes, preset = dataset_preset(dataset)
        names = [c.strip() for c in classes.split(",") if c.strip()] if classes else default_classes
        info = convert_checkpoint(ref_ckpt, out, names, time_steps or preset.time_steps,
                                  image_size=preset.image_size, heads=heads, alpha=alpha, tau_s=preset.tau_s,
                                  attention=attention)
    except AvdataError as exc:
        fail(exc)
        return
    # soft_wrap: one line however long the path, so scripts can read it
    console.print(f"wrote {info['out']}: {info['model']} ({info['attention']}), embed {info['embed_dim']}, "
                  f"{info['num_classes']} classes, {info['tensors']} tensors", soft_wrap=True)


def main() -> None:
    start(lambda: convert_app)


if __name__ == "__main__":
    main()
