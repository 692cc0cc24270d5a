"""scmrl-train's and scmrl-eval's options are generated from TrainConfig / EvalConfig: every field is a flag
with its help, and the flags reach the config unchanged."""

from __future__ import annotations

import dataclasses
import re

import pytest
from typer.testing import CliRunner

from scmrl.cli import train_app as cli
from scmrl.train.config import LIBRARY_ONLY, EvalConfig, TrainConfig


def _help(app) -> str:
    r = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"})
    assert r.exit_code == 0, r.output
    return " ".join(re.sub(r"\x1b\[[0-9;]*m", "", r.output).replace("│", " ").split())


@pytest.mark.parametrize("app, dc, skip", [(cli.train_app, TrainConfig, LIBRARY_ONLY), (cli.eval_app, EvalConfig, ())])
def test_help_lists_every_field_with_its_help(app, dc, skip) -> None:
    text = _help(app)
    for f in dataclasses.fields(dc):
        flag = "--" + f.name.replace("_", "-")
        if f.name in skip:
            assert flag not in text
            continue
        assert flag in text, flag
        assert " ".join(f.metadata["help"].split()[:4]) in text, f.name
    assert "Default: 5e-3 * global batch / 1024" in text or app is cli.eval_app  # not eaten as rich markup


def _captured(monkeypatch, args: list[str]) -> TrainConfig:
    import scmrl.train.loop

    seen: list[TrainConfig] = []
    monkeypatch.setattr(scmrl.train.loop, "train", seen.append)
    r = CliRunner().invoke(cli.train_app, args)
    assert r.exit_code == 0, r.output
    return seen[0]


def test_flags_reach_the_config(monkeypatch) -> None:
    cfg = _captured(monkeypatch, ["--shards", "s", "--out", "./o/"])
    # workers None: the run's own on --resume, else from the CPUs (scmrl.train.loop)
    assert cfg == TrainConfig(shards="s", out="o", workers=None) and cfg.out == "o"  # as Path(...) gives it
    cfg = _captured(monkeypatch, ["--shards", "s", "--out", "o", "--no-amp", "--classes", "a, b", "--workers", "0",
                                  "--init-from", "x.pt", "--frames-per-step", "--resume", "--protocol", "reference",
                                  "--lr", "0.01", "--time-steps", "8", "--noise-on", "both", "--compile",
                                  "--attention", "spatial", "--no-residual-proj", "--sao-weight", "0"])
    assert cfg == TrainConfig(shards="s", out="o", amp=False, classes=["a", "b"], workers=0, init_from="x.pt",
                              frames_per_step=True, resume=True, protocol="reference", lr=0.01, time_steps=8,
                              noise_on="both", compile=True, attention="spatial", residual_proj=False, sao_weight=0)


@pytest.mark.parametrize("args, flag", [(["--epochs", "0"], "--epochs"), (["--protocol", "theirs"], "--protocol"),
                                        (["--noise-on", "never"], "--noise-on"), (["--image-size", "8"],
                                                                                  "--image-size"),
                                        # these reached AdamW (a ValueError traceback) or trained on NaN losses
                                        (["--lr", "-1"], "--lr"), (["--lr", "nan"], "--lr"),
                                        (["--weight-decay", "-1"], "--weight-decay"), (["--alpha", "nan"], "--alpha"),
                                        (["--min-lr", "inf"], "--min-lr"), (["--attention", "spatail"], "--attention")])
def test_bad_values_name_the_flag(args: list[str], flag: str) -> None:
    r = CliRunner().invoke(cli.train_app, ["--shards", "s", "--out", "o", *args])
    assert r.exit_code == 2 and flag in r.output and "Traceback" not in r.output, r.output


