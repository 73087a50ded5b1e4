"""Model faults: bad weights files give a clear error at configure time and the documented classical
fallback (pipeline.build_pipeline for each kind of file; the real node process for a pickle), and no
project Python file loads pickles."""
from __future__ import annotations

import json
import os
import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from diffmf_core.config import get_preset
from diffmf_core.models.diffmf import DiffMF
from diffmf_core.live.pipeline import MODE_CLASSICAL, build_pipeline
from diffmf_core.weights import save_weights

ROOT = Path(__file__).resolve().parent.parent
H, W = 48, 64


class Payload:
    """Unpickling this creates ``marker`` (pickle calls open(marker, "w"))."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _live(tmp: Path) -> Path:
    torch.manual_seed(0)
    return save_weights(DiffMF(get_preset("live")), tmp / "live.safetensors")


def _truncated(tmp: Path) -> Path:
    data = _live(tmp).read_bytes()
    path = tmp / "truncated.safetensors"
    path.write_bytes(data[:len(data) // 2])
    return path


def _tampered(tmp: Path) -> Path:
    """A header whose first tensor claims another shape (same byte size, so only the shape lies)."""
    data = _live(tmp).read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    head = json.loads(data[8:8 + n])
    name = next(k for k, v in head.items() if k != "__metadata__" and len(v["shape"]) == 1 and v["shape"][0] > 1)
    head[name]["shape"] = [1, head[name]["shape"][0]]
    raw = json.dumps(head).encode()
    path = tmp / "tampered.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])
    return path


def _paper(tmp: Path) -> Path:
    return save_weights(DiffMF(get_preset("paper")), tmp / "paper.safetensors")


def _torch_pickle(tmp: Path) -> Path:
    path = tmp / "model.safetensors"  # the name does not make it safetensors
    torch.save({"weight": torch.zeros(2), "evil": Payload(tmp / "pwned")}, path)
    return path


def _raw_pickle(tmp: Path) -> Path:
    path = tmp / "model_p0.safetensors"
    path.write_bytes(pickle.dumps(Payload(tmp / "pwned"), protocol=0))
    return path


BAD_WEIGHTS = {
    "missing": (lambda tmp: tmp / "missing.safetensors", r"not found"),
    "truncated": (_truncated, r"not a readable safetensors file"),
    "tampered_header": (_tampered, r"do not load into a 'live' network"),
    "other_preset": (_paper, r"preset 'paper', not 'live'"),
    "torch_save_pickle": (_torch_pickle, r"pickle"),
    "raw_pickle_protocol0": (_raw_pickle, r"not a readable safetensors file"),
}


@pytest.mark.parametrize("case", list(BAD_WEIGHTS))
def test_bad_weights_give_clear_error_and_classical_fallback(tmp_path, case):
    make, reason = BAD_WEIGHTS[case]
    path = make(tmp_path)
    pipeline, error, _ = build_pipeline({"fuser": "diffmf", "weights": str(path), "preset": "live", "device": "cpu",
                                         "fallback_fuser": "mean"}, warmup=True)
    assert error and str(path) in error and re.search(reason, error), error
    assert pipeline.model is None and pipeline.mode == MODE_CLASSICAL and pipeline.degraded_reason == error
    out = pipeline.fuse_pair(np.zeros((H, W), np.uint8), np.zeros((H, W, 3), np.uint8))
    assert out.mode == MODE_CLASSICAL and out.model_name == "mean" and out.image.shape == (H, W, 3)
    assert not (tmp_path / "pwned").exists(), "a weights file ran code"


def test_good_weights_load(tmp_path):
    """Control: the same builder with a valid live file uses the network."""
    pipeline, error, _ = build_pipeline({"fuser": "diffmf", "weights": str(_live(tmp_path)), "preset": "live",
                                         "device": "cpu"})
    assert error is None and pipeline.model is not None and pipeline.active_name == "diffmf-live"


@pytest.mark.ros
@pytest.mark.timeout(120)
def test_node_with_pickle_weights_publishes_classical_and_logs_once(tmp_path):
    pytest.importorskip("diffmf_ros.msg", reason="diffmf_ros.msg not built (scripts/setup_env.sh)")
    from diffmf_ros.msg import FusionInfo
    from noderig import Rig, Stamps, image, start_node

    weights = _torch_pickle(tmp_path)
    proc = start_node(tmp_path, fuser="diffmf", weights=str(weights), preset="live", fallback_fuser="mean",
                      diagnostics_period_s=0.2)
    rig = Rig()
    try:
        rig.connect(proc)
        stamps = Stamps()
        frame = np.zeros((H, W), np.uint8)

        def send() -> None:
            stamp = stamps.next()
            rig.publish("thermal", image(frame, "mono8", stamp))
            rig.publish("rgb", image(np.dstack([frame] * 3), "bgr8", stamp))

        rig.prime(send, proc)
        for n in range(2, 6):
            send()
            assert rig.wait_for(lambda: len(rig.outs) >= n, 3.0), proc.describe()
        assert {o.mode for o in rig.outs} == {FusionInfo.MODE_CLASSICAL} and rig.outs[-1].model == "mean"
        diag = rig.fresh_diag(lambda d: "degraded_reason" in d)
        assert diag["mode"] == "CLASSICAL" and "pickle" in diag["degraded_reason"]
        log = proc.output()
        assert log.count("not loaded") == 1 and re.search(r"ERROR.*pickle.*classical fuser 'mean'", log), log
        assert proc.poll() is None
    finally:
        rig.close()
        rc = proc.stop(timeout=20.0)
    assert rc == 0, proc.describe()
    assert not (tmp_path / "pwned").exists(), "the node ran code from a pickle"


FORBIDDEN = re.compile(r"torch\.load\(|pickle\.loads?\b|weights_only\s*=\s*False")
SKIP_DIRS = {".git", ".venv", "build", "install", "log", "runs", "__pycache__", "node_modules"}


def test_no_pickle_loading_in_project_python_files():
    """No project .py file (but this one) calls torch's or pickle's loaders or sets weights_only off."""
    hits = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(".")]
        for name in files:
            path = Path(folder) / name
            if name.endswith(".py") and path.resolve() != Path(__file__).resolve():
                for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                    if FORBIDDEN.search(line):
                        hits.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert not hits, "pickle loading found:\n" + "\n".join(hits)
