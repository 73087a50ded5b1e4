"""Issue 15 points 2-6 through the real CLI (in-process ``cli.main`` or a subprocess): explicit
choices are honoured or refused, bad arguments get one argparse line (no traceback), the offline
input size limit, bag report/fuse/info on awkward bags, help texts and ``fuse --ir/--vi`` folders.
(Point 1, the output policy: test_output_policy.py.)"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from diffmf_core.tools import bag as bags
from diffmf_core.cli import SUBCOMMANDS, build_parser
from diffmf_core.cli import main as cli

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parent.parent
Q = ["--quiet"]
CLASSICAL = ["--fuser", "classical", "--quiet"]


def make_pairs(root: Path, n: int = 3, size=(32, 40), sizes=None) -> Path:
    rng = np.random.default_rng(3)
    (root / "ir").mkdir(parents=True)
    (root / "vi").mkdir(parents=True)
    for i in range(n):
        h, w = sizes[i] if sizes else size
        cv2.imwrite(str(root / "ir" / f"{i:02d}.png"), rng.integers(0, 255, (h, w), dtype=np.uint8))
        cv2.imwrite(str(root / "vi" / f"{i:02d}.png"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    return root


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "diffmf_core.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def edited_params(tmp_path: Path, **changes) -> Path:
    """config/fuse.yaml with some node parameters changed."""
    import yaml

    doc = yaml.safe_load((ROOT / "config" / "fuse.yaml").read_text())
    next(iter(doc.values()))["ros__parameters"].update(changes)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture(scope="module")
def nan_weights(tmp_path_factory) -> Path:
    from diffmf_core.config import get_preset
    from diffmf_core.models import DiffMF
    from diffmf_core.weights import save_weights

    model = DiffMF(get_preset("live"))
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    return save_weights(model, tmp_path_factory.mktemp("w") / "nan.safetensors")


@pytest.fixture(scope="module")
def small_bag(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bag")
    make_pairs(root / "pairs", n=4)
    assert cli(["bag", "from-pairs", str(root / "pairs"), str(root / "in")] + Q) == 0
    return root / "in"


# ------------------------------------------------------------------ 2. explicit choices


def test_explicit_weights_or_device_that_cannot_be_used_are_errors(tmp_path, small_bag, nan_weights, capsys):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not weights at all")
    choices = [["--weights", str(tmp_path / "missing.safetensors")], ["--weights", str(junk)],
               ["--weights", str(nan_weights)]]
    if not torch.cuda.is_available():
        choices.append(["--device", "cuda"])
    for choice in choices:
        out = tmp_path / "out"
        assert cli(["bag", "fuse", str(small_bag), str(out), "--quiet", "--fuser", "diffmf", *choice]) == 2, choice
        err = capsys.readouterr().err
        assert "never fall back" in err and "Traceback" not in err, err
        assert not out.exists()
    data = make_pairs(tmp_path / "data", n=1)
    assert cli(["fuse", "--data", str(data), "--method", "diffmf", "--weights", str(nan_weights),
                "--out", str(tmp_path / "f")]) == 2
    assert "NaN" in capsys.readouterr().err and not (tmp_path / "f").exists()
    # bench-node refuses before it starts a node (and so before any CSV named after the model)
    bad = ["--weights", str(junk)] if torch.cuda.is_available() else ["--device", "cuda"]
    assert cli(["bench-node", "--out", str(tmp_path / "bench"), *bad]) == 2
    assert "error" in capsys.readouterr().err and not (tmp_path / "bench").exists()


def test_automatic_default_still_falls_back_with_a_warning(tmp_path, small_bag, capsys):
    """The node's documented degraded mode: weights named only in the params file."""
    params = edited_params(tmp_path, fuser="diffmf", weights=str(tmp_path / "gone.safetensors"))
    assert cli(["bag", "fuse", str(small_bag), str(tmp_path / "out"), "--params-file", str(params)] + Q) == 0
    assert "warning" in capsys.readouterr().err


