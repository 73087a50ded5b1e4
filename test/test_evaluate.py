"""`diffmf eval` / `diffmf fuse` on a tiny synthetic dataset (classical methods and a stub DIFF-MF)."""
import csv
import sys
import types

import cv2
import numpy as np
import pytest

from diffmf_core import cli
from diffmf_core.evaluate import evaluate_methods, markdown_table
from diffmf_core.fuse_cmd import FuserUnavailable, make_fuser
from diffmf_core.metrics import METRICS


@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(5)
    root = tmp_path / "tiny"
    (root / "ir").mkdir(parents=True)
    (root / "vi").mkdir()
    for i, (h, w) in enumerate([(40, 48), (36, 52), (44, 44)]):
        cv2.imwrite(str(root / "ir" / f"{i:02d}.png"), rng.integers(0, 256, (h, w)).astype(np.uint8))
        cv2.imwrite(str(root / "vi" / f"{i:02d}.jpg"), rng.integers(0, 256, (h, w, 3)).astype(np.uint8))
    return root


class StubFuser:
    """Stands in for diffmf_core.fuser.Fuser (max fusion)."""
    name = "stub"

    def __init__(self, weights=None, preset=None):
        self.weights = weights

    def fuse(self, ir, vi):
        return np.maximum(vi, ir[..., None])


def test_evaluate_methods_writes_reports(dataset, tmp_path):
    out = tmp_path / "out"
    fusers = {"mean": make_fuser("mean"), "gff": make_fuser("gff")}
    means = evaluate_methods(dataset, fusers, out, limit=2)
    assert list(means) == ["mean", "gff"] and list(means["mean"]) == METRICS
    with (out / "mean.csv").open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["image", *METRICS] and [r[0] for r in rows[1:]] == ["00", "01", "mean"]
    assert float(rows[-1][1]) == pytest.approx(means["mean"]["EN"], abs=1e-5)
    assert "**" in (out / "results.md").read_text()
    sheet = cv2.imread(str(out / "contact_sheet.png"))
    assert sheet.shape[0] == 2 * 200 and sheet.shape[1] == 5 * 224  # ir, vi, 2 methods, diff


def test_markdown_table_bolds_best():
    table = markdown_table({"a": dict.fromkeys(METRICS, 1.0), "b": dict.fromkeys(METRICS, 2.0)}, "t")
    assert "| b | **2.000**" in table and "| a | 1.000" in table


def test_eval_cli_with_stub_diffmf(dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "diffmf_core.fuser", types.SimpleNamespace(Fuser=StubFuser))
    out = tmp_path / "ev"
    assert cli.main(["eval", "--data", str(dataset), "--methods", "diffmf,max", "--out", str(out)]) == 0
    report = capsys.readouterr().out
    assert "| diffmf |" in report and "tiny (3 pairs)" in report
    assert (out / "tiny" / "diffmf.csv").is_file() and (out / "results.md").is_file()


def test_diffmf_unavailable_is_a_clear_error(dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "diffmf_core.fuser", None)  # import fails
    with pytest.raises(FuserUnavailable, match="classical"):
        make_fuser("diffmf")
    assert cli.main(["eval", "--data", str(dataset), "--out", str(tmp_path / "x")]) == 2
    assert "diffmf" in capsys.readouterr().err


def test_fuse_cli_pair_and_folder(dataset, tmp_path):
    out = tmp_path / "fused"
    ir, vi = dataset / "ir" / "01.png", dataset / "vi" / "01.jpg"
    assert cli.main(["fuse", "--ir", str(ir), "--vi", str(vi), "--method", "laplacian", "--out", str(out)]) == 0
    img = cv2.imread(str(out / "01.png"), cv2.IMREAD_UNCHANGED)
    assert img.shape == (36, 52, 3)
    assert cli.main(["fuse", "--data", str(dataset), "--method", "mean", "--out", str(out), "--overwrite"]) == 0
    # no temp files left; the marker lets a later --overwrite replace these
    assert sorted(p.name for p in out.iterdir()) == [".diffmf-fuse", "00.png", "01.png", "02.png"]
    assert cli.main(["fuse", "--ir", str(ir), "--method", "mean"]) == 2
