"""diffmf bag: from-pairs round trips (raw/compressed x mcap/sqlite3), DroneVehicle layout, info,
offline fusion == the node's pipeline on the same pairs, and clear errors without partial output."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from diffmf_core import bags
from diffmf_core.cli import main as cli
from diffmf_core.data import load_pair, read_image
from diffmf_core.paths import shared_data_dir

RNG = np.random.default_rng(7)
N_PAIRS = 6
SIZE = (48, 64)  # H, W


def make_pairs(root: Path, n: int = N_PAIRS, size=SIZE, ir_dir="ir", vi_dir="vi") -> list[tuple[np.ndarray, np.ndarray]]:
    """Smooth random ir (gray) / vi (BGR) PNG pairs; returns the arrays."""
    (root / ir_dir).mkdir(parents=True)
    (root / vi_dir).mkdir(parents=True)
    out = []
    for i in range(n):
        h, w = size
        ir = cv2.resize(RNG.integers(0, 256, (h // 8, w // 8), np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
        vi = cv2.resize(RNG.integers(0, 256, (h // 8, w // 8, 3), np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(root / ir_dir / f"{i:05d}.png"), ir)
        cv2.imwrite(str(root / vi_dir / f"{i:05d}.png"), vi)
        out.append((ir, vi))
    return out


def read_bag(path: Path) -> dict[str, list[tuple[int, int, str, np.ndarray]]]:
    """topic -> [(bag time, header stamp, frame_id, pixels)] for every image topic."""
    store = bags.make_typestore()
    out: dict[str, list] = {}
    with bags.open_reader(path) as reader:
        for conn, t, raw in bags.iter_messages(reader):
            if conn.msgtype not in (bags.IMAGE_TYPE, bags.COMPRESSED_TYPE):
                continue
            msg = store.deserialize_cdr(raw, conn.msgtype)
            out.setdefault(conn.topic, []).append(
                (t, bags.time_to_ns(msg.header.stamp), msg.header.frame_id,
                 bags.decode_msg(msg, conn.msgtype, 1 << 24)))
    return out


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("storage", bags.STORAGES)
@pytest.mark.parametrize("compressed", [False, True])
def test_from_pairs_round_trip(tmp_path, storage, compressed):
    src = make_pairs(tmp_path / "pairs")
    out = tmp_path / "bag"
    argv = ["bag", "from-pairs", str(tmp_path / "pairs"), str(out), "--storage", storage, "--rate", "20",
            "--jitter-ms", "4", "--thermal-delay-ms", "7", "--seed", "3", "--quiet"]
    assert cli(argv + (["--compressed", "--quality", "95"] if compressed else [])) == 0
    suffix = "/compressed" if compressed else ""
    got = read_bag(out)
    assert sorted(got) == sorted([bags.THERMAL_TOPIC + suffix, bags.RGB_TOPIC + suffix])
    plan = bags.plan_stamps(N_PAIRS, 20, 4, 7, 0.0, 3)
    for cam, topic, frame_id, index in (("thermal", bags.THERMAL_TOPIC, "thermal_camera", 0),
                                        ("rgb", bags.RGB_TOPIC, "rgb_camera", 1)):
        msgs = got[topic + suffix]
        expected = [p.stamp_ns for p in plan if p.camera == cam]
        assert [m[1] for m in msgs] == expected  # header stamps
        assert [m[0] for m in msgs] == expected  # bag time = header stamp
        assert {m[2] for m in msgs} == {frame_id}
        for (_, _, _, img), pair in zip(msgs, src):
            ref = pair[index]
            assert img.shape == ref.shape
            if compressed:
                assert np.abs(img.astype(int) - ref).mean() < 3.0
            else:
                assert np.array_equal(img, ref)
    nominal = [p.stamp_ns for p in bags.plan_stamps(N_PAIRS, 20) if p.camera == "rgb"]
    rgb = [m[1] for m in got[bags.RGB_TOPIC + suffix]]
    assert max(abs(a - b) for a, b in zip(rgb, nominal)) <= 4e6
    assert leftovers(tmp_path) == []


def test_stamp_plan_drops_delay_and_order():
    plan = bags.plan_stamps(400, 30, jitter_ms=5, thermal_delay_ms=12, drop=0.25, seed=1)
    assert [p.stamp_ns for p in plan] == sorted(p.stamp_ns for p in plan)
    assert 0.2 < 1 - len(plan) / 800 < 0.3
    period = 1e9 / 30
    for p in plan:
        nominal = 1_700_000_000_000_000_000 + p.pair * period + (12e6 if p.camera == "thermal" else 0)
        assert abs(p.stamp_ns - nominal) <= 5e6 + 1
    assert bags.plan_stamps(50, 30, 5, 12, 0.25, 1) == bags.plan_stamps(50, 30, 5, 12, 0.25, 1)
    with pytest.raises(ValueError, match="jitter"):
        bags.plan_stamps(5, 30, jitter_ms=20)


def dronevehicle_fixture(root: Path) -> Path:
    """The real DroneVehicle release layout (train/trainimg, trainimgr, trainlabel, trainlabelr)
    from the shared samples, or generated 840x712 images with a 100 px white border."""
    train = root / "DroneVehicle" / "train"
    shared = shared_data_dir()
    samples = shared / "test" / "DroneVehicle" if shared else None
    for d in ("trainimg", "trainimgr", "trainlabel", "trainlabelr"):
        (train / d).mkdir(parents=True)
    if samples is not None and (samples / "ir").is_dir():
        for name in sorted(p.name for p in (samples / "ir").iterdir())[:3]:
            shutil.copy(samples / "ir" / name, train / "trainimgr" / name)
            shutil.copy(samples / "vi" / name, train / "trainimg" / name)
    else:
        for i in range(3):
            inner = cv2.resize(RNG.integers(0, 200, (64, 80, 3), np.uint8), (640, 512))
            framed = cv2.copyMakeBorder(inner, 100, 100, 100, 100, cv2.BORDER_CONSTANT, value=(255, 255, 255))
            cv2.imwrite(str(train / "trainimg" / f"{i + 1:05d}.jpg"), framed)
            cv2.imwrite(str(train / "trainimgr" / f"{i + 1:05d}.jpg"), cv2.cvtColor(framed, cv2.COLOR_BGR2GRAY))
    label = ("<annotation><object><name>car</name><polygon><x1>120</x1><y1>130</y1><x2>150</x2><y2>130</y2>"
             "<x3>150</x3><y3>150</y3><x4>120</x4><y4>150</y4></polygon></object></annotation>\n")
    for img in (train / "trainimg").iterdir():
        (train / "trainlabel" / f"{img.stem}.xml").write_text(label)
        (train / "trainlabelr" / f"{img.stem}.xml").write_text(label)
    return train


def test_from_pairs_dronevehicle_layout_strips_border(tmp_path):
    train = dronevehicle_fixture(tmp_path)
    out = tmp_path / "dv"
    assert cli(["bag", "from-pairs", str(train), str(out), "--quiet"]) == 0
    got = read_bag(out)
    names = sorted(p.name for p in (train / "trainimgr").iterdir())
    assert len(got[bags.THERMAL_TOPIC]) == len(got[bags.RGB_TOPIC]) == len(names)
    for name, th, rgb in zip(names, got[bags.THERMAL_TOPIC], got[bags.RGB_TOPIC]):
        assert th[3].shape == (512, 640) and rgb[3].shape == (512, 640, 3)
        ir_ref, vi_ref = load_pair(train / "trainimgr" / name, train / "trainimg" / name)
        assert np.array_equal(th[3], ir_ref) and np.array_equal(rgb[3], vi_ref)
        # exactly the documented crop of the 840x712 original
        assert np.array_equal(rgb[3], read_image(train / "trainimg" / name, "color")[100:612, 100:740])


def test_info(tmp_path, capsys):
    make_pairs(tmp_path / "pairs")
    out = tmp_path / "bag"
    assert cli(["bag", "from-pairs", str(tmp_path / "pairs"), str(out), "--rate", "10", "--quiet"]) == 0
    info = bags.bag_info(out)
    assert info["messages"] == 2 * N_PAIRS
    assert info["topics"][bags.THERMAL_TOPIC]["count"] == N_PAIRS
    assert info["duration_s"] == pytest.approx((N_PAIRS - 1) / 10)
    capsys.readouterr()
    assert cli(["bag", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert bags.RGB_TOPIC in text and "sensor_msgs/msg/Image" in text


def test_from_pairs_refuses_existing_output_and_bad_input(tmp_path, capsys):
    make_pairs(tmp_path / "pairs", n=2)
    out = tmp_path / "bag"
    out.mkdir()
    assert cli(["bag", "from-pairs", str(tmp_path / "pairs"), str(out), "--quiet"]) == 2
    assert "exists" in capsys.readouterr().err
    assert cli(["bag", "from-pairs", str(tmp_path / "nothing"), str(tmp_path / "b2"), "--quiet"]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert not (tmp_path / "b2").exists() and leftovers(tmp_path) == []


def test_from_pairs_failure_midway_leaves_no_output(tmp_path, capsys):
    make_pairs(tmp_path / "pairs", n=4)
    (tmp_path / "pairs" / "vi" / "00002.png").write_bytes(b"not an image")
    out = tmp_path / "bag"
    assert cli(["bag", "from-pairs", str(tmp_path / "pairs"), str(out), "--quiet"]) == 2
    assert "00002.png" in capsys.readouterr().err
    assert not out.exists() and leftovers(tmp_path) == []
