"""The README's main command, `make demo` (scripts/demo.sh), end to end on the sample bag: the node
with the shipped config/fuse.yaml (its default fuser), the recorder and the player as separate
processes over real ROS 2 topics, then the report. And the demo never touches a folder it did not
make."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.ros, pytest.mark.timeout(400)]


def run_demo(out: Path, **env) -> subprocess.CompletedProcess:
    environ = {**os.environ, "DIFFMF_PYTHON": sys.executable, "DEMO_OUT": str(out), "DEMO_IDLE_S": "4",
               "DEMO_DEVICE": "cpu", **env}
    return subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], cwd=ROOT, env=environ,
                          capture_output=True, text=True, timeout=360)


def test_the_demo_fuses_the_sample_bag_and_writes_its_report(tmp_path):
    out = tmp_path / "demo"
    run = run_demo(out)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "loaded warm_rule on cpu" in run.stdout and "demo: done" in run.stdout
    summary = (out / "report" / "summary.md").read_text()
    assert "warm_rule" in summary, summary
    assert (out / "report" / "fused.mp4").stat().st_size > 0 and (out / "report" / "strip.png").is_file()
    assert (out / "fused_bag" / "metadata.yaml").is_file()
    # a second run replaces the demo's own parts and keeps what else is in its folder
    (out / "notes.txt").write_text("mine")
    again = run_demo(out, DEMO_RATE="2.0")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert (out / "notes.txt").read_text() == "mine" and (out / "report" / "summary.md").is_file()


def test_the_demo_refuses_a_folder_it_did_not_make(tmp_path):
    out = tmp_path / "mine"
    (out / "logs").mkdir(parents=True)  # a name the demo uses, beside one it does not
    (out / "keep.txt").write_text("x")
    run = run_demo(out)
    assert run.returncode != 0 and "was not written by the demo (keep.txt)" in run.stderr, run.stderr
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt", "logs"]
    file = tmp_path / "file"
    file.write_text("x")
    run = run_demo(file)
    assert run.returncode != 0 and "was not written by the demo" in run.stderr and file.read_text() == "x"
