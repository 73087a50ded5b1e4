"""The Laplacian pyramid op and the pyramid decoder: exact collapse; the decoder's rule (a zero head:
each region's detail from its brighter source, sharpened), which a new decoder starts near; head
maps that overturn the rule; gradient to the trunk from the first step."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from diffmf_core.baselines import fuse_laplacian
from diffmf_core.modules import pyramid_decoder
from diffmf_core.modules.pyramid_decoder import CONTRAST, PyramidDecoder, rule_fusion
from diffmf_core.ops.pyramid import laplacian_pyramid, pyr_down, pyramid_levels, reconstruct

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("size", [(8, 8), (37, 53), (64, 96), (255, 129)])
def test_pyramid_collapses_exactly(size):
    x = torch.rand(2, 1, *size, generator=torch.Generator().manual_seed(0))
    levels = pyramid_levels(*size, 5)
    pyr = laplacian_pyramid(x, levels)
    assert len(pyr) == levels
    assert torch.allclose(reconstruct(pyr), x, atol=1e-6)


def test_pyr_down_halves_rounding_up_and_keeps_constants():
    x = torch.full((1, 1, 9, 14), 0.3)
    y = pyr_down(x)
    assert y.shape[-2:] == (5, 7)
    assert torch.allclose(y, torch.full_like(y, 0.3))


def test_pyramid_levels_keep_the_coarsest_side_at_least_four():
    assert pyramid_levels(512, 640, 5) == 5
    assert pyramid_levels(16, 16, 5) == 3  # 16 -> 8 -> 4
    assert pyramid_levels(7, 100, 5) == 2  # 7 -> 4
    assert pyramid_levels(6, 100, 5) == 1  # 6 -> 3 would be too small
    assert pyramid_levels(1, 1, 5) == 1


def scene(seed=0, size=64):
    """ir: a bright warm square on a smooth background; vi: fine stripes (texture) on mid gray."""
    gen = torch.Generator().manual_seed(seed)
    ir = 0.2 + 0.05 * torch.rand(1, 1, size, size, generator=gen)
    ir[..., 20:40, 20:40] = 0.9
    vi = torch.full((1, 1, size, size), 0.45)
    vi[..., :, ::2] += 0.2
    return ir, vi


def untrained(dim=4, levels=4):
    """A decoder whose head is zero: its rule."""
    dec = PyramidDecoder(dim, levels).eval()
    torch.nn.init.zeros_(dec.head.weight)
    return dec


def test_the_rule_takes_each_region_from_its_brighter_source_sharpened():
    ir, vi = scene()
    with torch.no_grad():
        fused = rule_fusion(ir, vi, 4)[0, 0].numpy()
    # the warm target stays bright and keeps the infrared's flat interior: no visible stripes mixed in
    assert fused[25:35, 25:35].mean() > 0.9
    assert np.abs(np.diff(fused[25:35, 25:35], axis=1)).mean() < 0.01
    # the background (visible brighter) keeps the visible stripes, sharpened by the starting gains
    stripes = np.abs(np.diff(fused[45:60, 5:60], axis=1)).mean()
    assert stripes > 0.22  # the visible stripe contrast is 0.2 per column step
    # a hard max over the same pyramid (the classical rule it softens) is close away from the edges
    reference = fuse_laplacian(ir[0, 0].numpy(), vi[0, 0].numpy(), levels=4, base="max")
    assert np.corrcoef(fused[45:60, 5:60].ravel(), reference[45:60, 5:60].ravel())[0, 1] > 0.95


def test_a_zero_head_is_the_rule_whatever_the_features():
    ir, vi = scene()
    dec = untrained()
    with torch.no_grad():
        rule = rule_fusion(ir, vi, 4)
        for seed in range(3):
            features = torch.randn(1, 8, 8, 4, generator=torch.Generator().manual_seed(seed))
            assert torch.allclose(dec(features, ir, vi), rule, atol=1e-6)


def test_a_new_decoder_starts_near_its_rule_and_passes_gradient_to_the_trunk():
    ir, vi = scene()
    torch.manual_seed(0)
    dec = PyramidDecoder(4, 4)
    features = torch.randn(1, 8, 8, 4, requires_grad=True)
    fused = dec(features, ir, vi)
    assert (fused - rule_fusion(ir, vi, 4)).abs().max() < 2 / 255  # within two grey levels
    fused.mean().backward()
    assert features.grad.abs().sum() > 0  # a zero head would pass exactly none
    assert dec.body.weight.grad.abs().sum() > 0


def test_selection_logits_overturn_the_rule_where_the_head_says_so():
    """A warm target darker than bright smoke: the rule takes the smoke (the brighter source); a
    head that selects the thermal image on the target keeps it, the rest stays the rule's."""
    ir = torch.full((1, 1, 64, 64), 0.2)
    ir[..., 24:40, 24:40] = 0.55  # the warm target
    vi = torch.full((1, 1, 64, 64), 0.8)  # smoke: brighter everywhere
    dec = untrained()
    features = torch.zeros(1, 8, 8, 4)
    features[:, 3:5, 3:5, 0] = 1.0  # "a target here", on the 1/8 grid
    with torch.no_grad():
        dec.body.weight.zero_()
        dec.body.bias.zero_()
        dec.body.weight[range(4), range(4), 1, 1] = 1.0  # the body passes the features on
        rule = dec(features, ir, vi)
        dec.head.weight[[0, 2, 4, 6], 0] = 4.0  # every selection logit (a_0, a_1, a_2, a_B) follows feature 0
        decided = dec(features, ir, vi)

    def contrast(x):
        return (x[..., 28:36, 28:36].mean() - x[..., 4:12, 4:12].mean()).item()
    assert abs(contrast(rule)) < 0.05  # the target is gone in the rule's output
    assert contrast(decided) < -0.1 or contrast(decided) > 0.1  # the decided output shows it
    # far away: the rule (up to the contrast stretch about the image mean, which the target moved)
    assert torch.allclose(decided[..., :8, :8], rule[..., :8, :8], atol=0.01)


