"""``diffmf bench`` on CPU with tiny sizes: table, CSV, PNG, options, and the compile and CUDA-graph
runners falling back to eager."""
from __future__ import annotations

import argparse
import csv

import pytest
import torch

from diffmf_core import cli
from diffmf_core.common import argtypes
from diffmf_core.tools import bench_cases


@pytest.fixture(autouse=True)
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_quick_run_writes_csv_and_plot(tmp_path, capsys):
    out = tmp_path / "bench"
    rc = cli.main(["bench", "--device", "cpu", "--threads", "1", "--sizes", "64x48", "96x64", "--repeats", "2",
                   "--warmup", "1", "--scan-tokens", "200", "--out", str(out), "--half"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "--half ignored" in captured.err
    assert "torch " + torch.__version__ in captured.out and "1 threads" in captured.out
    rows = list(csv.DictReader(open(out / "bench.csv")))
    kinds = [(r["kind"], r["backend"], r["width"]) for r in rows]
    assert kinds == [("model", "chunked", "64"), ("model", "chunked", "96"), ("scan", "naive", "200"),
                     ("scan", "chunked", "200")]
    for r in rows:
        assert int(r["runs"]) == 2 and float(r["median_ms"]) > 0 and float(r["p90_ms"]) >= float(r["median_ms"])
        assert r["threads"] == "1" and r["dtype"] == "float32" and r["runner"] == "eager"
    assert [r["chunk"] for r in rows] == ["16", "16", "64", "64"]  # live preset's Q; scan default
    assert (out / "latency.png").stat().st_size > 1000


def test_mamba_ssm_backend_skipped_on_cpu(tmp_path, capsys):
    rc = cli.main(["bench", "--device", "cpu", "--threads", "1", "--sizes", "32x32", "--repeats", "1",
                   "--warmup", "0", "--scan-tokens", "0", "--backends", "mamba_ssm", "--out", str(tmp_path)])
    assert rc == 0
    assert "skipping backend(s) ['mamba_ssm']" in capsys.readouterr().err
    assert list(csv.DictReader(open(tmp_path / "bench.csv"))) == []


def test_budget_stops_early():
    calls = []
    times = bench_cases.time_runs(lambda: calls.append(1), torch.device("cpu"), warmup=2, repeats=5, budget_s=0.0)
    assert len(times) == 1 and len(calls) == 3


def test_compile_falls_back_cleanly(monkeypatch, capsys):
    def broken_compile(fn):
        def run():
            raise RuntimeError("no C compiler")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    fn, used = bench_cases.make_runner(lambda a: a + 1, (1,), "compile", torch.device("cpu"))
    assert used == "eager" and fn() == 2
    assert "running eager" in capsys.readouterr().err


def test_cuda_graph_runner_is_eager_on_cpu(capsys):
    fn, used = bench_cases.make_runner(lambda a: a * 2, (torch.ones(3),), "cuda_graph", torch.device("cpu"))
    assert used == "eager" and fn().tolist() == [2.0, 2.0, 2.0]
    assert "--cuda-graph ignored" in capsys.readouterr().err


def test_chunk_size_option_reaches_model_and_scan(tmp_path):
    rc = cli.main(["bench", "--device", "cpu", "--threads", "1", "--sizes", "32x32", "--repeats", "1",
                   "--warmup", "0", "--scan-tokens", "100", "--chunk-size", "8", "--cuda-graph", "--out", str(tmp_path)])
    assert rc == 0
    rows = list(csv.DictReader(open(tmp_path / "bench.csv")))
    assert [(r["kind"], r["chunk"], r["runner"]) for r in rows] == [
        ("model", "8", "eager"), ("scan", "8", "eager"), ("scan", "8", "eager")]
    assert cli.main(["bench", "--chunk-size", "4"]) == 2


def test_size_parsing_and_bad_options():
    assert argtypes.parse_size("640x512") == (640, 512)
    for bad in ("640", "0x5", "axb"):
        with pytest.raises(argparse.ArgumentTypeError):
            argtypes.parse_size(bad)
    assert cli.main(["bench", "--repeats", "0"]) == 2


def test_replot_merges_earlier_runs(tmp_path, capsys):
    for name, size in (("a", "32x32"), ("b", "48x32")):
        assert cli.main(["bench", "--device", "cpu", "--threads", "1", "--sizes", size, "--repeats", "1",
                         "--warmup", "0", "--scan-tokens", "0", "--out", str(tmp_path / name)]) == 0
    capsys.readouterr()
    out = tmp_path / "merged"
    assert cli.main(["bench", "--replot", str(tmp_path / "a" / "bench.csv"), str(tmp_path / "b" / "bench.csv"),
                     "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "bench.csv")))
    assert [r["width"] for r in rows] == ["32", "48"]
    assert (out / "latency.png").stat().st_size > 1000
    assert "1 threads" in capsys.readouterr().out
    assert cli.main(["bench", "--replot", str(tmp_path / "missing.csv"), "--out", str(out)]) == 2
    # the output policy: a rerun into the same folder needs --overwrite; an input is never replaced
    replot = ["bench", "--replot", str(tmp_path / "a" / "bench.csv"), "--out", str(out)]
    assert cli.main(replot) == 2 and "--overwrite" in capsys.readouterr().err
    assert cli.main(replot + ["--overwrite"]) == 0
    assert cli.main(["bench", "--replot", str(tmp_path / "a" / "bench.csv"), "--out", str(tmp_path / "a"),
                     "--overwrite"]) == 2
