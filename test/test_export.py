"""``diffmf export``: a random live network exported to ONNX at a small fixed size matches PyTorch
in onnxruntime (max abs diff < 1e-3); weights selection and CLI."""
from __future__ import annotations

import pytest
import torch

from diffmf_core import cli
from diffmf_core.tools import export
from diffmf_core.config import get_preset
from diffmf_core.models import DiffMF
from diffmf_core.weights import save_weights

pytest.importorskip("onnx", reason="onnx not installed (pip install onnx)")
pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install onnxruntime)")

H, W = 64, 80


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("options", [{}, {"output_stretch": 1.2, "head_region": "warm", "head_maps": "selection"}])
def test_random_live_network_matches_onnxruntime(tmp_path, options):
    torch.manual_seed(0)
    model = DiffMF(get_preset("live", **options)).eval()
    path = export.export_onnx(model, tmp_path / "live.onnx", H, W)
    result = export.check_onnx(model, path, H, W)
    assert result["shape"] == [1, 1, H, W]
    assert result["max_abs_diff"] < 1e-3
    assert result["nodes"] > 0


def test_build_model_prefers_weights_and_warns_without(tmp_path, monkeypatch):
    monkeypatch.setattr(export, "default_weights_path", lambda preset: tmp_path / f"{preset}.safetensors")
    with pytest.warns(UserWarning, match="randomly initialised"):
        model, source = export.build_model(None, "live")
    assert model.cfg.name == "live" and source.startswith("random")
    torch.manual_seed(1)
    trained = DiffMF(get_preset("live", scan_backend="naive"))
    save_weights(trained, tmp_path / "live.safetensors")
    model, source = export.build_model(None, "live")
    assert source.endswith("live.safetensors") and model.cfg.scan_backend == "chunked"
    assert torch.equal(model.embed_ir.proj.weight, trained.embed_ir.proj.weight)


def test_rejects_bad_options(tmp_path):
    model = DiffMF(get_preset("live"))
    with pytest.raises(ValueError, match="opset"):
        export.export_onnx(model, tmp_path / "x.onnx", H, W, opset=13)
    assert cli.main(["export", "--height", "0"]) == 2


def test_cli_exports_and_checks(tmp_path, capsys):
    torch.manual_seed(2)
    weights = save_weights(DiffMF(get_preset("live")), tmp_path / "w.safetensors")
    out = tmp_path / "cli.onnx"
    rc = cli.main(["export", "--weights", str(weights), "--height", str(H), "--width", str(W), "--out", str(out),
                   "--threads", "1"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert out.is_file() and "max abs diff" in text and "ok" in text