def test_gain_contrast_and_selection_logits_do_what_they_say():
    ir, vi = scene()
    f = torch.zeros(1, 8, 8, 4)
    dec = untrained()
    with torch.no_grad():
        plain = dec(f, ir, vi)
        from_ir_alone, from_vi_alone = dec(f, ir, ir), dec(f, vi, vi)
        dec.head.bias[1:6:2] = 1.0  # gain logits of the three detail bands: gains x e^(0.5 tanh 1) = x1.46
        sharper = dec(f, ir, vi)
        dec.head.bias.zero_()
        ramp = torch.linspace(0.3, 0.6, 64).expand(1, 1, 64, 64).contiguous()  # smooth, nothing clips
        flat_ramp = dec(f, ramp, 0.1 * torch.ones_like(ramp))
        dec.head.bias[7] = 2.0  # contrast logit of the base: x e^(0.5 tanh 2) = x1.62
        steep_ramp = dec(f, ramp, 0.1 * torch.ones_like(ramp))
        dec.head.bias.zero_()
        dec.head.bias[8] = 1.0  # base offset: brighter everywhere the output does not clip
        brighter = dec(f, ir, vi)
        dec.head.bias.zero_()
        dec.head.bias[0:7:2] = 30.0  # every detail band and the base from the infrared image
        only_ir = dec(f, ir, vi)
        dec.head.bias[0:7:2] = -30.0  # ... from the visible image, the darker one in the target
        only_vi = dec(f, ir, vi)

    def texture(x):
        return (x[..., :, 1:] - x[..., :, :-1]).abs().mean()

    assert texture(sharper) > 1.1 * texture(plain)  # the stripes are strong detail: raised by a limited amount
    span = lambda x: (x[..., 32, -8] - x[..., 32, 8]).item()  # noqa: E731
    assert span(flat_ramp) == pytest.approx(CONTRAST * span(ramp), rel=0.05)  # the starting contrast
    assert span(steep_ramp) == pytest.approx(CONTRAST * 1.62 * span(ramp), rel=0.05)
    assert (brighter - plain)[..., 45:60, 5:60].mean() > 0.1
    assert torch.allclose(only_ir, from_ir_alone, atol=1e-3)
    assert torch.allclose(only_vi, from_vi_alone, atol=1e-3)


def test_decoder_gradients_reach_every_head_output():
    ir, vi = scene()
    dec = PyramidDecoder(4, 4)
    f = torch.randn(1, 8, 8, 4)
    dec(f, ir, vi).mean().backward()
    grad = dec.head.weight.grad.abs().sum(dim=(1, 2, 3))
    assert (grad > 0).all()


