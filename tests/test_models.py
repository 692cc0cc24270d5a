"""Models: shapes for the CREMA-D-like and the 28x28 event configurations, gradients, ablations,
losses (including a hand-computed semantic alignment example) and the reference parameter count."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from avdata.errors import AvdataError
from scmrl.model.config import MODELS, ModelConfig
from scmrl.model.lif import LIF
from scmrl.model.losses import compute_loss, semantic_alignment_loss
from scmrl.model.models import ModelOutput, build_model, count_parameters

B = 3
LABELS = torch.tensor([0, 2, 0])


def _cremad(model: str, **kw) -> ModelConfig:
    base = dict(num_classes=6, model=model, embed_dim=32, heads=4, time_steps=2, audio_size=32, visual_size=32)
    base.update(kw)
    return ModelConfig(**base)


def _event(model: str, **kw) -> ModelConfig:
    base = dict(
        num_classes=10, model=model, embed_dim=32, heads=4, time_steps=2, audio_channels=1, visual_channels=2,
        audio_size=28, visual_size=28, embedding="shallow", tau_s=0.1,
    )
    base.update(kw)
    return ModelConfig(**base)


def _inputs(cfg: ModelConfig, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    t = cfg.time_steps
    audio = torch.randn(1, B, cfg.audio_channels, cfg.audio_size, cfg.audio_size, generator=gen).repeat(t, 1, 1, 1, 1)
    visual = torch.rand(t, B, cfg.visual_channels, cfg.visual_size, cfg.visual_size, generator=gen)
    return audio, visual


def _run(cfg: ModelConfig, seed: int = 0) -> tuple[torch.nn.Module, ModelOutput, torch.Tensor, dict[str, float]]:
    torch.manual_seed(seed)
    net = build_model(cfg)
    audio, visual = _inputs(cfg, seed)
    out = net(audio, visual)
    labels = LABELS % cfg.num_classes
    loss, parts = compute_loss(cfg, out, labels)
    loss.backward()
    return net, out, loss, {k: v.item() for k, v in parts.items()}


@pytest.mark.slow
@pytest.mark.parametrize("make", [_cremad, _event], ids=["cremad", "event28"])
@pytest.mark.parametrize("model", MODELS)
def test_forward_backward(make, model: str) -> None:
    cfg = make(model)
    net, out, loss, parts = _run(cfg)
    assert isinstance(out, ModelOutput)
    assert out.logits.shape == (B, cfg.num_classes) and out.logits.dtype == torch.float32
    assert torch.isfinite(out.logits).all()
    if model == "scmrl":
        assert set(out.aux) == {"align_audio", "align_visual"}
        assert out.aux["align_audio"].shape == (B, cfg.embed_dim) == out.aux["align_visual"].shape
        assert set(parts) == {"ce", "sao", "loss"}
    elif model == "cmci":
        assert out.aux["audio_logits"].shape == out.aux["visual_logits"].shape == (B, cfg.num_classes)
        assert set(parts) == {"ce", "ce_audio", "ce_visual", "loss"}
        assert parts["loss"] == pytest.approx(parts["ce"] + parts["ce_audio"] + parts["ce_visual"], rel=1e-5)
    else:
        assert out.aux == {}
    assert all(math.isfinite(v) for v in parts.values()) and parts["loss"] == pytest.approx(loss.item())
    # every parameter takes part in the graph and gets a finite gradient
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert not missing, missing
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())
    assert sum(p.grad.abs().sum().item() for p in net.parameters()) > 0
    # the head is always reached by a non-zero gradient (its weight may see a silent branch at init)
    assert net.head.bias.grad.abs().sum() > 0
    # every neuron in the model follows the config (fused implementation by default)
    lifs = [m for m in net.modules() if isinstance(m, LIF)]
    assert lifs and all(m.impl == "fused" and m.detach_membrane and m.tau == 2.0 for m in lifs)


def test_token_counts() -> None:
    for make, n in ((_cremad, 4), (_event, 49)):
        cfg = make("add")
        net = build_model(cfg)
        a, v = _inputs(cfg)
        assert net.audio_embed(a).shape == (cfg.time_steps, B, cfg.embed_dim, n)
        assert net.visual_embed(v).shape == (cfg.time_steps, B, cfg.embed_dim, n)


@pytest.mark.parametrize(
    "kw",
    [
        {"attention": "spatial"},
        {"attention": "temporal"},
        {"attn_threshold": 0.5},
        {"detach_membrane": False},
        {"alpha": 0.0},
        {"sao_weight": 0.0},
    ],
)
@pytest.mark.slow
def test_scmrl_ablations(kw: dict) -> None:
    cfg = _cremad("scmrl", **kw)
    net, out, loss, parts = _run(cfg)
    assert out.logits.shape == (B, 6) and math.isfinite(loss.item())
    if "attention" in kw:
        blk = net.audio_block.attn
        assert (blk.spatial is None) == (kw["attention"] == "temporal")
        assert (blk.temporal is None) == (kw["attention"] == "spatial")
    if "attn_threshold" in kw:
        assert net.audio_block.attn.spatial.attn_lif.v_threshold == 0.5
        assert net.audio_block.attn.spatial.q.lif.v_threshold == 1.0
    if kw.get("sao_weight") == 0.0:
        assert "sao" not in parts
    lifs = [m for m in net.modules() if isinstance(m, LIF)]
    assert all(m.detach_membrane == cfg.detach_membrane for m in lifs)


def test_alpha_zero_removes_cross_modal_path_from_logits() -> None:
    cfg = _cremad("scmrl", alpha=0.0)
    torch.manual_seed(0)
    net = build_model(cfg).eval()
    audio, visual = _inputs(cfg)
    visual2 = visual.clone()
    with torch.no_grad():
        # with alpha 0 the audio stream ignores visual: changing visual only moves the visual half
        a0 = net.audio_mlp(net.audio_block(net.audio_embed(audio), net.visual_embed(visual))[0])
        a1 = net.audio_mlp(net.audio_block(net.audio_embed(audio), net.visual_embed(visual2 * 3))[0])
    assert torch.equal(a0, a1)


def test_loop_impl_gives_same_model_outputs() -> None:
    outs = {}
    for impl in ("fused", "loop"):
        cfg = _cremad("scmrl", lif=impl, detach_membrane=False)
        net, out, _, _ = _run(cfg, seed=5)
        assert all(m.impl == impl for m in net.modules() if isinstance(m, LIF))
        outs[impl] = (out.logits.detach(), net.audio_embed.stages[0].conv.weight.grad.clone())
    torch.testing.assert_close(outs["fused"][0], outs["loop"][0])
    torch.testing.assert_close(outs["fused"][1], outs["loop"][1], rtol=1e-4, atol=1e-6)


def test_inference_path_matches_loop() -> None:
    cfg = _event("scmrl")
    torch.manual_seed(2)
    net = build_model(cfg)
    audio, visual = _inputs(cfg, 2)
    net(audio, visual)  # one training step's batch statistics into the running averages
    net.eval()
    with torch.no_grad():
        fused = net(audio, visual)
        for m in net.modules():
            if isinstance(m, LIF):
                m.impl = "loop"
        loop = net(audio, visual)
    assert torch.equal(fused.logits, loop.logits)
    assert torch.equal(fused.aux["align_audio"], loop.aux["align_audio"])


def test_unimodal_ignores_other_modality() -> None:
    for model, other in (("audio-only", 1), ("visual-only", 0)):
        cfg = _cremad(model)
        torch.manual_seed(0)
        net = build_model(cfg).eval()
        inputs = list(_inputs(cfg))
        ref = net(*inputs).logits
        inputs[other] = torch.zeros(1)  # anything at all
        assert torch.equal(net(*inputs).logits, ref)


def test_config_validation() -> None:
    with pytest.raises(AvdataError, match="ModelConfig.model='transformer': expected one of"):
        ModelConfig(num_classes=6, model="transformer")
    with pytest.raises(AvdataError, match="ModelConfig.attention='both'"):
        ModelConfig(num_classes=6, attention="both")
    with pytest.raises(AvdataError, match="--embed-dim 100 must be divisible by 8"):
        ModelConfig(num_classes=6, embed_dim=100)
    with pytest.raises(AvdataError, match="audio gives 4, visual 16"):  # temporal pairing: equal token counts
        build_model(_cremad("scmrl", visual_size=64))
    for model, kw in (("scmrl", {"attention": "spatial"}), ("sca", {}), ("weight-attention", {})):
        cfg = _cremad(model, visual_size=64, **kw)  # 4 audio tokens, 16 visual tokens
        net, out, loss, _ = _run(cfg)
        assert out.logits.shape == (B, 6) and math.isfinite(loss.item())


def test_semantic_alignment_hand_example() -> None:
    # C = 1: a = [1, 2], v = [1, -1], tau_s = 1 -> s = [[1, -1], [2, -2]]
    a = torch.tensor([[1.0], [2.0]])
    v = torch.tensor([[1.0], [-1.0]])
    # labels differ: M = I; L = -(1/4) [log(e / (e + e^-1)) + log(e^-2 / (e^2 + e^-2))]
    #                          = (1/4) [log(1 + e^-2) + log(1 + e^4)] = 1.036269...
    expect = 0.25 * (math.log1p(math.exp(-2)) + math.log1p(math.exp(4)))
    assert expect == pytest.approx(1.0362695, abs=1e-6)
    got = semantic_alignment_loss(a, v, torch.tensor([0, 1]), tau_s=1.0)
    assert got.item() == pytest.approx(expect, rel=1e-6)
    # labels agree: every pair is positive; each row's log-probs sum to log p + log (1 - p)
    p0 = 1 / (1 + math.exp(-2))  # softmax([1, -1])[0]
    p1 = 1 / (1 + math.exp(-4))  # softmax([2, -2])[0]
    expect_all = -0.25 * (math.log(p0) + math.log(1 - p0) + math.log(p1) + math.log(1 - p1))
    got_all = semantic_alignment_loss(a, v, torch.tensor([3, 3]), tau_s=1.0)
    assert got_all.item() == pytest.approx(expect_all, rel=1e-6)
    # temperature divides the similarities
    half = semantic_alignment_loss(a, v, torch.tensor([0, 1]), tau_s=2.0)
    assert half.item() == pytest.approx(0.25 * (math.log1p(math.exp(-1)) + math.log1p(math.exp(2))), rel=1e-6)


def test_compute_loss_parts() -> None:
    cfg = _cremad("scmrl", tau_s=0.5, sao_weight=2.0)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 6, generator=gen)
    a, v = torch.rand(4, 32, generator=gen), torch.rand(4, 32, generator=gen)
    labels = torch.tensor([1, 1, 4, 5])
    out = ModelOutput(logits=logits, aux={"align_audio": a, "align_visual": v})
    total, parts = compute_loss(cfg, out, labels)
    ce = F.cross_entropy(logits, labels, label_smoothing=0.1)
    sao = semantic_alignment_loss(a, v, labels, 0.5)
    assert total.item() == pytest.approx((ce + 2.0 * sao).item(), rel=1e-6)
    assert parts["ce"].item() == pytest.approx(ce.item(), rel=1e-6)
    assert parts["sao"].item() == pytest.approx(sao.item(), rel=1e-6)
    # detached 0-d tensors: the training loop sums them on the device and reads them once an epoch
    assert all(p.dim() == 0 and not p.requires_grad for p in parts.values())
    plain, parts = compute_loss(_cremad("concat"), ModelOutput(logits=logits), labels)
    assert plain.item() == pytest.approx(ce.item(), rel=1e-6) and set(parts) == {"ce", "loss"}


def test_reference_parameter_count() -> None:
    sizes = {}
    for model in ("scmrl", "audio-only", "concat", "cmci"):
        sizes[model] = count_parameters(build_model(ModelConfig(num_classes=6, model=model)))
    print("parameters, CREMA-D reference configuration (C=256, 128x128):", sizes)
    # two SPS (~0.98M each), two MLP blocks (~0.53M each), two cross-modal blocks (~0.59M each)
    assert 4.0e6 < sizes["scmrl"] < 4.5e6
    assert sizes["audio-only"] < sizes["concat"] < sizes["scmrl"]


@pytest.mark.parametrize("impl", ["fused", "loop"])
def test_embedding_shortcuts_keep_values(impl: str) -> None:
    """A static input expanded over T (first stage run once) and the channels-last layout give the
    same tokens and the same gradients as the plain path on a dense copy."""
    import copy

    from scmrl.model.embedding import SPS
    from scmrl.model.lif import LIFSpec

    torch.manual_seed(0)
    plain = SPS(3, 32, LIFSpec(impl=impl)).train()
    plain.channels_last = False
    img = torch.randn(3, 3, 32, 32) * 2
    results = []
    for variant in ("dense", "expanded", "expanded+nhwc"):
        emb = copy.deepcopy(plain)
        emb.channels_last = variant.endswith("nhwc")
        leaf = img.clone().requires_grad_(True)
        x = leaf.unsqueeze(0).expand(4, -1, -1, -1, -1)
        tokens = emb(x.contiguous() if variant == "dense" else x)
        (tokens * torch.linspace(-1, 1, tokens.shape[-1])).sum().backward()
        results.append((tokens.detach(), leaf.grad, emb.stages[0].conv.weight.grad, emb.stages[0].bn.running_mean))
    (t0, g0, w0, m0), *others = results
    assert t0.shape == (4, 3, 32, 4) and 0.05 < t0.mean().item() < 0.9
    for t, g, w, m in others:
        assert torch.equal(t, t0)
        torch.testing.assert_close(g, g0, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(w, w0, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(m, m0)