def test_non_finite_model_output_is_an_error_not_a_black_image(tmp_path, monkeypatch, capsys):
    from diffmf_core.fuser import Fuser, NonFiniteOutput

    fuser = Fuser(device="cpu")
    monkeypatch.setattr(fuser, "forward", lambda ir, vi: torch.full_like(ir, float("nan")))
    with pytest.raises(NonFiniteOutput):
        fuser.fuse(np.zeros((16, 16), np.uint8), np.zeros((16, 16, 3), np.uint8))
    import diffmf_core.tools.fuse as fuse_cmd

    monkeypatch.setattr(fuse_cmd, "make_fuser", lambda *a, **k: fuser)
    data = make_pairs(tmp_path / "data", n=2)
    assert cli(["fuse", "--data", str(data), "--out", str(tmp_path / "out")]) == 1
    assert "non-finite" in capsys.readouterr().err
    assert list((tmp_path / "out").glob("*.png")) == []


# ------------------------------------------------------------------ 3. argparse validation

BAD_ARGS = [
    ["bag", "from-pairs", "P", "O", "--quality", "500"],
    ["bag", "from-pairs", "P", "O", "--drop", "0.99"],
    ["bag", "from-pairs", "P", "O", "--rate", "nan"],
    ["bag", "from-pairs", "P", "O", "--rate", "0"],
    ["bag", "from-pairs", "P", "O", "--start-time", "1e30"],
    ["bag", "from-pairs", "P", "O", "--limit", "-1"],
    ["bag", "fuse", "I", "O", "--device", "gpu"],
    ["bag", "fuse", "I", "O", "--slop-ms", "-5"],
    ["bag", "report", "R", "--input", "I", "--outdir", "O", "--min-frames", "x"],
    ["fuse", "--preset", "bogus"],
    ["fuse", "--max-pixels", "0"],
    ["eval", "--preset", "bogus"],
    ["eval", "--limit", "0"],
    ["export", "--height", "0"],
    ["export", "--tolerance", "inf"],
    ["bench", "--repeats", "0"],
    ["bench", "--device", "gpu"],
    ["bench", "--budget-s", "-1"],
    ["bench-node", "--rate", "0"],
    ["bench-node", "--frames", "0"],
]


