"""Classical fusers: exact small cases, perfect reconstruction, colour handling, speed."""
import time

import numpy as np
import pytest

from diffmf_core.baselines import CLASSICAL_FUSERS, ClassicalFuser, fuse_gff, fuse_laplacian, fuse_max, fuse_mean
from diffmf_core.common.color import bgr_to_ycrcb

RNG = np.random.default_rng(1)
A = RNG.random((60, 80), dtype=np.float32)
B = RNG.random((60, 80), dtype=np.float32)


def test_mean_and_max_exact():
    ir = np.array([[0.0, 1.0]], np.float32)
    vi = np.array([[0.5, 0.25]], np.float32)
    assert np.allclose(fuse_mean(ir, vi), [[0.25, 0.625]])
    assert np.allclose(fuse_max(ir, vi), [[0.5, 1.0]])


@pytest.mark.parametrize("fn", [fuse_laplacian, fuse_gff])
def test_identical_inputs_reconstruct(fn):
    assert np.abs(fn(A, A) - A).max() < 1e-4


@pytest.mark.parametrize("name", sorted(CLASSICAL_FUSERS))
def test_outputs_in_range_and_odd_sizes(name):
    a, b = A[:37, :53], B[:37, :53]
    out = CLASSICAL_FUSERS[name](a, b)
    assert out.shape == a.shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_laplacian_keeps_strongest_detail():
    flat = np.full((64, 64), 0.5, np.float32)
    edge = flat.copy()
    edge[:, 32:] = 0.9
    step = np.abs(np.diff(fuse_laplacian(flat, edge), axis=1)).max()
    assert step > 1.3 * np.abs(np.diff(fuse_mean(flat, edge), axis=1)).max()  # sharper than averaging


def test_classical_fuser_colour_and_gray():
    fuser = ClassicalFuser("max")
    vi = RNG.integers(0, 256, (40, 50, 3)).astype(np.uint8)
    ir = np.zeros((40, 50), np.uint8)
    out = fuser.fuse(ir, vi)  # max with a black ir keeps vi's luminance and chroma
    assert out.shape == vi.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - vi).max() <= 2
    gray = fuser.fuse(np.dstack([ir] * 3), vi[..., 0])
    assert gray.shape == (40, 50) and np.array_equal(gray, vi[..., 0])
    y = fuser.fuse_y(np.ones((40, 50), np.float32), bgr_to_ycrcb(vi)[0])
    assert np.all(y == 1.0)


def test_classical_fuser_errors():
    with pytest.raises(ValueError):
        ClassicalFuser("nope")
    with pytest.raises(ValueError):
        ClassicalFuser("mean").fuse(np.zeros((4, 5), np.uint8), np.zeros((4, 6, 3), np.uint8))


def test_gff_fast_enough_for_fallback():
    ir, vi = RNG.random((512, 640), dtype=np.float32), RNG.random((512, 640), dtype=np.float32)
    fuse_gff(ir, vi)
    t0 = time.perf_counter()
    fuse_gff(ir, vi)
    assert time.perf_counter() - t0 < 0.3  # ~60 ms on 2 busy cores; generous for CI noise


def test_rule_is_the_network_decoder_without_the_network():
    """`rule` = a DIFF-MF network whose decoder head is zero, whatever its trunk holds; no trunk runs."""
    import torch

    from diffmf_core.config import get_preset
    from diffmf_core.models import DiffMF

    rng = np.random.default_rng(2)
    ir, vi = rng.random((64, 96), dtype=np.float32), rng.random((64, 96), dtype=np.float32)  # no padding
    torch.manual_seed(0)
    model = DiffMF(get_preset("live")).eval()
    torch.nn.init.zeros_(model.decoder.head.weight)
    with torch.no_grad():
        network = model(torch.from_numpy(ir)[None, None], torch.from_numpy(vi)[None, None])[0, 0].numpy()
    rule = ClassicalFuser("rule").fuse_y(ir, vi)
    assert rule.dtype == np.float32 and rule.shape == ir.shape
    assert np.abs(rule - network).max() < 1e-5
    # region by region the brighter source: a much brighter thermal image wins nearly everywhere
    bright_ir = np.clip(ir * 0.2 + 0.8, 0, 1).astype(np.float32)
    assert np.corrcoef(ClassicalFuser("rule").fuse_y(bright_ir, vi * 0.2).ravel(), bright_ir.ravel())[0, 1] > 0.9
