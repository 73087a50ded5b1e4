"""`diffmf eval` / `diffmf fuse` on a tiny synthetic dataset (classical methods and a stub DIFF-MF)."""
import csv
import sys
import types

import cv2
import numpy as np
import pytest

from diffmf_core import cli
from diffmf_core.common.color import to_gray
from diffmf_core.tools.fuse import FuserUnavailable, make_fuser
from diffmf_core.training.evaluation import (COLUMNS, evaluate_methods, markdown_table, target_window,
                                             temporal_flicker, zoom_windows)
from diffmf_core.training.metrics import METRICS, target_retention


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
    assert list(means) == ["mean", "gff"] and list(means["mean"]) == COLUMNS
    with (out / "mean.csv").open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["image", *METRICS, "TR", "targets"] and [r[0] for r in rows[1:]] == ["00", "01", "mean"]
    assert float(rows[-1][1]) == pytest.approx(means["mean"]["EN"], abs=1e-5)
    assert "**" in (out / "results.md").read_text()
    sheet = cv2.imread(str(out / "contact_sheet.png"))
    # two images x (whole frame, texture zoom, flat zoom); columns ir, vi, 2 methods, diff
    assert sheet.shape[0] == 2 * 3 * 200 and sheet.shape[1] == 5 * 224


@pytest.fixture
def warm_dataset(tmp_path):
    """Two pairs with one warm target each, in front of a bright textured visible image."""
    rng = np.random.default_rng(3)
    root = tmp_path / "warm"
    (root / "ir").mkdir(parents=True)
    (root / "vi").mkdir()
    for i in range(2):
        ir = np.full((96, 128), 50, np.uint8)
        ir[30 + 10 * i:50 + 10 * i, 40:56] = 170
        vi = np.clip(200 + rng.normal(0, 20, (96, 128, 3)), 0, 255).astype(np.uint8)
        cv2.imwrite(str(root / "ir" / f"p{i}.png"), ir)
        cv2.imwrite(str(root / "vi" / f"p{i}.png"), vi)
    return root


