"""diffmf bag: from-pairs round trips (raw/compressed x mcap/sqlite3), DroneVehicle layout, info,
offline fusion == the node's pipeline on the same pairs, and clear errors without partial output; then
the pins of the scoped mutation run (docs/mutation.md, "tools/bag"): report and info numbers exactly,
fuse options and flags, messages, command defaults."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from diffmf_core.cli import main as cli
from diffmf_core.common.paths import shared_data_dir
from diffmf_core.live.sync import stamp_to_ns
from diffmf_core.tools import bag as bags
from diffmf_core.training.data import load_pair, read_image

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


def read_bag(path: Path, topics=None) -> dict[str, list[tuple[int, int, str, np.ndarray]]]:
    """topic -> [(bag time, header stamp, frame_id, pixels)] for every (or every listed) image topic."""
    store = bags.make_typestore()
    out: dict[str, list] = {}
    with bags.open_reader(path) as reader:
        for conn, t, raw in bags.iter_messages(reader):
            if conn.msgtype not in (bags.IMAGE_TYPE, bags.COMPRESSED_TYPE) or (topics and conn.topic not in topics):
                continue
            msg = store.deserialize_cdr(raw, conn.msgtype)
            out.setdefault(conn.topic, []).append(
                (t, stamp_to_ns(msg.header.stamp), msg.header.frame_id,
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
    assert cli(["bag", "from-pairs", str(train), str(tmp_path / "kept"), "--keep-border", "--quiet"]) == 0
    assert {m[3].shape[:2] for m in read_bag(tmp_path / "kept")[bags.RGB_TOPIC]} == {(712, 840)}


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


# ------------------------------------------------------------------------------ offline fusion

CLASSICAL = ["--fuser", "classical", "--quiet"]


def classical_pipeline():
    from diffmf_core.live.pipeline import FusionPipeline

    params = bags.load_node_params()
    return FusionPipeline(None, fallback=params["fallback_fuser"], output_encoding=params["output_encoding"])


def read_infos(path: Path) -> list:
    store = bags.make_typestore()
    with bags.open_reader(path) as reader:
        conns = [c for c in reader.connections if c.topic == bags.INFO_TOPIC]
        return [store.deserialize_cdr(raw, bags.FUSION_INFO_TYPE) for _, _, raw in bags.iter_messages(reader, conns)]


@pytest.mark.parametrize("compressed", [False, True])
def test_fuse_bag_equals_pipeline_on_same_pairs(tmp_path, compressed):
    src = make_pairs(tmp_path / "pairs")
    bag, fused = tmp_path / "in", tmp_path / "out"
    assert cli(["bag", "from-pairs", str(tmp_path / "pairs"), str(bag), "--jitter-ms", "3", "--thermal-delay-ms", "5",
                "--quiet"] + (["--compressed"] if compressed else [])) == 0
    assert cli(["bag", "fuse", str(bag), str(fused), "--storage", "sqlite3"] + CLASSICAL) == 0
    got = read_bag(fused)
    suffix = "/compressed" if compressed else ""
    inputs = read_bag(bag)
    assert {t: len(v) for t, v in got.items() if t != bags.FUSED_TOPIC} == {t: len(v) for t, v in inputs.items()}
    out = got[bags.FUSED_TOPIC]
    assert len(out) == N_PAIRS
    pipeline = classical_pipeline()
    for i, (_, stamp, frame_id, img) in enumerate(out):
        # the node's path on the pixels it would have received
        th, rgb = inputs[bags.THERMAL_TOPIC + suffix][i], inputs[bags.RGB_TOPIC + suffix][i]
        expected = pipeline.fuse_pair(th[3], rgb[3]).image
        assert np.array_equal(img, expected)
        assert stamp == rgb[1] and frame_id == "rgb_camera"
        if not compressed:
            assert np.array_equal(expected, pipeline.fuse_pair(*src[i]).image)
    infos = read_infos(fused)
    assert [stamp_to_ns(i.thermal_stamp) for i in infos] == [m[1] for m in inputs[bags.THERMAL_TOPIC + suffix]]
    assert [stamp_to_ns(i.rgb_stamp) for i in infos] == [m[1] for m in out]
    assert {i.mode for i in infos} == {3} and all(i.latency_ms > 0 for i in infos)
    assert leftovers(tmp_path) == []


def test_fuse_counts_drops_and_single_source_frames(tmp_path, capsys):
    make_pairs(tmp_path / "pairs", n=12)
    bag, fused = tmp_path / "in", tmp_path / "out"
    assert cli(["bag", "from-pairs", str(tmp_path / "pairs"), str(bag), "--drop", "0.3", "--seed", "5",
                "--rate", "5", "--quiet"]) == 0
    plan = bags.plan_stamps(12, 5, drop=0.3, seed=5)
    both = {i for i in range(12) if sum(p.pair == i for p in plan) == 2}
    capsys.readouterr()
    params_file = tmp_path / "params.yaml"
    params_file.write_text("diffmf_fusion:\n  ros__parameters:\n    source_timeout_s: 10.0\n")
    assert cli(["bag", "fuse", str(bag), str(fused), "--params-file", str(params_file)] + CLASSICAL) == 0
    text = capsys.readouterr().out
    assert f"fused: {len(both)} (classical {len(both)})" in text
    assert f"dropped (never paired): {len(plan) - 2 * len(both)}" in text
    # with a short source timeout a lone frame after a silent camera goes out alone
    params_file.write_text("diffmf_fusion:\n  ros__parameters:\n    source_timeout_s: 0.05\n")
    assert cli(["bag", "fuse", str(bag), str(tmp_path / "out2"), "--params-file", str(params_file)] + CLASSICAL) == 0
    modes = {i.mode for i in read_infos(tmp_path / "out2")}
    assert 3 in modes and modes & {1, 2}


def write_bag(path: Path, messages: list[tuple[str, str, object, int]]) -> None:
    """(topic, type, message or already serialised (possibly broken) CDR bytes, bag time) -> an mcap bag."""
    store = bags.make_typestore()
    writer = bags.open_writer(path, "mcap")
    conns = {}
    for topic, msgtype, msg, t in messages:
        if topic not in conns:
            conns[topic] = writer.add_connection(topic, msgtype, typestore=store)
        writer.write(conns[topic], t, msg if isinstance(msg, (bytes, memoryview)) else store.serialize_cdr(msg, msgtype))
    writer.close()


def test_fuse_image_size_change_midstream_and_decode_errors(tmp_path):
    store = bags.make_typestore()
    msgs = []
    for i in range(6):
        h, w = (48, 64) if i < 3 else (36, 80)
        t = 1_000_000_000 + i * 100_000_000
        ir = RNG.integers(0, 256, (h, w), np.uint8)
        vi = RNG.integers(0, 256, (h, w, 3), np.uint8)
        msgs.append((bags.THERMAL_TOPIC, bags.IMAGE_TYPE, bags.image_msg(store, ir, t, "thermal_camera"), t))
        msgs.append((bags.RGB_TOPIC, bags.IMAGE_TYPE, bags.image_msg(store, vi, t, "rgb_camera"), t))
    bad = bags.image_msg(store, np.zeros((4, 4), np.uint8), 2_000_000_000, "thermal_camera")
    bad.encoding = "yuv422_weird"
    msgs.append((bags.THERMAL_TOPIC, bags.IMAGE_TYPE, bad, 2_000_000_000))
    write_bag(tmp_path / "in", msgs)
    summary = bags.fuse_bag(tmp_path / "in", tmp_path / "out", {"fuser": "classical"}, progress=False)
    assert summary.fused == 6 and summary.size_changes == 2
    assert summary.decode_errors == {"unknown_encoding": 1}
    shapes = [img.shape for *_, img in read_bag(tmp_path / "out", [bags.FUSED_TOPIC])[bags.FUSED_TOPIC]]
    assert shapes == [(48, 64, 3)] * 3 + [(36, 80, 3)] * 3


def test_fuse_bag_without_image_topics(tmp_path, capsys):
    store = bags.make_typestore()
    write_bag(tmp_path / "in", [("/chatter", "std_msgs/msg/String", store.types["std_msgs/msg/String"](data="hi"), 1)])
    assert cli(["bag", "fuse", str(tmp_path / "in"), str(tmp_path / "out")] + CLASSICAL) == 2
    err = capsys.readouterr().err
    assert "no thermal image topic" in err and "/chatter (std_msgs/msg/String)" in err and "--thermal-topic" in err
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("storage", bags.STORAGES)
def test_fuse_truncated_or_corrupt_bag(tmp_path, capsys, storage):
    make_pairs(tmp_path / "pairs", n=4)
    bag = tmp_path / "in"
    assert cli(["bag", "from-pairs", str(tmp_path / "pairs"), str(bag), "--storage", storage, "--quiet"]) == 0
    data_file = next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))
    size = data_file.stat().st_size
    with open(data_file, "r+b") as f:
        f.truncate(size // 2)
    capsys.readouterr()
    assert cli(["bag", "fuse", str(bag), str(tmp_path / "out")] + CLASSICAL) == 2
    err = capsys.readouterr().err
    assert "truncated or corrupt" in err
    assert re.search(r"\((?!NoneType)\w+: ", err), err  # the storage error's type is named
    (tmp_path / "junk.mcap").write_bytes(b"\x89MCAP0\r\n" + bytes(100))
    assert cli(["bag", "info", str(tmp_path / "junk.mcap")]) == 2
    assert "truncated or corrupt" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_fuse_interrupted_removes_partial_output(tmp_path, monkeypatch, capsys):
    make_pairs(tmp_path / "pairs", n=5)
    bag = tmp_path / "in"
    assert cli(["bag", "from-pairs", str(tmp_path / "pairs"), str(bag), "--quiet"]) == 0
    pipeline = classical_pipeline()
    calls = []

    def fuse_pair(ir, vi, stamp_ns=None):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return type(pipeline).fuse_pair(pipeline, ir, vi, stamp_ns)

    pipeline.fuse_pair = fuse_pair
    monkeypatch.setattr(bags.fuse, "build_pipeline", lambda params: (pipeline, None, {"thermal": "t", "rgb": "r"}))
    assert cli(["bag", "fuse", str(bag), str(tmp_path / "out"), "--quiet"]) == 130
    assert capsys.readouterr().err.strip() == "diffmf bag: interrupted; partial output removed"
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_report_writes_video_strip_and_summary(tmp_path):
    make_pairs(tmp_path / "pairs", n=6)
    bag, fused = tmp_path / "in", tmp_path / "out"
    assert cli(["bag", "from-pairs", str(tmp_path / "pairs"), str(bag), "--compressed", "--drop", "0.2",
                "--seed", "2", "--quiet"]) == 0
    assert cli(["bag", "fuse", str(bag), str(fused)] + CLASSICAL) == 0
    numbers = bags.write_report(fused, bag, tmp_path / "report", bags.load_node_params(), device="cpu")
    assert numbers["frames_out"] == numbers["pairs_fused"] == numbers["pairs_expected"] > 0
    assert numbers["pairs_lost"] == 0 and numbers["modes"] == {"classical": numbers["frames_out"]}
    cap = cv2.VideoCapture(str(tmp_path / "report" / "fused.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == numbers["frames_out"]
    strip = cv2.imread(str(tmp_path / "report" / "strip.png"))
    assert strip.shape[0] == 3 * SIZE[0] and strip.shape[1] == min(4, numbers["frames_out"]) * SIZE[1]
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "latency_ms p50" in summary and "| device | cpu |" in summary


def test_demo_launch_plan():
    import importlib.util

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("demo_launch", root / "launch" / "demo.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    plan = module.actions(dict(module.DEFAULTS, rate="0.5"), str(root))
    assert plan["play"][:5] == ["ros2", "bag", "play", str(root / "samples" / "m3svd_0117_1605"), "--clock"]
    assert "0.5" in plan["play"] and plan["record"][:3] == ["ros2", "bag", "record"]
    sample = root / "samples" / "m3svd_0117_1605"
    assert sum(p.stat().st_size for p in sample.iterdir()) < 5e6
    info = bags.bag_info(sample)
    assert {t: v["count"] for t, v in info["topics"].items()} == {
        bags.THERMAL_TOPIC + "/compressed": 100, bags.RGB_TOPIC + "/compressed": 100}
    params = plan["node"]["parameters"]
    assert params[1]["use_sim_time"] is True and params[-1]["thermal_transport"] == "compressed"


# ------------------------------------------------------------------ found by the scoped mutation run
# (docs/mutation.md, "tools/bag")

T0 = 1_000_000_000
STEP = 100_000_000  # 10 Hz
DELAY = 5_000_000  # thermal stamps 5 ms after RGB (within the 20 ms slop)
PATTERN = np.add.outer(np.arange(24) * 9, np.arange(32) * 7).astype(np.uint8)  # the half-size fused frames


def played_and_recorded(tmp_path: Path, shift_ns: int = 0) -> tuple[Path, Path]:
    """A played bag (5 thermal + 5 RGB raw frames at 10 Hz, thermal i a constant 10 (i + 1) 5 ms after
    RGB i, a constant green 20 (i + 1); a thermal frame without partner; a String topic) and a bag
    "recorded from the node" with 5 fused frames (the last two mono8 at half size), FusionInfos of
    every mode and 4 thermal + 2 RGB frames seen by the recorder."""
    from diffmf_core.tools.bag.common import ns_to_time

    store = bags.make_typestore()
    played = []
    for i in range(5):
        t = T0 + i * STEP + shift_ns
        played.append((bags.THERMAL_TOPIC, bags.IMAGE_TYPE, bags.image_msg(
            store, np.full((48, 64), 10 * (i + 1), np.uint8), t + DELAY, "thermal_camera"), t + DELAY))
        played.append((bags.RGB_TOPIC, bags.IMAGE_TYPE,
                       bags.image_msg(store, np.full((48, 64, 3), (0, 20 * (i + 1), 0), np.uint8), t, "rgb_camera"), t))
    t = T0 + 9 * STEP + shift_ns  # a thermal frame without a partner
    played.append((bags.THERMAL_TOPIC, bags.IMAGE_TYPE, bags.image_msg(store, np.zeros((48, 64), np.uint8), t, "th"), t))
    played.append(("/chatter", "std_msgs/msg/String", store.types["std_msgs/msg/String"](data="hi"), T0))
    write_bag(tmp_path / f"played{shift_ns}", played)
    if (tmp_path / "recorded").exists():
        return tmp_path / f"played{shift_ns}", tmp_path / "recorded"
    Info = store.types[bags.FUSION_INFO_TYPE]
    recorded = []
    for i, mode in enumerate([0, 0, 3, 1, 2]):  # fused, fused, classical, rgb-only, thermal-only
        t = T0 + i * STEP
        img = np.full((48, 64, 3), 200 + i, np.uint8) if i < 3 else PATTERN + i
        recorded.append((bags.FUSED_TOPIC, bags.IMAGE_TYPE, bags.image_msg(store, img, t, "rgb_camera"), t + 1))
        info = Info(header=bags.header(store, t, "rgb_camera"),
                    thermal_stamp=ns_to_time(store, 0 if mode == 1 else t + DELAY),
                    rgb_stamp=ns_to_time(store, 0 if mode == 2 else t), homography=np.eye(3).reshape(9),
                    registration_quality=np.float32(1), mode=mode, inference_ms=np.float32(5 + i),
                    latency_ms=np.float32(10 * (i + 1)), model_name="net" if mode == 0 else "gff")
        recorded.append((bags.INFO_TOPIC, bags.FUSION_INFO_TYPE, info, t + 1))
        if i < 4:
            recorded.append((bags.THERMAL_TOPIC, bags.IMAGE_TYPE,
                             bags.image_msg(store, np.zeros((4, 4), np.uint8), t, "thermal_camera"), t))
        if i < 2:
            recorded.append((bags.RGB_TOPIC, bags.IMAGE_TYPE,
                             bags.image_msg(store, np.zeros((4, 4, 3), np.uint8), t, "rgb_camera"), t))
    write_bag(tmp_path / "recorded", recorded)
    return tmp_path / f"played{shift_ns}", tmp_path / "recorded"


def test_report_numbers_summary_video_and_strip_exactly(tmp_path, capsys):
    """Every number of summary.md from a recording whose numbers are known, the video (5 frames at
    the input's 10 Hz, the two half-size frames resized), the strip (4 of 5 frames; thermal / RGB
    looked up by the FusionInfo stamps, black where a mode had no such input)."""
    played, recorded = played_and_recorded(tmp_path)
    out = tmp_path / "report"
    assert cli(["bag", "report", str(recorded), "--input", str(played), "--outdir", str(out), "--device", "cpu",
                "--min-frames", "5"]) == 0
    summary = (out / "summary.md").read_text()
    assert capsys.readouterr().out == summary + "\n"
    assert sorted(p.name for p in out.iterdir()) == [".diffmf-bag-report", "fused.mp4", "strip.png", "summary.md"]
    assert summary == "\n".join([
        "# diffmf demo summary", "", "| | |", "|---|---|",
        f"| input bag | `{played}`: thermal 6, RGB 5 frames |",
        "| frames seen on the input topics (recorder) | `/rgb/image_raw` 2, `/thermal/image_raw` 4 |",
        "| pairs the synchronizer can form (offline, node parameters) | 5 |",
        "| unpaired input frames (no partner within the slop) | 1 |",
        "| fused frames out (`/fused/image`) | 5 (`/fused/info` 5) |",
        "| fused frames resized to the video size | 2 (video 64x48; the image size changed during the recording) |",
        "| pairs fused | 3 |",
        "| pairs not fused live (node busy: newer pair replaced a waiting one, or lost) | 2 |",
        "| modes | classical 1, fused 2, rgb-only 1, thermal-only 1 |",
        "| model | gff, net |",
        "| device | cpu |",
        "| latency_ms p50 / p90 / p99 / max (FusionInfo) | 30.0 / 46.0 / 49.6 / 50.0 |",
        "| inference_ms p50 / p90 / p99 / max (FusionInfo) | 6.0 / 6.8 / 7.0 / 7.0 |",
        "", f"Recorded bag: `{recorded}`. Files: `fused.mp4` (fused frames, mp4v), `strip.png` "
        "(rows: thermal, RGB, fused).",
        "", "latency_ms under use_sim_time is the node's own time from the newer input's arrival to publication "
        "(see diffmf_ros/fusion_node.py).", ""])
    cap = cv2.VideoCapture(str(out / "fused.mp4"))
    assert (cap.get(cv2.CAP_PROP_FRAME_COUNT), cap.get(cv2.CAP_PROP_FPS)) == (5, 10)
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (64, 48)
    cap.release()
    def cell(value):
        return np.broadcast_to(np.asarray(value, np.uint8), (48, 64, 3))

    def resized(i):  # a half-size mono8 frame as the video and the strip get it
        return cv2.resize(cv2.cvtColor(PATTERN + i, cv2.COLOR_GRAY2BGR), (64, 48), interpolation=cv2.INTER_AREA)

    expected = np.vstack([np.hstack([cell((10,) * 3), cell((20,) * 3), cell(0), cell((50,) * 3)]),  # 3: RGB-only
                          np.hstack([cell((0, 20, 0)), cell((0, 40, 0)), cell((0, 80, 0)), cell(0)]),  # 4: thermal-only
                          np.hstack([cell((200,) * 3), cell((201,) * 3), resized(3), resized(4)])])
    assert np.array_equal(cv2.imread(str(out / "strip.png")), expected)

    # the API: numbers, the default device, another outdir
    numbers = bags.write_report(recorded, played, tmp_path / "api", bags.load_node_params())
    assert numbers == {
        "frames_in": {"thermal": 6, "rgb": 5}, "frames_delivered": {bags.THERMAL_TOPIC: 4, bags.RGB_TOPIC: 2},
        "pairs_expected": 5,
        "frames_out": 5, "frames_resized": 2, "video_size": "64x48", "infos_out": 5, "pairs_fused": 3, "pairs_lost": 2,
        "unpaired_frames": 1, "modes": {"fused": 2, "classical": 1, "rgb-only": 1, "thermal-only": 1},
        "models": ["gff", "net"], "device": "", "latency_ms": [10.0, 20.0, 30.0, 40.0, 50.0],
        "inference_ms": [5.0, 6.0, 7.0]}
    assert "| device | - |" in (tmp_path / "api" / "summary.md").read_text()


def test_report_on_the_wrong_input_bag_writes_nothing_and_keeps_the_folder(tmp_path, capsys):
    played, recorded = played_and_recorded(tmp_path)
    other, _ = played_and_recorded(tmp_path, shift_ns=7_000_000)
    for outdir in (tmp_path / "new", tmp_path / "users"):
        if outdir.name == "users":
            outdir.mkdir()
            (outdir / "notes.txt").write_text("mine")
        assert cli(["bag", "report", str(recorded), "--input", str(other), "--outdir", str(outdir)]) == 2
        assert capsys.readouterr().err.strip() == (
            f"diffmf bag: error: {other} is not the bag that was fused into {recorded}: 5 of 5 fused frames name "
            "input stamps that it does not contain (give the played bag as --input)")
    assert not (tmp_path / "new").exists()
    assert [p.name for p in (tmp_path / "users").iterdir()] == ["notes.txt"]
    assert cli(["bag", "report", str(recorded), "--input", str(played), "--outdir", str(tmp_path / "users"),
                "--min-frames", "6"]) == 2
    assert capsys.readouterr().err.strip() == (f"diffmf bag: error: {recorded}: only 5 fused frame(s) (expected at "
                                               "least 6); no report written")


def test_info_text_json_and_metadata_mismatch_exactly(tmp_path, capsys):
    played, _ = played_and_recorded(tmp_path)
    meta = played / "metadata.yaml"
    text = meta.read_text()
    assert text.count("message_count: 6") == 1  # the thermal topic's count
    meta.write_text(text.replace("message_count: 6", "message_count: 7"))
    assert cli(["bag", "info", str(played)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"bag:       {played}", "messages:  12", "duration:  0.900 s", "start/end: 1.000000 / 1.900000 s",
        "  /chatter                 1           -  std_msgs/msg/String",
        f"  {bags.RGB_TOPIC}           5     4.44 Hz  sensor_msgs/msg/Image",
        f"  {bags.THERMAL_TOPIC}       6     5.56 Hz  sensor_msgs/msg/Image"]
    assert err.strip() == (f"warning: metadata.yaml says 7 message(s) on {bags.THERMAL_TOPIC}, the storage holds 6 "
                           "(counts above are from the storage)")
    assert cli(["bag", "info", str(played), "--json"]) == 0
    out = capsys.readouterr().out
    assert out.startswith('{\n  "path"') and json.loads(out) == {
        "path": str(played), "messages": 12, "duration_s": 0.9, "start_ns": T0, "end_ns": T0 + 9 * STEP,
        "topics": {bags.THERMAL_TOPIC: {"type": bags.IMAGE_TYPE, "count": 6, "rate_hz": 5.556},
                   "/chatter": {"type": "std_msgs/msg/String", "count": 1, "rate_hz": None},
                   bags.RGB_TOPIC: {"type": bags.IMAGE_TYPE, "count": 5, "rate_hz": 4.444}},
        "metadata_mismatch": {bags.THERMAL_TOPIC: {"metadata": 7, "storage": 6}}}
    # one message: no rate, no duration; a topic without messages
    store = bags.make_typestore()
    writer = bags.open_writer(tmp_path / "one", "mcap")
    conn = writer.add_connection("/a", "std_msgs/msg/String", typestore=store)
    writer.add_connection("/b", "std_msgs/msg/String", typestore=store)
    writer.write(conn, 5, store.serialize_cdr(store.types["std_msgs/msg/String"](data="x"), "std_msgs/msg/String"))
    writer.close()
    info = bags.bag_info(tmp_path / "one")
    assert (info["duration_s"], info["start_ns"], info["end_ns"], info["metadata_mismatch"]) == (0.0, 5, 5, {})
    assert info["topics"] == {"/a": {"type": "std_msgs/msg/String", "count": 1, "rate_hz": None},
                              "/b": {"type": "std_msgs/msg/String", "count": 0, "rate_hz": None}}
    assert cli(["bag", "info", str(tmp_path / "one")]) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == ["  /a          1           -  std_msgs/msg/String",
                                                         "  /b          0           -  std_msgs/msg/String"]


def test_fuse_options_topics_encoding_jpeg_agc_and_camera_info_defaults(tmp_path):
    """fuse_bag with the node's topic parameters (relative and absolute), a 16-bit thermal camera
    on a fixed AGC range, mono8 output and the JPEG copy; camera_info of a compressed camera is
    looked up next to its raw topic; the output camera_info has no binning and a full ROI."""
    from diffmf_core.live.agc import ThermalAGC
    from diffmf_core.live.camera import OutputCamera
    from diffmf_core.live.imagecodec import decode_image
    from diffmf_core.tools.bag.common import compressed_msg
    from diffmf_core.tools.bag.fuse import NothingFused

    store = bags.make_typestore()
    msgs = [("/chatter", "std_msgs/msg/String", store.types["std_msgs/msg/String"](data="first"), T0 - 1)]
    for i in range(3):
        t = T0 + i * STEP
        ir16 = np.full((48, 64), 1000 + 400 * i, np.uint16)
        mono16 = store.types[bags.IMAGE_TYPE](header=bags.header(store, t, "ir"), height=48, width=64, encoding="mono16",
                                              is_bigendian=0, step=128, data=np.frombuffer(ir16.tobytes(), np.uint8))
        msgs.append(("/cam/ir", bags.IMAGE_TYPE, mono16, t))
        msgs.append(("/cam/vis", bags.IMAGE_TYPE, bags.image_msg(store, np.full((48, 64, 3), 90, np.uint8), t, "vis"), t))
    write_bag(tmp_path / "in", msgs)
    params = {"fuser": "classical", "thermal_topic": "cam/ir", "rgb_topic": "/cam/vis", "thermal_agc_mode": "fixed",
              "agc_low": 1000.0, "agc_high": 2000.0, "output_encoding": "mono8", "publish_compressed": True,
              "jpeg_quality": 50}
    summary = bags.fuse_bag(tmp_path / "in", tmp_path / "out", params, progress=False)
    assert summary.fused == 3 and summary.decode_errors == {}
    info = bags.bag_info(tmp_path / "out")
    assert {t: v["count"] for t, v in info["topics"].items()} == {
        "/chatter": 1, "/cam/ir": 3, "/cam/vis": 3, bags.FUSED_TOPIC: 3, bags.FUSED_TOPIC + "/compressed": 3,
        bags.INFO_TOPIC: 3,
        "/fused/camera_info": 3}
    with bags.open_reader(tmp_path / "out") as reader:
        by_topic = {}
        for conn, _, raw in bags.iter_messages(reader):
            by_topic.setdefault(conn.topic, []).append(store.deserialize_cdr(raw, conn.msgtype))
    assert {(m.encoding, m.is_bigendian) for m in by_topic[bags.FUSED_TOPIC]} == {("mono8", 0)}
    assert {m.format for m in by_topic[bags.FUSED_TOPIC + "/compressed"]} == {"mono8; jpeg compressed mono8"}
    for raw, jpeg in zip(by_topic[bags.FUSED_TOPIC], by_topic[bags.FUSED_TOPIC + "/compressed"]):  # quality 50
        pixels = bags.decode_msg(raw, bags.IMAGE_TYPE, 1 << 20)
        assert bytes(jpeg.data) == bytes(compressed_msg(store, pixels, 0, "", "jpeg", 50).data)
    for cam in by_topic["/fused/camera_info"]:
        roi = cam.roi
        assert (cam.binning_x, cam.binning_y, roi.x_offset, roi.y_offset, roi.width, roi.height, roi.do_rectify) \
            == (0, 0, 0, 0, 0, 0, False)
    # the fixed AGC range reaches the pixels: 1000 -> 0, 1400 -> 102, 1800 -> 204 in the thermal input
    agc = ThermalAGC("fixed", 1000.0, 2000.0)
    levels = [int(decode_image("mono16", 48, 64, 128, 0, m.data, agc=agc)[0, 0]) for m in by_topic["/cam/ir"]]
    assert levels == [0, 102, 204]
    fused = [bags.decode_msg(m, bags.IMAGE_TYPE, 1 << 20) for m in by_topic[bags.FUSED_TOPIC]]
    auto = bags.fuse_bag(tmp_path / "in", tmp_path / "auto", {**params, "agc_high": 65535.0}, progress=False)
    assert auto.fused == 3
    fused_wide = read_bag(tmp_path / "auto", [bags.FUSED_TOPIC])[bags.FUSED_TOPIC]
    assert any(not np.array_equal(a, b[3]) for a, b in zip(fused, fused_wide))

    with pytest.raises(bags.BagError, match="^the thermal and RGB topics must differ$"):
        bags.fuse_bag(tmp_path / "in", tmp_path / "same", params, thermal_topic="/cam/vis", rgb_topic="/cam/vis")
    with pytest.raises(NothingFused, match="^nothing could be fused$") as caught:
        bags.fuse_bag(tmp_path / "in", tmp_path / "few", params, progress=False, min_fused=4)
    assert caught.value.summary.fused == 3 and not (tmp_path / "few").exists()
    # explicit topics override the parameters; only the fused topics with copy_inputs=False
    only = bags.fuse_bag(tmp_path / "in", tmp_path / "only", {"fuser": "classical"}, thermal_topic="/cam/ir",
                         rgb_topic="/cam/vis", copy_inputs=False, progress=False)
    assert only.fused == 3 and "/cam/ir" not in bags.bag_info(tmp_path / "only")["topics"]
    assert only.messages == 6  # the image topics only: /chatter is not read
    again = bags.fuse_bag(tmp_path / "in", tmp_path / "only", {"fuser": "classical"}, thermal_topic="/cam/ir",
                          rgb_topic="/cam/vis", overwrite=True, progress=False)  # its own output, replaced
    assert again.fused == 3 and "/chatter" in bags.bag_info(tmp_path / "only")["topics"]
    # nothing pairs (thermal expected 50 ms later than it comes, no slop): by default that is no error
    none = bags.fuse_bag(tmp_path / "in", tmp_path / "none", {**params, "sync_slop_s": 0.0, "thermal_delay_s": 0.05},
                         progress=False)
    assert none.fused == 0 and (tmp_path / "none").is_dir()

    # compressed cameras: camera_info next to the raw topic (a wrong size is counted)
    cam = OutputCamera(k=[50.0, 0, 5, 0, 50.0, 5, 0, 0, 1], d=[0.0] * 5, r=[1.0, 0, 0, 0, 1, 0, 0, 0, 1],
                       p=[50.0, 0, 5, 0, 0, 50.0, 5, 0, 0, 0, 1, 0])
    msgs = [("/ir/camera_info", bags.CAMERA_INFO_TYPE, bags.camera_info_msg(store, cam, 10, 10, 1, "x"), 1)]
    for i in range(2):
        t = T0 + i * STEP
        msgs.append(("/ir/image/compressed", bags.COMPRESSED_TYPE,
                     compressed_msg(store, np.full((48, 64), 50, np.uint8), t, "th"), t))
        msgs.append((bags.RGB_TOPIC + "/compressed", bags.COMPRESSED_TYPE,
                     compressed_msg(store, np.full((48, 64, 3), 50, np.uint8), t, "rgb"), t))
    write_bag(tmp_path / "cin", msgs)
    summary = bags.fuse_bag(tmp_path / "cin", tmp_path / "cout", {"fuser": "classical"},
                            thermal_topic="/ir/image/compressed", progress=False)
    assert summary.fused == 2 and summary.decode_errors == {"camera_info_size": 2}


@pytest.fixture()
def fake_fuse(monkeypatch):
    """bag fuse with fuse_bag and the model replaced by recorders: what _fuse_locked passes on."""
    from diffmf_core import fuser as fuser_module
    from diffmf_core.tools.bag.fuse import FuseSummary

    rec = {"summary": FuseSummary(fused=2, modes={"fused": 2}, model_name="net"), "error": None}

    def fuse_bag(inp, out, params, **kw):
        rec["fuse"] = (Path(inp), Path(out), dict(params), kw)
        if isinstance(rec["summary"], Exception):
            raise rec["summary"]
        return rec["summary"]

    class Fuser:
        def __init__(self, weights, preset=None, device="auto", half=True, cuda_graph=False):
            rec["fuser"] = (weights, preset, device, half)
            if rec["error"]:
                raise rec["error"]

    monkeypatch.setattr(bags.fuse, "fuse_bag", fuse_bag)
    monkeypatch.setattr(fuser_module, "Fuser", Fuser)
    return rec


def test_fuse_flags_reach_fuse_bag_and_an_explicit_model_is_checked(tmp_path, fake_fuse, capsys):
    from diffmf_core.tools.bag.fuse import FuseSummary, NothingFused

    inp, out = tmp_path / "in", tmp_path / "out"
    args = ["bag", "fuse", str(inp), str(out)]
    assert cli(args + ["--fuser", "diffmf", "--weights", "w.safetensors", "--device", "cpu", "--slop-ms", "50", "--thermal-delay-ms", "-30",
                       "--thermal-topic", "/a", "--rgb-topic", "/b", "--storage", "sqlite3", "--only-fused", "--quiet",
                       "--overwrite"]) == 0
    assert fake_fuse["fuser"] == ("w.safetensors", "live", "cpu", True)
    _, _, params, kw = fake_fuse["fuse"]
    assert (params["weights"], params["device"], params["fuser"]) == ("w.safetensors", "cpu", "diffmf")
    assert (params["sync_slop_s"], params["thermal_delay_s"]) == (0.05, -0.03)
    assert kw == {"storage": "sqlite3", "thermal_topic": "/a", "rgb_topic": "/b", "copy_inputs": False,
                  "overwrite": True, "progress": False, "min_fused": 1}
    assert capsys.readouterr().out == f"wrote {out}\n{fake_fuse['summary'].text()}\n"
    # no explicit model choice (the automatic defaults): not checked, the node's fallback applies
    del fake_fuse["fuser"]
    assert cli(args + ["--device", "auto"]) == 0 and "fuser" not in fake_fuse
    _, _, params, kw = fake_fuse["fuse"]
    assert (params["sync_slop_s"], params["thermal_delay_s"], params["device"]) == (0.02, 0.0, "auto")
    assert kw == {"storage": "mcap", "thermal_topic": None, "rgb_topic": None, "copy_inputs": True,
                  "overwrite": False, "progress": True, "min_fused": 1}
    # --fuser diffmf alone is explicit; a params file without the model keys: the Fuser defaults
    minimal = tmp_path / "p.yaml"
    minimal.write_text("n:\n  ros__parameters:\n    fuser: classical\n")
    assert cli(args + ["--fuser", "diffmf", "--params-file", str(minimal)]) == 0
    assert fake_fuse["fuser"] == (None, None, "auto", True)
    # without a fuser key the fuser is warm_rule: --weights does not apply to it
    nokey = tmp_path / "nokey.yaml"
    nokey.write_text("n:\n  ros__parameters:\n    half_precision: false\n")
    capsys.readouterr()
    assert cli(args + ["--params-file", str(nokey), "--weights", "w.safetensors"]) == 2
    assert capsys.readouterr().err.strip() == ("diffmf bag: error: --weights cannot apply: the fuser is 'warm_rule' "
                                               "(the params file); drop --weights or use --fuser diffmf")
    # with --fuser diffmf, --weights applies, is checked, and a fallback is an error
    fake_fuse["summary"] = FuseSummary(fused=3, modes={"classical": 3})
    assert cli(args + ["--params-file", str(nokey), "--fuser", "diffmf", "--weights", "w.safetensors"]) == 1
    assert fake_fuse["fuser"] == ("w.safetensors", None, "auto", False)
    fake_fuse["summary"] = FuseSummary(fused=2, modes={"fused": 2}, model_name="net")
    # a model that cannot be used is an error, never the classical fallback
    fake_fuse["error"] = RuntimeError("no such weights")
    capsys.readouterr()
    assert cli(args + ["--fuser", "diffmf", "--weights", "w.safetensors"]) == 2
    assert capsys.readouterr().err.strip() == (
        "diffmf bag: error: the requested DIFF-MF model cannot be used (RuntimeError: no such weights); explicit "
        "--weights/--device/--fuser diffmf never fall back (use --fuser classical to fuse without the model)")
    fake_fuse["error"] = None
    # the model failing during the run: exit 1, the output kept; with --fuser classical that is the plan
    fake_fuse["summary"] = FuseSummary(fused=3, modes={"classical": 3})
    assert cli(args + ["--fuser", "diffmf", "--weights", "w.safetensors"]) == 1
    assert capsys.readouterr().err.strip() == (
        f"diffmf bag: error: DIFF-MF failed during the run; 3 frame(s) were fused with the classical fallback "
        f"(FusionInfo mode CLASSICAL). The output {out} is kept.")
    assert cli(args + ["--fuser", "classical"]) == 0
    assert cli(args) == 0  # not explicit: the fallback is the node's behaviour
    # flags that cannot apply to the classical fuser
    capsys.readouterr()
    assert cli(args + ["--fuser", "classical", "--weights", "w"]) == 2
    assert capsys.readouterr().err.strip() == ("diffmf bag: error: --weights cannot apply: the fuser is 'classical' "
                                               "(--fuser); drop --weights or use --fuser diffmf")
    assert cli(args + ["--params-file", str(minimal), "--weights", "w", "--device", "cpu"]) == 2
    assert capsys.readouterr().err.strip() == (
        "diffmf bag: error: --weights and --device cannot apply: the fuser is 'classical' (the params file); drop "
        "--weights and --device or use --fuser diffmf")
    assert cli(args + ["--params-file", str(minimal), "--device", "cpu"]) == 2
    assert "--device cannot apply" in capsys.readouterr().err
    # nothing fused: the counts on stderr, then the error
    fake_fuse["summary"] = NothingFused(FuseSummary(frames={"thermal": 2, "rgb": 0}))
    assert cli(args + ["--fuser", "classical"]) == 2
    assert capsys.readouterr().err.splitlines() == fake_fuse["summary"].summary.text().splitlines() + [
        f"diffmf bag: error: nothing could be fused from {inp} (see the counts above); no output written"]


def test_fuse_with_the_warm_rule_explicit_device_is_checked(tmp_path, fake_fuse, monkeypatch, capsys):
    """The default fuser (warm_rule) takes --device; one it cannot use is an error, never a fallback."""
    from diffmf_core import fuser as fuser_module

    args = ["bag", "fuse", str(tmp_path / "in"), str(tmp_path / "out")]
    assert cli(args + ["--device", "cpu", "--quiet"]) == 0
    _, _, params, _ = fake_fuse["fuse"]
    assert (params["fuser"], params["device"]) == ("warm_rule", "cpu")

    def unusable(device="auto"):
        raise RuntimeError(f"no {device} here")

    monkeypatch.setattr(fuser_module, "WarmRuleFuser", unusable)
    capsys.readouterr()
    assert cli(args + ["--device", "cuda:3"]) == 2
    assert capsys.readouterr().err.strip() == (
        "diffmf bag: error: the requested warm_rule fuser cannot be used (RuntimeError: no cuda:3 here); explicit "
        "--weights/--device/--fuser warm_rule never fall back (use --fuser classical to fuse without the model)")


def test_fuse_output_check_before_the_model_names_the_command(tmp_path, fake_fuse, capsys):
    from diffmf_core.common.outputs import seal_bag

    out = tmp_path / "out"
    out.mkdir()
    (out / "metadata.yaml").write_text("x")
    seal_bag(out, "bag from-pairs")
    args = ["bag", "fuse", str(tmp_path / "in"), str(out), "--fuser", "classical"]
    assert cli(args + ["--overwrite"]) == 2 and "fuse" not in fake_fuse
    assert "not a rosbag2 bag folder written by `diffmf bag fuse`" in capsys.readouterr().err
    (out / ".diffmf-bag-from-pairs").unlink()
    seal_bag(out, "bag fuse")
    assert cli(args) == 2 and "fuse" not in fake_fuse
    assert capsys.readouterr().err.strip() == f"diffmf bag: error: {out} exists already (use --overwrite to replace it)"
    assert cli(args + ["--overwrite"]) == 0 and fake_fuse["fuse"][3]["overwrite"] is True


def test_fuse_summary_text_and_latency():
    from diffmf_core.tools.bag.fuse import FuseSummary

    s = FuseSummary(frames={"thermal": 5, "rgb": 4}, decoded={"thermal": 5, "rgb": 3}, used={"thermal": 3, "rgb": 3},
                    fused=3, modes={"fused": 2, "classical": 1}, decode_errors={"bad_jpeg": 1, "bad_cdr": 2},
                    size_changes=1, latencies_ms=[float(v) for v in range(0, 101, 10)], model_name="net")
    assert s.latency() == {"mean": 50.0, "p50": 50.0, "p90": 90.0, "max": 100.0}
    assert s.text().split("\n") == [
        "frames in: thermal 5, rgb 4", "fused: 3 (classical 1, fused 2) with net",
        "dropped (never paired): 2 (thermal 2, rgb 0)", "decode errors: bad_cdr 2, bad_jpeg 1",
        "image size changes: 1 (pairing restarted at each)",
        "latency per pair (decode+register+fuse): mean 50.0 ms, p90 90.0 ms, max 100.0 ms"]
    assert FuseSummary().latency() == {}
    assert FuseSummary().text() == ("frames in: thermal 0, rgb 0\nfused: 0 (-) with -\n"
                                    "dropped (never paired): 0 (thermal 0, rgb 0)\ndecode errors: 0")


def test_node_params_file_and_topic_choice_messages(tmp_path):
    import yaml
    from types import SimpleNamespace

    from diffmf_core.tools.bag.fuse import pick_image_topic

    expected = "expected a YAML mapping `<node name>: {ros__parameters: {...}}` such as config/fuse.yaml"
    path = tmp_path / "p.yaml"
    with pytest.raises(bags.BagError, match=f"^{path}: cannot read the parameters file \\(No such file or directory\\)$"):
        bags.load_node_params(path)
    path.write_text("a: [1,\nb: 2\n")
    try:
        yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0]
    with pytest.raises(bags.BagError) as caught:
        bags.load_node_params(path)
    assert str(caught.value) == f"{path}: not a node parameters file (not YAML: {first}); {expected}"
    for text in ("- a\n", "{}\n", "n: 1\n", "n:\n  other: {}\n"):
        path.write_text(text)
        with pytest.raises(bags.BagError) as caught:
            bags.load_node_params(path)
        assert str(caught.value) == f"{path}: not a node parameters file; {expected}", text
    path.write_text("n:\n  ros__parameters: {a: 1}\n")
    assert bags.load_node_params(path) == {"a": 1}

    t = SimpleNamespace
    topics = {"/cam/ir/compressed": t(msgtype=bags.COMPRESSED_TYPE), "/x": t(msgtype="std_msgs/msg/String")}
    assert pick_image_topic(topics, "thermal", None, {"thermal_topic": "cam/ir"}) == ("/cam/ir/compressed",
                                                                                      bags.COMPRESSED_TYPE)
    with pytest.raises(bags.BagError, match="^topic /x has type std_msgs/msg/String, expected sensor_msgs/msg/Image "
                       "or sensor_msgs/msg/CompressedImage$"):
        pick_image_topic(topics, "thermal", "/x", {})
    with pytest.raises(bags.BagError) as caught:
        pick_image_topic(topics, "rgb", None, {})
    assert str(caught.value) == ("no rgb image topic (/rgb/image_raw or /rgb/image_raw/compressed) in the bag; it has "
                                 "/cam/ir/compressed (sensor_msgs/msg/CompressedImage), /x (std_msgs/msg/String). "
                                 "Use --rgb-topic to choose one.")
    with pytest.raises(bags.BagError, match=r"in the bag; it has no topics\. Use --thermal-topic"):
        pick_image_topic({}, "thermal", None, {})


def test_bag_command_defaults_and_ranges(capsys):
    """The defaults a user relies on: from-pairs at 30 Hz, no jitter/delay/drop, JPEG 90, the node's
    16 MP limit, start 1700000000 s; fuse overrides nothing unless asked (slop, delay, topics, fuser
    come from the params file); report needs one fused frame. Out-of-range values are refused."""
    from diffmf_core.cli import build_parser

    parser = build_parser("bag")
    fp = parser.parse_args(["bag", "from-pairs", "a", "b"])
    assert (fp.storage, fp.compressed, fp.quality, fp.rate, fp.jitter_ms, fp.thermal_delay_ms, fp.drop, fp.seed,
            fp.start_time, fp.limit, fp.max_pixels, fp.keep_border, fp.overwrite, fp.quiet) == (
        "mcap", False, 90, 30.0, 0.0, 0.0, 0.0, 0, 1_700_000_000.0, 0, 4096 * 4096, False, False, False)
    fu = parser.parse_args(["bag", "fuse", "a", "b"])
    assert (fu.storage, fu.thermal_topic, fu.rgb_topic, fu.params_file, fu.fuser, fu.device, fu.weights, fu.slop_ms,
            fu.thermal_delay_ms, fu.only_fused, fu.overwrite, fu.quiet) == (
        "mcap", None, None, None, None, None, None, None, None, False, False, False)
    rp = parser.parse_args(["bag", "report", "r", "--input", "i", "--outdir", "o"])
    assert (rp.params_file, rp.device, rp.min_frames, rp.overwrite) == (None, "", 1, False)
    assert parser.parse_args(["bag", "info", "x"]).json is False
    assert (fp._bag_func, fu._bag_func, rp._bag_func) == (bags._cmd_from_pairs, bags._cmd_fuse, bags._cmd_report)
    assert parser.parse_args(["bag", "info", "x"])._bag_func is bags._cmd_info
    home = Path.home()
    for argv, names in ((["from-pairs", "~/a", "~/b"], ("pairs", "output")),
                        (["fuse", "~/a", "~/b", "--params-file", "~/c"], ("input", "output", "params_file")),
                        (["report", "~/a", "--input", "~/b", "--outdir", "~/c", "--params-file", "~/d"],
                         ("recorded", "input", "outdir", "params_file")), (["info", "~/a"], ("bag",))):
        args = parser.parse_args(["bag", *argv])  # paths: ~ expanded, an empty one refused
        assert [getattr(args, n) for n in names] == [home / c for c in "abcd"[:len(names)]], argv
        with pytest.raises(SystemExit):
            parser.parse_args(["bag", argv[0], ""] + argv[2:])

    def value(action, *argv):
        args = parser.parse_args(["bag", action, *(["r", "--input", "i", "--outdir", "o"] if action == "report"
                                                   else ["a", "b"]), *argv])
        return getattr(args, argv[0].lstrip("-").replace("-", "_"))

    # every range end: the last value accepted, the first refused (values parsed to numbers)
    accepted = [("from-pairs", "--quality", "1", 1), ("from-pairs", "--quality", "100", 100),
                ("from-pairs", "--rate", "0.5", 0.5), ("from-pairs", "--rate", "1000", 1000.0),
                ("from-pairs", "--jitter-ms", "0.5", 0.5), ("from-pairs", "--thermal-delay-ms", "-10000", -10000.0),
                ("from-pairs", "--thermal-delay-ms", "10000", 10000.0), ("from-pairs", "--drop", "0.5", 0.5),
                ("from-pairs", "--drop", "0.9", 0.9), ("from-pairs", "--seed", str(2**32 - 1), 2**32 - 1),
                ("from-pairs", "--start-time", "0.5", 0.5), ("from-pairs", "--start-time", str(2**31 - 1), 2**31 - 1.0),
                ("from-pairs", "--limit", "3", 3), ("from-pairs", "--max-pixels", "1", 1),
                ("from-pairs", "--storage", "sqlite3", "sqlite3"), ("fuse", "--slop-ms", "0", 0.0),
                ("fuse", "--slop-ms", "10000", 10000.0), ("fuse", "--thermal-delay-ms", "-10000", -10000.0),
                ("fuse", "--thermal-delay-ms", "10000", 10000.0), ("fuse", "--device", "cuda:1", "cuda:1"),
                ("fuse", "--fuser", "classical", "classical"), ("fuse", "--storage", "sqlite3", "sqlite3"),
                ("from-pairs", "--seed", "0", 0), ("from-pairs", "--limit", "0", 0),
                ("fuse", "--fuser", "diffmf", "diffmf"), ("report", "--min-frames", "0", 0)]
    for action, flag, text, expected in accepted:
        got = value(action, flag, text)
        assert got == expected and type(got) is type(expected), (action, flag, text, got)
    refused = [("from-pairs", "--quality", "0"), ("from-pairs", "--quality", "101"), ("from-pairs", "--rate", "0"),
               ("from-pairs", "--rate", "1000.5"), ("from-pairs", "--jitter-ms", "-0.1"),
               ("from-pairs", "--thermal-delay-ms", "-10000.5"), ("from-pairs", "--thermal-delay-ms", "10000.5"),
               ("from-pairs", "--drop", "-0.1"), ("from-pairs", "--drop", "0.95"), ("from-pairs", "--seed", "-1"),
               ("from-pairs", "--seed", str(2**32)), ("from-pairs", "--start-time", "-1"),
               ("from-pairs", "--start-time", str(2**31)), ("from-pairs", "--limit", "-1"),
               ("from-pairs", "--max-pixels", "0"), ("from-pairs", "--storage", "rosbag"), ("fuse", "--slop-ms", "-0.1"),
               ("fuse", "--slop-ms", "10000.5"), ("fuse", "--thermal-delay-ms", "-10000.5"),
               ("fuse", "--thermal-delay-ms", "10000.5"), ("fuse", "--device", "gpu"), ("fuse", "--fuser", "gff"),
               ("fuse", "--storage", "rosbag"), ("report", "--min-frames", "-1")]
    for action, flag, text in refused:
        with pytest.raises(SystemExit):
            value(action, flag, text)
        assert "error:" in capsys.readouterr().err, (action, flag, text)
    for argv in (["report", "r", "--outdir", "o"], ["report", "r", "--input", "i"], []):  # required
        with pytest.raises(SystemExit):
            parser.parse_args(["bag", *argv])
    capsys.readouterr()


def test_fuse_counts_every_kind_of_bad_message_and_times_each_pair(tmp_path, monkeypatch, capsys):
    """Broken CDR, broken camera_info and two frames of an unknown encoding are each counted and
    skipped (the run goes on); the latency of a pair is its frames' decode times plus its own
    processing (a clock that advances 1 ms per reading gives exactly 1 + 1 + 1 ms); counts,
    sync statistics, model name and FusionInfo fields are those of the run."""
    from types import SimpleNamespace

    store = bags.make_typestore()
    ser = store.serialize_cdr
    msgs = [("/thermal/camera_info", bags.CAMERA_INFO_TYPE, b"\x00\x01\x00\x00garbage", 1),
            ("/thermal/camera_info", bags.CAMERA_INFO_TYPE, b"\x00\x01\x00\x00garbage", 2),
            (bags.THERMAL_TOPIC, bags.IMAGE_TYPE, b"\x00\x01\x00\x00not an image", 3),
            (bags.THERMAL_TOPIC, bags.IMAGE_TYPE, b"\x00\x01\x00\x00not an image", 4)]
    for i in range(3):
        t = T0 + i * STEP
        bad = bags.image_msg(store, np.zeros((4, 4), np.uint8), t - 1000, "thermal_camera")
        bad.encoding = "yuv422_weird"
        if i < 2:
            msgs.append((bags.THERMAL_TOPIC, bags.IMAGE_TYPE, ser(bad, bags.IMAGE_TYPE), t - 1000))
        msgs.append((bags.THERMAL_TOPIC, bags.IMAGE_TYPE,
                     ser(bags.image_msg(store, np.full((48, 64), 40 * i, np.uint8), t, "thermal_camera"),
                         bags.IMAGE_TYPE), t))
        msgs.append((bags.RGB_TOPIC, bags.IMAGE_TYPE,
                     ser(bags.image_msg(store, np.full((48, 64, 3), 60, np.uint8), t, "rgb_camera"), bags.IMAGE_TYPE), t))
    write_bag(tmp_path / "in", msgs)
    clock = iter(range(10**6))
    monkeypatch.setattr(bags.fuse, "time", SimpleNamespace(perf_counter=lambda: next(clock) / 1000.0))
    summary = bags.fuse_bag(tmp_path / "in", tmp_path / "out", {"fuser": "classical"}, progress=False, min_fused=3)
    assert capsys.readouterr().err == ""  # no progress bar when progress=False
    assert (summary.messages, summary.frames, summary.decoded, summary.used, summary.fused) == (
        12, {"thermal": 7, "rgb": 3}, {"thermal": 3, "rgb": 3}, {"thermal": 3, "rgb": 3}, 3)
    assert summary.decode_errors == {"camera_info": 2, "bad_cdr": 2, "unknown_encoding": 2}
    assert summary.latencies_ms == pytest.approx([3.0] * 3, abs=1e-9) and summary.model_name == "gff"
    assert summary.sync == {"matched": 3, "dropped_thermal": 0, "dropped_rgb": 0, "duplicates": 0, "out_of_order": 0,
                            "resets": 0, "stamp_order_drops": 0, "frame_id_drops": 0}
    infos = read_infos(tmp_path / "out")
    assert [float(i.latency_ms) for i in infos] == pytest.approx([3.0] * 3, abs=1e-6)
    assert [i.model_name for i in infos] == ["gff"] * 3
    assert all(np.isfinite(i.registration_quality) and np.isfinite(i.inference_ms) for i in infos)
    assert (tmp_path / "out" / ".diffmf-bag-fuse").is_file()
    # fuse_bag checks its output itself: never onto its input, an existing output only with overwrite
    with pytest.raises(bags.BagError, match="is the input"):
        bags.fuse_bag(tmp_path / "in", tmp_path / "in", {"fuser": "classical"}, progress=False, overwrite=True)
    with pytest.raises(bags.BagError, match="exists already"):
        bags.fuse_bag(tmp_path / "in", tmp_path / "out", {"fuser": "classical"}, progress=False)


def test_fuse_prints_the_pipeline_warning(tmp_path, monkeypatch, capsys):
    make_pairs(tmp_path / "pairs", n=2)
    assert cli(["bag", "from-pairs", str(tmp_path / "pairs"), str(tmp_path / "in"), "--quiet"]) == 0
    pipeline = classical_pipeline()
    monkeypatch.setattr(bags.fuse, "build_pipeline", lambda params: (pipeline, "no weights here", {}))
    bags.fuse_bag(tmp_path / "in", tmp_path / "out", {}, progress=False)
    assert capsys.readouterr().err == ("diffmf bag fuse: warning: no weights here; using the classical fuser "
                                       f"{pipeline.fallback.name!r}\n")


def test_decode_msg_passes_the_limit_the_agc_and_the_byte_order():
    from diffmf_core.live.agc import ThermalAGC
    from diffmf_core.live.imagecodec import ImageDecodeError
    from diffmf_core.tools.bag.common import compressed_msg

    store = bags.make_typestore()
    agc = ThermalAGC("fixed", 1000.0, 2000.0)
    ir16 = np.full((4, 6), 1500, np.uint16)
    little, big = (store.types[bags.IMAGE_TYPE](
        header=bags.header(store, 1, "x"), height=4, width=6, encoding="mono16", is_bigendian=be, step=12,
        data=np.frombuffer(ir16.astype(dt).tobytes(), np.uint8)) for be, dt in ((0, "<u2"), (1, ">u2")))
    expected = np.full((4, 6), 128, np.uint8)
    assert np.array_equal(bags.decode_msg(little, bags.IMAGE_TYPE, 100, agc), expected)
    assert np.array_equal(bags.decode_msg(big, bags.IMAGE_TYPE, 100, agc), expected)
    with pytest.raises(ImageDecodeError):
        bags.decode_msg(little, bags.IMAGE_TYPE, 23, agc)  # 24 pixels above a limit of 23
    ok, png16 = cv2.imencode(".png", ir16)
    cmsg = store.types[bags.COMPRESSED_TYPE](header=bags.header(store, 1, "x"), format="mono16; png compressed",
                                             data=np.frombuffer(png16.tobytes(), np.uint8))
    assert np.array_equal(bags.decode_msg(cmsg, bags.COMPRESSED_TYPE, 100, agc), expected)
    with pytest.raises(ImageDecodeError):
        bags.decode_msg(cmsg, bags.COMPRESSED_TYPE, 23, agc)
    jpeg = compressed_msg(store, np.zeros((8, 8), np.uint8), 1, "x")  # the default: JPEG quality 90
    from diffmf_core.live.imagecodec import encode_compressed

    assert jpeg.format == encode_compressed(np.zeros((8, 8), np.uint8), "jpeg", 90)[0]
    assert bytes(jpeg.data) == encode_compressed(np.zeros((8, 8), np.uint8), "jpeg", 90)[1]


def test_write_pairs_bag_defaults_and_refusals(tmp_path, capsys):
    """The API defaults (mcap, raw, 30 Hz from 1700000000 s, no jitter/delay/drop, border strip,
    no overwrite); refused before any output: an image above max_pixels, an unreadable image header,
    a camera left without messages, stamps outside [0, 2^31) s (exact boundaries)."""
    from diffmf_core.training.data import DataError, find_pairs, image_size

    make_pairs(tmp_path / "pairs", n=3)
    pairs = find_pairs(tmp_path / "pairs")
    out = tmp_path / "bag"
    counts = bags.write_pairs_bag(pairs, out)
    assert counts == {bags.THERMAL_TOPIC: 3, bags.RGB_TOPIC: 3}
    assert [p.suffix for p in out.iterdir() if p.suffix in (".mcap", ".db3")] == [".mcap"]
    got = read_bag(out)
    start = 1_700_000_000 * 10**9
    want = [start + round(i * 1e9 / 30) for i in range(3)]
    assert [m[1] for m in got[bags.THERMAL_TOPIC]] == want == [m[1] for m in got[bags.RGB_TOPIC]]
    with pytest.raises(bags.BagError, match="exists already"):
        bags.write_pairs_bag(pairs, out, progress=False)
    bags.write_pairs_bag(pairs, tmp_path / "jpeg", compressed=True, jitter_ms=3.0, progress=False)
    got = read_bag(tmp_path / "jpeg")
    plan = bags.plan_stamps(3, 30.0, jitter_ms=3.0, seed=0, start_ns=start)
    assert [m[1] for m in got[bags.RGB_TOPIC + "/compressed"]] == [p.stamp_ns for p in plan if p.camera == "rgb"]
    from diffmf_core.live.imagecodec import encode_compressed
    from diffmf_core.training.data import load_pair

    store = bags.make_typestore()
    with bags.open_reader(tmp_path / "jpeg") as reader:
        conn = next(c for c in reader.connections if c.topic == bags.RGB_TOPIC + "/compressed")
        first = store.deserialize_cdr(next(iter(bags.iter_messages(reader, [conn])))[2], bags.COMPRESSED_TYPE)
    assert bytes(first.data) == encode_compressed(load_pair(pairs[0][1], pairs[0][2])[1], "jpeg", 90)[1]

    def refused(message, **kw):
        with pytest.raises(bags.BagError) as caught:
            bags.write_pairs_bag(kw.pop("pairs", pairs), tmp_path / "x", progress=False, **kw)
        assert str(caught.value) == message
        assert not (tmp_path / "x").exists()

    refused(f"{pairs[0][1]}: 64x48 = 3,072 px exceeds the input limit of 3,071 px (--max-pixels raises it); "
            "the node would refuse it", max_pixels=3071)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 4)
    with pytest.raises(DataError) as header_error:
        image_size(broken)
    refused(str(header_error.value), pairs=[("b", broken, pairs[0][2])])
    seed = next(s for s in range(1000) if [p.camera for p in bags.plan_stamps(1, 30, drop=0.9, seed=s)] == ["rgb"])
    refused("no thermal message is left (1 pairs, --drop 0.9): the bag would be useless; lower --drop or use more "
            "pairs", pairs=pairs[:1], drop=0.9, seed=seed)
    limit = bags.MAX_STAMP_S * 10**9
    # 30 Hz, thermal 1 ms late: the last RGB stamp is below the limit, only the last thermal one reaches it
    refused(f"stamps run from {(limit - 67_000_000) / 1e9:.3f} to {(limit - 67_000_000 + 67_666_667) / 1e9:.3f} s; "
            f"they must stay within [0, {bags.MAX_STAMP_S}] s (ROS Time): change --start-time",
            start_ns=limit - 67_000_000, thermal_delay_ms=1.0)
    refused("stamps run from -0.010 to 0.067 s; they must stay within [0, 2147483647] s (ROS Time): change "
            "--start-time", start_ns=0, thermal_delay_ms=-10.0)
    # the boundaries themselves: a stamp of 0 is fine, one of exactly 2^31 s is not
    bags.write_pairs_bag(pairs[:1], tmp_path / "zero", start_ns=0, progress=False)
    refused(f"stamps run from {limit / 1e9:.3f} to {limit / 1e9:.3f} s; they must stay within [0, "
            f"{bags.MAX_STAMP_S}] s (ROS Time): change --start-time", pairs=pairs[:1], start_ns=limit)
    capsys.readouterr()
    assert cli(["bag", "from-pairs", str(tmp_path / "pairs"), str(tmp_path / "t5"), "--start-time", "5", "--limit",
                "2", "--quiet"]) == 0
    assert capsys.readouterr().out == (f"wrote {tmp_path / 't5'} (mcap): 2 pairs, {bags.THERMAL_TOPIC} 2, "
                                       f"{bags.RGB_TOPIC} 2\n")
    assert [m[1] for m in read_bag(tmp_path / "t5")[bags.RGB_TOPIC]] == [5 * 10**9, 5 * 10**9 + round(1e9 / 30)]


def test_iter_messages_names_the_storage_error():
    class Reader:
        path = Path("rec")

        def messages(self, connections):
            yield ("c", 1, b"")
            raise ValueError("bad chunk")

    got = []
    with pytest.raises(bags.BagError) as caught:
        got.extend(bags.iter_messages(Reader()))
    assert got == [("c", 1, b"")] and str(caught.value) == "rec: bag is truncated or corrupt (ValueError: bad chunk)"


def test_from_pairs_cli_passes_seed_overwrite_and_quiet(tmp_path, capsys):
    make_pairs(tmp_path / "pairs", n=8)
    out = tmp_path / "bag"
    argv = ["bag", "from-pairs", str(tmp_path / "pairs"), str(out), "--seed", "5", "--drop", "0.3", "--quiet"]
    assert cli(argv) == 0 and capsys.readouterr().err == ""
    plan = bags.plan_stamps(8, 30.0, drop=0.3, seed=5)
    got = read_bag(out)
    for camera, topic in (("thermal", bags.THERMAL_TOPIC), ("rgb", bags.RGB_TOPIC)):
        assert [m[1] for m in got[topic]] == [p.stamp_ns for p in plan if p.camera == camera]
    assert cli(argv) == 2 and "exists already" in capsys.readouterr().err
    assert cli(argv + ["--overwrite"]) == 0 and (out / ".diffmf-bag-from-pairs").is_file()
    assert cli(["bag", "from-pairs", str(tmp_path / "pairs"), str(tmp_path / "pairs" / "bag"), "--quiet"]) == 2
    assert "inside the input" in capsys.readouterr().err
    assert cli(["bag", "from-pairs", str(tmp_path / "pairs"), str(tmp_path / "big"), "--max-pixels", "100"]) == 2
    assert "exceeds the input limit of 100 px" in capsys.readouterr().err
    assert cli(["bag", "from-pairs", str(tmp_path / "pairs"), str(tmp_path / "db"), "--storage", "sqlite3",
                "--quiet"]) == 0
    assert [p.suffix for p in (tmp_path / "db").iterdir() if p.suffix in (".mcap", ".db3")] == [".db3"]


def test_report_flags_defaults_frame_rate_and_failures(tmp_path, monkeypatch, capsys):
    """--params-file is read, --overwrite replaces an earlier report, the API refuses one by
    default; the video frame rate comes from the RGB stamps (30 Hz without two distinct ones); a
    recording without fused frames; an outdir that is a file; nested new outdirs; the three files
    are moved in from a hidden folder inside outdir; a clean-up that fails keeps the error."""
    import fnmatch
    import os

    from diffmf_core.tools.bag import report as report_module

    played, recorded = played_and_recorded(tmp_path)
    out = tmp_path / "rep"
    args = ["bag", "report", str(recorded), "--input", str(played), "--outdir", str(out)]
    other = tmp_path / "p.yaml"
    other.write_text("n:\n  ros__parameters:\n    rgb_topic: missing/topic\n")
    assert cli(args + ["--params-file", str(other)]) == 2
    assert "no rgb image topic (/missing/topic or /missing/topic/compressed)" in capsys.readouterr().err
    moves = []
    real_replace = os.replace
    monkeypatch.setattr(report_module.os, "replace", lambda a, b: moves.append((Path(a), Path(b))) or real_replace(a, b))
    assert cli(args) == 0
    monkeypatch.undo()
    files = [(a, b) for a, b in moves if b.name in bags.report.REPORT_FILES]
    assert sorted(b.name for _, b in files) == ["fused.mp4", "strip.png", "summary.md"]
    assert all(a.parent.parent == out and fnmatch.fnmatchcase(a.parent.name, ".diffmf-report.*.partial")
               and b.parent == out for a, b in files)
    assert cli(args + ["--overwrite"]) == 0
    with pytest.raises(bags.BagError, match="exist already"):
        bags.write_report(recorded, played, out, bags.load_node_params())
    capsys.readouterr()
    (tmp_path / "afile").write_text("x")
    assert cli(["bag", "report", str(recorded), "--input", str(played), "--outdir", str(tmp_path / "afile")]) == 2
    assert capsys.readouterr().err.strip() == (f"diffmf bag: error: {tmp_path / 'afile'} is a file, not a folder; "
                                               "choose a folder for the outputs")

    # frame rate: two RGB frames 0.2 s apart -> 5 Hz; one RGB frame -> 30 Hz; a recording of one fused frame
    store = bags.make_typestore()
    rec1 = tmp_path / "rec1"
    write_bag(rec1, [(bags.FUSED_TOPIC, bags.IMAGE_TYPE,
                      bags.image_msg(store, np.zeros((16, 16, 3), np.uint8), T0, "rgb_camera"), T0)])
    for n, stamps, fps in ((2, (0, 2), 5.0), (1, (0,), 30.0), (2, (0, 0), 30.0), (3, (0, 0, 2), 10.0)):
        msgs = []
        for i in stamps:
            t = T0 + i * STEP
            for topic, shape in ((bags.THERMAL_TOPIC, (16, 16)), (bags.RGB_TOPIC, (16, 16, 3))):
                msgs.append((topic, bags.IMAGE_TYPE, bags.image_msg(store, np.zeros(shape, np.uint8), t, "x"), t))
        write_bag(tmp_path / f"in{stamps}", msgs)
        outdir = tmp_path / f"fps{stamps}" / "a" / "b"  # nested, made by the report
        bags.write_report(rec1, tmp_path / f"in{stamps}", outdir, bags.load_node_params())
        cap = cv2.VideoCapture(str(outdir / "fused.mp4"))
        assert cap.get(cv2.CAP_PROP_FPS) == fps, stamps
        cap.release()
    # no fused topic at all: refused by --min-frames (default 1); the API without it names the topic
    string = store.types["std_msgs/msg/String"](data="")
    write_bag(tmp_path / "nofused", [(bags.INFO_TOPIC, "std_msgs/msg/String", string, 1)])
    assert cli(["bag", "report", str(tmp_path / "nofused"), "--input", str(played), "--outdir", str(tmp_path / "r0")]) == 2
    assert capsys.readouterr().err.strip() == (f"diffmf bag: error: {tmp_path / 'nofused'}: only 0 fused frame(s) "
                                               "(expected at least 1); no report written")
    with pytest.raises(bags.BagError, match=f"^{tmp_path / 'nofused'}: no /fused/image messages were recorded$"):
        bags.write_report(tmp_path / "nofused", played, tmp_path / "r1", bags.load_node_params())
    assert not (tmp_path / "r1").exists()
    # a failing clean-up of a new outdir after an error: the error is still the one reported
    shifted, _ = played_and_recorded(tmp_path, shift_ns=7_000_000)
    real_unlink = os.unlink

    def unlink(path, *a, **k):
        if Path(path).name == "fused.mp4":
            raise PermissionError(13, "Permission denied", str(path))
        return real_unlink(path, *a, **k)

    monkeypatch.setattr(os, "unlink", unlink)
    assert cli(["bag", "report", str(recorded), "--input", str(shifted), "--outdir", str(tmp_path / "r2")]) == 2
    assert "is not the bag that was fused into" in capsys.readouterr().err


def test_strip_scaling_missing_infos_and_summary_without_numbers(tmp_path):
    from diffmf_core.tools.bag.report import _summary_markdown, _write_strip

    played, _ = played_and_recorded(tmp_path)
    samples = [(T0 + i, np.full((40, 500, 3), 100 + i, np.uint8)) for i in range(4)]  # no FusionInfo: black inputs
    samples[1] = (T0 + 1, np.dstack([np.add.outer(np.arange(40) * 5, np.arange(500) % 97).astype(np.uint8)] * 3))
    _write_strip(tmp_path / "strip.png", played, samples, {}, bags.load_node_params())
    strip = cv2.imread(str(tmp_path / "strip.png"))
    full = np.vstack([np.zeros((80, 2000, 3), np.uint8), np.hstack([s for _, s in samples])])
    assert np.array_equal(strip, cv2.resize(full, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA))
    with pytest.raises(bags.BagError, match=f"^{tmp_path / 'no' / 'strip.png'}: cannot write the strip image$"):
        _write_strip(tmp_path / "no" / "strip.png", played, samples[:1], {}, bags.load_node_params())
    numbers = {"frames_in": {"thermal": 0, "rgb": 0}, "frames_delivered": {}, "pairs_expected": 0, "frames_out": 1,
               "frames_resized": 0, "video_size": "1x1", "infos_out": 0, "pairs_fused": 0, "pairs_lost": 0,
               "unpaired_frames": 0, "modes": {}, "models": [], "device": "", "latency_ms": [], "inference_ms": []}
    text = _summary_markdown(numbers, Path("r"), Path("i"))
    for row in ("| frames seen on the input topics (recorder) | not recorded |",
                "| fused frames resized to the video size | 0 |", "| model | - |", "| device | - |",
                "| latency_ms p50 / p90 / p99 / max (FusionInfo) | - |"):
        assert row in text.splitlines(), row


def test_info_rates_of_short_and_empty_bags(tmp_path, capsys):
    store = bags.make_typestore()
    string = store.types["std_msgs/msg/String"](data="x")
    t0 = 1_700_000_000 * 10**9
    write_bag(tmp_path / "b", [("/a", "std_msgs/msg/String", string, t0), ("/b", "std_msgs/msg/String", string, t0 + 5),
                               ("/a", "std_msgs/msg/String", string, t0 + 10**9)])
    info = bags.bag_info(tmp_path / "b")
    assert {t: v["rate_hz"] for t, v in info["topics"].items()} == {"/a": 1.0, "/b": None}
    assert cli(["bag", "info", str(tmp_path / "b")]) == 0
    assert capsys.readouterr().out.splitlines()[3] == "start/end: 1700000000.000000 / 1700000001.000000 s"
    write_bag(tmp_path / "same", [("/a", "std_msgs/msg/String", string, 7)] * 2)  # two messages, no duration
    assert bags.bag_info(tmp_path / "same")["topics"]["/a"] == {"type": "std_msgs/msg/String", "count": 2, "rate_hz": None}
    writer = bags.open_writer(tmp_path / "empty", "mcap")
    writer.add_connection("/a", "std_msgs/msg/String", typestore=store)
    writer.close()
    info = bags.bag_info(tmp_path / "empty")
    assert (info["messages"], info["duration_s"], info["start_ns"], info["end_ns"]) == (0, 0.0, None, None)
    assert cli(["bag", "info", str(tmp_path / "empty")]) == 0
    assert [line for line in capsys.readouterr().out.splitlines() if line.startswith(("duration", "start"))] == [
        "duration:  0.000 s"]


def test_copy_connection_keeps_definitions_qos_and_types_unknown_to_the_typestore(tmp_path):
    """Copied topics keep their QoS profiles and serialisation format, and a message type the
    kilted typestore does not know is copied with the bag's own definition."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
    from rosbags.typesys import get_types_from_msg

    from diffmf_core.tools.bag.common import copy_connection

    custom = bags.make_typestore()
    custom.register(get_types_from_msg("int32 x\n", "my_pkg/msg/Thing"))
    zero = QosTime(0, 0)
    qos = Qos(QosHistory.KEEP_LAST, 5, QosReliability.BEST_EFFORT, QosDurability.VOLATILE, zero, zero,
              QosLiveliness.AUTOMATIC, zero, False)
    writer = bags.open_writer(tmp_path / "in", "mcap")
    thing = writer.add_connection("/thing", "my_pkg/msg/Thing", typestore=custom, offered_qos_profiles=[qos])
    writer.write(thing, 1, custom.serialize_cdr(custom.types["my_pkg/msg/Thing"](x=3), "my_pkg/msg/Thing"))
    writer.close()
    with bags.open_reader(tmp_path / "in") as reader:
        source = {c.topic: (c.msgtype, c.digest, c.msgdef.data, c.ext.serialization_format, c.ext.offered_qos_profiles)
                  for c in reader.connections}
        writer = bags.open_writer(tmp_path / "out", "mcap")
        for conn in reader.connections:
            copy_connection(writer, conn, bags.make_typestore())
        writer.close()
    with bags.open_reader(tmp_path / "out") as reader:
        copied = {c.topic: (c.msgtype, c.digest, c.msgdef.data, c.ext.serialization_format, c.ext.offered_qos_profiles)
                  for c in reader.connections}
    assert copied == source and source["/thing"][4] == [qos]


