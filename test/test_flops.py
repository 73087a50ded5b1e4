"""``diffmf flops``: counts on the meta device; attention FLOPs grow ~quadratically with the pixel
count, the SSM network's ~linearly; parameter counts match the real network; CLI table and JSON."""
from __future__ import annotations

import json

import pytest

from diffmf_core import cli
from diffmf_core.config import get_preset
from diffmf_core.tools.flops import flops_report
from diffmf_core.models import DiffMF


@pytest.fixture(scope="module")
def reports():
    sizes = (32, 64, 128)
    return {
        "ssm": {s: flops_report(get_preset("paper"), s, s) for s in sizes[:2]},
        "attention": {s: flops_report(get_preset("paper", mixer="attention"), s, s) for s in sizes[1:]},
    }


def test_ssm_flops_grow_linearly_with_pixels(reports):
    small, big = reports["ssm"][32], reports["ssm"][64]
    assert 3.6 < big["gflops"] / small["gflops"] < 4.5  # 4x pixels
    assert big["gmacs"] == pytest.approx(big["gflops"] / 2)
    assert big["scan_path"].startswith("chunked")
    assert 0 < big["mixer_share"] < 1


def test_attention_flops_grow_quadratically_with_pixels(reports):
    small, big = reports["attention"][64], reports["attention"][128]
    assert 14 < big["mixer_gflops"] / small["mixer_gflops"] <= 16.01  # 4x pixels -> 16x
    assert big["mixer_share"] > 0.95
    assert big["gflops"] > 10 * reports["ssm"][64]["gflops"] * 4  # far above the SSM network at 128


def test_params_match_the_real_network():
    for cfg in (get_preset("live"), get_preset("paper", mixer="attention")):
        report = flops_report(cfg, 32, 40)
        assert report["params"] == sum(p.numel() for p in DiffMF(cfg).parameters())
        assert report["input"] == [1, 1, 32, 40]


def test_cli_json_and_table(capsys):
    assert cli.main(["flops", "--height", "32", "--width", "48", "--presets", "live", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    (row,) = result["rows"]
    assert row["name"] == "live" and row["gflops"] > 0
    assert cli.main(["flops", "--height", "32", "--width", "32", "--presets", "live"]) == 0
    out = capsys.readouterr().out
    assert "GFLOPs" in out and "GMACs" in out and "live (ssm)" in out
    assert cli.main(["flops", "--height", "0", "--presets", "live"]) == 2