def test_eval_reports_warm_target_retention_per_image_and_per_set(warm_dataset, tmp_path):
    out = tmp_path / "out"
    means = evaluate_methods(warm_dataset, {"max": make_fuser("max"), "laplacian": make_fuser("laplacian")}, out,
                             sheet=["p1"])
    with (out / "laplacian.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    ir = cv2.imread(str(warm_dataset / "ir" / "p0.png"), cv2.IMREAD_GRAYSCALE)
    vi = cv2.imread(str(warm_dataset / "vi" / "p0.png"))
    kept = target_retention(ir, to_gray(make_fuser("laplacian").fuse(ir, vi)))
    assert rows[0]["targets"] == "1" and float(rows[0]["TR"]) == pytest.approx(kept[0], abs=1e-5)
    # max fusion: the warm target (170) is darker than the visible image (about 200): gone
    assert means["max"]["TR"] == pytest.approx(0.0, abs=0.05) and means["max"]["TR>=0.5"] == 0.0
    assert means["laplacian"]["TR"] > 0.3
    assert "| TR | TR>=0.5 |" in (out / "results.md").read_text()
    sheet = cv2.imread(str(out / "contact_sheet.png"))
    # the one pair named by sheet: whole frame, texture, flat and warm-target zooms
    assert sheet.shape[0] == 4 * 200


def test_target_window_frames_the_strongest_warm_target():
    ir = np.full((200, 240), 40, np.uint8)
    ir[100:140, 20:36] = 200  # the strongest
    ir[20:30, 200:210] = 120
    y, x, side = target_window(ir)
    assert side >= 80 and y <= 100 and y + side >= 140 and x <= 20 and x + side >= 36
    assert target_window(np.full((50, 50), 9, np.uint8)) is None


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


def test_eval_rule_is_the_rule_of_the_network_evaluated(dataset, tmp_path, capsys):
    """With a network whose output is stretched, the `rule` row is its stretched rule: the same
    values as `fuse_rule(..., stretch)`, and not those of the shipped network's rule."""
    import torch

    from diffmf_core.baselines import fuse_rule
    from diffmf_core.common.color import to_gray
    from diffmf_core.config import get_preset
    from diffmf_core.models import DiffMF
    from diffmf_core.training import metrics
    from diffmf_core.training.data import find_pairs, load_pair
    from diffmf_core.weights import save_weights

    weights = save_weights(DiffMF(get_preset("live", output_stretch=1.3)), tmp_path / "s.safetensors")
    out = tmp_path / "ev"
    assert cli.main(["eval", "--data", str(dataset), "--methods", "diffmf,rule", "--weights", str(weights),
                     "--out", str(out)]) == 0
    capsys.readouterr()
    sd = {}
    for name, stretch in (("stretched", 1.3), ("plain", 1.0)):
        values = []
        for _, ir_path, vi_path in find_pairs(dataset):
            ir, vi = (to_gray(x).astype(np.float32) / 255 for x in load_pair(ir_path, vi_path))
            with torch.no_grad():
                fused = fuse_rule(ir, vi, stretch=stretch)
            values.append(metrics.evaluate_pair((fused * 255 + 0.5).astype(np.uint8), to_gray(ir * 255),
                                                to_gray(vi * 255), names=("SD",))["SD"])
        sd[name] = float(np.mean(values))
    rows = (out / "tiny" / "rule.csv").read_text().splitlines()
    header, mean = rows[0].split(","), rows[-1].split(",")
    reported = float(mean[header.index("SD")])
    assert reported == pytest.approx(sd["stretched"], rel=0.02) and reported > 1.1 * sd["plain"]


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


def test_zoom_windows_find_the_textured_and_the_flat_part():
    gray = np.full((80, 120), 128, np.uint8)
    gray[50:75, 85:115] = np.tile(np.array([0, 255], np.uint8), 15)  # stripes at the lower right
    gray[:30, :40] = 128  # flat upper left (as is the rest)
    windows = zoom_windows(gray)
    y, x, side = windows["texture"]
    assert side == 20 and 50 - side < y <= 75 and 85 - side < x <= 115
    y, x, side = windows["flat"]
    assert np.ptp(gray[y:y + side, x:x + side]) == 0


def test_temporal_flicker_counts_only_change_beyond_the_sources():
    rng = np.random.default_rng(0)
    ir = [rng.integers(0, 256, (16, 16)).astype(np.uint8) for _ in range(4)]
    vi = [np.full((16, 16), 100, np.uint8)] * 4
    assert temporal_flicker(ir, ir, vi) == 0.0  # the fused video follows a source exactly
    steady = [np.full((16, 16), 50, np.uint8)] * 4
    blink = [np.full((16, 16), 50 + 10 * (t % 2), np.uint8) for t in range(4)]
    assert temporal_flicker(blink, steady, vi) == pytest.approx(10.0)
    with pytest.raises(ValueError):
        temporal_flicker(blink[:1], steady[:1], vi[:1])


def test_eval_cli_clip_writes_flicker_table(dataset, tmp_path, capsys):
    out, clip = tmp_path / "ev", tmp_path / "clip"
    rng = np.random.default_rng(1)
    for sub in ("ir", "vi"):
        (clip / sub).mkdir(parents=True)
    for t in range(3):
        cv2.imwrite(str(clip / "ir" / f"{t:03d}.png"), rng.integers(0, 256, (24, 32)).astype(np.uint8))
        cv2.imwrite(str(clip / "vi" / f"{t:03d}.png"), rng.integers(0, 256, (24, 32, 3)).astype(np.uint8))
    assert cli.main(["eval", "--data", str(dataset), "--methods", "max,gff", "--out", str(out),
                     "--clip", str(clip)]) == 0
    table = (out / "flicker.md").read_text()
    assert "| max |" in table and "| gff |" in table and "Temporal flicker" in capsys.readouterr().out
    assert cli.main(["eval", "--data", str(dataset), "--methods", "max", "--out", str(out), "--overwrite",
                     "--clip", str(dataset)]) == 2  # frames of different sizes are no clip
    assert "one size" in capsys.readouterr().err
    assert cli.main(["eval", "--data", str(dataset), "--methods", "max", "--out", str(out), "--overwrite",
                     "--clip", str(clip), "--video-smoothing", "0.9"]) == 0
    assert "video_smoothing 0.9" in (out / "flicker.md").read_text()
    assert cli.main(["eval", "--clip", str(clip), "--video-smoothing", "0.99"]) == 2  # the node's range: [0, 0.95]
    assert "--video-smoothing" in capsys.readouterr().err


def test_clip_flicker_runs_the_torch_fusers_with_the_given_video_smoothing(tmp_path):
    import torch

    from diffmf_core.config import get_preset
    from diffmf_core.fuser import Fuser, WarmRuleFuser
    from diffmf_core.models import DiffMF
    from diffmf_core.training.evaluation import clip_flicker
    from diffmf_core.weights import save_weights

    torch.manual_seed(0)
    net = DiffMF(get_preset("live"))
    torch.nn.init.normal_(net.decoder.head.weight, std=0.5)  # a network that adds something to its sources
    fuser = Fuser(weights=str(save_weights(net, tmp_path / "w.safetensors")), device="cpu")
    clip = tmp_path / "clip"
    rng = np.random.default_rng(2)
    def smooth_texture(shape):  # a 2-px move changes it little: no scene cut for the video path
        x = cv2.GaussianBlur(rng.normal(0, 1, shape), (0, 0), 4)
        return 128 + 100 * x / np.abs(x).max()
    base_ir, base_vi = smooth_texture((64, 80)), smooth_texture((64, 80, 3))
    base_ir[20:40, 30:50] = 250  # a warm target: the warm rule takes the thermal image there
    for sub in ("ir", "vi"):
        (clip / sub).mkdir(parents=True)
    for t in range(4):  # a texture that moves by 2 px a frame
        cv2.imwrite(str(clip / "ir" / f"{t:03d}.png"), np.roll(base_ir, 2 * t, axis=1).astype(np.uint8))
        cv2.imwrite(str(clip / "vi" / f"{t:03d}.png"), np.roll(base_vi, 2 * t, axis=1).astype(np.uint8))
    fusers = {"diffmf": fuser, "warm_rule": WarmRuleFuser(device="cpu")}
    alone = clip_flicker(clip, fusers, smoothing=0.0)
    smooth = clip_flicker(clip, fusers, smoothing=0.9)
    for m in fusers:  # both run as the node runs them on video, and once more frame by frame
        assert alone[m] == pytest.approx(alone[f"{m}, frame by frame"])  # smoothing 0: each pair alone
        assert smooth[f"{m}, frame by frame"] == pytest.approx(alone[f"{m}, frame by frame"])
        assert smooth[m] != pytest.approx(alone[m], abs=1e-3)


def test_eval_reruns_need_overwrite_and_never_touch_foreign_files(dataset, tmp_path, capsys):
    out = tmp_path / "ev"
    args = ["eval", "--data", str(dataset), "--methods", "mean", "--out", str(out)]
    assert cli.main(args) == 0
    assert cli.main(args) == 2 and "--overwrite" in capsys.readouterr().err
    assert cli.main(args + ["--overwrite"]) == 0
    foreign = tmp_path / "mine"
    (foreign / "tiny").mkdir(parents=True)
    (foreign / "results.md").write_text("my notes")
    assert cli.main(["eval", "--data", str(dataset), "--methods", "mean", "--out", str(foreign), "--overwrite"]) == 2
    assert (foreign / "results.md").read_text() == "my notes"
    assert cli.main(["eval", "--data", str(dataset), "--methods", "mean", "--out", str(dataset / "ir")]) == 2
