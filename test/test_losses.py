"""FusionLoss (paper Eq. 11-14), ssim_torch, and ScoreLoss with its differentiable metrics."""
import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from diffmf_core.training.losses import FusionLoss, SobelGradient, ssim_torch
from diffmf_core.training.metrics import ssim_index

torch.manual_seed(0)
X = torch.rand(2, 1, 32, 32)


def test_ssim_torch_identity_and_matches_numpy_metric():
    assert ssim_torch(X, X).item() == pytest.approx(1.0, abs=1e-5)
    a = np.random.default_rng(3).integers(0, 256, (24, 30)).astype(np.uint8)
    b = np.random.default_rng(4).integers(0, 256, (24, 30)).astype(np.uint8)
    t = ssim_torch(torch.from_numpy(a / 255.0)[None, None], torch.from_numpy(b / 255.0)[None, None])
    assert t.item() == pytest.approx(ssim_index(a, b), abs=1e-9)
    assert ssim_torch(X, X.flip(-1), reduction="none").shape == (2,)


def test_perfect_fusion_has_zero_loss():
    total, parts = FusionLoss()(X, X, X)
    assert total.item() == pytest.approx(0.0, abs=1e-5)
    assert set(parts) == {"ssim", "text", "int"}


def test_intensity_aggregation_hand_values():
    f, ir, vi = torch.zeros(1, 1, 16, 16), torch.full((1, 1, 16, 16), 0.5), torch.full((1, 1, 16, 16), 0.25)
    assert FusionLoss(aggregation="max")(f, ir, vi)[1]["int"].item() == pytest.approx(0.5)
    assert FusionLoss(aggregation="mean")(f, ir, vi)[1]["int"].item() == pytest.approx(0.375)
    assert FusionLoss()(f, ir, vi)[1]["text"].item() == 0.0  # all flat: no texture anywhere
    with pytest.raises(ValueError):
        FusionLoss(aggregation="median")


def test_texture_loss_uses_strongest_source_gradient():
    flat = torch.full_like(X, 0.3)
    assert FusionLoss()(X, X, flat)[1]["text"].item() == pytest.approx(0.0, abs=1e-7)
    ramp = torch.arange(8.0).repeat(8, 1)[None, None]
    g = SobelGradient()(ramp)
    assert torch.allclose(g[..., 1:-1, 1:-1], torch.full((1, 1, 6, 6), 8.0))  # |gx| = 8 per unit slope


def test_weights_and_gradients_flow():
    f = torch.rand(1, 1, 24, 24, requires_grad=True)
    ir, vi = torch.rand(1, 1, 24, 24), torch.rand(1, 1, 24, 24)
    total, parts = FusionLoss(lambda_ssim=1, lambda_text=2, lambda_int=3)(f, ir, vi)
    assert total.item() == pytest.approx(parts["ssim"].item() + 2 * parts["text"].item() + 3 * parts["int"].item(), rel=1e-5)
    total.backward()
    assert f.grad is not None and torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0


# --- each term on non-identical inputs, hand-computed (roles of ir / vi and of w1 / w2) ------------------------

C1 = 0.01 ** 2  # data range 1


def _flat(value: float, size: int = 16) -> torch.Tensor:
    return torch.full((1, 1, size, size), value, dtype=torch.float64)


def _lum(x: float, y: float) -> float:
    """SSIM of two flat images: only the luminance term is left (the variances are 0)."""
    return (2 * x * y + C1) / (x * x + y * y + C1)


def test_ssim_term_weights_w1_with_ir_and_w2_with_vi():
    """Eq. 11: L_ssim = w1 (1 - ssim(f, ir)) + w2 (1 - ssim(f, vi)). With f equal to one source and
    w1 != w2 the value says which weight goes with which source, and that vi is used at all."""
    loss = FusionLoss(w1=0.3, w2=0.7)
    ir, vi = _flat(0.5), _flat(0.25)
    gap = 1 - _lum(0.5, 0.25)
    assert loss(ir, ir, vi)[1]["ssim"].item() == pytest.approx(0.7 * gap, abs=1e-9)  # f = ir: only the vi part
    assert loss(vi, ir, vi)[1]["ssim"].item() == pytest.approx(0.3 * gap, abs=1e-9)  # f = vi: only the ir part
    f = _flat(0.4)
    both = 0.3 * (1 - _lum(0.4, 0.5)) + 0.7 * (1 - _lum(0.4, 0.25))
    assert loss(f, ir, vi)[1]["ssim"].item() == pytest.approx(both, abs=1e-9)


