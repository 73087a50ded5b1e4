"""Offline tools under bad input and Ctrl-C: `diffmf fuse` with unmatched, unreadable and mixed-size
pairs; `diffmf fuse`, `diffmf bag from-pairs` and `diffmf eval` interrupted by SIGINT in a real
subprocess leave only complete files (or nothing) and say so. (Corrupt/truncated bags:
test_bags.py::test_fuse_truncated_or_corrupt_bag.)"""
from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from diffmf_core.cli import main as cli

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(120)


def write_pairs(root: Path, n: int, size=(208, 256), start: int = 0) -> Path:
    rng = np.random.default_rng(start)
    for i in range(start, start + n):
        (root / "ir").mkdir(parents=True, exist_ok=True)
        (root / "vi").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "ir" / f"{i:04d}.png"), rng.integers(0, 255, size, dtype=np.uint8))
        cv2.imwrite(str(root / "vi" / f"{i:04d}.png"), rng.integers(0, 255, (*size, 3), dtype=np.uint8))
    return root


MARKERS = (".diffmf-fuse", ".diffmf-eval")  # the output policy's results-folder markers (diffmf_core.common.outputs)


def hidden_leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*")
            if (p.name.startswith(".") and p.name not in MARKERS) or p.suffix in (".tmp", ".partial")]


def images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name not in MARKERS)


def test_fuse_refuses_unmatched_names(tmp_path, capsys):
    root = write_pairs(tmp_path / "pairs", 2)
    (root / "ir" / "0001.png").rename(root / "ir" / "other.png")
    assert cli(["fuse", "--data", str(root), "--method", "mean", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "without a partner" in err and "other.png" in err and "0001.png" in err
    assert not (tmp_path / "out").exists()


def test_fuse_skips_unreadable_pair_and_resizes_mixed_sizes(tmp_path, capsys):
    root = write_pairs(tmp_path / "pairs", 2)
    cv2.imwrite(str(root / "ir" / "0000.png"), np.zeros((52, 64), np.uint8))  # 1/4 of the visible size
    (root / "vi" / "0001.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert cli(["fuse", "--data", str(root), "--method", "mean", "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "skipped" in err and "0001.png" in err
    assert [p.name for p in images(tmp_path / "out")] == ["0000.png"]
    assert cv2.imread(str(tmp_path / "out" / "0000.png")).shape == (208, 256, 3)


def run_and_interrupt(args: list[str], started, timeout: float = 60.0) -> tuple[int, str]:
    """Run `python -m diffmf_core.cli args`, SIGINT it once ``started()`` is true; (rc, stderr).
    ``started`` looks at files the tool is writing: one that vanishes under it (OSError) means
    not yet."""
    def has_started() -> bool:
        try:
            return bool(started())
        except OSError:
            return False

    proc = subprocess.Popen([sys.executable, "-m", "diffmf_core.cli", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + timeout
        while not has_started() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, f"finished before the interrupt:\n{proc.stderr.read()}"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


@pytest.fixture(scope="module")
def many_pairs(tmp_path_factory):
    return write_pairs(tmp_path_factory.mktemp("many") / "pairs", 150)


def test_interrupted_fuse_leaves_only_complete_images(many_pairs, tmp_path):
    out = tmp_path / "out"
    rc, err = run_and_interrupt(["fuse", "--data", str(many_pairs), "--method", "gff", "--out", str(out)],
                                lambda: len(list(out.glob("*.png"))) >= 3)
    assert rc == 130 and "interrupted" in err and "Traceback" not in err, err
    assert hidden_leftovers(out) == []
    written = images(out)
    assert 3 <= len(written) < 150
    for path in written:
        img = cv2.imread(str(path))
        assert img is not None and img.shape == (208, 256, 3), path


def test_interrupted_bag_from_pairs_leaves_nothing(many_pairs, tmp_path):
    bag = tmp_path / "bag"
    rc, err = run_and_interrupt(["bag", "from-pairs", str(many_pairs), str(bag), "--quiet"],
                                lambda: any(p.stat().st_size > 0 for p in tmp_path.rglob("*.mcap")))
    assert rc == 130 and "partial output removed" in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


def test_interrupted_eval_leaves_only_complete_results(many_pairs, tmp_path):
    first = write_pairs(tmp_path / "first", 2)
    out = tmp_path / "out"
    rc, err = run_and_interrupt(["eval", "--data", str(first), str(many_pairs), "--methods", "mean",
                                 "--out", str(out)], lambda: (out / "first" / "contact_sheet.png").exists())
    assert rc == 130 and "interrupted" in err and "Traceback" not in err, err
    assert hidden_leftovers(out) == []
    assert sorted(p.name for p in (out / "first").iterdir()) == ["contact_sheet.png", "mean.csv", "results.md"]
    rows = list(csv.reader((out / "first" / "mean.csv").open()))
    assert [r[0] for r in rows] == ["image", "0000", "0001", "mean"]
    assert not (out / "pairs").exists() and not (out / "results.md").exists()


def test_an_interrupt_inside_a_constructor_still_ends_in_one_line(monkeypatch, capsys):
    """Ctrl-C while an object is half built (tqdm: __init__ interrupted before its fields exist, so
    its __del__ fails): the command still ends with its one line and 130, no destructor traceback."""
    import sys

    from diffmf_core import cli
    from diffmf_core.tools import eval as eval_cmd

    class HalfBuilt:
        def __init__(self):
            raise KeyboardInterrupt  # before self.pos exists

        def __del__(self):
            self.pos.close()

    def interrupted(args):
        HalfBuilt()

    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    monkeypatch.setattr(eval_cmd, "main", interrupted)
    assert cli.main(["eval"]) == 130
    assert unraisable == [] and capsys.readouterr().err == (
        "diffmf eval: interrupted (outputs are written atomically: no partial files)\n")


def wrapped_interrupt() -> SystemError:
    """What CPython raises when Ctrl-C lands while C code calls back into Python (seen in CI:
    ``<function PurePath.__str__ ...> returned a result with an exception set``)."""
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt as interrupt:
        error = SystemError("<function PurePath.__str__> returned a result with an exception set")
        error.__cause__ = interrupt
        return error


def test_an_interrupt_wrapped_by_the_interpreter_is_still_an_interrupt(many_pairs, tmp_path, monkeypatch, capsys):
    from diffmf_core.training import data

    real_load_pair, calls = data.load_pair, []

    def load_pair(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise wrapped_interrupt()
        return real_load_pair(*args, **kwargs)

    monkeypatch.setattr(data, "load_pair", load_pair)
    bag = tmp_path / "bag"
    assert cli(["bag", "from-pairs", str(many_pairs), str(bag), "--quiet"]) == 130
    assert capsys.readouterr().err.strip() == "diffmf bag: interrupted; partial output removed"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("error, code", [(wrapped_interrupt(), 130), (SystemError("a real one"), 1)])
def test_only_interrupts_end_as_interrupts(error, code, monkeypatch, capsys):
    from diffmf_core import cli as cli_module
    from diffmf_core.tools import eval as eval_cmd

    def fails(args):
        raise error

    monkeypatch.setattr(eval_cmd, "main", fails)
    assert cli_module.main(["eval"]) == code
    err = capsys.readouterr().err
    assert ("interrupted" in err) == (code == 130) and ("SystemError: a real one" in err) == (code == 1), err
