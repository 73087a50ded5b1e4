"""Issue 15 point 1, the one output policy (diffmf_core.common.outputs) through the real CLI: no command
writes into, deletes or replaces an input; --overwrite replaces only the command's own outputs
(a bag, a results folder with the command's marker, an .onnx file); existing outputs without it
are an error naming the flag; files honour the umask."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from diffmf_core.cli import main as cli
from diffmf_core.tools import bag as bags

pytestmark = pytest.mark.timeout(120)
Q = ["--quiet"]
CLASSICAL = ["--fuser", "classical", "--quiet"]


def make_pairs(root: Path, n: int = 3, size=(32, 40)) -> Path:
    rng = np.random.default_rng(1)
    (root / "ir").mkdir(parents=True)
    (root / "vi").mkdir(parents=True)
    for i in range(n):
        cv2.imwrite(str(root / "ir" / f"{i:02d}.png"), rng.integers(0, 255, size, dtype=np.uint8))
        cv2.imwrite(str(root / "vi" / f"{i:02d}.png"), rng.integers(0, 255, (*size, 3), dtype=np.uint8))
    return root


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def bag(tmp_path) -> Path:
    make_pairs(tmp_path / "pairs")
    out = tmp_path / "work" / "in_bag"
    assert cli(["bag", "from-pairs", str(tmp_path / "pairs"), str(out)] + Q) == 0
    return out


def test_bag_fuse_never_deletes_the_parent_or_the_input(bag, capsys):
    work = bag.parent
    (work / "notes.txt").write_text("unrelated")
    before = snapshot(work)
    # the parent folder of the input, with --overwrite: refused, nothing deleted
    assert cli(["bag", "fuse", str(bag), str(work), "--overwrite"] + CLASSICAL) == 2
    assert "contains the input" in capsys.readouterr().err
    # onto its own input with --only-fused: refused, raw topics kept
    assert cli(["bag", "fuse", str(bag), str(bag), "--overwrite", "--only-fused"] + CLASSICAL) == 2
    assert "is the input" in capsys.readouterr().err
    # inside the input bag folder
    assert cli(["bag", "fuse", str(bag), str(bag / "fused")] + CLASSICAL) == 2
    assert "inside the input" in capsys.readouterr().err
    assert snapshot(work) == before


def test_bag_overwrite_replaces_only_a_bag(bag, tmp_path, capsys):
    other = tmp_path / "not_a_bag"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    assert cli(["bag", "fuse", str(bag), str(other), "--overwrite"] + CLASSICAL) == 2
    assert "not a rosbag2 bag folder" in capsys.readouterr().err
    assert (other / "keep.txt").read_text() == "mine"
    out = tmp_path / "fused"
    assert cli(["bag", "fuse", str(bag), str(out)] + CLASSICAL) == 0
    capsys.readouterr()
    assert cli(["bag", "fuse", str(bag), str(out)] + CLASSICAL) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert cli(["bag", "fuse", str(bag), str(out), "--overwrite"] + CLASSICAL) == 0
    assert bags.bag_info(out)["topics"][bags.FUSED_TOPIC]["count"] > 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_from_pairs_onto_its_input_is_refused(tmp_path, capsys):
    pairs = make_pairs(tmp_path / "pairs")
    before = snapshot(pairs)
    for out in (pairs, pairs / "vi", tmp_path):
        assert cli(["bag", "from-pairs", str(pairs), str(out), "--overwrite"] + Q) == 2
        assert "input" in capsys.readouterr().err
    assert snapshot(pairs) == before


def test_fuse_never_writes_into_its_input_and_reruns_need_overwrite(tmp_path, capsys):
    data = make_pairs(tmp_path / "data")
    before = snapshot(data)
    mean = ["--method", "mean"]
    assert cli(["fuse", "--data", str(data), "--out", str(data / "vi")] + mean) == 2
    assert "inside the input" in capsys.readouterr().err
    assert cli(["fuse", "--ir", str(data / "ir" / "00.png"), "--vi", str(data / "vi" / "00.png"),
                "--out", str(data / "vi"), "--overwrite"] + mean) == 2
    assert snapshot(data) == before
    out = tmp_path / "out"
    assert cli(["fuse", "--data", str(data), "--out", str(out)] + mean) == 0
    first = (out / "00.png").read_bytes()
    capsys.readouterr()
    assert cli(["fuse", "--data", str(data), "--out", str(out), "--method", "max"]) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "00.png").read_bytes() == first
    assert cli(["fuse", "--data", str(data), "--out", str(out), "--method", "max", "--overwrite"]) == 0
    assert (out / "00.png").read_bytes() != first
    # a folder the command did not write: --overwrite does not replace its files
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "01.png").write_bytes(b"user's file")
    assert cli(["fuse", "--data", str(data), "--out", str(foreign), "--overwrite"] + mean) == 2
    assert "not written by `diffmf fuse`" in capsys.readouterr().err
    assert (foreign / "01.png").read_bytes() == b"user's file" and not (foreign / "00.png").exists()


def test_output_that_is_a_file_or_unwritable_is_one_line(tmp_path, bag, capsys):
    data = make_pairs(tmp_path / "data")
    (tmp_path / "afile").write_text("x")
    runs = [
        ["fuse", "--data", str(data), "--method", "mean", "--out", str(tmp_path / "afile")],
        ["fuse", "--data", str(data), "--method", "mean", "--out", str(tmp_path / "afile" / "sub")],
        ["bag", "from-pairs", str(data), str(tmp_path / "afile" / "bag"), "--quiet"],
        ["bag", "report", str(bag), "--input", str(bag), "--outdir", str(tmp_path / "afile")],
        ["export", "--out", str(tmp_path), "--no-check"],
    ]
    for args in runs:  # in-process (an escaping exception fails the test); real processes: test_cli_inputs
        assert cli(args) != 0, args
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()[-1]) > 10, (args, err)
    assert (tmp_path / "afile").read_text() == "x"


def test_export_refuses_an_existing_file_without_overwrite(tmp_path, capsys):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"earlier export")
    assert cli(["export", "--out", str(out), "--no-check"]) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == b"earlier export"
    other = tmp_path / "notes.txt"
    other.write_text("x")
    assert cli(["export", "--out", str(other), "--overwrite", "--no-check"]) == 2
    assert other.read_text() == "x"


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_written_files_honour_the_umask(tmp_path, mask):
    from diffmf_core.training.data import write_image
    from diffmf_core.weights import save_weights
    from diffmf_core.config import get_preset
    from diffmf_core.models import DiffMF

    old = os.umask(mask)
    try:
        png = write_image(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
        weights = save_weights(DiffMF(get_preset("live")), tmp_path / "w.safetensors")
    finally:
        os.umask(old)
    for path in (png, weights):
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path


def test_fuse_cli_pngs_get_the_umask(tmp_path):
    data = make_pairs(tmp_path / "data", n=1)
    proc = subprocess.run(["sh", "-c", f"umask 022 && exec {sys.executable} -m diffmf_core.cli fuse "
                           f"--data {data} --method mean --out {tmp_path / 'out'}"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "00.png").stat().st_mode & 0o777 == 0o644


def test_report_needs_overwrite_and_its_marker(tmp_path, capsys):
    make_pairs(tmp_path / "pairs", n=4)
    bag, fused = tmp_path / "in", tmp_path / "fused"
    assert cli(["bag", "from-pairs", str(tmp_path / "pairs"), str(bag)] + Q) == 0
    assert cli(["bag", "fuse", str(bag), str(fused)] + CLASSICAL) == 0
    rep = tmp_path / "rep"
    assert cli(["bag", "report", str(fused), "--input", str(bag), "--outdir", str(rep)]) == 0
    capsys.readouterr()
    assert cli(["bag", "report", str(fused), "--input", str(bag), "--outdir", str(rep)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert cli(["bag", "report", str(fused), "--input", str(bag), "--outdir", str(rep), "--overwrite"]) == 0
    user = tmp_path / "user"
    user.mkdir()
    (user / "summary.md").write_text("my notes")
    assert cli(["bag", "report", str(fused), "--input", str(bag), "--outdir", str(user), "--overwrite"]) == 2
    assert (user / "summary.md").read_text() == "my notes"
    # never into the recorded bag
    assert cli(["bag", "report", str(fused), "--input", str(bag), "--outdir", str(fused)]) == 2