def test_ssim_term_on_textured_images_matches_the_numpy_metric():
    """Structure (not only luminance): the term equals w1 (1 - SSIM(f, ir)) + w2 (1 - SSIM(f, vi)) of
    the independent numpy metric on three different textured images."""
    rng = np.random.default_rng(11)
    f, ir, vi = (rng.integers(0, 256, (20, 24)).astype(np.uint8) for _ in range(3))
    as_t = lambda a: torch.from_numpy(a / 255.0)[None, None]  # noqa: E731
    expected = 0.2 * (1 - ssim_index(f, ir)) + 0.8 * (1 - ssim_index(f, vi))
    got = FusionLoss(w1=0.2, w2=0.8)(as_t(f), as_t(ir), as_t(vi))[1]["ssim"].item()
    assert got == pytest.approx(expected, abs=1e-9)


# ramps on 8x8 (values stay in [0, 1]): ir rises along x by 1/64 per pixel, vi along y by 1/32.
# With reflect padding, |grad| = 8 * slope inside and 0 on the two edge columns (ir) / rows (vi):
# |grad ir| = 0.125 on columns 1..6, |grad vi| = 0.25 on rows 1..6.
RAMP = torch.arange(8, dtype=torch.float64)
IR_RAMP = (RAMP / 64).repeat(8, 1)[None, None]
VI_RAMP = (RAMP / 32)[:, None].repeat(1, 8)[None, None]


def test_texture_term_hand_values():
    """Eq. 12: L_text = mean | |grad f| - max(|grad ir|, |grad vi|) |. max(...) is 0.25 on the 48 pixels
    of rows 1..6 and 0.125 on the 12 inner pixels of rows 0 and 7 (0 at the 4 corners)."""
    loss = FusionLoss()
    g = SobelGradient()
    assert torch.allclose(g(IR_RAMP)[..., 1:-1], torch.full((1, 1, 8, 6), 0.125, dtype=torch.float64))
    assert torch.allclose(g(VI_RAMP)[..., 1:-1, :], torch.full((1, 1, 6, 8), 0.25, dtype=torch.float64))
    flat = torch.zeros_like(IR_RAMP)
    assert loss(flat, IR_RAMP, VI_RAMP)[1]["text"].item() == pytest.approx((48 * 0.25 + 12 * 0.125) / 64)
    assert loss(flat, VI_RAMP, IR_RAMP)[1]["text"].item() == pytest.approx((48 * 0.25 + 12 * 0.125) / 64)
    # f = ir: the shortfall against vi's stronger gradient on rows 1..6 (0.125 inside, 0.25 on the edge columns)
    assert loss(IR_RAMP, IR_RAMP, VI_RAMP)[1]["text"].item() == pytest.approx((36 * 0.125 + 12 * 0.25) / 64)
    assert loss(VI_RAMP, IR_RAMP, VI_RAMP)[1]["text"].item() == pytest.approx(12 * 0.125 / 64)
    # f = 4 vi overshoots: |grad f| = 1 on rows 1..6 (0.75 above the target), 0 on rows 0 and 7
    assert loss(4 * VI_RAMP, IR_RAMP, VI_RAMP)[1]["text"].item() == pytest.approx((48 * 0.75 + 12 * 0.125) / 64)


def test_texture_overshoot_weight_hand_values():
    """The asymmetric texture term, L_text = mean(relu(T - G_f)) + text_overshoot * mean(relu(G_f - T)):
    text_overshoot = 1 is Eq. 12; below 1 an overshooting gradient costs less than a missing one."""
    import inspect
    if "text_overshoot" not in inspect.signature(FusionLoss).parameters:
        pytest.skip("FusionLoss has no text_overshoot parameter (yet)")
    under, over = 12 * 0.125 / 64, 48 * 0.75 / 64  # f = 4 vi: see test_texture_term_hand_values
    assert FusionLoss()(4 * VI_RAMP, IR_RAMP, VI_RAMP)[1]["text"].item() == pytest.approx(under + over)
    for k in (0.0, 0.5, 2.0):
        got = FusionLoss(text_overshoot=k)(4 * VI_RAMP, IR_RAMP, VI_RAMP)[1]["text"].item()
        assert got == pytest.approx(under + k * over), k
    # only a shortfall (f = ir): the weight does not matter
    assert FusionLoss(text_overshoot=0.5)(IR_RAMP, IR_RAMP, VI_RAMP)[1]["text"].item() == pytest.approx(
        (36 * 0.125 + 12 * 0.25) / 64)


