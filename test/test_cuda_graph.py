"""CUDA-graph replay of the network (``GraphedForward``, ``Fuser(cuda_graph=True)``).

On CPU: the replay bookkeeping (static buffers, one graph per shape, eviction, eager fallback when
capture fails) with a stand-in capture, and the Fuser ignoring the option. On CUDA: graph replay
gives the eager network's output, for new inputs and after a size change.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from diffmf_core.common.paths import default_weights_path
from diffmf_core.config import get_preset
from diffmf_core.fuser import Fuser, GraphedForward
from diffmf_core.models import DiffMF

CUDA_REASON = "needs a CUDA device; not available here"


class RecordedGraph:
    """Stand-in for torch.cuda.CUDAGraph: replay re-runs the function on the static inputs."""

    def __init__(self, fn, static_in, static_out):
        self.fn, self.static_in, self.static_out = fn, static_in, static_out

    def replay(self):
        self.static_out.copy_(self.fn(*self.static_in))


def stand_in_capture(self, inputs):
    static_in = tuple(t.clone() for t in inputs)
    static_out = self.fn(*static_in)
    self.captures += 1
    return RecordedGraph(self.fn, static_in, static_out), static_in, static_out


@pytest.fixture
def graphed(monkeypatch):
    monkeypatch.setattr(GraphedForward, "_capture", stand_in_capture)
    runner = GraphedForward(lambda a, b: a * 2 + b, max_shapes=2)
    runner.captures = 0
    return runner


def test_replay_copies_new_inputs_into_the_static_buffers(graphed):
    first = graphed(torch.ones(2, 3), torch.zeros(2, 3)).clone()
    second = graphed(torch.full((2, 3), 5.0), torch.ones(2, 3))
    assert graphed.captures == 1
    assert first.tolist() == [[2.0] * 3] * 2
    assert second.tolist() == [[11.0] * 3] * 2


def test_one_graph_per_shape_and_the_oldest_evicted(graphed):
    for shape in [(1, 4), (2, 4), (1, 4), (3, 4)]:
        out = graphed(torch.ones(shape), torch.ones(shape))
        assert out.shape == shape and bool((out == 3).all())
    assert graphed.captures == 3  # (1, 4) was replayed, not captured again
    assert [key[0][0] for key in graphed.graphs] == [(1, 4), (3, 4)]  # (2, 4) evicted


def test_failed_capture_runs_eagerly_and_is_not_retried(monkeypatch, capsys):
    calls = []

    def failing_capture(self, inputs):
        calls.append(1)
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(GraphedForward, "_capture", failing_capture)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    runner = GraphedForward(lambda a: a + 1)
    assert runner(torch.zeros(2)).tolist() == [1.0, 1.0]
    assert runner(torch.ones(2)).tolist() == [2.0, 2.0]
    assert len(calls) == 1
    assert capsys.readouterr().err.count("CUDA graph capture failed") == 1


def test_fuser_ignores_cuda_graph_on_cpu():
    fuser = Fuser(device="cpu", cuda_graph=True)
    assert fuser.forward is fuser.model


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason=CUDA_REASON)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_graph_replay_matches_eager_network(dtype):
    torch.manual_seed(0)
    model = DiffMF(get_preset("live")).cuda().to(dtype).eval()
    runner = GraphedForward(model)
    gen = torch.Generator(device="cuda").manual_seed(1)
    with torch.inference_mode():
        for height, width in [(512, 640), (512, 640), (256, 320)]:
            ir = torch.rand(1, 1, height, width, device="cuda", generator=gen).to(dtype)
            vi = torch.rand(1, 1, height, width, device="cuda", generator=gen).to(dtype)
            eager = model(ir, vi).float()
            replayed = runner(ir, vi).float()
            assert (replayed - eager).abs().max().item() < (1e-5 if dtype == torch.float32 else 2e-3)
    assert len(runner.graphs) == 2 and not runner.eager_keys


@needs_cuda
def test_fuser_with_cuda_graph_matches_eager_fuser():
    rng = np.random.default_rng(0)
    ir = rng.integers(0, 256, (512, 640), dtype=np.uint8)
    vi = rng.integers(0, 256, (512, 640, 3), dtype=np.uint8)
    weights = default_weights_path("live")
    eager = Fuser(weights, device="cuda", cuda_graph=False)
    graphed = Fuser(weights, device="cuda", cuda_graph=True)
    assert isinstance(graphed.forward, GraphedForward)
    for _ in range(2):
        diff = np.abs(graphed.fuse(ir, vi).astype(int) - eager.fuse(ir, vi).astype(int))
        assert diff.max() <= 1