@pytest.mark.parametrize("args", BAD_ARGS, ids=lambda a: " ".join(a[:1] + a[-2:]))
def test_bad_arguments_are_one_argparse_line(args, capsys):
    assert cli(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("diffmf ") and "error: argument" in err[-1], err
    assert not any("Traceback" in line for line in err)


def test_bad_input_in_a_real_process_has_no_traceback(tmp_path):
    data = make_pairs(tmp_path / "data", n=1)
    stderr = []
    for args in (["bag", "from-pairs", str(data), str(tmp_path / "b"), "--start-time", "2147483647"],
                 ["fuse", "--preset", "bogus"], ["bag", "info", str(tmp_path / "nothing")]):
        proc = run_cli(*args)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert "error" in proc.stderr.strip().splitlines()[-1]
        stderr.append(proc.stderr)
    assert "ROS Time" in stderr[0]  # the start time's error names the limit it exceeds
    assert not (tmp_path / "b").exists()


# ------------------------------------------------------------------ 4. input size limit


def test_inputs_above_the_size_limit_are_refused_up_front(tmp_path, capsys):
    from diffmf_core.tools.fuse import size_problem

    data = make_pairs(tmp_path / "data", n=1, size=(40, 50))
    assert cli(["fuse", "--data", str(data), "--method", "mean", "--max-pixels", "1000",
                "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "exceeds the input limit" in err and "--max-pixels" in err
    assert list((tmp_path / "out").glob("*.png")) == []
    assert cli(["fuse", "--data", str(data), "--method", "mean", "--out", str(tmp_path / "out")]) == 0

    class Stub:
        config = argparse.Namespace(name="paper")
        device = torch.device("cpu")

    # the default limit is the node's (16.8 MP); with an estimated memory for DIFF-MF
    msg = size_problem((6000, 8000, 3), Stub(), 4096 * 4096)
    assert "48.0 MP exceeds" in msg and "GB" in msg
    msg = size_problem((2000, 2000, 3), Stub(), 4096 * 4096)  # 4 MP of the paper preset: ~60 GB
    assert msg is None or "GB are available" in msg


# ------------------------------------------------------------------ 5. bag report / fuse / info


def _fused_bag(tmp_path, sizes=None, n=4):
    make_pairs(tmp_path / "pairs", n=n, sizes=sizes)
    bag, fused = tmp_path / "in", tmp_path / "fused"
    assert cli(["bag", "from-pairs", str(tmp_path / "pairs"), str(bag), "--keep-border"] + Q) == 0
    assert cli(["bag", "fuse", str(bag), str(fused)] + CLASSICAL) == 0
    return bag, fused


def test_report_on_varying_sizes_resizes_and_says_so(tmp_path, capsys):
    bag, fused = _fused_bag(tmp_path, sizes=[(32, 40), (32, 40), (48, 64), (48, 64)])
    rep = tmp_path / "rep"
    assert cli(["bag", "report", str(fused), "--input", str(bag), "--outdir", str(rep)]) == 0
    summary = (rep / "summary.md").read_text()
    assert "| fused frames resized to the video size | 2 (video 40x32" in summary
    cap = cv2.VideoCapture(str(rep / "fused.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4


def test_report_interrupted_leaves_nothing(tmp_path, monkeypatch, capsys):
    bag, fused = _fused_bag(tmp_path)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bags.report, "_write_strip", interrupt)  # after the video was written
    rep = tmp_path / "rep"
    assert cli(["bag", "report", str(fused), "--input", str(bag), "--outdir", str(rep)]) == 130
    assert "partial output removed" in capsys.readouterr().err
    assert not rep.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "logs.txt").write_text("kept")
    assert cli(["bag", "report", str(fused), "--input", str(bag), "--outdir", str(existing)]) == 130
    assert sorted(p.name for p in existing.iterdir()) == ["logs.txt"]


def test_report_refuses_an_input_bag_that_was_not_fused(tmp_path, capsys):
    bag, fused = _fused_bag(tmp_path)
    make_pairs(tmp_path / "other_pairs", n=4)
    other = tmp_path / "other"
    assert cli(["bag", "from-pairs", str(tmp_path / "other_pairs"), str(other), "--start-time", "1600000000"] + Q) == 0
    assert cli(["bag", "report", str(fused), "--input", str(other), "--outdir", str(tmp_path / "rep")]) == 2
    assert "is not the bag that was fused" in capsys.readouterr().err
    assert not (tmp_path / "rep").exists()


def test_bag_fuse_fails_when_nothing_could_be_fused(tmp_path, small_bag, capsys):
    params = edited_params(tmp_path, max_image_pixels=10)
    out = tmp_path / "out"
    assert cli(["bag", "fuse", str(small_bag), str(out), "--params-file", str(params)] + CLASSICAL) == 2
    err = capsys.readouterr().err
    assert "nothing could be fused" in err and "too_large" in err
    assert not out.exists()


def test_bag_info_counts_the_storage_not_the_metadata(tmp_path, small_bag, capsys):
    bag = tmp_path / "bag"
    shutil.copytree(small_bag, bag)
    meta = bag / "metadata.yaml"
    meta.write_text(meta.read_text().replace("message_count: 4", "message_count: 99"))
    assert "message_count: 99" in meta.read_text()
    assert cli(["bag", "info", str(bag)]) == 0
    out, err = capsys.readouterr()
    assert "messages:  8" in out and "99" not in out
    assert "metadata.yaml says 99" in err


def test_partial_folders_of_killed_runs_are_cleaned_or_named(tmp_path, capsys):
    data = make_pairs(tmp_path / "data", n=2)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    killed = tmp_path / ".bag.abc123.partial"
    (killed / "bag").mkdir(parents=True)
    (killed / ".diffmf-pid").write_text(str(dead.pid))
    unknown = tmp_path / ".bag.zzz999.partial"
    unknown.mkdir()
    assert cli(["bag", "from-pairs", str(data), str(tmp_path / "bag")] + Q) == 0
    err = capsys.readouterr().err
    assert not killed.exists() and "removed leftover partial output" in err
    assert unknown.exists() and "remove it by hand" in err and str(unknown) in err


def test_sigkilled_bag_fuse_leftover_is_cleaned_by_the_next_run(tmp_path, small_bag):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "diffmf_core.cli", "bag", "fuse", str(small_bag), str(out)]
                            + CLASSICAL, cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        import time

        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".out.*.partial")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.005)
        if proc.poll() is not None:
            pytest.skip("bag fuse finished before it could be killed")
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert list(tmp_path.glob(".out.*.partial"))
    assert cli(["bag", "fuse", str(small_bag), str(out)] + CLASSICAL) == 0
    assert list(tmp_path.glob(".*")) == [] and out.is_dir()


