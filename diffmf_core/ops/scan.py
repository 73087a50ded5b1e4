"""Selective state-space scan with scalar per-head decay (the SSD form of Mamba-2).

For every batch b, head h (head dim P) and token t, with a state H_t in R^{N x P}:

    H_t = exp(dt_t * A_h) * H_{t-1} + B_t (dt_t x_t)^T        (paper Eq. 3, ZOH with scalar A)
    y_t = C_t^T H_t + D_h x_t

Shapes (the ``mamba_ssm.ops.triton.ssd_combined.mamba_chunk_scan_combined`` convention):
    x (b, l, h, p), dt (b, l, h) > 0, A (h,) < 0, B and C (b, l, g, n) with h % g == 0
    (head ``i`` reads group ``i // (h // g)``), D (h,) or None  ->  y (b, l, h, p).

Three implementations of one algorithm:
- ``selective_scan_naive``: token-by-token loop; the reference, used only in tests.
- ``selective_scan_chunked``: portable PyTorch. Chunks of Q tokens; inside a chunk the scan is a
  masked (Q x Q) decay matrix times C B^T (matrix products, SSD duality); chunk states are carried
  between chunks by the same algorithm one level up, so the cost stays O(L * Q) and there is no
  Python loop over tokens or chunks. All exponents are differences of cumulative log-decays taken
  inside one chunk with the mask applied before ``exp``, so they are <= 0: no overflow, no NaN.
- ``mamba_ssm``'s fused Triton kernel, used when it imports and the tensors are on CUDA (also from a
  mamba-ssm install without its compiled extensions, see ``import_mamba_chunk_scan``).
"""
from __future__ import annotations

import functools
import importlib.util
import sys

import torch
import torch.nn.functional as F

from diffmf_core.config import SCAN_BACKENDS


def _upcast(*tensors):
    """float16/bfloat16 -> float32 (float32/float64 unchanged): the portable scans compute in at
    least float32, like mamba_ssm's kernel, and return the input dtype."""
    return [None if t is None else t.to(torch.promote_types(t.dtype, torch.float32)) for t in tensors]


