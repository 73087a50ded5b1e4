"""Cross-scan routes and merge, and the spatial-exchange token arrangements of Eq. 10 / Fig. 2."""
from __future__ import annotations

import torch

from diffmf_core.modules.exchange import deinterleave_columns, interleave_columns, side_by_side
from diffmf_core.ops.cross_scan import cross_merge, cross_scan


def labelled(H, W, d=1, b=1):
    """(b, H, W, d) map whose pixel (i, j) holds 100*i + j (+ 1000*channel + 10000*batch)."""
    i = torch.arange(H)[:, None, None]
    j = torch.arange(W)[None, :, None]
    c = torch.arange(d)[None, None, :]
    m = (100 * i + j + 1000 * c).float()
    return torch.stack([m + 10000 * k for k in range(b)])


def test_four_routes_on_labelled_map():
    m = labelled(2, 3)
    seq = cross_scan(m)
    assert seq.shape == (1, 6, 4, 1)
    rows = [0, 1, 2, 100, 101, 102]
    cols = [0, 100, 1, 101, 2, 102]
    assert seq[0, :, 0, 0].tolist() == rows
    assert seq[0, :, 1, 0].tolist() == cols
    assert seq[0, :, 2, 0].tolist() == rows[::-1]
    assert seq[0, :, 3, 0].tolist() == cols[::-1]


def test_routes_keep_channels_and_batches():
    m = labelled(3, 4, d=2, b=2)
    seq = cross_scan(m)
    assert torch.equal(seq[:, :, 0], m.reshape(2, 12, 2))
    assert torch.equal(seq[:, :, 1], m.transpose(1, 2).reshape(2, 12, 2))
    assert torch.equal(seq[:, :, 2], m.reshape(2, 12, 2).flip(1))
    assert torch.equal(seq[:, :, 3], m.transpose(1, 2).reshape(2, 12, 2).flip(1))


def test_merge_of_scan_is_four_times_input():
    for H, W in [(1, 1), (1, 5), (4, 1), (5, 7), (8, 8)]:
        m = torch.randn(2, H, W, 3)
        assert torch.allclose(cross_merge(cross_scan(m), H, W), 4 * m)


def test_merge_sends_each_route_back_to_its_pixels():
    """Merging a sequence set only on one route returns that route's tokens to their pixels."""
    H, W = 3, 4
    m = labelled(H, W)
    seq = cross_scan(m)
    for k in range(4):
        only = torch.zeros_like(seq)
        only[:, :, k] = seq[:, :, k]
        assert torch.equal(cross_merge(only, H, W), m)


def test_merge_is_adjoint_of_scan():
    H, W = 4, 6
    m, s = torch.randn(1, H, W, 2), torch.randn(1, H * W, 4, 2)
    assert torch.allclose((cross_scan(m) * s).sum(), (m * cross_merge(s, H, W)).sum(), atol=1e-5)


def figure_pair():
    """ir and vi 2x2 maps [1 2; 3 4], labelled +10 (ir) and +20 (vi): ir1 = 11, vi1 = 21, ..."""
    base = torch.tensor([[1.0, 2.0], [3.0, 4.0]])[None, :, :, None]
    return base + 10, base + 20


def test_column_arrangement_matches_figure():
    ir, vi = figure_pair()
    col = interleave_columns(ir, vi)
    assert col.shape == (1, 2, 4, 1)
    assert col[0, :, :, 0].tolist() == [[11, 21, 12, 22], [13, 23, 14, 24]]  # ir1 vi1 ir2 vi2 / ir3 vi3 ir4 vi4


def test_row_arrangement_matches_figure():
    ir, vi = figure_pair()
    row = side_by_side(ir, vi)
    assert row.shape == (1, 2, 4, 1)
    assert row[0, :, :, 0].tolist() == [[11, 12, 21, 22], [13, 14, 23, 24]]  # ir1 ir2 vi1 vi2 / ir3 ir4 vi3 vi4


def test_arrangements_invert():
    ir, vi = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 4)
    back_ir, back_vi = deinterleave_columns(interleave_columns(ir, vi))
    assert torch.equal(back_ir, ir) and torch.equal(back_vi, vi)
    row = side_by_side(ir, vi)
    assert torch.equal(row[:, :, :5], ir) and torch.equal(row[:, :, 5:], vi)


def test_row_major_scan_of_column_arrangement_alternates_modalities():
    """The first route over the interleaved map visits ir1 vi1 ir2 vi2 ir3 vi3 ir4 vi4."""
    ir, vi = figure_pair()
    seq = cross_scan(interleave_columns(ir, vi))
    assert seq[0, :, 0, 0].tolist() == [11, 21, 12, 22, 13, 23, 14, 24]
