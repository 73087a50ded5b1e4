"""DIFF-MF modules checked by behaviour: Algorithm 1 order and its Table III variants, the
cross-modal SSD exchange and its Table IV/V variants, channel re-weighting (Eq. 7-8), the
ablation switches of Table II, and the whole network on odd and live-size inputs.
"""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from diffmf_core.config import DiffMFConfig, get_preset
from diffmf_core.models import DiffMF
from diffmf_core.modules.exchange import ChannelExchange, ChannelReweighting, CrossModalSSDExchange, SpatialExchange
from diffmf_core.modules.extraction import DiffExtractionStage, guide

TINY = DiffMFConfig(name="tiny", embed_dim=8, d_state=4, expand=1, head_dim=4, chunk_size=8, extraction_depth=1,
                    mlp_ratio=0.0, spatial_levels=2, pyramid_levels=3)


pytestmark = pytest.mark.usefixtures("one_thread")


def seeded(seed=0):
    torch.manual_seed(seed)


def decisive(model: DiffMF) -> DiffMF:
    """Random decoder head (it starts at zero, where the output ignores the features), so that the
    output depends on everything before it, as in a trained network."""
    torch.nn.init.normal_(model.decoder.head.weight, std=0.5)
    return model


def maps(*shape, n=2, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=gen) for _ in range(n)]


# ---- Algorithm 1 lines 5-6 and Table III ---------------------------------------------------------

IR, VI, DIFF = torch.tensor([2.0]), torch.tensor([10.0]), torch.tensor([0.25])


def test_guide_paper_updates_ir_first_then_vi_with_new_ir():
    ir, vi = guide(IR, VI, DIFF, "paper")
    ir_new = 0.75 * 2 + 0.25 * 10            # 4.0
    assert ir.item() == pytest.approx(ir_new)
    assert vi.item() == pytest.approx(0.75 * 10 + 0.25 * ir_new)  # uses the updated ir


def test_guide_v1_updates_vi_first():
    ir, vi = guide(IR, VI, DIFF, "v1")
    vi_new = 0.75 * 10 + 0.25 * 2            # 8.0
    assert vi.item() == pytest.approx(vi_new)
    assert ir.item() == pytest.approx(0.75 * 2 + 0.25 * vi_new)


def test_guide_v2_updates_both_from_old_features():
    ir, vi = guide(IR, VI, DIFF, "v2")
    assert ir.item() == pytest.approx(0.75 * 2 + 0.25 * 10)
    assert vi.item() == pytest.approx(0.75 * 10 + 0.25 * 2)


def test_guide_zero_difference_keeps_features_and_full_difference_swaps():
    for mode in ("paper", "v1", "v2"):
        assert [t.item() for t in guide(IR, VI, torch.zeros(1), mode)] == [2.0, 10.0]
    assert [t.item() for t in guide(IR, VI, torch.ones(1), "v2")] == [10.0, 2.0]
    with pytest.raises(ValueError):
        guide(IR, VI, DIFF, "bogus")


def expected_stage(stage, ir_self, vi_self, ir_share, vi_share, mode):
    """Algorithm 1 written out from the stage's own sub-modules, one modality at a time."""
    def shared(m):
        return stage.share_vss(F.gelu(stage.share_conv(m.permute(0, 3, 1, 2))).permute(0, 2, 3, 1))

    vi_s, ir_s = stage.vss_vi(vi_self), stage.vss_ir(ir_self)
    vi_sh, ir_sh = shared(vi_share), shared(ir_share)
    if mode == "none":
        return ir_s + ir_sh, vi_s + vi_sh, ir_sh, vi_sh
    d = torch.tanh((vi_sh - ir_sh).abs())
    if mode == "paper":
        ir_new = (1 - d) * ir_s + d * vi_s
        vi_new = (1 - d) * vi_s + d * ir_new
    elif mode == "v1":
        vi_new = (1 - d) * vi_s + d * ir_s
        ir_new = (1 - d) * ir_s + d * vi_new
    else:
        ir_new, vi_new = (1 - d) * ir_s + d * vi_s, (1 - d) * vi_s + d * ir_s
    return ir_new, vi_new, ir_sh, vi_sh


@pytest.mark.parametrize("mode", ["paper", "v1", "v2", "none"])
@torch.no_grad()
def test_extraction_stage_follows_algorithm_1(mode):
    seeded()
    stage = DiffExtractionStage(TINY.replace(guidance=mode)).eval()
    inputs = maps(2, 5, 6, TINY.embed_dim, n=4)
    got = stage(*inputs)
    for g, e in zip(got, expected_stage(stage, *inputs, mode)):
        assert torch.allclose(g, e, atol=1e-5)