def selective_scan_naive(x, dt, A, B, C, D=None):
    """Reference recurrence, one token at a time (slow; for tests)."""
    dtype = x.dtype
    x, dt, A, B, C, D = _upcast(x, dt, A, B, C, D)
    b, l, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    Bh = B.repeat_interleave(h // g, dim=2)  # (b, l, h, n)
    Ch = C.repeat_interleave(h // g, dim=2)
    decay = torch.exp(dt * A)  # (b, l, h)
    state = x.new_zeros(b, h, n, p)
    ys = []
    for t in range(l):
        state = decay[:, t, :, None, None] * state + Bh[:, t, :, :, None] * (dt[:, t, :, None] * x[:, t])[:, :, None, :]
        ys.append(torch.einsum("bhn,bhnp->bhp", Ch[:, t], state))
    y = torch.stack(ys, dim=1)
    return (y if D is None else y + D[:, None] * x).to(dtype)


# Largest intra-chunk decay tensor (b, g, r, chunks, Q, Q) built at once, and largest input scanned
# with all groups together, in elements. Longer sequences are processed in blocks of chunks and
# one group at a time, so that the scan's working memory stays bounded (the paper preset at
# 1280x1024 would otherwise need more than 20 GB); below it there is no loop.
MAX_BLOCK_ELEMENTS = 1 << 24


def _chunk_scan(xdt, log_a, B, C, chunk):
    """Core of the chunked scan without the D skip, in head-major layout.

    xdt (b, g, r, l, p): inputs already multiplied by dt; log_a (b, g, r, l) <= 0;
    B, C (b, g, l, n). Returns y (b, g, r, l, p).
    """
    b, g, r, l, p = xdt.shape
    n = B.shape[-1]
    pad = (-l) % chunk
    if pad:  # trailing zero tokens: zero input, zero log-decay; they cannot reach earlier outputs
        xdt = F.pad(xdt, (0, 0, 0, pad))
        log_a = F.pad(log_a, (0, pad))
        B = F.pad(B, (0, 0, 0, pad))
        C = F.pad(C, (0, 0, 0, pad))
    c = xdt.shape[3] // chunk
    xdt = xdt.reshape(b, g, r, c, chunk, p)
    B = B.reshape(b, g, 1, c, chunk, n)
    C = C.reshape(b, g, 1, c, chunk, n)
    acum = log_a.reshape(b, g, r, c, chunk).cumsum(-1)

    step = max(1, MAX_BLOCK_ELEMENTS // (b * g * r * chunk * chunk))
    if c <= step:
        y, states = _within_chunks(xdt, acum, B, C)
    else:
        blocks = [_within_chunks(xdt[:, :, :, i:i + step], acum[:, :, :, i:i + step], B[:, :, :, i:i + step],
                                 C[:, :, :, i:i + step]) for i in range(0, c, step)]
        y = torch.cat([blk[0] for blk in blocks], dim=3)
        states = torch.cat([blk[1] for blk in blocks], dim=3)
    # States entering each chunk: the same recurrence over chunks, one level up. Their contribution
    # C_t^T entering * exp(acum_t), with the r heads of a group side by side in one product (C is
    # shared by them: no copy of C per head).
    entering = _carry_states(states, acum[..., -1], chunk)
    heads_wide = entering.permute(0, 1, 3, 4, 2, 5).reshape(b, g, c, n, r * p)
    carried = (C[:, :, 0] @ heads_wide).reshape(b, g, c, chunk, r, p).permute(0, 1, 4, 2, 3, 5)
    y.addcmul_(carried, acum.exp_()[..., None])
    return y.reshape(b, g, r, c * chunk, p)[..., :l, :]


def _within_chunks(xdt, acum, B, C):
    """Each chunk on its own (zero entering state): its outputs and the state at its end.

    xdt (b, g, r, c, Q, p), acum (b, g, r, c, Q) cumulative log-decay, B and C (b, g, 1, c, Q, n).
    y_t = sum_{s<=t} (C_t . B_s) exp(acum_t - acum_s) xdt_s;  state = sum_s exp(acum_end - acum_s) B_s xdt_s.
    """
    causal = _causal_mask(acum.shape[-1], acum.device)
    seg = (acum[..., :, None] - acum[..., None, :]).masked_fill_(~causal, float("-inf")).exp_()
    y = (seg * (C @ B.transpose(-1, -2))) @ xdt  # (b, g, r, c, Q, p)
    to_end = (acum[..., -1:] - acum).exp()
    states = (B.transpose(-1, -2) * to_end[..., None, :]) @ xdt  # (b, g, r, c, n, p)
    return y, states


def _carry_states(states, chunk_log_a, chunk):
    """Exclusive scan over chunks: entering_c = sum_{k<c} exp(sum_{k<j<c} a_j) states_k.

    states (b, g, r, c, n, p); chunk_log_a (b, g, r, c) is each chunk's total log-decay.
    """
    b, g, r, c, n, p = states.shape
    if c == 1:
        return torch.zeros_like(states)
    if c <= chunk:  # small: one masked decay matrix over chunks
        cum = chunk_log_a.cumsum(-1)  # P_c
        prev = F.pad(cum[..., :-1], (1, 0))  # P_{c-1}, with P_{-1} = 0
        strict = _causal_mask(c, cum.device).tril(-1)
        seg = (prev[..., :, None] - cum[..., None, :]).masked_fill_(~strict, float("-inf")).exp_()
        return (seg @ states.reshape(b, g, r, c, n * p)).reshape(b, g, r, c, n, p)
    # Many chunks: chunk states follow the same linear recurrence, so reuse the chunked scan with
    # B = C = 1 (a single state row) and the N x P state matrix flattened as the head width.
    ones = states.new_ones(b, g, c, 1)
    inclusive = _chunk_scan(states.reshape(b, g, r, c, n * p), chunk_log_a, ones, ones, chunk)
    entering = F.pad(inclusive[..., :-1, :], (0, 0, 1, 0))  # entering_c = inclusive_{c-1}
    return entering.reshape(b, g, r, c, n, p)


@functools.lru_cache(maxsize=32)
def _causal_mask(size: int, device: torch.device) -> torch.Tensor:
    """Lower-triangular boolean (size, size) mask, made once per device (no host copy per call, so
    the scan can be captured in a CUDA graph)."""
    return torch.ones(size, size, dtype=torch.bool, device=device).tril()


def selective_scan_chunked(x, dt, A, B, C, D=None, chunk_size: int = 64):
    """Portable chunked SSD scan (same contract as ``selective_scan_naive``).

    Groups are independent sequences (head ``i`` reads only group ``i // (h // g)``), so inputs above
    ``MAX_BLOCK_ELEMENTS`` are scanned one group at a time, which divides the scan's working memory
    by ``g`` (the paper preset's four routes at 1280x1024).
    """
    b, l, h, p = x.shape
    g = B.shape[2]
    r = h // g
    if g > 1 and x.numel() > MAX_BLOCK_ELEMENTS:
        heads = [slice(k * r, (k + 1) * r) for k in range(g)]
        return torch.cat([selective_scan_chunked(x[:, :, hk], dt[:, :, hk], A[hk], B[:, :, k:k + 1], C[:, :, k:k + 1],
                                                 None if D is None else D[hk], chunk_size)
                          for k, hk in enumerate(heads)], dim=2)
    dtype = x.dtype
    x, dt, A, B, C, D = _upcast(x, dt, A, B, C, D)
    # Head-major (b, g, r, l, ...) operands; with the small dt made head-major first, the product
    # x * dt comes out contiguous in that order, so chunking it later is a view, not a copy.
    dt = dt.reshape(b, l, g, r).permute(0, 2, 3, 1).contiguous()
    xdt = dt[..., None] * x.reshape(b, l, g, r, p).permute(0, 2, 3, 1, 4)
    log_a = dt * A.view(g, r, 1)
    y = _chunk_scan(xdt, log_a, B.transpose(1, 2), C.transpose(1, 2), chunk_size)
    y = y.permute(0, 3, 1, 2, 4)  # (b, l, g, r, p), a view
    if D is not None:  # D x first: the sum comes out token-major, so the skip costs no extra copy
        y = D.view(g, r, 1) * x.view(b, l, g, r, p) + y
    return y.reshape(b, l, h, p).to(dtype)


def import_mamba_chunk_scan():
    """``mamba_ssm.ops.triton.ssd_combined.mamba_chunk_scan_combined``; raises ImportError if absent.

    The SSD kernel is pure Triton, but ``mamba_ssm/__init__.py`` imports the compiled
    ``selective_scan_cuda`` extension, which a source install built with ``MAMBA_SKIP_CUDA_BUILD=TRUE``
    (no CUDA compile, the quick way to get mamba-ssm onto a machine) does not have. In that case the
    Triton module is imported under a bare ``mamba_ssm`` package object that skips that ``__init__``.
    """
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
        return mamba_chunk_scan_combined
    except ImportError as exc:
        if exc.name != "selective_scan_cuda":
            raise
    for name in [m for m in sys.modules if m == "mamba_ssm" or m.startswith("mamba_ssm.")]:
        del sys.modules[name]  # the half-initialised package from the failed import
    spec = importlib.util.find_spec("mamba_ssm")
    sys.modules["mamba_ssm"] = importlib.util.module_from_spec(spec)  # __path__ set, __init__ not run
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    return mamba_chunk_scan_combined


@functools.lru_cache(maxsize=1)
def mamba_ssm_scan():
    """mamba_ssm's fused SSD kernel, or None when mamba_ssm (or a GPU for it) is unavailable."""
    if not torch.cuda.is_available():
        return None
    try:
        return import_mamba_chunk_scan()
    except Exception:  # not installed, no Triton, or a broken install
        return None


def resolve_backend(backend: str, device: torch.device) -> str:
    """The backend that will actually run for tensors on ``device``."""
    if backend not in SCAN_BACKENDS:
        raise ValueError(f"unknown scan backend {backend!r}; choose from {SCAN_BACKENDS}")
    if backend == "auto":
        return "mamba_ssm" if device.type == "cuda" and mamba_ssm_scan() is not None else "chunked"
    if backend == "mamba_ssm" and (device.type != "cuda" or mamba_ssm_scan() is None):
        raise RuntimeError("scan backend 'mamba_ssm' needs CUDA tensors and an importable mamba_ssm")
    return backend


def selective_scan(x, dt, A, B, C, D=None, *, backend: str = "auto", chunk_size: int = 64):
    """Dispatch to the naive, chunked or mamba_ssm implementation (see ``resolve_backend``)."""
    chosen = resolve_backend(backend, x.device)
    if chosen == "mamba_ssm":
        dtype = x.dtype
        y = mamba_ssm_scan()(x.contiguous(), dt.contiguous(), A.float(), B.contiguous(), C.contiguous(),
                             chunk_size=chunk_size, D=None if D is None else D.float())
        return y.to(dtype)
    if chosen == "naive":
        return selective_scan_naive(x, dt, A, B, C, D)
    return selective_scan_chunked(x, dt, A, B, C, D, chunk_size)
