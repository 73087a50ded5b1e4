"""FusionLoss (paper Eq. 11-14) and ssim_torch."""
import numpy as np
import pytest
import torch

from diffmf_core.losses import FusionLoss, SobelGradient, ssim_torch
from diffmf_core.metrics import ssim_index

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
