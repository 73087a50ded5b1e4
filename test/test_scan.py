"""Selective scan: the portable chunked SSD scan equals the token-by-token reference (values and
gradients, float32, max abs error < 1e-4), stays finite for huge and tiny decays, and the backend
dispatch picks the portable path on CPU. Where CUDA and mamba_ssm exist, the fused kernel is
checked against the portable path.
"""
from __future__ import annotations

import sys

import pytest
import torch

from diffmf_core.ops import scan as scan_ops
from diffmf_core.ops.scan import (mamba_ssm_scan, resolve_backend, selective_scan, selective_scan_chunked,
                                  selective_scan_naive)

TOL = 1e-4
FAST_PATH_REASON = "mamba_ssm fast path needs CUDA and mamba_ssm; not available here"


def make_inputs(b=2, l=37, h=4, p=3, g=2, n=5, log_decay=(-0.5, -1e-3), seed=0, device="cpu",
                requires_grad=False):
    """O(1) x, B, C, D; dt in [0.05, 0.5]; A chosen so dt*A spans roughly ``log_decay`` per step."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, l, h, p, generator=gen)
    dt = torch.empty(b, l, h).uniform_(0.05, 0.5, generator=gen)
    lo, hi = log_decay  # per-step dt*A range, negative; dt ~ 0.05-0.5 so A ~ log_decay / 0.25
    A = torch.empty(h).uniform_(lo / 0.25, hi / 0.25, generator=gen).clamp(max=-1e-12)
    B = torch.randn(b, l, g, n, generator=gen)
    C = torch.randn(b, l, g, n, generator=gen)
    D = torch.randn(h, generator=gen)
    tensors = [t.to(device) for t in (x, dt, A, B, C, D)]
    if requires_grad:
        tensors = [t.requires_grad_() for t in tensors]
    return tensors


def max_err(a, b):
    return (a - b).abs().max().item()


@pytest.mark.parametrize("l,chunk", [
    (1, 8),      # single token
    (37, 8),     # not divisible by the chunk
    (64, 64),    # exactly one chunk
    (100, 64),   # two chunks, second partial
    (197, 8),    # 25 chunks > chunk: one level of the multi-level carry
    (700, 8),    # 88 chunks -> 11 -> 2: two carry levels
    (130, 4),    # tiny chunk, 33 chunks -> 9 -> 3
])
def test_chunked_matches_naive(l, chunk):
    x, dt, A, B, C, D = make_inputs(l=l, seed=l)
    ref = selective_scan_naive(x, dt, A, B, C, D)
    out = selective_scan_chunked(x, dt, A, B, C, D, chunk_size=chunk)
    assert out.shape == x.shape
    assert max_err(out, ref) < TOL


@pytest.mark.parametrize("h,g", [(4, 1), (4, 2), (6, 3), (4, 4)])
def test_groups_fewer_than_heads(h, g):
    x, dt, A, B, C, D = make_inputs(l=50, h=h, g=g, seed=h * 10 + g)
    ref = selective_scan_naive(x, dt, A, B, C, D)
    assert max_err(selective_scan_chunked(x, dt, A, B, C, D, chunk_size=16), ref) < TOL


def test_groups_are_read_per_head():
    """Head i reads B/C group i // (h // g): changing group 1 leaves heads 0-1 (group 0) unchanged."""
    x, dt, A, B, C, D = make_inputs(l=20, h=4, g=2)
    out = selective_scan_chunked(x, dt, A, B, C, D, chunk_size=8)
    B2 = B.clone()
    B2[:, :, 1] += 1.0
    out2 = selective_scan_chunked(x, dt, A, B2, C, D, chunk_size=8)
    assert torch.equal(out[:, :, :2], out2[:, :, :2])
    assert not torch.allclose(out[:, :, 2:], out2[:, :, 2:])


def test_without_skip_d():
    x, dt, A, B, C, _ = make_inputs(l=40)
    assert max_err(selective_scan_chunked(x, dt, A, B, C, None, chunk_size=16),
                   selective_scan_naive(x, dt, A, B, C, None)) < TOL