def test_library_callers_get_the_same_bounds() -> None:
    """TrainConfig and EvalConfig refuse what the command line refuses, with the flag named."""
    from avdata.errors import AvdataError

    for bad, message in [({"lr": -1.0}, "--lr must be >= 0, got -1.0"), ({"weight_decay": -0.1}, "--weight-decay"),
                         ({"tau_s": float("nan")}, "--tau-s must be a finite number"), ({"epochs": 0}, "--epochs"),
                         ({"attention": "spatail"}, "--attention 'spatail': expected one of spatial,")]:
        with pytest.raises(AvdataError, match=re.escape(message)):
            TrainConfig(shards="s", out="o", **bad)
    with pytest.raises(AvdataError, match="--noise-snr must be a finite number"):
        EvalConfig(checkpoint="c", shards="s", noise_snr=float("nan"))
    assert TrainConfig(shards="s", out="o", lr=0.0, noise_snr=-5.0).lr == 0.0  # the bounds, not more


def test_eval_config_shares_train_fields() -> None:
    train_fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for name in ("shards", "device", "noise_snr", "classes"):
        eval_field = next(f for f in dataclasses.fields(EvalConfig) if f.name == name)
        assert dict(eval_field.metadata) == dict(train_fields[name].metadata)
    assert EvalConfig(checkpoint="c", shards="s").workers == 2


def test_a_dead_loader_worker_is_a_message_not_a_traceback(monkeypatch, tmp_path) -> None:
    """torch raises its DataLoader's RuntimeError wherever the main process is when a worker is killed (the
    out-of-memory killer): scmrl-train and scmrl-eval say what happened and what to do, exit status 2."""
    import scmrl.train.evaluate
    import scmrl.train.loop

    def killed(*_a, **_k):
        raise RuntimeError("DataLoader worker (pid 12971) is killed by signal: Killed. ")

    monkeypatch.setattr(scmrl.train.loop, "train", killed)
    monkeypatch.setattr(scmrl.train.evaluate, "evaluate_checkpoint", killed)
    out = tmp_path / "r"
    args = ["--shards", "s", "--out", str(out), "--workers", "2"]
    for run_exists, hint in ((False, "no checkpoint to resume from"), (True, "add --resume to the same command")):
        if run_exists:
            out.mkdir()
            (out / "checkpoint.pt").write_bytes(b"x")
        r = CliRunner().invoke(cli.train_app, args)
        text = " ".join(r.output.split())
        assert r.exit_code == 2 and not isinstance(r.exception, RuntimeError), r.output
        assert "error: a data-loading worker process died (DataLoader worker (pid 12971)" in text
        assert "fewer --workers" in text and hint in text
    r = CliRunner().invoke(cli.eval_app, ["--checkpoint", "c.pt", "--shards", "s"])
    assert r.exit_code == 2 and "fewer --workers" in " ".join(r.output.split())

    def bug(*_a, **_k):
        raise RuntimeError("a bug of ours")  # any other RuntimeError is a bug: its traceback stays

    monkeypatch.setattr(scmrl.train.loop, "train", bug)
    r = CliRunner().invoke(cli.train_app, args)
    assert isinstance(r.exception, RuntimeError) and str(r.exception) == "a bug of ours"


def test_a_new_run_never_replaces_an_earlier_runs_results(tmp_path) -> None:
    """--out holding a finished run whose checkpoint.pt was deleted (to save space): its best.pt and
    results.json were silently replaced by the next run there; now the run stops first and names them.
    A run stopped in its first epoch (metrics.jsonl, no results) still reruns as it was."""
    from avdata.errors import AvdataError
    from scmrl.train.distributed import DistContext
    from scmrl.train.start import read_resume_checkpoint

    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"epoch": 1}\n')
    for resume in (False, True):
        assert read_resume_checkpoint(TrainConfig(shards="s", out=str(out), resume=resume), None, None,
                                      DistContext()) is None
    (out / "best.pt").write_bytes(b"weights of a week on 8 GPUs")
    (out / "results.json").write_text("{}")
    for resume in (False, True):
        with pytest.raises(AvdataError, match=r"run holds best.pt, results.json, which a new run would replace "
                                              r"\(and no checkpoint.pt to --resume from\)"):
            read_resume_checkpoint(TrainConfig(shards="s", out=str(out), resume=resume), None, None, DistContext())
    assert (out / "best.pt").read_bytes() == b"weights of a week on 8 GPUs"


