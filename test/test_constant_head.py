"""scripts/constant_head.py: a network whose head is constant (no decisions), with the decoder
options set; it writes only --out and refuses one that exists."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diffmf_core.config import get_preset
from diffmf_core.models import DiffMF
from diffmf_core.modules.pyramid_decoder import rule_fusion
from diffmf_core.weights import load_model, save_weights

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "constant_head.py"
pytestmark = pytest.mark.usefixtures("one_thread")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_constant_head_decides_nothing_and_writes_only_its_output(tmp_path):
    torch.manual_seed(0)
    source = DiffMF(get_preset("live"))
    torch.nn.init.normal_(source.decoder.head.weight, std=0.5)  # a head that decides
    save_weights(source, tmp_path / "net.safetensors")
    out = tmp_path / "const.safetensors"
    result = run("--weights", str(tmp_path / "net.safetensors"), "--out", str(out), "--stretch", "1.1",
                 "--head-region", "warm", "--warm-margin", "12", "--select", "3", "--base-select", "1")
    assert result.returncode == 0, result.stderr
    model = load_model(out).eval()
    cfg = model.cfg
    assert (cfg.output_stretch, cfg.head_region, cfg.warm_margin, cfg.head_maps) == (1.1, "warm", 12, "selection")
    head = model.decoder.head
    assert not head.weight.any()
    assert head.bias.tolist() == [3, 0, 3, 0, 3, 0, 3, 0, 1, 0, 0]  # a_0, g_0, ..., a_3, g_3, a_B, c, o
    ir, vi = torch.rand(2, 1, 1, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # the trunk has no influence: another trunk gives the same image
        other = load_model(out).eval()
        torch.nn.init.normal_(other.embed_ir.proj.weight)
        assert torch.equal(model(ir, vi), other(ir, vi))

    rule = tmp_path / "rule.safetensors"  # select 0 everywhere: the network is its rule
    assert run("--weights", str(tmp_path / "net.safetensors"), "--out", str(rule)).returncode == 0
    with torch.no_grad():
        assert torch.allclose(load_model(rule).eval()(ir, vi), rule_fusion(ir, vi, 5), atol=1e-6)

    before = out.read_bytes()
    refused = run("--out", str(out), "--select", "1")
    assert refused.returncode == 2 and "exists" in refused.stderr and "Traceback" not in refused.stderr
    assert out.read_bytes() == before