def test_gains_sharpen_edges_but_leave_noise_level_detail_alone():
    """Detail below CORING (sensor noise) keeps gain 1, so sharpening does not make video flicker."""
    gen = torch.Generator().manual_seed(3)
    flat = 0.5 + 0.004 * torch.randn(1, 1, 64, 64, generator=gen)  # noise of about 1 grey level
    edges = flat.clone()
    edges[..., :, 32:] += 0.3
    dark = torch.zeros_like(flat)
    dec = untrained()
    f = torch.zeros(1, 8, 8, 4)
    with torch.no_grad():
        plain_noise, plain_edge = dec(f, dark, flat), dec(f, dark, edges)
        dec.head.bias[1:6:2] = 1.0  # gains x1.46 on every detail band
        sharp_noise, sharp_edge = dec(f, dark, flat), dec(f, dark, edges)
    # without coring the whole noise would grow by about half (mean change ~0.0015); with it, a few rare
    # noise peaks near the threshold change by at most about a grey level
    assert (sharp_noise - plain_noise).abs().mean() < 3e-4
    assert (sharp_noise - plain_noise).abs().max() < 0.006
    step = lambda x: (x[..., :, 33] - x[..., :, 30]).mean()  # noqa: E731
    assert step(sharp_edge) > step(plain_edge) + 0.05


def test_sharpening_raises_faint_texture_fully_but_strong_edges_only_a_little(monkeypatch):
    """What a gain adds to a coefficient is limited to about (gain - 1) * BOOST_LIMIT: faint texture
    gets the full finest-band gain, a strong edge only a small overshoot (a linear gain would ring
    around it, and every movement of it in a video would flicker)."""
    flat = torch.full((1, 1, 64, 64), 0.3)
    step = flat.clone()
    step[..., 32:] = 0.6
    faint = flat.clone()
    faint[..., :, ::2] += 0.06  # stripes of about 15 grey levels: above the noise level
    dark, f = torch.zeros_like(flat), torch.zeros(1, 8, 8, 4)
    dec = untrained(levels=5)

    def fused():
        with torch.no_grad():
            edge, texture = dec(f, dark, step)[0, 0], dec(f, dark, faint)[0, 0]
        return (edge.max() - 0.6).item(), (texture[20:40, 20] - texture[20:40, 21]).mean().item()

    overshoot, stripes = fused()
    assert stripes > 1.5 * 0.06
    assert 0.01 < overshoot < 0.07
    monkeypatch.setattr(pyramid_decoder, "BOOST_LIMIT", (10.0,) * 4)  # practically a linear gain
    linear_overshoot, _ = fused()
    assert linear_overshoot > 3 * overshoot


def warm_square(size=128, height=0.4):
    """ir: a 16 px warm square ``height`` above a flat background, centred at (64, 64)."""
    ir = torch.full((1, 1, size, size), 0.2)
    ir[..., 56:72, 56:72] += height
    return ir


def test_warm_envelope_marks_warm_structures_and_their_margin_only():
    from diffmf_core.modules.pyramid_decoder import warm_envelope

    with torch.no_grad():
        near = warm_envelope(warm_square(), 0)[0, 0]
        wide = warm_envelope(warm_square(), 16)[0, 0]
        faint = warm_envelope(warm_square(height=10 / 255), 16)[0, 0]  # below WARM_LEVEL
        half = torch.full((1, 1, 128, 128), 0.2)
        half[..., :, 64:] = 0.8  # a bright half: wider than the opening, not a structure
        plateau = warm_envelope(half, 16)[0, 0]
    assert near.shape == (32, 32)  # the quarter grid
    assert near[16, 16] > 0.9 and wide[16, 16] > 0.99  # on the target
    assert near[16, 20] < 0.3 < 0.99 < wide[16, 20]  # 4 quarter-grid px (16 px) right of its centre
    assert near[16, 23] == 0 and wide[16, 28] == 0 and wide[2, 2] == 0  # exactly 0 away from it
    assert faint.max() == 0 and plateau.max() == 0


def pushed_decoder(others=1.0, **options):
    """A decoder whose head is constant: every selection logit +30 (the infrared image), the gain,
    contrast and offset logits ``others``."""
    dec = PyramidDecoder(4, 4, **options).eval()
    with torch.no_grad():
        dec.head.weight.zero_()
        dec.head.bias.fill_(others)
        dec.head.bias[0:7:2] = 30.0
    return dec