@torch.no_grad()
def test_equal_shared_features_mean_no_cross_guidance():
    """Diff = tanh|vi_share - ir_share| = 0 when both shared inputs are equal: no mixing."""
    seeded()
    stage = DiffExtractionStage(TINY).eval()
    ir_self, vi_self, share = maps(1, 4, 4, TINY.embed_dim, n=3)
    ir, vi, _, _ = stage(ir_self, vi_self, share, share)
    assert torch.allclose(ir, stage.vss_ir(ir_self), atol=1e-6)
    assert torch.allclose(vi, stage.vss_vi(vi_self), atol=1e-6)


# ---- Cross-modal SSD exchange (Eq. 4-6, 15, 16) --------------------------------------------------

def exchange_outputs(module, ir, vi):
    with torch.no_grad():
        return module(ir, vi)


def dependence(mode):
    """(ir output depends on vi, vi output depends on ir) for one exchange mode."""
    seeded()
    module = CrossModalSSDExchange(TINY.replace(ssd_exchange=mode)).eval()
    ir, vi, ir2, vi2 = maps(1, 4, 5, TINY.embed_dim, n=4, seed=3)
    out_ir, out_vi = exchange_outputs(module, ir, vi)
    ir_after_vi_change, _ = exchange_outputs(module, ir, vi2)
    _, vi_after_ir_change = exchange_outputs(module, ir2, vi)
    return not torch.equal(out_ir, ir_after_vi_change), not torch.equal(out_vi, vi_after_ir_change)


@pytest.mark.parametrize("mode,expected", [
    ("paper", (True, True)),   # each modality scans with the other's B and C
    ("none", (False, False)),  # Table IV "w/o SSD exchange"
    ("v1", (True, False)),     # Eq. 15: both use visible B/C
    ("v2", (False, True)),     # Eq. 16: both use infrared B/C
])
def test_ssd_exchange_dependence(mode, expected):
    assert dependence(mode) == expected


def test_paper_exchange_combines_v1_ir_and_v2_vi():
    """Same weights: paper's ir output = v1's (visible B/C), paper's vi output = v2's (infrared B/C)."""
    seeded()
    module = CrossModalSSDExchange(TINY).eval()
    ir, vi = maps(1, 4, 5, TINY.embed_dim, seed=4)
    out = {}
    for mode in ("paper", "v1", "v2"):
        module.mode = mode
        out[mode] = exchange_outputs(module, ir, vi)
    assert torch.equal(out["paper"][0], out["v1"][0])
    assert torch.equal(out["paper"][1], out["v2"][1])


# ---- Channel re-weighting (Eq. 7-8) and channel-exchange switches ---------------------------------

@torch.no_grad()
def test_reweighting_without_residual_is_eq_7_8_without_alpha_beta():
    seeded()
    rw = ChannelReweighting(TINY.embed_dim, residual=False).eval()
    e_ir, e_vi, x_ir, x_vi = maps(2, 3, 4, TINY.embed_dim, n=4)
    ir2 = x_ir * torch.sigmoid(rw.gate_ir(x_ir))
    vi2 = x_vi * torch.sigmoid(rw.gate_vi(x_vi))
    omega = torch.sigmoid(rw.omega(torch.cat((e_ir, x_ir), -1).mean(dim=(1, 2), keepdim=True)))
    assert omega.shape == (2, 1, 1, TINY.embed_dim)  # one weight per sample and channel
    out_ir, out_vi = rw(e_ir, e_vi, x_ir, x_vi)
    assert torch.allclose(out_ir, (1 - omega) * ir2 + omega * vi2, atol=1e-6)
    assert torch.allclose(out_vi, (1 - omega) * vi2 + omega * ir2, atol=1e-6)


@torch.no_grad()
def test_reweighting_residual_adds_extraction_features():
    """With the residual, alpha = beta = 1 at initialisation, so F^e reaches the output; without it,
    F^e only enters through omega (a zero F^e with the residual equals no residual)."""
    seeded()
    with_res = ChannelReweighting(TINY.embed_dim, residual=True).eval()
    without = ChannelReweighting(TINY.embed_dim, residual=False).eval()
    without.load_state_dict({k: v for k, v in with_res.state_dict().items() if not k.startswith("alpha_beta")})
    e_ir, e_vi, x_ir, x_vi = maps(1, 3, 4, TINY.embed_dim, n=4)
    pooled = torch.cat((e_ir, e_vi), -1).mean(dim=(1, 2), keepdim=True)
    assert torch.equal(with_res.alpha_beta(pooled), torch.ones(1, 1, 1, 2 * TINY.embed_dim))
    assert not torch.allclose(with_res(e_ir, e_vi, x_ir, x_vi)[0], without(e_ir, e_vi, x_ir, x_vi)[0])
    zero = torch.zeros_like(e_ir)
    for a, b in zip(with_res(zero, zero, x_ir, x_vi), without(zero, zero, x_ir, x_vi)):
        assert torch.allclose(a, b, atol=1e-6)