@pytest.mark.parametrize("l,chunk", [(300, 8), (90, 32)])
def test_huge_decays_stay_finite(l, chunk):
    """dt*A down to about -1000 per step (|A| up to 2e4): exp underflows to 0, never inf/NaN."""
    x, dt, A, B, C, D = make_inputs(l=l, log_decay=(-1000.0, -100.0), seed=1)
    out = selective_scan_chunked(x, dt, A, B, C, D, chunk_size=chunk)
    assert torch.isfinite(out).all()
    assert max_err(out, selective_scan_naive(x, dt, A, B, C, D)) < TOL
    # with such decays the state forgets everything: y_t = C_t.B_t dt_t x_t + D x_t
    x, dt, A, B, C, D = make_inputs(l=l, log_decay=(-1000.0, -900.0), seed=2)
    out = selective_scan_chunked(x, dt, A, B, C, D, chunk_size=chunk)
    cb = (C * B).sum(-1).repeat_interleave(x.shape[2] // B.shape[2], dim=2)
    local = cb[..., None] * dt[..., None] * x + D[:, None] * x
    assert max_err(out, local) < TOL


def test_mixed_huge_and_tiny_decays():
    """Some heads forget at once, others almost never (dt*A ~ -1e-6): both exact in one call."""
    x, dt, A, B, C, D = make_inputs(l=150, h=4, g=2, seed=3)
    A = torch.tensor([-4000.0, -4e-6, -2.0, -1e-5])
    out = selective_scan_chunked(x, dt, A, B, C, D, chunk_size=16)
    ref = selective_scan_naive(x, dt, A, B, C, D)
    assert torch.isfinite(out).all()
    # long sums with almost no decay grow like sqrt(l): compare relative to the output scale
    assert max_err(out, ref) < TOL * max(1.0, ref.abs().max().item())


def test_tiny_decays_match():
    """dt*A ~ -1e-6 per step: the scan is an almost undecayed cumulative sum."""
    x, dt, A, B, C, D = make_inputs(l=260, log_decay=(-2e-6, -5e-7), seed=4)
    x = x / 4  # keep the running sums O(1) so the absolute tolerance applies
    out = selective_scan_chunked(x, dt, A, B, C, D, chunk_size=16)
    ref = selective_scan_naive(x, dt, A, B, C, D)
    assert torch.isfinite(out).all()
    assert max_err(out, ref) < TOL * max(1.0, ref.abs().max().item())


@pytest.mark.parametrize("l,chunk,log_decay", [
    (45, 8, (-0.5, -1e-3)),
    (150, 8, (-0.5, -1e-3)),      # multi-level carry in the backward pass too
    (70, 16, (-1000.0, -100.0)),  # huge decays: gradients finite and equal
    (70, 16, (-2e-6, -5e-7)),     # tiny decays
])
def test_gradients_match(l, chunk, log_decay):
    args = make_inputs(l=l, h=4, g=2, log_decay=log_decay, seed=l, requires_grad=True)
    out = selective_scan_chunked(*args, chunk_size=chunk)
    ref = selective_scan_naive(*args)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(7)) / out.numel() ** 0.5
    grads = torch.autograd.grad((out * weight).sum(), args)
    grads_ref = torch.autograd.grad((ref * weight).sum(), args)
    for name, got, want in zip("x dt A B C D".split(), grads, grads_ref):
        assert torch.isfinite(got).all(), name
        scale = max(1.0, want.abs().max().item())
        assert max_err(got, want) < TOL * scale, name


@pytest.mark.parametrize("limit", [1, 1287])
def test_large_inputs_scanned_per_group_and_in_blocks_match(monkeypatch, limit):
    """Inputs above MAX_BLOCK_ELEMENTS are scanned one group at a time (2 groups of 2 heads) and in
    blocks of chunks (limit 1: one chunk per block; 1287: 10 chunks, the last block partial); values
    and gradients equal the naive scan."""
    monkeypatch.setattr(scan_ops, "MAX_BLOCK_ELEMENTS", limit)
    args = make_inputs(b=1, l=173, h=4, g=2, seed=3, requires_grad=True)  # 22 chunks of 8
    out = selective_scan_chunked(*args, chunk_size=8)
    ref = selective_scan_naive(*args)
    assert max_err(out, ref) < TOL
    for name, got, want in zip("x dt A B C D".split(), torch.autograd.grad(out.sum(), args),
                               torch.autograd.grad(ref.sum(), args)):
        assert max_err(got, want) < TOL * max(1.0, want.abs().max().item()), name


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_compute_in_float32(dtype):
    """float16/bfloat16 tensors (the Fuser's half mode on CUDA without mamba_ssm) run in float32
    inside and come back in the input dtype."""
    x, dt, A, B, C, D = make_inputs(l=70)
    ref = selective_scan_naive(x, dt, A, B, C, D)
    low = [t.to(dtype) for t in (x, dt, B, C)]
    for fn in (selective_scan_naive, lambda *a: selective_scan_chunked(*a, chunk_size=16)):
        out = fn(low[0], low[1], A, low[2], low[3], D)
        assert out.dtype == dtype
        assert torch.isfinite(out).all()
        assert max_err(out.float(), ref) < 0.05 * max(1.0, ref.abs().max().item())


