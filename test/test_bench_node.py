"""``diffmf bench-node``: the camera publisher in the test's child process and the fusion node in
its own process, real rclpy and Fast DDS; small frames so that every pair is fused."""
from __future__ import annotations

import csv
import subprocess
import sys

import pytest

pytestmark = pytest.mark.ros


@pytest.mark.parametrize("fuser, stem, model", [("diffmf", "live", "diffmf-live"),
                                               ("warm_rule", "warm_rule", "warm_rule")])
def test_bench_node_counts_every_pair_and_writes_a_csv_row(tmp_path, fuser, stem, model):
    cmd = [sys.executable, "-m", "diffmf_core.cli", "bench-node", "--rate", "15", "--frames", "30", "--size", "96x64",
           "--device", "cpu", "--fuser", fuser, "--out", str(tmp_path), "--start-timeout", "90"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    (csv_path,) = tmp_path.glob(f"node_{stem}_96x64_15hz_cpu.csv")
    (row,) = list(csv.DictReader(open(csv_path)))
    assert int(row["frames_in"]) == 30
    assert int(row["frames_out"]) + int(row["drops"]) == 30
    assert int(row["frames_out"]) >= 20  # 96x64 fuses in a few ms: almost every pair comes out
    assert row["modes"].startswith("FUSED:") and row["model"] == model
    p50, p99 = float(row["e2e_p50_ms"]), float(row["e2e_p99_ms"])
    assert 0 < p50 <= p99 < 5000
    assert float(row["node_rss_end_mb"]) > 0


def test_bench_node_rejects_bad_rates():
    run = subprocess.run([sys.executable, "-m", "diffmf_core.cli", "bench-node", "--rate", "0"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "argument --rate: must be in (0, 10000]" in run.stderr
    assert "Traceback" not in run.stderr