@torch.no_grad()
def test_channel_exchange_without_reweighting_is_residual_of_exchange():
    seeded()
    module = ChannelExchange(TINY.replace(channel_reweighting=False)).eval()
    assert module.reweight is None
    f_ir, f_vi = maps(1, 4, 4, TINY.embed_dim, seed=5)
    x_ir, x_vi = module.exchange(f_ir, f_vi)
    out_ir, out_vi = module(f_ir, f_vi)
    assert torch.allclose(out_ir, f_ir + x_ir) and torch.allclose(out_vi, f_vi + x_vi)


@torch.no_grad()
def test_channel_exchange_with_reweighting_feeds_exchange_into_reweighting():
    seeded()
    module = ChannelExchange(TINY).eval()
    f_ir, f_vi = maps(1, 4, 4, TINY.embed_dim, seed=6)
    expected = module.reweight(f_ir, f_vi, *module.exchange(f_ir, f_vi))
    for a, b in zip(module(f_ir, f_vi), expected):
        assert torch.equal(a, b)


# ---- Spatial exchange ------------------------------------------------------------------------------

def test_average_spatial_exchange_is_exact_mean():
    module = SpatialExchange(TINY.replace(spatial_exchange="average"))
    assert len(list(module.parameters())) == 0
    ir, vi = maps(2, 5, 7, TINY.embed_dim)
    assert torch.equal(module(ir, vi), (ir + vi) / 2)


@torch.no_grad()
def test_spatial_exchange_mixes_both_modalities_and_keeps_shape():
    seeded()
    module = SpatialExchange(TINY).eval()
    ir, vi, vi2 = maps(1, 8, 12, TINY.embed_dim, n=3)
    out = module(ir, vi)
    assert out.shape == ir.shape
    assert not torch.equal(out, module(ir, vi2))


# ---- Whole-network ablation switches (behaviour via hooks on the stage boundaries) ---------------

def run_with_hooks(model, ir, vi):
    """Run the network and record the inputs/outputs of its top-level stages."""
    seen = {}

    def keep(name):
        def hook(module, args, output):
            seen[name] = (args, output)
        return hook

    handles = [getattr(model, name).register_forward_hook(keep(name))
               for name in ("embed_ir", "embed_vi", "extraction", "channel_exchange", "spatial_exchange", "decoder")
               if getattr(model, name) is not None]
    with torch.no_grad():
        out = model(ir, vi)
    for h in handles:
        h.remove()
    return out, seen