def test_dispatch_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_backend("auto", cpu) == "chunked"
    assert resolve_backend("chunked", cpu) == "chunked"
    assert resolve_backend("naive", cpu) == "naive"
    with pytest.raises(RuntimeError, match="mamba_ssm"):
        resolve_backend("mamba_ssm", cpu)
    with pytest.raises(ValueError, match="unknown scan backend"):
        resolve_backend("fast", cpu)
    x, dt, A, B, C, D = make_inputs(l=30)
    naive = selective_scan(x, dt, A, B, C, D, backend="naive")
    assert max_err(selective_scan(x, dt, A, B, C, D, chunk_size=8), naive) < TOL
    with pytest.raises(RuntimeError, match="mamba_ssm"):
        selective_scan(x, dt, A, B, C, D, backend="mamba_ssm")


needs_fast_path = pytest.mark.skipif(not torch.cuda.is_available() or mamba_ssm_scan() is None,
                                     reason=FAST_PATH_REASON)


@needs_fast_path
def test_auto_picks_mamba_ssm_on_cuda():
    assert resolve_backend("auto", torch.device("cuda")) == "mamba_ssm"


@needs_fast_path
@pytest.mark.parametrize("l,h,g,chunk", [(37, 4, 2, 64), (1000, 8, 4, 64), (4096, 16, 4, 256)])
def test_mamba_ssm_matches_portable(l, h, g, chunk):
    args = make_inputs(b=2, l=l, h=h, p=16, g=g, n=16, seed=l, device="cuda")
    fast = selective_scan(*args, backend="mamba_ssm", chunk_size=chunk)
    portable = selective_scan(*args, backend="chunked", chunk_size=chunk)
    assert fast.dtype == portable.dtype
    assert max_err(fast, portable) < 1e-3 * max(1.0, portable.abs().max().item())


@needs_fast_path
def test_mamba_ssm_gradients_match_portable():
    args = make_inputs(b=1, l=300, h=4, p=16, g=2, n=16, device="cuda", requires_grad=True)
    fast = selective_scan(*args, backend="mamba_ssm", chunk_size=64)
    portable = selective_scan(*args, backend="chunked", chunk_size=64)
    weight = torch.randn_like(portable) / portable.numel() ** 0.5
    for name, got, want in zip("x dt A B C D".split(), torch.autograd.grad((fast * weight).sum(), args),
                               torch.autograd.grad((portable * weight).sum(), args)):
        assert max_err(got, want) < 1e-2 * max(1.0, want.abs().max().item()), name


