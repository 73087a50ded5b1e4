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

from diffmf_core.weights import load_model

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