def test_intensity_term_hand_values_per_source():
    """Eq. 13: L_int = mean |f - max(ir, vi)|, element-wise; values chosen so that max, mean, min, ir
    alone and vi alone all give different results (0.25, 0.125, 0.2, 0.35, 0.1)."""
    tile = lambda a, b: torch.tensor([[a, b]], dtype=torch.float64).repeat(4, 2)[None, None]  # noqa: E731
    f, ir, vi = tile(0.5, 0.5), tile(0.2, 0.9), tile(0.6, 0.4)
    assert FusionLoss()(f, ir, vi)[1]["int"].item() == pytest.approx(0.25)
    assert FusionLoss()(f, vi, ir)[1]["int"].item() == pytest.approx(0.25)  # max is symmetric
    assert FusionLoss(aggregation="mean")(f, ir, vi)[1]["int"].item() == pytest.approx(0.125)


def test_total_is_the_paper_weighted_sum_by_default():
    """Eq. 14 with the paper's lambda_ssim = 10, lambda_text = 20, lambda_int = 20 (w1 = w2 = 0.5)."""
    f = torch.full_like(IR_RAMP, 0.3)
    total, parts = FusionLoss()(f, IR_RAMP, VI_RAMP)
    assert min(parts.values()).item() > 0
    expected_ssim = 0.5 * (1 - ssim_torch(f, IR_RAMP)) + 0.5 * (1 - ssim_torch(f, VI_RAMP))
    assert parts["ssim"].item() == pytest.approx(expected_ssim.item())
    assert total.item() == pytest.approx(10 * parts["ssim"].item() + 20 * parts["text"].item() + 20 * parts["int"].item())


# ---- found by the scoped mutation run (docs/development.md) --------------------------------------

def test_ssim_input_and_argument_errors_say_what_is_wrong():
    with pytest.raises(ValueError, match=r"BxCxHxW shapes, got \(1, 8, 8\) and \(1, 8, 8\)"):
        ssim_torch(torch.rand(1, 8, 8), torch.rand(1, 8, 8))  # equal shapes, but not 4-D
    with pytest.raises(ValueError, match=r"got \(1, 1, 8, 8\) and \(1, 1, 8, 9\)"):
        ssim_torch(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 9))
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'none', got 'sum'"):
        ssim_torch(X, X, reduction="sum")
    with pytest.raises(ValueError, match="aggregation must be 'max' or 'mean', got 'min'"):
        FusionLoss(aggregation="min")
    with pytest.raises(ValueError, match="text_overshoot must be >= 0, got -0.5"):
        FusionLoss(text_overshoot=-0.5)


@pytest.mark.parametrize("side, window", [(7, 7), (8, 7), (9, 9)])
def test_ssim_window_shrinks_to_the_largest_odd_size_that_fits(side, window):
    """Images smaller than the 11x11 window: one window of the largest odd size, computed by hand."""
    gen = torch.Generator().manual_seed(side)
    a, b = torch.rand(side, side, generator=gen, dtype=torch.float64), torch.rand(side, side, generator=gen,
                                                                                  dtype=torch.float64)
    t = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
    g = torch.exp(-t * t / (2 * 1.5 ** 2))
    w = torch.outer(g, g) / torch.outer(g, g).sum()
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ssims = []
    for y in range(side - window + 1):
        for x in range(side - window + 1):
            pa, pb = a[y:y + window, x:x + window], b[y:y + window, x:x + window]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va, vb = (w * pa * pa).sum() - ma ** 2, (w * pb * pb).sum() - mb ** 2
            cov = (w * pa * pb).sum() - ma * mb
            ssims.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
    expected = torch.stack(ssims).mean().item()
    assert ssim_torch(a[None, None], b[None, None]).item() == pytest.approx(expected, abs=1e-9)