def test_a_finished_run_says_where_it_is_and_how_to_evaluate_it(monkeypatch, tmp_path) -> None:
    import shlex

    import scmrl.train.loop

    monkeypatch.setattr(scmrl.train.loop, "train", lambda cfg: {})
    out = tmp_path / "my run"
    r = CliRunner().invoke(cli.train_app, ["--shards", "s", "--out", str(out), "--workers", "0"])
    assert r.exit_code == 0, r.output
    assert f"run folder {out}: results.json, metrics.jsonl, curves.png" in r.output
    line = next(ln for ln in r.output.splitlines() if "scmrl-eval" in ln)
    assert shlex.split(line) == ["scmrl-eval", "--checkpoint", str(out / "best.pt"), "--shards", "s", "--split", "test"]
    monkeypatch.setenv("RANK", "1")  # under torchrun only rank 0 says it
    assert "run folder" not in CliRunner().invoke(cli.train_app, ["--shards", "s", "--out", str(out), "--workers",
                                                                  "0"]).output


def test_resume_on_another_datasets_shards_names_the_datasets() -> None:
    """--resume with --shards of another dataset: named as such, not as a list of model settings that differ."""
    from types import SimpleNamespace

    from avdata.errors import AvdataError
    from scmrl.train.start import _check_compatible

    source = SimpleNamespace(manifest=SimpleNamespace(dataset="mnistdvs-ntidigits"))
    cfg = TrainConfig(shards="shards/events", out="runs/cremad", resume=True)
    with pytest.raises(AvdataError, match=r"^runs/cremad: the run there trained on 'cremad' shards, and --shards "
                                          r"shards/events holds 'mnistdvs-ntidigits'; pass the --shards it started "
                                          r"with to --resume"):
        _check_compatible({"dataset": "cremad", "model_config": {}}, None, cfg, source)


def test_a_run_folder_given_as_the_checkpoint_names_its_files(tmp_path) -> None:
    """`scmrl-eval --checkpoint runs/x` (or --init-from runs/x): the folder's best.pt and checkpoint.pt are
    named, instead of "not a readable torch checkpoint ([Errno 21] Is a directory)"."""
    from avdata.errors import AvdataError
    from scmrl.train.checkpoint import load_checkpoint

    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(AvdataError, match="run: a folder, not a checkpoint file; pass the checkpoint file itself$"):
        load_checkpoint(run)
    (run / "best.pt").write_bytes(b"")
    with pytest.raises(AvdataError, match=re.escape(f"a folder, not a checkpoint file; pass {run / 'best.pt'}")):
        load_checkpoint(run)


@pytest.mark.parametrize("args", [["--attention", "spatial"], ["--no-residual-proj"], ["--sao-weight", "0"],
                                  ["--alpha", "2"], ["--tau-s", "0.1"]])
def test_scmrl_only_settings_with_a_baseline_are_refused(args: list[str]) -> None:
    """The cross-modal residual and alignment settings change nothing in a baseline: given with one, they are
    refused with the flag named (they were dropped without a word), and accepted with --model scmrl."""
    r = CliRunner().invoke(cli.train_app, ["--shards", "s", "--out", "o", "--model", "cmci", *args])
    text = " ".join(r.output.split())
    expected = f"{args[0]} has an effect only with --model scmrl, and this command has --model cmci"
    assert r.exit_code == 2 and expected in text, text


def test_convert_names_a_mistyped_attention_before_reading_the_file(tmp_path) -> None:
    from scmrl.cli.convert_app import convert_app

    r = CliRunner().invoke(convert_app, [str(tmp_path / "none.pth"), str(tmp_path / "o.pt"), "--dataset", "cremad",
                                         "--attention", "spatail"])
    assert r.exit_code == 2 and "--attention 'spatail': expected one of spatial, temporal" in " ".join(r.output.split())
