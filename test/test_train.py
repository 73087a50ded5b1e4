"""diffmf train: a few real steps, resume after a kill, and two-process DDP (gloo) agreement."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from diffmf_core.weights import load_model, read_metadata

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_pairs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pairs")
    rng = np.random.default_rng(0)
    for sub in ("ir", "vi"):
        (root / sub).mkdir()
    for i in range(6):
        cv2.imwrite(str(root / "ir" / f"{i:02d}.png"), rng.integers(0, 255, (48, 56), dtype=np.uint8))
        cv2.imwrite(str(root / "vi" / f"{i:02d}.png"), rng.integers(0, 255, (48, 56, 3), dtype=np.uint8))
    return root


def _train_cmd(data: Path, out: Path, iters: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "diffmf_core.cli", "train", "--data", str(data), "--out", str(out),
            "--preset", "live", "--iters", str(iters), "--batch-size", "2", "--crop", "32", "--lr", "1e-3",
            "--threads", "1", "--log-every", "1", *extra]


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, **kw)


def test_train_writes_weights_log_and_resumes(tiny_pairs, tmp_path):
    out = tmp_path / "run"
    first = _run(_train_cmd(tiny_pairs, out, 2, "--ckpt-every", "1"))
    assert first.returncode == 0, first.stderr[-2000:]
    model = load_model(out / "weights.safetensors")
    assert model.cfg.name == "live"
    second = _run(_train_cmd(tiny_pairs, out, 4, "--ckpt-every", "1"))
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resuming from" in second.stdout and "at step 2/4" in second.stdout
    steps = [int(line.split(",")[0]) for line in (out / "log.csv").read_text().splitlines()[1:]]
    assert steps == [1, 2, 3, 4]


def test_decoder_options_train_and_are_stored_with_the_weights(tiny_pairs, tmp_path):
    out = tmp_path / "run"
    options = ("--stretch", "1.1", "--head-region", "warm", "--warm-margin", "12", "--head-maps", "selection")
    result = _run(_train_cmd(tiny_pairs, out, 1, "--loss", "rule", *options))
    assert result.returncode == 0, result.stderr[-2000:]
    cfg = load_model(out / "weights.safetensors").cfg
    assert (cfg.output_stretch, cfg.head_region, cfg.warm_margin, cfg.head_maps) == (1.1, "warm", 12, "selection")
    assert " ".join(options) in read_metadata(out / "weights.safetensors")["command"]
    refused = _refusal(_train_cmd(tiny_pairs, tmp_path / "bad", 1, "--warm-margin", "6"))
    assert "warm_margin must be a multiple of 4" in refused
    assert not (tmp_path / "bad" / "weights.safetensors").exists()


def test_score_loss_trains_and_logs_each_metric_ratio(tiny_pairs, tmp_path):
    out = tmp_path / "score"
    result = _run(_train_cmd(tiny_pairs, out, 2, "--loss", "score"))
    assert result.returncode == 0, result.stderr[-2000:]
    rows = (out / "log.csv").read_text().splitlines()
    assert rows[0] == "step,lr,loss,EN,SD,SF,MI,VIF,AG,seconds"
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2"]
    assert all(np.isfinite(float(v)) for r in rows[1:] for v in r.split(",")[2:])
    assert "--loss score" in read_metadata(out / "weights.safetensors")["command"]


def test_killed_run_continues_from_last_checkpoint(tiny_pairs, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(_train_cmd(tiny_pairs, out, 10_000, "--ckpt-every", "1"), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = out / "checkpoint.safetensors"
    deadline = time.monotonic() + 120
    while not ckpt.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), "no checkpoint written before the kill"
    from safetensors import safe_open
    with safe_open(str(ckpt), framework="pt") as f:
        saved = int(f.metadata()["step"])
    resumed = _run(_train_cmd(tiny_pairs, out, saved + 1, "--ckpt-every", "1"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"at step {saved}/{saved + 1}" in resumed.stdout


def test_two_process_ddp_ranks_end_identical(tiny_pairs, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           *_train_cmd(tiny_pairs, out, 2, "--device", "cpu")[1:]]
    result = _run(cmd, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    digests = dict(re.findall(r"rank (\d) finished at step 2: parameter digest (\w+)", result.stdout))
    assert set(digests) == {"0", "1"}, result.stdout
    assert digests["0"] == digests["1"]
    assert (out / "weights.safetensors").exists()


def test_holdout_validation_scores_and_keeps_only_a_network_that_beats_its_rule(tiny_pairs, tmp_path):
    out = tmp_path / "val"
    result = _run(_train_cmd(tiny_pairs, out, 4, "--holdout", "0[45]", "--val-every", "2", "--val-max", "2",
                             "--loss", "rule", "--lambda-target", "0.5", "--target-radius", "8",
                             "--target-share", "0.8", "--target-norm", "pixels", "--detail-overshoot", "0.5"))
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [r.split(",") for r in (out / "val.csv").read_text().splitlines()]
    assert rows[0] == ["step", "score", "EN", "SD", "SF", "MI", "VIF", "AG", "TR"]
    # the reference row, the rule's score, then the network before its first step (a candidate too)
    # and every 2 steps, each followed by its constant-head copy
    assert [r[0] for r in rows[1:]] == ["reference", "rule", "0", "constant_head_0", "2", "constant_head_2",
                                        "4", "constant_head_4"]
    assert rows[1][1] == "1.00000"
    score = {r[0]: float(r[1]) for r in rows[2:]}
    from diffmf_core.training.train import VAL_MARGIN
    beaten = [s for s in ("0", "2", "4") if score[s] >= max(score["rule"], score[f"constant_head_{s}"]) + VAL_MARGIN]
    meta = read_metadata(out / "weights.safetensors")
    assert "--holdout '0[45]'" in meta["command"] and "--fresh" not in meta["command"]
    assert "None" not in meta["command"] and "False" not in meta["command"]  # a command one can rerun
    assert "--lambda-target 0.5" in meta["command"] and "--loss rule" in meta["command"]
    assert "--target-radius 8" in meta["command"]
    assert all(o in meta["command"] for o in ("--target-share 0.8", "--target-norm pixels", "--detail-overshoot 0.5"))
    log = (out / "log.csv").read_text().splitlines()
    assert log[0] == "step,lr,loss,rule,detail,target,seconds" and len(log) == 5
    if beaten:
        best = max(score[s] for s in beaten)
        meta = read_metadata(out / "weights.safetensors")
        assert float(meta["val_score"]) == pytest.approx(best, abs=1e-5) and int(meta["train_seconds"]) >= 0
        assert float(meta["val_rule_score"]) == pytest.approx(score["rule"], abs=1e-5)
        assert (out / "best.safetensors").read_bytes() == (out / "weights.safetensors").read_bytes()
    else:
        assert not (out / "best.safetensors").exists() and "val_score" not in meta
        assert "no validated network beat both its rule and its constant-head copy" in result.stdout


def test_split_pairs_keeps_held_out_clips_out_of_training(tiny_pairs):
    from diffmf_core.training.data import DataError
    from diffmf_core.training.train import split_pairs
    train, held = split_pairs([tiny_pairs], ["0[01]"])
    assert [n for n, _, _ in held] == ["00", "01"] and [n for n, _, _ in train] == ["02", "03", "04", "05"]
    with pytest.raises(DataError, match="matches no pair"):
        split_pairs([tiny_pairs], ["clip_*"])
    with pytest.raises(DataError, match="no training pairs"):
        split_pairs([tiny_pairs], ["*"])


@pytest.mark.parametrize("bad, message", [
    (["--batch-size", "0"], "--batch-size: must be >= 1"),
    (["--iters", "0"], "--iters: must be >= 1"),
    (["--crop", "0"], "--crop: must be >= 32"),
    (["--lr", "-1"], "--lr: must be > 0"),
    (["--lr", "nan"], "--lr: must be a finite number"),
    (["--preset", "bogus"], "invalid choice: 'bogus'"),
])
def test_bad_arguments_are_one_line_errors(tiny_pairs, tmp_path, bad, message, capsys):
    from diffmf_core.cli import main  # in-process: argparse refuses before anything is imported or run
    argv = _train_cmd(tiny_pairs, tmp_path / "run", 1)[3:]  # without "python -m diffmf_core.cli"
    assert main(argv + bad) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def _refusal(argv: list[str]) -> str:
    """Run `diffmf train` in-process where it must refuse before training: its one-line message
    (exit 2 from the command's checks, or SystemExit with the message from the training loop)."""
    import contextlib
    import io

    from diffmf_core.cli import main
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(argv[3:])  # without "python -m diffmf_core.cli"
        except SystemExit as refused:
            return str(refused.code)
    assert code == 2, err.getvalue()
    return err.getvalue()


def test_unusable_inputs_are_clear_errors(tiny_pairs, tmp_path):
    bad_init = tmp_path / "init.safetensors"
    bad_init.write_bytes(b"not a weights file at all")
    assert "not a directory" in _refusal(_train_cmd(tmp_path / "nowhere", tmp_path / "a", 1))
    assert "--init:" in _refusal(_train_cmd(tiny_pairs, tmp_path / "b", 1, "--init", str(bad_init)))
    assert "needs --holdout" in _refusal(_train_cmd(tiny_pairs, tmp_path / "c", 1, "--val-every", "1"))


def test_resume_with_another_preset_is_refused(tiny_pairs, tmp_path):
    out = tmp_path / "run"
    assert _run(_train_cmd(tiny_pairs, out, 1, "--ckpt-every", "1")).returncode == 0
    cmd = _train_cmd(tiny_pairs, out, 2)
    cmd[cmd.index("live")] = "paper"
    assert "does not resume a 'paper' run" in _refusal(cmd)


class Replay:
    """Returns fixed outputs (the validator's images, in order) whatever the input."""

    def __init__(self, outputs):
        self.outputs = iter(outputs)
        self.training = False

    def eval(self):
        return self

    def train(self, mode=True):
        return self

    def __call__(self, ir, vi):
        import torch
        return torch.from_numpy(next(self.outputs))[None, None]


def test_validation_score_is_half_the_capped_paper_metrics_half_the_capped_retention(tiny_pairs):
    import torch
    from diffmf_core.baselines import fuse_gff, fuse_laplacian
    from diffmf_core.training.data import find_pairs
    from diffmf_core.training.train import VAL_CAP, VAL_METRICS, Validator

    validator = Validator(find_pairs(tiny_pairs), 2)
    lp, lp_max, gff = (validator._means([f(ir, vi) for ir, vi, _, _ in validator.images])
                       for f in (fuse_laplacian, lambda a, b: fuse_laplacian(a, b, base="max"), fuse_gff))
    assert validator.reference == {**{k: max(lp_max[k], gff[k]) for k in VAL_METRICS}, "TR": max(lp["TR"], lp_max["TR"])}

    def expected(means):
        paper = np.mean([min(means[k] / validator.reference[k], VAL_CAP) for k in VAL_METRICS])
        return 0.5 * paper + 0.5 * min(means["TR"] / validator.reference["TR"], VAL_CAP)

    score, means = validator(Replay([fuse_gff(ir, vi) for ir, vi, _, _ in validator.images]), torch.device("cpu"))
    assert means == pytest.approx(gff)
    assert score == pytest.approx(expected(gff))
    # a much sharper output: SF and AG count at most VAL_CAP times the reference
    sharp = [np.clip(0.5 + 4.0 * (ir - 0.5), 0, 1).astype(np.float32) for ir, _, _, _ in validator.images]
    score, means = validator(Replay(sharp), torch.device("cpu"))
    assert means["SF"] / validator.reference["SF"] > VAL_CAP
    assert score == pytest.approx(expected(means))


@pytest.mark.parametrize("options", [{}, {"output_stretch": 1.1, "head_region": "warm", "head_maps": "selection"}])
def test_rule_and_constant_head_scores_are_what_they_say_and_leave_the_network_as_it_was(tiny_pairs, options):
    import torch
    from diffmf_core.config import get_preset
    from diffmf_core.models import DiffMF
    from diffmf_core.modules.pyramid_decoder import rule_fusion
    from diffmf_core.training.data import find_pairs
    from diffmf_core.training.train import Validator

    validator = Validator(find_pairs(tiny_pairs), 2)
    torch.manual_seed(0)
    model = DiffMF(get_preset("live", **options)).eval()
    torch.nn.init.normal_(model.decoder.head.weight, std=0.5)  # a head that varies over the image
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rule_score, rule_means = validator.rule(model, torch.device("cpu"))
    with torch.no_grad():
        rule = [rule_fusion(torch.from_numpy(ir)[None, None], torch.from_numpy(vi)[None, None],
                            model.cfg.pyramid_levels, model.cfg.output_stretch)[0, 0].numpy()
                for ir, vi, _, _ in validator.images]
    assert rule_means == pytest.approx(validator._means(rule))
    assert rule_score == pytest.approx(validator.score(rule_means))

    constant_score, constant_means = validator.constant_head(model, torch.device("cpu"))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # by hand: the head's mean maps over the held-out images as a constant bias, no weights
    maps = []
    hook = model.decoder.head.register_forward_hook(lambda m, i, o: maps.append(o.mean(dim=(0, 2, 3))))
    validator.fused(model, torch.device("cpu"))
    hook.remove()
    copy = DiffMF(get_preset("live", **options)).eval()
    copy.load_state_dict(model.state_dict())
    with torch.no_grad():
        copy.decoder.head.weight.zero_()
        copy.decoder.head.bias.copy_(torch.stack(maps).mean(dim=0))
    assert constant_means == pytest.approx(validator._means(validator.fused(copy, torch.device("cpu"))))
    assert constant_score == pytest.approx(validator.score(constant_means))