def test_ssim_constants_scale_with_the_data_range_and_channels_are_separate():
    gen = torch.Generator().manual_seed(5)
    a, b = 0.1 * torch.rand(1, 2, 16, 16, generator=gen), torch.rand(1, 2, 16, 16, generator=gen)  # dark vs bright
    scaled = ssim_torch(a * 255, b * 255, data_range=255.0).item()
    assert scaled == pytest.approx(ssim_torch(a, b).item(), abs=1e-6)
    per_channel = [ssim_torch(a[:, k:k + 1], b[:, k:k + 1]).item() for k in range(2)]
    assert ssim_torch(a, b).item() == pytest.approx(sum(per_channel) / 2, abs=1e-6)


def test_sobel_keeps_the_shape_and_the_loss_has_no_saved_state():
    x = torch.rand(2, 3, 10, 12)
    assert SobelGradient()(x).shape == x.shape
    assert dict(FusionLoss().state_dict()) == {}  # nothing of the loss ends up in a checkpoint


def _textured(seed: int, shape=(40, 48)) -> np.ndarray:
    """A u8 image with structure at several scales (a ramp, a block and noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    img = 60 + 2.0 * x + 30 * ((y // 10 + x // 12) % 2) + rng.normal(0, 12, shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _t(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img / 255.0)[None, None]


def test_differentiable_metrics_match_the_evaluation_metrics():
    """The score loss's metrics are the evaluation's (diffmf_core.training.metrics) on u8 images: exact for
    SD, SF, AG, VIF and EN (a u8 value falls on one bin); MI uses 64 bins, so it is only close in rank."""
    from diffmf_core.training import metrics
    from diffmf_core.training.losses import (average_gradient_t, soft_entropy, soft_mutual_information, spatial_frequency_t,
                                    std_dev_t, vifp_mscale_t)
    f, ir = _textured(1), _textured(2)
    assert soft_entropy(_t(f)).item() == pytest.approx(metrics.entropy(f), abs=1e-6)
    assert std_dev_t(_t(f)).item() == pytest.approx(metrics.std_dev(f), rel=1e-6)
    assert spatial_frequency_t(_t(f)).item() == pytest.approx(metrics.spatial_frequency(f), rel=1e-6)
    assert average_gradient_t(_t(f)).item() == pytest.approx(metrics.average_gradient(f), rel=1e-5)
    assert vifp_mscale_t(_t(ir), _t(f)).item() == pytest.approx(metrics.vifp_mscale(ir, f), rel=1e-5)
    assert vifp_mscale_t(_t(ir), _t(ir)).item() == pytest.approx(1.0, abs=1e-6)
    blurred = cv2.GaussianBlur(f, (5, 5), 1.5)
    mi_same, mi_blur = (soft_mutual_information(_t(x), _t(f)).item() for x in (f, blurred))
    assert mi_same > mi_blur > soft_mutual_information(_t(ir), _t(f)).item()


def test_score_loss_is_one_minus_the_capped_mean_ratio_and_has_a_gradient():
    from diffmf_core.training.losses import ScoreLoss, paper_metrics_t
    ir, vi = _t(_textured(3)).float(), _t(_textured(4)[:, ::-1].copy()).float()
    loss_fn = ScoreLoss(cap=1.1)
    reference = loss_fn.reference(ir, vi)
    assert reference.shape == (1, 6) and (reference > 0).all()
    fused = ((ir + vi) / 2).requires_grad_(True)
    loss, parts = loss_fn(fused, ir, vi)
    ratio = (paper_metrics_t(fused, ir, vi) / reference).detach()[0]
    assert loss.item() == pytest.approx(1 - ratio.clamp(max=1.1).mean().item(), abs=1e-6)
    assert list(parts) == ["EN", "SD", "SF", "MI", "VIF", "AG"]
    assert [parts[k].item() for k in parts] == pytest.approx(ratio.tolist(), rel=1e-6)
    loss.backward()
    assert torch.isfinite(fused.grad).all() and fused.grad.abs().sum() > 0
    # a mean of the sources is blurrier than a Laplacian pyramid: below 1 on sharpness
    assert parts["SF"].item() < 1 and parts["AG"].item() < 1
    # the cap: an output far sharper than the rules counts 1.1 on SF and AG, with no gradient from them
    noisy = (fused.detach() + 0.3 * torch.randn_like(fused)).clamp(0, 1)
    _, noisy_parts = loss_fn(noisy, ir, vi)
    assert noisy_parts["SF"].item() > 1.1 and noisy_parts["AG"].item() > 1.1


def test_target_loss_is_zero_when_warm_targets_keep_their_contrast_and_one_when_flat():
    from diffmf_core.training.losses import TargetLoss

    ir = torch.full((2, 1, 64, 64), 0.25)
    ir[:, :, 20:30, 24:34] = 0.8
    loss = TargetLoss()
    assert loss(ir, ir).item() == pytest.approx(0.0)
    assert loss(ir + 0.1, ir).item() == pytest.approx(0.0, abs=1e-5)  # brighter overall, same contrast
    assert loss(torch.full_like(ir, 0.5), ir).item() == pytest.approx(1.0, abs=1e-6)  # gone
    assert loss(1.05 - ir, ir).item() == pytest.approx(1.0, abs=1e-6)  # inverted: lost, no worse
    assert loss(0.25 + 0.5 * (ir - 0.25), ir).item() == pytest.approx(0.5, abs=0.02)  # half the contrast
    flat = torch.full_like(ir, 0.3)
    assert loss(torch.rand_like(ir), flat).item() == 0.0  # no warm target: nothing to keep
    fused = torch.full_like(ir, 0.5).requires_grad_()
    loss(fused, ir).backward()
    assert fused.grad[:, :, 20:30, 24:34].sum() < 0  # raising the target lowers the loss
    on = loss.on_targets(ir)  # the warm square and 2 px around it; not its surroundings beyond
    assert on[0, 0, 25, 29] == 1 and on[0, 0, 20 - 2, 29] == 1 and on[0, 0, 20 - 3, 29] == 0
    assert on[0, 0, 60, 60] == 0


def test_target_loss_share_stops_pushing_targets_that_keep_that_share():
    from diffmf_core.training.losses import TargetLoss

    ir = torch.full((1, 1, 64, 64), 0.25)
    ir[..., 20:30, 24:34] = 0.8
    kept = {k: 0.25 + k * (ir - 0.25) for k in (0.3, 0.6, 0.8)}  # the target at k of its contrast
    assert TargetLoss(share=0.6)(kept[0.6], ir).item() == pytest.approx(0.0, abs=1e-5)
    assert TargetLoss(share=0.6)(kept[0.8], ir).item() == pytest.approx(0.0, abs=1e-5)
    assert TargetLoss(share=0.6)(kept[0.3], ir).item() == pytest.approx(0.5, abs=0.02)  # half of 0.6 lost
    assert TargetLoss()(kept[0.6], ir).item() == pytest.approx(0.4, abs=0.02)
    assert TargetLoss(share=0.6)(torch.full_like(ir, 0.5), ir).item() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="share"):
        TargetLoss(share=0.0)


def test_target_loss_per_pixel_prices_lost_contrast_by_area():
    from diffmf_core.training.losses import TargetLoss

    ir = torch.full((1, 1, 64, 64), 0.25)
    ir[..., 20:30, 24:34] = 0.8
    half = 0.25 + 0.5 * (ir - 0.25)
    per_pixel, per_target = TargetLoss(norm="pixels"), TargetLoss()
    m = per_pixel.mask(ir)
    c_ir = per_pixel._contrast(ir).clamp(min=0)
    assert per_pixel(ir, ir).item() == pytest.approx(0.0, abs=1e-7)
    assert per_pixel(half, ir).item() == pytest.approx((m * (c_ir - per_pixel._contrast(half))).mean().item(), rel=1e-5)
    assert per_pixel(half, ir).item() == pytest.approx(per_target(half, ir).item() * (m * c_ir).mean().item(), rel=1e-5)
    big = torch.zeros(1, 1, 128, 128) + 0.25  # the same target in a crop four times the area: a quarter of the price
    big[..., 20:30, 24:34] = 0.8
    assert per_pixel(0.25 + 0.5 * (big - 0.25), big).item() == pytest.approx(per_pixel(half, ir).item() / 4, rel=0.02)
    with pytest.raises(ValueError, match="norm"):
        TargetLoss(norm="area")
    from diffmf_core.cli import build_parser  # the parser spells the choices out (it imports no torch)
    for norm in TargetLoss.NORMS:
        assert build_parser("train").parse_args(["train", "--target-norm", norm]).target_norm == norm


def test_target_loss_radius_sets_the_target_size_and_its_separable_pools_equal_the_square_ones():
    from diffmf_core.training.losses import TargetLoss

    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 1, 70, 90, generator=gen)
    for radius in (3, 48):  # 48: windows wider than the image, clipped at every border
        loss, size = TargetLoss(radius=radius), 2 * radius + 1
        box = F.avg_pool2d(x, size, stride=1, padding=radius, count_include_pad=False)
        assert torch.allclose(loss._contrast(x), x - box, atol=1e-5)
        opened = F.max_pool2d(-F.max_pool2d(-x, size, stride=1, padding=radius), size, stride=1, padding=radius)
        assert torch.equal(loss.mask(x), (x - opened >= loss.level).to(x.dtype))
    ir = torch.full((1, 1, 128, 128), 0.25)
    ir[..., 40:80, 40:80] = 0.8  # a warm square 40 px wide: a target for radius 48, not for 16
    assert TargetLoss(radius=48).mask(ir)[..., 40:80, 40:80].all() and TargetLoss(radius=48).mask(ir).sum() == 1600
    assert TargetLoss(radius=16).mask(ir).sum() == 0


def test_rule_loss_is_the_distance_to_the_rule_weighted_less_on_warm_targets():
    from diffmf_core.modules.pyramid_decoder import rule_fusion
    from diffmf_core.training.losses import RuleLoss, TargetLoss

    gen = torch.Generator().manual_seed(0)
    ir = 0.25 + 0.05 * torch.rand(1, 1, 96, 96, generator=gen)
    ir[..., 10:20, 10:20] = 0.8  # a warm target in the top-left corner
    vi = 0.6 + 0.1 * torch.rand(1, 1, 96, 96, generator=gen)
    loss = RuleLoss(4, TargetLoss())
    rule = rule_fusion(ir, vi, 4)
    assert loss(rule, ir, vi)[0].item() == pytest.approx(0.0, abs=1e-7)
    on_target = TargetLoss().on_targets(ir)
    changed_on_target = rule + 0.1 * on_target  # the network decides at the target: it costs a quarter
    assert loss(changed_on_target, ir, vi)[1]["rule"].item() == pytest.approx(
        0.1 * RuleLoss.TARGET_WEIGHT * on_target.mean().item(), rel=1e-4)
    value, parts = loss(rule + 0.1 * (1 - on_target), ir, vi)  # anywhere else it costs in full
    assert parts["rule"].item() == pytest.approx(0.1 * (1 - on_target.mean().item()), rel=1e-4)
    # losing the rule's detail costs more than its few grey levels of intensity
    blurred = torch.nn.functional.avg_pool2d(rule, 5, stride=1, padding=2, count_include_pad=False)
    value, parts = loss(blurred, ir, vi)
    assert parts["detail"].item() > 2 * parts["rule"].item() > 0 and value.item() == pytest.approx(
        parts["rule"].item() + parts["detail"].item())
    assert loss(rule + 0.1 * torch.rand_like(rule), ir, vi)[1]["detail"].item() < parts["detail"].item() / 4


def test_rule_loss_detail_overshoot_prices_sharpening_beyond_the_rule():
    from diffmf_core.modules.pyramid_decoder import rule_fusion
    from diffmf_core.training.losses import RuleLoss, SobelGradient, TargetLoss

    gen = torch.Generator().manual_seed(1)
    ir = 0.25 + 0.05 * torch.rand(1, 1, 96, 96, generator=gen)
    vi = 0.4 + 0.2 * torch.rand(1, 1, 96, 96, generator=gen)
    rule = rule_fusion(ir, vi, 4)
    blurred = torch.nn.functional.avg_pool2d(rule, 3, stride=1, padding=1, count_include_pad=False)
    sharper = (rule + 0.5 * (rule - blurred)).clamp(0, 1)  # unsharp masking: more detail than the rule
    free, held = RuleLoss(4, TargetLoss()), RuleLoss(4, TargetLoss(), detail_overshoot=1.0)
    assert held(rule, ir, vi)[0].item() == pytest.approx(0.0, abs=1e-7)
    excess = SobelGradient()(sharper) - SobelGradient()(rule)  # no warm target here: weight 1 everywhere
    assert free(sharper, ir, vi)[1]["detail"].item() == pytest.approx(excess.clamp(max=0).abs().mean().item(), rel=1e-5)
    assert held(sharper, ir, vi)[1]["detail"].item() == pytest.approx(excess.abs().mean().item(), rel=1e-5)
    assert held(sharper, ir, vi)[1]["detail"].item() > 5 * free(sharper, ir, vi)[1]["detail"].item()