def pair(H=16, W=24, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(1, 1, H, W, generator=gen), torch.rand(1, 1, H, W, generator=gen)


def test_without_feature_extraction_embedding_goes_to_channel_exchange():
    seeded()
    model = DiffMF(TINY.replace(feature_extraction=False)).eval()
    out, seen = run_with_hooks(model, *pair())
    assert "extraction" not in seen
    assert torch.equal(seen["channel_exchange"][0][0], seen["embed_ir"][1])
    assert torch.equal(seen["channel_exchange"][0][1], seen["embed_vi"][1])


def test_without_channel_exchange_extraction_goes_to_spatial_exchange():
    seeded()
    model = DiffMF(TINY.replace(channel_exchange=False)).eval()
    out, seen = run_with_hooks(model, *pair())
    assert "channel_exchange" not in seen
    for a, b in zip(seen["spatial_exchange"][0], seen["extraction"][1]):
        assert torch.equal(a, b)


def test_paper_order_embedding_extraction_channel_spatial_decoder():
    seeded()
    model = DiffMF(TINY).eval()
    out, seen = run_with_hooks(model, *pair())
    assert torch.equal(seen["extraction"][0][0], seen["embed_ir"][1])
    for a, b in zip(seen["channel_exchange"][0], seen["extraction"][1]):
        assert torch.equal(a, b)
    for a, b in zip(seen["spatial_exchange"][0], seen["channel_exchange"][1]):
        assert torch.equal(a, b)
    assert torch.equal(seen["decoder"][0][0], seen["spatial_exchange"][1])


def test_average_mode_feeds_mean_of_channel_exchange_to_decoder():
    seeded()
    model = DiffMF(TINY.replace(spatial_exchange="average")).eval()
    out, seen = run_with_hooks(model, *pair())
    f_ir, f_vi = seen["channel_exchange"][1]
    assert torch.equal(seen["decoder"][0][0], (f_ir + f_vi) / 2)


ABLATIONS = [
    {}, {"feature_extraction": False}, {"channel_exchange": False}, {"spatial_exchange": "average"},
    {"guidance": "none"}, {"guidance": "v1"}, {"guidance": "v2"}, {"ssd_exchange": "none"},
    {"ssd_exchange": "v1"}, {"ssd_exchange": "v2"}, {"channel_reweighting": False},
    {"reweight_residual": False}, {"mixer": "attention", "attention_heads": 2}, {"spatial_levels": 1},
]


@pytest.mark.parametrize("changes", ABLATIONS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "paper")
def test_every_ablation_builds_runs_and_trains(changes):
    seeded()
    model = DiffMF(TINY.replace(**changes))
    ir, vi = pair(13, 19)
    out = model(ir, vi)
    assert out.shape == ir.shape and torch.isfinite(out).all()
    assert 0 <= out.min() and out.max() <= 1
    out.mean().backward()
    unused = {name for name, p in model.named_parameters() if p.grad is None}
    assert unused == set()  # every parameter of every variant is trained (DDP needs no unused-parameter search)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_ablation_changes_the_output():
    """Switching an ablation on the same weights changes the result (the switch is live)."""
    seeded()
    model = decisive(DiffMF(TINY)).eval()
    ir, vi = pair(seed=2)
    with torch.no_grad():
        base = model(ir, vi)
        for name, mode in (("guidance", "v2"), ("ssd_exchange", "none")):
            for m in model.modules():
                if name == "guidance" and isinstance(m, DiffExtractionStage):
                    m.guidance = mode
                if name == "ssd_exchange" and isinstance(m, CrossModalSSDExchange):
                    m.mode = mode
            assert not torch.allclose(model(ir, vi), base)


# ---- Whole network, both presets ---------------------------------------------------------------

def check_output(model, H, W, seed=0):
    ir, vi = pair(H, W, seed)
    with torch.inference_mode():
        out = model(ir, vi)
    assert out.shape == (1, 1, H, W)
    assert torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("size", [(1, 1), (5, 7), (37, 53), (32, 32), (512, 640)])
def test_live_any_size(size):
    seeded()
    check_output(DiffMF(get_preset("live")).eval(), *size)


@pytest.mark.parametrize("size", [(1, 1), (5, 7), (21, 13)])
def test_paper_small_sizes(size):
    seeded()
    check_output(DiffMF(get_preset("paper")).eval(), *size)


def test_batch_items_are_independent():
    seeded()
    model = DiffMF(get_preset("live")).eval()
    ir, vi = pair(40, 48, seed=3)
    ir2, vi2 = pair(40, 48, seed=4)
    with torch.inference_mode():
        both = model(torch.cat((ir, ir2)), torch.cat((vi, vi2)))
        assert torch.allclose(both[0:1], model(ir, vi), atol=1e-5)
        assert torch.allclose(both[1:2], model(ir2, vi2), atol=1e-5)


def test_large_inference_batches_run_one_item_at_a_time(monkeypatch):
    """Without gradients, VSS blocks above the memory bound split the batch; same output."""
    from diffmf_core.modules import vss

    seeded()
    model = DiffMF(TINY).eval()
    ir, vi = pair(24, 32, seed=5)
    batch = (torch.cat((ir, ir.flip(-1))), torch.cat((vi, vi.flip(-2))))
    calls = []
    monkeypatch.setattr(vss.VSSBlock, "_block", lambda self, x, f=vss.VSSBlock._block: calls.append(x.shape[0]) or f(self, x))
    with torch.no_grad():
        whole = model(*batch)
        whole_batches = set(calls)
        calls.clear()
        monkeypatch.setattr(vss, "MAX_BLOCK_ELEMENTS", 0)
        split = model(*batch)
    assert whole_batches == {2, 4} and set(calls) == {1}  # 4: the shared branch runs both modalities
    assert torch.allclose(split, whole, atol=1e-6)


def test_preset_shapes():
    live, paper = get_preset("live"), get_preset("paper")
    assert (paper.embed_dim, paper.d_state, paper.patch_size) == (32, 16, 1)
    assert live.multiple == 32 and paper.multiple == 4
    with pytest.raises(ValueError):
        DiffMFConfig(guidance="bogus")
    for bad in ({"output_stretch": 0.9}, {"head_region": "hot"}, {"warm_margin": 6}, {"head_maps": "gains"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            DiffMFConfig(**bad)
    # weights from before the decoder options: their config has none of them and keeps the defaults
    old = json.loads(live.to_json())
    for name in ("output_stretch", "head_region", "warm_margin", "head_maps"):
        del old[name]
    assert DiffMFConfig.from_json(json.dumps(old)) == live
    with pytest.raises(KeyError):
        get_preset("nope")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_live_runs_in_low_precision(dtype):
    """The Fuser's half mode: the whole network (portable scan) runs in float16/bfloat16."""
    seeded()
    model = DiffMF(get_preset("live")).eval()
    ir, vi = pair(64, 96)
    with torch.inference_mode():
        ref = model(ir, vi)
        out = model.to(dtype)(ir.to(dtype), vi.to(dtype))
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() < 0.02