def test_plan_stamps_defaults_limits_and_the_jitter_draws():
    """Frame i at start + i / rate, no delay and no jitter by default; with jitter the generator of
    --seed (0 by default) draws the thermal then the RGB offset of each frame, uniform in +-jitter;
    rate > 0, jitter below half a period and drop below 1, each refused with its message."""
    start = 1_700_000_000 * 10**9
    assert [(p.stamp_ns, p.pair, p.camera) for p in bags.plan_stamps(2, 10)] == [
        (start, 0, "rgb"), (start, 0, "thermal"), (start + 10**8, 1, "rgb"), (start + 10**8, 1, "thermal")]
    rng = np.random.default_rng(0)
    draws = []
    for _ in range(3):
        draws.append(rng.uniform(-3.0, 3.0))  # thermal
        rng.random()
        draws.append(rng.uniform(-3.0, 3.0))  # rgb
        rng.random()
    plan = bags.plan_stamps(3, 10, jitter_ms=3.0)
    got = {(p.pair, p.camera): p.stamp_ns for p in plan}
    assert [got[(i, c)] for i in range(3) for c in ("thermal", "rgb")] == [
        start + i // 2 * 10**8 + int(round(d * 1e6)) for i, d in enumerate(draws)]
    assert plan == bags.plan_stamps(3, 10, jitter_ms=3.0, seed=0) != bags.plan_stamps(3, 10, jitter_ms=3.0, seed=1)
    assert len(bags.plan_stamps(3, 0.5)) == 6 and len(bags.plan_stamps(2, 10, jitter_ms=40.0)) == 4
    for kwargs, message in (({"rate_hz": 0}, "rate must be > 0"),
                            ({"rate_hz": 10, "jitter_ms": 50.0}, "jitter must be in [0, 50.0) ms at 10 Hz to keep "
                                                                 "frames in order"),
                            ({"rate_hz": 10, "drop": 1.0}, "drop must be in [0, 1)"),
                            ({"rate_hz": 10, "drop": 1.5}, "drop must be in [0, 1)")):
        with pytest.raises(ValueError) as caught:
            bags.plan_stamps(2, **kwargs)
        assert str(caught.value) == message


def test_typestore_without_the_fusion_info_definition_is_one_line(tmp_path, monkeypatch):
    from diffmf_core.tools.bag import common

    monkeypatch.setattr(common, "FUSION_INFO_MSG", tmp_path / "FusionInfo.msg")
    with pytest.raises(bags.BagError) as caught:
        bags.make_typestore()
    assert str(caught.value) == f"{tmp_path / 'FusionInfo.msg'}: FusionInfo definition not found (source checkout expected)"


def test_fuse_names_frames_without_a_frame_id_after_the_calibration(tmp_path):
    """Images with an empty frame_id go out under the calibration file's camera frame name."""
    calibration = tmp_path / "cal.yaml"
    calibration.write_text("homography: [[1, 0, 0], [0, 1, 0], [0, 0, 1]]\nthermal_size: null\nrgb_size: null\n"
                           "thermal_frame_id: cal_thermal\nrgb_frame_id: cal_rgb\n")
    store = bags.make_typestore()
    msgs = []
    for i in range(2):
        t = T0 + i * STEP
        msgs.append((bags.THERMAL_TOPIC, bags.IMAGE_TYPE, bags.image_msg(store, np.zeros((16, 16), np.uint8), t, ""), t))
        msgs.append((bags.RGB_TOPIC, bags.IMAGE_TYPE, bags.image_msg(store, np.zeros((16, 16, 3), np.uint8), t, ""), t))
    write_bag(tmp_path / "in", msgs)
    summary = bags.fuse_bag(tmp_path / "in", tmp_path / "out", {"fuser": "classical",
                                                                "calibration_file": str(calibration)}, progress=False)
    assert summary.fused == 2
    assert {m[2] for m in read_bag(tmp_path / "out", [bags.FUSED_TOPIC])[bags.FUSED_TOPIC]} == {"cal_rgb"}


def test_copy_connection_of_a_connection_without_its_definition_uses_the_typestore(tmp_path):
    """A connection read without its hash, its definition or both (bags from before rosbag2 stored
    them) is copied with the typestore's definition of its type: the full definition and hash."""
    from diffmf_core.tools.bag.common import copy_connection

    with bags.open_reader(Path(__file__).resolve().parent.parent / "samples" / "m3svd_0117_1605") as reader:
        conn = reader.connections[0]
    no_def = conn.msgdef._replace(data="")
    for name, partial in (("none", conn._replace(digest="", msgdef=no_def)), ("nohash", conn._replace(digest="")),
                          ("nodef", conn._replace(msgdef=no_def))):
        writer = bags.open_writer(tmp_path / name, "mcap")
        copy_connection(writer, partial, bags.make_typestore())
        writer.close()
        with bags.open_reader(tmp_path / name) as reader:
            copied = reader.connections[0]
        assert (copied.digest, copied.msgdef.data) == (conn.digest, conn.msgdef.data), name


def test_fuse_copies_topics_read_without_their_definitions(tmp_path, monkeypatch):
    """fuse_bag hands its typestore to copy_connection: a bag whose connections come without their
    definitions (older rosbag2) is copied with the full ones."""
    from contextlib import contextmanager

    make_pairs(tmp_path / "pairs", n=2)
    assert cli(["bag", "from-pairs", str(tmp_path / "pairs"), str(tmp_path / "in"), "--quiet"]) == 0
    real_open = bags.fuse.open_reader

    class Stripped:
        def __init__(self, reader):
            self._reader = reader
            self.connections = [c._replace(digest="", msgdef=c.msgdef._replace(data="")) for c in reader.connections]

        def __getattr__(self, name):
            return getattr(self._reader, name)

    @contextmanager
    def open_stripped(path):
        with real_open(path) as reader:
            yield Stripped(reader)

    monkeypatch.setattr(bags.fuse, "open_reader", open_stripped)
    assert bags.fuse_bag(tmp_path / "in", tmp_path / "out", {"fuser": "classical"}, progress=False).fused == 2
    monkeypatch.undo()
    with bags.open_reader(tmp_path / "in") as reader:
        source = {c.topic: (c.digest, c.msgdef.data) for c in reader.connections}
    with bags.open_reader(tmp_path / "out") as reader:
        copied = {c.topic: (c.digest, c.msgdef.data) for c in reader.connections if c.topic in source}
    assert copied == source
