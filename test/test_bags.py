"""diffmf bag: from-pairs round trips (raw/compressed x mcap/sqlite3), DroneVehicle layout, info,
offline fusion == the node's pipeline on the same pairs, and clear errors without partial output."""
from __future__ import annotations

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
    store = bags.make_typestore()
    writer = bags.open_writer(path, "mcap")
    conns = {}
    for topic, msgtype, msg, t in messages:
        if topic not in conns:
            conns[topic] = writer.add_connection(topic, msgtype, typestore=store)
        writer.write(conns[topic], t, store.serialize_cdr(msg, msgtype))
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
    assert "truncated or corrupt" in capsys.readouterr().err
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
    assert "partial output removed" in capsys.readouterr().err
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
