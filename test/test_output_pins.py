"""Issue 26: the output policy and the bag tools' flags, pinned where realistic single mutations
survived before, through the real CLI in this process: `diffmf bag fuse --thermal-delay-ms` on a
bag whose delay exceeds the slop; the partial folder of a run in progress survives a second run;
outputs that are symlinks are never replaced through the link."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from diffmf_core.cli import main as cli
from diffmf_core.live.sync import stamp_to_ns
from diffmf_core.tools import bag as bags
from test_output_policy import make_pairs

pytestmark = pytest.mark.timeout(120)
Q = ["--quiet"]
CLASSICAL = ["--fuser", "classical", "--quiet"]
MS = 1_000_000


def fused_infos(bag: Path) -> list:
    store = bags.make_typestore()
    with bags.open_reader(bag) as reader:
        conns = [c for c in reader.connections if c.topic == bags.INFO_TOPIC]
        return [store.deserialize_cdr(raw, bags.FUSION_INFO_TYPE) for _, _, raw in bags.iter_messages(reader, conns)]


def test_bag_fuse_thermal_delay_beyond_the_slop_pairs_each_frame_with_its_own(tmp_path, capsys):
    """Thermal stamps 60 ms after RGB at 10 Hz, slop 20 ms: without the flag nothing pairs; with
    --thermal-delay-ms 60 every thermal frame pairs with the RGB frame taken 60 ms before it (not
    with the nearer next one, 40 ms away), and the slop stays 20 ms."""
    pairs = make_pairs(tmp_path / "pairs", n=6)
    bag = tmp_path / "delayed"
    assert cli(["bag", "from-pairs", str(pairs), str(bag), "--rate", "10", "--thermal-delay-ms", "60"] + Q) == 0
    assert cli(["bag", "fuse", str(bag), str(tmp_path / "plain")] + CLASSICAL) == 2
    assert "nothing could be fused" in capsys.readouterr().err
    out = tmp_path / "fused"
    assert cli(["bag", "fuse", str(bag), str(out), "--thermal-delay-ms", "60"] + CLASSICAL) == 0
    infos = fused_infos(out)
    assert len(infos) == 6
    assert [stamp_to_ns(i.thermal_stamp) - stamp_to_ns(i.rgb_stamp) for i in infos] == [60 * MS] * 6
    assert [stamp_to_ns(i.header.stamp) for i in infos] == [stamp_to_ns(i.rgb_stamp) for i in infos]
    # --thermal-delay-ms sets the delay, not the slop: with the delay given as 35 ms (frames 25 ms
    # off their expected partner) a 30 ms slop pairs them; the default 20 ms slop does not
    capsys.readouterr()
    assert cli(["bag", "fuse", str(bag), str(tmp_path / "slop30"), "--thermal-delay-ms", "35", "--slop-ms", "30"]
               + CLASSICAL) == 0
    # (the last pair is not proven the best match before the bag ends: ApproximateTime keeps it)
    assert [stamp_to_ns(i.thermal_stamp) - stamp_to_ns(i.rgb_stamp) for i in fused_infos(tmp_path / "slop30")] \
        == [60 * MS] * 5
    assert cli(["bag", "fuse", str(bag), str(tmp_path / "slop20"), "--thermal-delay-ms", "35"] + CLASSICAL) == 2


def test_partial_folder_of_a_run_in_progress_survives_a_second_run(tmp_path, capsys):
    """A second run to the same output name removes the partial folder of a killed run, never the
    one of a run that is still alive (its process id answers)."""
    data = make_pairs(tmp_path / "data", n=2)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        running = tmp_path / ".bag.run123.partial"
        (running / "bag").mkdir(parents=True)
        (running / ".diffmf-pid").write_text(str(alive.pid))
        (running / "bag" / "part.mcap").write_bytes(b"being written")
        killed = tmp_path / ".bag.old456.partial"
        killed.mkdir()
        (killed / ".diffmf-pid").write_text(str(dead.pid))
        assert cli(["bag", "from-pairs", str(data), str(tmp_path / "bag")] + Q) == 0
        err = capsys.readouterr().err
        assert not killed.exists() and f"removed leftover partial output {killed}" in err
        assert (running / "bag" / "part.mcap").read_bytes() == b"being written"
        assert str(running) not in err
    finally:
        alive.kill()
        alive.wait()


def test_symlinked_outputs_are_refused_and_their_targets_kept(tmp_path, capsys):
    """--overwrite never replaces an output that is a symlink: a bag output linked to a bag, a
    fused PNG linked to a user's file, an .onnx linked to a user's file; the links and what they
    point to stay as they were."""
    data = make_pairs(tmp_path / "data", n=2)
    real_bag = tmp_path / "real_bag"
    assert cli(["bag", "from-pairs", str(data), str(real_bag)] + Q) == 0
    before = sorted(p.name for p in real_bag.iterdir())
    link = tmp_path / "bag_link"
    link.symlink_to(real_bag, target_is_directory=True)
    capsys.readouterr()
    assert cli(["bag", "from-pairs", str(data), str(link), "--overwrite"] + Q) == 2
    assert str(link) in capsys.readouterr().err
    assert link.is_symlink() and sorted(p.name for p in real_bag.iterdir()) == before

    out = tmp_path / "out"
    assert cli(["fuse", "--data", str(data), "--out", str(out), "--method", "mean"]) == 0
    users = tmp_path / "users.png"
    users.write_bytes(b"the user's image")
    (out / "01.png").unlink()
    (out / "01.png").symlink_to(users)
    capsys.readouterr()
    assert cli(["fuse", "--data", str(data), "--out", str(out), "--method", "max", "--overwrite"]) == 2
    assert "01.png" in capsys.readouterr().err
    assert (out / "01.png").is_symlink() and users.read_bytes() == b"the user's image"

    from diffmf_core.common.outputs import OutputError, check_file_output

    target = tmp_path / "model.onnx"
    target.write_bytes(b"user's model")
    onnx_link = tmp_path / "link.onnx"
    onnx_link.symlink_to(target)
    with pytest.raises(OutputError, match="link.onnx is not a .onnx file this command writes; not replacing it"):
        check_file_output(onnx_link, overwrite=True, suffix=".onnx")
    assert onnx_link.is_symlink() and target.read_bytes() == b"user's model"
