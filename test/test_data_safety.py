"""Issue 25, data safety second pass: one test per row of the issue's table (docs/reliability.md,
"What each bad input gets"), in-process through ``cli.main`` where it can be. A command replaces
only what its manifest says it wrote, never writes into or around an input, refuses a second run
to the same output, checks image sizes from the header, and refuses before work with one line,
exit 2 and nothing left behind."""
from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from diffmf_core.cli import build_parser
from diffmf_core.cli import main as cli
from test_output_policy import make_pairs, snapshot

pytestmark = pytest.mark.timeout(120)
Q = ["--quiet"]
CLASSICAL = ["--fuser", "classical", "--quiet"]
MEAN = ["--method", "mean"]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    from diffmf_core.config import get_preset
    from diffmf_core.models import DiffMF
    from diffmf_core.weights import save_weights

    return save_weights(DiffMF(get_preset("live")), tmp_path_factory.mktemp("w") / "weights.safetensors")


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--out", str(out), "--iters", "1", "--batch-size", "1", "--crop", "32",
            "--threads", "1", *extra]


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A small real PNG whose IHDR says ``width`` x ``height`` (the pixels would not decode)."""
    ok, buf = cv2.imencode(".png", np.zeros((8, 8), np.uint8))
    data = buf.tobytes()
    path.write_bytes(data[:16] + struct.pack(">II", width, height) + data[24:])
    return path


def last_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and not any("Traceback" in line for line in err), err
    return err[-1]


# ------------------------------------------------------------------ rows 1-5: what --overwrite and train replace


def test_row1_overwrite_never_takes_a_users_folder_with_a_metadata_yaml_for_a_bag(tmp_path, capsys):
    data = make_pairs(tmp_path / "data")
    user = tmp_path / "user"
    (user / "sub").mkdir(parents=True)
    (user / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
    (user / "important.txt").write_text("keep")
    (user / "sub" / "x.dat").write_bytes(b"\x00\x01")
    before = snapshot(user)
    assert cli(["bag", "from-pairs", str(data), str(user), "--overwrite"] + Q) == 2
    assert "not a rosbag2 bag folder written by `diffmf bag from-pairs`" in last_line(capsys)
    assert snapshot(user) == before


def test_row2_a_file_added_to_a_bag_is_never_deleted_with_it(tmp_path, capsys):
    data = make_pairs(tmp_path / "data")
    out = tmp_path / "bag"
    assert cli(["bag", "from-pairs", str(data), str(out)] + Q) == 0
    (out / "notes.txt").write_text("mine")
    assert cli(["bag", "from-pairs", str(data), str(out), "--overwrite", "--rate", "10"] + Q) == 2
    assert "notes.txt" in last_line(capsys) and (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    assert cli(["bag", "from-pairs", str(data), str(out), "--overwrite", "--rate", "10"] + Q) == 0
    # another command's bag is not this command's to replace
    assert cli(["bag", "fuse", str(out), str(tmp_path / "fused")] + CLASSICAL) == 0
    assert cli(["bag", "from-pairs", str(data), str(tmp_path / "fused"), "--overwrite"] + Q) == 2


def test_row3_train_never_replaces_its_init(tmp_path, weights, capsys):
    data = make_pairs(tmp_path / "data")
    init = tmp_path / "run" / "weights.safetensors"
    init.parent.mkdir()
    init.write_bytes(weights.read_bytes())
    assert cli(train_args(data, init.parent, "--init", str(init))) == 2
    assert "contains the input" in last_line(capsys)
    assert init.read_bytes() == weights.read_bytes() and sorted(p.name for p in init.parent.iterdir()) == [init.name]


def test_row4_train_refuses_a_folder_holding_files_it_did_not_write(tmp_path, capsys):
    data = make_pairs(tmp_path / "data")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "weights.safetensors").write_bytes(b"the user's weights")
    (out / "log.csv").write_text("the user's log")
    before = snapshot(out)
    assert cli(train_args(data, out)) == 2
    err = last_line(capsys)
    assert "in the way" in err and "weights.safetensors" in err and "log.csv" in err
    assert snapshot(out) == before


def test_row4_train_adopts_an_older_run_folder_by_its_checkpoint(tmp_path):
    from diffmf_core.common.outputs import read_manifest
    from diffmf_core.tools.train import TRAIN_FILES, _adopt_legacy
    from safetensors.torch import save_file

    out = tmp_path / "old_run"
    out.mkdir()
    save_file({"x": torch.zeros(1)}, str(out / "checkpoint.safetensors"), metadata={"step": "5", "meta": "{}"})
    (out / "log.csv").write_text("step\n")
    _adopt_legacy(out)
    assert read_manifest(out, "train") == {"checkpoint.safetensors", "log.csv"} <= set(TRAIN_FILES)
    other = tmp_path / "not_a_run"
    other.mkdir()
    (other / "checkpoint.safetensors").write_bytes(b"not safetensors")
    _adopt_legacy(other)
    assert read_manifest(other, "train") == set()


def test_row5_a_second_run_to_the_same_output_is_refused_and_a_killed_one_leaves_no_lock(tmp_path, capsys):
    data = make_pairs(tmp_path / "data")
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom diffmf_core.common.outputs import output_lock\n"
         "with output_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(60)\n", str(out)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert cli(["fuse", "--data", str(data), "--out", str(out)] + MEAN) == 2
        assert f"another diffmf run (process {holder.pid})" in last_line(capsys)
        assert cli(["bag", "from-pairs", str(data), str(out)] + Q) == 2
        assert "another diffmf run" in last_line(capsys)
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    assert cli(["fuse", "--data", str(data), "--out", str(out)] + MEAN) == 0  # the kernel freed the lock


# ------------------------------------------------------------------ rows 6-8: inputs


def test_row6_near_constant_thermal_frames_keep_their_level(tmp_path):
    from diffmf_core.live.agc import ThermalAGC
    from diffmf_core.training.data import read_image

    raw = np.full((40, 50), 30000, np.uint16)
    raw[0, 0] = 30010
    cv2.imwrite(str(tmp_path / "u16.png"), raw)
    assert np.median(read_image(tmp_path / "u16.png")) == 30000 >> 8
    flat = np.full((40, 50), 30000.0, np.float32)
    cv2.imwrite(str(tmp_path / "flat.tiff"), flat)
    flat[0, 0] = 30010.0
    cv2.imwrite(str(tmp_path / "near.tiff"), flat)
    assert np.median(read_image(tmp_path / "near.tiff")) == np.median(read_image(tmp_path / "flat.tiff")) == 255
    assert ThermalAGC().apply(raw)[1, 1] == 128  # the live AGC: mid-grey, never a division by ~0


def test_rows7_8_sizes_come_from_the_header_and_a_too_large_file_is_skipped_and_named(tmp_path, monkeypatch, capsys):
    from diffmf_core.training import data as data_module

    data = make_pairs(tmp_path / "data", n=3)
    big_ir = png_claiming(data / "ir" / "01.png", 12000, 12000)  # the thermal camera
    big_vi = png_claiming(data / "vi" / "02.png", 60000, 60000)
    decoded = []
    imdecode = cv2.imdecode
    monkeypatch.setattr(data_module.cv2, "imdecode", lambda buf, flags: decoded.append(len(buf)) or imdecode(buf, flags))
    out = tmp_path / "out"
    assert cli(["fuse", "--data", str(data), "--out", str(out)] + MEAN) == 1
    err = capsys.readouterr().err
    assert f"{big_ir}: 12000x12000 = 144.0 MP exceeds the input limit of 16.8 MP" in err
    assert f"{big_vi}: 60000x60000 = 3600.0 MP exceeds" in err and "error: error" not in err
    assert sorted(p.name for p in out.glob("*.png")) == ["00.png"] and len(decoded) == 2  # only pair 00 decoded
    # the reader without a limit: OpenCV's own refusal is one DataError line naming the file
    with pytest.raises(data_module.DataError, match="not a decodable image"):
        data_module.read_image(big_vi, max_pixels=None)
    # bag from-pairs: refused before any output, from the headers
    assert cli(["bag", "from-pairs", str(data), str(tmp_path / "bag")] + Q) == 2
    assert "12000x12000" in last_line(capsys) and not (tmp_path / "bag").exists()


# ------------------------------------------------------------------ rows 9-12: where outputs go


def test_row9_never_into_the_parent_of_an_input(tmp_path, capsys):
    data = make_pairs(tmp_path / "data")
    before = snapshot(data)
    assert cli(["fuse", "--ir", str(data / "ir"), "--vi", str(data / "vi"), "--out", str(data)] + MEAN) == 2
    assert "contains the input" in last_line(capsys)
    assert cli(["fuse", "--data", str(data), "--out", ""] + MEAN) == 2
    assert "expected a path" in last_line(capsys)
    bag = tmp_path / "rec" / "bag"
    assert cli(["bag", "from-pairs", str(data), str(bag)] + Q) == 0
    capsys.readouterr()
    assert cli(["bag", "report", str(bag), "--input", str(bag), "--outdir", str(bag.parent)]) == 2
    assert "contains the input" in last_line(capsys)
    assert sorted(p.name for p in bag.parent.iterdir()) == ["bag"]
    assert snapshot(data) == before


def test_row10_tilde_is_expanded_where_it_is_checked_and_written():
    home = Path.home()
    for command, argv, attr in (("fuse", ["fuse", "--out", "~/x"], "out"), ("eval", ["eval", "--out", "~/x"], "out"),
                                ("train", ["train", "--out", "~/x"], "out"),
                                ("calib", ["calib", "-o", "~/c.yaml"], "output"),
                                ("bag", ["bag", "fuse", "~/in", "~/x"], "output")):
        assert getattr(build_parser(command).parse_args(argv), attr) in (home / "x", home / "c.yaml"), command


def test_row11_calib_and_train_checkpoint_files_get_the_umask(tmp_path, capsys):
    from diffmf_core.config import get_preset
    from diffmf_core.models import DiffMF
    from diffmf_core.training.train import save_checkpoint

    model = DiffMF(get_preset("live"))
    old = os.umask(0o022)
    try:
        points = ["--thermal-points", "0,0", "9,0", "9,7", "0,7", "--rgb-points", "0,0", "18,0", "18,14", "0,14"]
        assert cli(["calib", *points, "-o", str(tmp_path / "cal.yaml")]) == 0
        save_checkpoint(tmp_path / "checkpoint.safetensors", model, torch.optim.Adam(model.parameters()), 0, {})
    finally:
        os.umask(old)
    for name in ("cal.yaml", "checkpoint.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


def test_row12_train_never_writes_into_an_input_folder(tmp_path, capsys):
    data = make_pairs(tmp_path / "data")
    before = snapshot(data)
    assert cli(train_args(data, data / "vi")) == 2
    assert "lies inside the input" in last_line(capsys)
    assert snapshot(data) == before


# ------------------------------------------------------------------ rows 13-15: options, signals


def test_row13_train_device_names_are_checked(tmp_path, capsys):
    data = make_pairs(tmp_path / "data")
    assert cli(train_args(data, tmp_path / "out", "--device", "gpu")) == 2
    assert "argument --device" in last_line(capsys)
    if not torch.cuda.is_available():
        assert cli(train_args(data, tmp_path / "out", "--device", "cuda")) == 2
        assert "CUDA is not available" in last_line(capsys)
    assert not (tmp_path / "out").exists()


def test_row14_weights_with_a_classical_method_are_refused(tmp_path, weights, capsys):
    data = make_pairs(tmp_path / "data")
    bag = tmp_path / "bag"
    assert cli(["bag", "from-pairs", str(data), str(bag)] + Q) == 0
    runs = [["fuse", "--data", str(data), "--method", "gff", "--weights", str(weights), "--out", str(tmp_path / "o")],
            ["eval", "--data", str(data), "--methods", "mean", "--weights", str(weights), "--out", str(tmp_path / "o")],
            ["bag", "fuse", str(bag), str(tmp_path / "o"), "--weights", str(weights)] + CLASSICAL]
    capsys.readouterr()
    for argv in runs:
        assert cli(argv) == 2, argv
        assert "apply" in last_line(capsys), argv
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals need the main thread")
@pytest.mark.parametrize("command", ["fuse", "eval"])
def test_row15_sigterm_is_exit_130_with_a_line(tmp_path, monkeypatch, capsys, command):
    import diffmf_core.tools.eval as eval_cmd
    import diffmf_core.tools.fuse as fuse_cmd
    from diffmf_core.baselines import ClassicalFuser

    class Terminated(ClassicalFuser):
        def fuse(self, ir, vi):
            os.kill(os.getpid(), signal.SIGTERM)
            return super().fuse(ir, vi)

    for module in (fuse_cmd, eval_cmd):
        monkeypatch.setattr(module, "make_fuser", lambda method, *a: Terminated(method))
    data = make_pairs(tmp_path / "data")
    args = (["fuse", "--data", str(data)] + MEAN if command == "fuse"
            else ["eval", "--data", str(data), "--methods", "mean"])
    assert cli(args + ["--out", str(tmp_path / "out")]) == 130
    assert "interrupted" in last_line(capsys)
    assert not (tmp_path / "out").exists()
    assert signal.getsignal(signal.SIGTERM) is not None  # the handler is restored after the run


# ------------------------------------------------------------------ rows 16-18: refused before any work


def test_row16_eval_checks_the_clip_before_it_evaluates(tmp_path, monkeypatch, capsys):
    import diffmf_core.training.evaluation as evaluation

    data = make_pairs(tmp_path / "data")
    monkeypatch.setattr(evaluation, "default_datasets", lambda: [data])
    (tmp_path / "empty").mkdir()
    assert cli(["eval", "--methods", "mean", "--clip", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no pair folders" in last_line(capsys) and not (tmp_path / "o").exists()


def test_row17_bad_replot_and_min_frames_are_refused_before_writing(tmp_path, capsys):
    garbage = tmp_path / "garbage.csv"
    garbage.write_text("a,b\n1,2\n")
    assert cli(["bench", "--replot", str(garbage), "--out", str(tmp_path / "b")]) == 2
    assert "not a bench.csv" in last_line(capsys) and not (tmp_path / "b").exists()
    data = make_pairs(tmp_path / "data")
    bag, fused = tmp_path / "in", tmp_path / "fused"
    assert cli(["bag", "from-pairs", str(data), str(bag)] + Q) == 0
    assert cli(["bag", "fuse", str(bag), str(fused)] + CLASSICAL) == 0
    capsys.readouterr()
    rep = tmp_path / "rep"
    assert cli(["bag", "report", str(fused), "--input", str(bag), "--outdir", str(rep), "--min-frames", "100"]) == 2
    assert "expected at least 100" in last_line(capsys) and not rep.exists()


def test_row18_refused_runs_leave_no_folder_or_marker(tmp_path, capsys):
    runs = [(["eval", "--data", str(tmp_path / "nope"), "--methods", "mean"], "not a directory")]
    if not torch.cuda.is_available():
        runs.append((["bench", "--device", "cuda"], "CUDA is not available"))
    for argv, message in runs:
        assert cli(argv + ["--out", str(tmp_path / "out")]) == 2, argv
        assert message in last_line(capsys)
        assert not (tmp_path / "out").exists()
    # a fuse run that wrote nothing (every pair unreadable) removes the folder it made
    data = make_pairs(tmp_path / "data", n=1)
    (data / "ir" / "00.png").write_bytes(b"garbage")
    assert cli(["fuse", "--data", str(data), "--out", str(tmp_path / "out")] + MEAN) == 1
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ row 19: messages


def test_row19_messages_are_one_clear_line(tmp_path, monkeypatch, capsys):
    import diffmf_core.tools.export as export_cmd
    import diffmf_core.training.data as data_module

    data = make_pairs(tmp_path / "data", n=1, size=(80, 96))
    # OpenCV's exception class is named by its module, not "error: error:"
    monkeypatch.setattr(data_module, "load_pair", lambda *a, **k: (_ for _ in ()).throw(cv2.error("OpenCV: bad")))
    assert cli(["fuse", "--data", str(data), "--out", str(tmp_path / "o")] + MEAN) == 1
    line = last_line(capsys)
    assert "cv2.error: OpenCV: bad" in line and "error: error" not in line
    monkeypatch.undo()
    # small pixel counts are written as pixels, not "0.0 MP"
    assert cli(["fuse", "--data", str(data), "--out", str(tmp_path / "o2"), "--max-pixels", "1000"] + MEAN) == 1
    assert "96x80 = 7,680 px exceeds the input limit of 1,000 px" in capsys.readouterr().err
    # export's random-weights warning: one line, no file:line
    monkeypatch.setattr(export_cmd, "default_weights_path", lambda preset: tmp_path / "none.safetensors")
    monkeypatch.setattr(export_cmd, "export_onnx", lambda model, path, *a: Path(path).write_bytes(b"onnx"))
    assert cli(["export", "--out", str(tmp_path / "m.onnx"), "--no-check", "--height", "16", "--width", "16"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"diffmf export: warning: no shipped weights at {tmp_path / 'none.safetensors'}; exporting a "
                   "randomly initialised 'live' network"]
    # bag info on a folder that is not a bag; a params file that is not one
    assert cli(["bag", "info", str(data)]) == 2
    assert "not a rosbag2 bag folder (no metadata.yaml)" in last_line(capsys)
    bag = tmp_path / "bag"
    assert cli(["bag", "from-pairs", str(data), str(bag)] + Q) == 0
    pts = tmp_path / "pts.csv"
    pts.write_text("1,2,3,4\n")
    assert cli(["bag", "fuse", str(bag), str(tmp_path / "f"), "--params-file", str(pts)] + CLASSICAL) == 2
    line = last_line(capsys)
    assert "not a node parameters file; expected a YAML mapping" in line and "attribute" not in line