# ------------------------------------------------------------------ 6. help and --ir/--vi folders

HELP_EXEMPT: set[str] = set()  # every subcommand documents every option


def _leaf_parsers(parser, path):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for sub in subs:
        for name, child in sub.choices.items():
            yield from _leaf_parsers(child, path + [name])


def test_help_lists_every_subcommand_and_describes_every_option():
    top = run_cli("--help").stdout
    assert all(name in top for name in SUBCOMMANDS) and "report" in top
    assert "report" in run_cli("bag", "--help").stdout
    for name in SUBCOMMANDS:
        parser = build_parser(name)
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
        assert "examples:" in (sub.epilog or ""), name
        for path, leaf in _leaf_parsers(sub, [name]):
            assert "examples:" in (leaf.epilog or ""), path
            if name in HELP_EXEMPT:
                continue
            undocumented = [a.option_strings or a.dest for a in leaf._actions if a.help is None]
            assert undocumented == [], (path, undocumented)
    assert "--overwrite" in run_cli("fuse", "--help").stdout


HEAVY_MODULES = ("torch", "rclpy", "rosbags", "diffmf_core.fuser", "diffmf_core.models", "diffmf_core.training")


def test_parsers_import_no_torch_ros_or_network():
    """`diffmf COMMAND --help` and argument errors stay fast (0.1-0.4 s, not 2-3 s): building every
    subcommand's parser imports none of torch, rclpy, rosbags, the network or training/; the commands
    import them when they run. A fresh interpreter, as this one has torch loaded already."""
    code = ("import sys\n"
            "from diffmf_core.cli import SUBCOMMANDS, build_parser, main\n"
            "for name in SUBCOMMANDS:\n"
            "    build_parser(name)\n"
            "assert main(['fuse', '--bogus']) == 2 and main(['bench', '--repeats', '0']) == 2\n"
            f"print(sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout


def test_fuse_ir_and_vi_accept_folders(tmp_path, capsys):
    data = make_pairs(tmp_path / "data", n=3)
    out = tmp_path / "out"
    assert cli(["fuse", "--ir", str(data / "ir"), "--vi", str(data / "vi"), "--method", "max", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["00.png", "01.png", "02.png"]
    (data / "vi" / "02.png").rename(data / "vi" / "other.png")
    assert cli(["fuse", "--ir", str(data / "ir"), "--vi", str(data / "vi"), "--method", "max",
                "--out", str(tmp_path / "o2")]) == 2
    assert "without a partner" in capsys.readouterr().err
    assert cli(["fuse", "--ir", str(data / "ir"), "--vi", str(data / "vi" / "00.png"), "--method", "max",
                "--out", str(tmp_path / "o3")]) == 2
    assert "both be files or both be folders" in capsys.readouterr().err


def test_explicit_model_failing_during_bag_fuse_is_not_exit_0(tmp_path, small_bag, monkeypatch, capsys):
    from diffmf_core.fuser import Fuser, NonFiniteOutput

    def nan_output(self, ir, vi):
        raise NonFiniteOutput("diffmf-live produced 10 non-finite (NaN/Inf) output value(s)")

    monkeypatch.setattr(Fuser, "fuse_tensor", nan_output)
    out = tmp_path / "out"
    assert cli(["bag", "fuse", str(small_bag), str(out), "--fuser", "diffmf", "--device", "cpu"] + Q) == 1
    assert "classical fallback" in capsys.readouterr().err and out.is_dir()


def test_from_pairs_shares_the_node_size_limit(tmp_path, capsys):
    data = make_pairs(tmp_path / "data", n=2, size=(40, 50))
    out = tmp_path / "bag"
    assert cli(["bag", "from-pairs", str(data), str(out), "--max-pixels", "1999"] + Q) == 2
    assert "exceeds the input limit" in capsys.readouterr().err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["data"]
    assert cli(["bag", "from-pairs", str(data), str(out), "--max-pixels", "2000"] + Q) == 0