def test_a_warm_head_region_keeps_the_rule_away_from_warm_structures():
    """Visible stripes brighter than everything in the thermal image: the rule takes them
    everywhere; a head that selects the thermal image confined to warm structures takes it on the
    warm square (no stripes there) and leaves the rule's output unchanged far from it."""
    ir = warm_square()
    vi = torch.full_like(ir, 0.7)
    vi[..., :, ::2] += 0.2
    f = torch.zeros(1, 16, 16, 4)
    with torch.no_grad():
        rule = rule_fusion(ir, vi, 4)
        everywhere = pushed_decoder(others=0.0)(f, ir, vi)
        warm = pushed_decoder(others=0.0, head_region="warm", warm_margin=8)(f, ir, vi)

    def stripes(x):
        return (x[..., 58:70, 59:70] - x[..., 58:70, 58:69]).abs().mean()
    far = (..., slice(0, 24), slice(0, 128))
    assert (everywhere - rule)[far].abs().mean() > 0.1  # unconfined, the head moves every pixel
    # confined: far away it stays the rule (up to the contrast about the image mean, which the target moved)
    assert torch.allclose(warm[far], rule[far], atol=0.02)
    assert stripes(rule) > 0.2 and stripes(warm) < 0.2 * stripes(rule)  # on the target: the infrared image


def test_a_selection_only_head_sets_the_selections_and_nothing_else():
    ir, vi = scene()
    f = torch.zeros(1, 8, 8, 4)
    with torch.no_grad():
        dec = pushed_decoder(head_maps="selection")
        selected = dec(f, ir, vi)
        dec.head.bias[0:7:2] = 0.0  # selections back to the rule's; gain, contrast, offset logits stay 1
        rule_again = dec(f, ir, vi)
        assert torch.allclose(rule_again, rule_fusion(ir, vi, 4), atol=1e-6)
        from_ir_alone = dec(f, ir, ir)
    assert torch.allclose(selected, from_ir_alone, atol=1e-3)


def test_the_output_stretch_scales_the_output_about_its_mean_the_rules_too():
    ir, vi = scene()
    f = torch.zeros(1, 8, 8, 4)
    with torch.no_grad():
        plain = rule_fusion(ir, vi, 4)
        stretched = rule_fusion(ir, vi, 4, stretch=1.2)
        dec = PyramidDecoder(4, 4, stretch=1.2).eval()
        dec.head.weight.zero_()
        zero_head = dec(f, ir, vi)
    mean = plain.mean()
    assert torch.allclose(stretched, (mean + 1.2 * (plain - mean)).clamp(0, 1), atol=1e-6)
    assert torch.allclose(zero_head, stretched, atol=1e-6)  # a zero head is the stretched rule
    assert stretched.std() > 1.1 * plain.std()


def test_the_warm_rule_is_the_decoder_with_a_constant_warm_head_and_keeps_a_target_behind_smoke():
    """A warm person (square) behind bright smoke (a textured visible image brighter than anything
    in the thermal image): the rule takes the smoke everywhere and the target is gone; the warm rule
    takes the thermal image on it and is the rule far from it. It equals the decoder with a constant
    head (selection logit ``select`` confined to the warm envelope) whose maps share its grid."""
    from diffmf_core.modules.pyramid_decoder import warm_rule_fusion
    from diffmf_core.training.metrics import target_retention

    ir = warm_square()
    vi = torch.full_like(ir, 0.8)
    vi[..., :, ::2] += 0.1
    dec = PyramidDecoder(4, 4, stretch=1.1, head_region="warm", warm_margin=8, head_maps="selection").eval()
    with torch.no_grad():
        dec.head.weight.zero_()
        dec.head.bias.zero_()
        dec.head.bias[0:7:2] = 3.0  # a_k of the three detail bands and a_B
        head = dec(torch.zeros(1, 32, 32, 4), ir, vi)  # the head's maps on the quarter grid
        warm = warm_rule_fusion(ir, vi, 4, stretch=1.1, margin=8, select=3.0)
        rule = rule_fusion(ir, vi, 4, stretch=1.1)
    assert torch.allclose(warm, head, atol=1e-5)
    far = (..., slice(0, 24), slice(0, 128))
    assert torch.allclose(warm[far], rule[far], atol=0.02)

    def u8(x):
        return (x[0, 0].numpy() * 255).round()
    kept, lost = (target_retention(u8(ir), u8(x)) for x in (warm, rule))
    assert len(kept) == len(lost) == 1 and kept[0] > 0.8 and lost[0] < 0.2


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (5, 7), (17, 9), (31, 640), (480, 641)])
def test_the_warm_rule_fuses_any_size(size):
    """The node's default fuser on any image the node accepts: same size out, finite, in [0, 1]."""
    from diffmf_core.fuser import WarmRuleFuser

    gen = torch.Generator().manual_seed(0)
    ir, vi = torch.rand(1, 1, *size, generator=gen), torch.rand(1, 1, *size, generator=gen)
    out = WarmRuleFuser(device="cpu").fuse_tensor(ir, vi)
    assert out.shape == ir.shape and torch.isfinite(out).all() and 0 <= out.min() <= out.max() <= 1
