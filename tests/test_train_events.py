"""A learnable synthetic event task (MNISTDVS-NTIDIGITS format) trained briefly: ShallowSPS, one bin per step."""

from __future__ import annotations

import pytest
from scmrl.data.synthetic import make_synthetic_av_shards
from scmrl.train.config import TrainConfig, model_config
from scmrl.train.loop import train
from avdata.shards.location import open_location

#: end to end (real files, prepare, training or servers): `pytest -m "not slow"` leaves it out
pytestmark = pytest.mark.slow


def test_event_shards_train_with_shallow_sps(tmp_path):
    shards = make_synthetic_av_shards(tmp_path / "ev", 192, 32, 64, kind="events", bins=4)
    cfg = TrainConfig(shards=str(shards), out=str(tmp_path / "run"), epochs=10, batch_size=32, lr=1e-2,
                      warmup_epochs=1, embed_dim=32, heads=4, shuffle_buffer=64)
    mcfg = model_config(cfg, open_location(shards).manifest)
    assert (mcfg.embedding, mcfg.visual_channels, mcfg.visual_size, mcfg.time_steps, mcfg.tau_s) == \
        ("shallow", 2, 28, 4, 0.1)
    res = train(cfg)
    assert res["test_acc_at_val_best_epoch"] >= 0.85