def fake_mamba_package(tmp_path, monkeypatch, init_source: str) -> None:
    """A stand-in ``mamba_ssm`` package on sys.path (its ``__init__`` is ``init_source``; a Triton
    SSD kernel module that returns 'kernel'), with any imported ``mamba_ssm`` modules forgotten."""
    pkg = tmp_path / "mamba_ssm"
    (pkg / "ops" / "triton").mkdir(parents=True)
    (pkg / "__init__.py").write_text(init_source)
    (pkg / "ops" / "__init__.py").write_text("")
    (pkg / "ops" / "triton" / "__init__.py").write_text("")
    (pkg / "ops" / "triton" / "ssd_combined.py").write_text("def mamba_chunk_scan_combined(*a, **k):\n    return 'kernel'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m.startswith("mamba_ssm")]:
        monkeypatch.delitem(sys.modules, name)


def test_mamba_kernel_imports_without_compiled_extension(tmp_path, monkeypatch):
    """A mamba-ssm installed without its CUDA extensions (MAMBA_SKIP_CUDA_BUILD=TRUE) fails in its
    package __init__ on ``import selective_scan_cuda``; the Triton SSD kernel is still loaded."""
    fake_mamba_package(tmp_path, monkeypatch, "INIT_RAN = True\nimport selective_scan_cuda\n")
    try:
        kernel = scan_ops.import_mamba_chunk_scan()
        assert kernel() == "kernel"
        assert not hasattr(sys.modules["mamba_ssm"], "INIT_RAN")  # the bare package: __init__ not run
    finally:
        for name in [m for m in sys.modules if m.startswith("mamba_ssm")]:
            del sys.modules[name]


def test_mamba_kernel_import_errors_other_than_the_extension_propagate(tmp_path, monkeypatch):
    (tmp_path / "mamba_ssm").mkdir()
    (tmp_path / "mamba_ssm" / "__init__.py").write_text("import einops_not_installed_here\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(ImportError, match="einops_not_installed_here"):
            scan_ops.import_mamba_chunk_scan()
    finally:
        for name in [m for m in sys.modules if m.startswith("mamba_ssm")]:
            del sys.modules[name]


# ------------------------------------------------------------------ found by the scoped mutation run
def _spy(monkeypatch, name, record):
    """Replace scan_ops.<name> by a wrapper that appends ``record(*args, **kwargs)`` to the returned list
    and then calls the real function."""
    real, calls = getattr(scan_ops, name), []

    def spy(*args, **kwargs):
        calls.append(record(*args, **kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(scan_ops, name, spy)
    return calls


@pytest.mark.parametrize("limit,blocks", [
    # per group (b=1, g=1, r=2, Q=8: 128 elements per chunk) 22 chunks, then 3 chunk states carried
    # by the scan one level up: limit 1 -> one chunk per block; 1287 -> 1287 // 128 = 10 chunks
    (1, [1] * 25),
    (1287, [10, 10, 2, 3]),
])
def test_blocks_hold_as_many_chunks_as_max_block_elements_allows(monkeypatch, limit, blocks):
    """The intra-chunk decay tensors are built in blocks of floor(MAX_BLOCK_ELEMENTS / (b g r Q Q))
    chunks (at least one), one group at a time: the working-memory bound of the long-sequence scan."""
    monkeypatch.setattr(scan_ops, "MAX_BLOCK_ELEMENTS", limit)
    sizes = _spy(monkeypatch, "_within_chunks", lambda xdt, *a: xdt.shape[3])
    groups = _spy(monkeypatch, "_chunk_scan", lambda xdt, *a: xdt.shape[1])
    x, dt, A, B, C, D = make_inputs(b=1, l=173, h=4, g=2, seed=3)
    selective_scan_chunked(x, dt, A, B, C, D, chunk_size=8)
    assert sizes == blocks * 2
    assert groups == [1, 1] * 2  # each group: its scan and the carry's scan, with one group each


@pytest.mark.parametrize("over", [0, 1])
def test_per_group_split_only_above_the_limit(monkeypatch, over):
    """x with exactly MAX_BLOCK_ELEMENTS elements is scanned with all groups together; one more
    element splits it per group; both with and without the skip D, equal to the naive scan."""
    x, dt, A, B, C, D = make_inputs(b=1, l=30, h=4, g=2, seed=5)
    monkeypatch.setattr(scan_ops, "MAX_BLOCK_ELEMENTS", x.numel() - over)
    calls = _spy(monkeypatch, "_chunk_scan", lambda xdt, log_a, B_, C_, chunk: (xdt.shape[1], chunk))
    for skip in (D, None):
        calls.clear()
        out = selective_scan_chunked(x, dt, A, B, C, skip, chunk_size=8)
        assert max_err(out, selective_scan_naive(x, dt, A, B, C, skip)) < TOL
        assert calls == ([(1, 8)] * 2 if over else [(2, 8)])  # 4 chunks of 8: no carry scan


def test_default_chunk_size_is_64(monkeypatch):
    """mamba_ssm's usual chunk: the default of selective_scan_chunked and of selective_scan, and an
    explicit chunk_size reaches the portable scan."""
    chunks = _spy(monkeypatch, "_chunk_scan", lambda xdt, log_a, B_, C_, chunk: chunk)
    x, dt, A, B, C, D = make_inputs(l=10)
    selective_scan_chunked(x, dt, A, B, C, D)
    selective_scan(x, dt, A, B, C, D)
    selective_scan(x, dt, A, B, C, D, chunk_size=8)
    assert chunks == [64, 64, 8]


def test_causal_masks_are_made_on_the_tensors_device(monkeypatch):
    """A mask made on the default device would not mix with CUDA tensors; on the CPU only the
    device argument shows it."""
    devices = _spy(monkeypatch, "_causal_mask", lambda size, device: device)
    x, dt, A, B, C, D = make_inputs(l=100)
    selective_scan_chunked(x, dt, A, B, C, D, chunk_size=4)  # 25 chunks: intra-chunk and carry masks
    assert len(devices) >= 2 and all(d == torch.device("cpu") for d in devices)


def test_dispatch_runs_the_chosen_portable_scan(monkeypatch):
    called = []
    for name in ("selective_scan_naive", "selective_scan_chunked"):
        _spy(monkeypatch, name, lambda *a, _name=name, **k: called.append(_name))
    x, dt, A, B, C, D = make_inputs(l=12)
    selective_scan(x, dt, A, B, C, D, backend="naive")
    selective_scan(x, dt, A, B, C, D, backend="chunked")
    selective_scan(x, dt, A, B, C, D)
    assert called == ["selective_scan_naive", "selective_scan_chunked", "selective_scan_chunked"]


class FakeKernel:
    """Stands in for mamba_chunk_scan_combined (same positional order, chunk_size, D keyword): records
    its arguments and returns the naive scan in float32, whatever the input dtype."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, dt, A, B, C, chunk_size, D=None):
        self.calls.append(dict(x=x, dt=dt, A=A, B=B, C=C, chunk_size=chunk_size, D=D))
        return selective_scan_naive(x.float(), dt.float(), A, B.float(), C.float(), D).float()


@pytest.mark.parametrize("backend,device,available,expected", [
    ("auto", "cuda", True, "mamba_ssm"),
    ("auto", "cuda", False, "chunked"),
    ("auto", "cpu", True, "chunked"),
    ("mamba_ssm", "cuda", True, "mamba_ssm"),
    ("mamba_ssm", "cuda", False, RuntimeError),
    ("mamba_ssm", "cpu", True, RuntimeError),
    ("chunked", "cuda", True, "chunked"),
    ("naive", "cuda", True, "naive"),
])
def test_resolve_backend_table(monkeypatch, backend, device, available, expected):
    """Which backend runs, from the device type and whether the kernel imports (faked: no CUDA needed,
    a torch.device("cuda") object exists without a GPU)."""
    monkeypatch.setattr(scan_ops, "mamba_ssm_scan", lambda: FakeKernel() if available else None)
    if expected is RuntimeError:
        with pytest.raises(RuntimeError) as err:
            resolve_backend(backend, torch.device(device))
        assert str(err.value) == "scan backend 'mamba_ssm' needs CUDA tensors and an importable mamba_ssm"
    else:
        assert resolve_backend(backend, torch.device(device)) == expected


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("with_d", [True, False])
def test_mamba_ssm_path_passes_the_kernel_its_arguments(monkeypatch, dtype, with_d):
    """The fused-kernel call (faked here): x, dt, B, C as given, A and D in float32, chunk_size by
    keyword, D=None without skip; the output comes back in the input dtype."""
    kernel = FakeKernel()
    monkeypatch.setattr(scan_ops, "mamba_ssm_scan", lambda: kernel)
    monkeypatch.setattr(scan_ops, "resolve_backend", lambda backend, device: "mamba_ssm")
    x, dt, A, B, C, D = make_inputs(l=20)
    x, dt, B, C = (t.to(dtype) for t in (x, dt, B, C))
    A, D = A.double(), (D.double() if with_d else None)
    out = selective_scan(x, dt, A, B, C, D, chunk_size=16)
    (call,) = kernel.calls
    for name, given in dict(x=x, dt=dt, B=B, C=C).items():
        assert call[name].dtype == dtype and torch.equal(call[name], given), name
    assert call["A"].dtype == torch.float32 and torch.equal(call["A"], A.float())
    assert call["chunk_size"] == 16
    if with_d:
        assert call["D"].dtype == torch.float32 and torch.equal(call["D"], D.float())
    else:
        assert call["D"] is None
    assert out.dtype == dtype
    assert torch.equal(out, kernel(x, dt, A.float(), B, C, 16, call["D"]).to(dtype))


def test_mamba_kernel_import_drops_submodules_of_the_failed_package(tmp_path, monkeypatch):
    """A failing package __init__ can leave submodules it imported first in sys.modules; they are
    dropped, so the kernel module is imported again under the bare package (and is its attribute)."""
    fake_mamba_package(tmp_path, monkeypatch, "import mamba_ssm.ops.triton.ssd_combined\nimport selective_scan_cuda\n")
    try:
        kernel = scan_ops.import_mamba_chunk_scan()
        assert kernel() == "kernel"
        assert sys.modules["mamba_ssm"].ops.triton.ssd_combined.mamba_chunk_scan_combined is kernel
    finally:
        for name in [m for m in sys.modules if m.startswith("mamba_ssm")]:
            del sys.modules[name]
