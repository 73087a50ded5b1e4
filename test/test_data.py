"""Image reading, pair discovery, border stripping and the training dataset."""
import cv2
import numpy as np
import pytest
import torch

from diffmf_core.common.paths import shared_data_dir
from diffmf_core.training.data import DataError, PairDataset, detect_border, find_pairs, load_pair, read_image, strip_border

RNG = np.random.default_rng(2)


def _write(path, img):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)
    return path


def _bordered(h=40, w=50, b=10):
    img = np.full((h + 2 * b, w + 2 * b, 3), 255, np.uint8)
    img[b:b + h, b:b + w] = RNG.integers(0, 180, (h, w, 3))
    return img


def test_read_image_modes_and_16bit(tmp_path):
    bgr = RNG.integers(0, 256, (8, 9, 3)).astype(np.uint8)
    p = _write(tmp_path / "c.png", bgr)
    assert np.array_equal(read_image(p), bgr)
    assert read_image(p, "gray").shape == (8, 9)
    g = _write(tmp_path / "g.png", bgr[..., 0])
    assert read_image(g, "color").shape == (8, 9, 3)
    wide = np.linspace(0, 65535, 72).astype(np.uint16).reshape(8, 9)
    assert np.array_equal(read_image(_write(tmp_path / "w.png", wide)), (wide >> 8).astype(np.uint8))
    narrow = (7000 + np.arange(72) * 10).astype(np.uint16).reshape(8, 9)  # raw thermal counts
    out = read_image(_write(tmp_path / "n.tif", narrow))
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    constant = np.full((8, 9), 30000, np.uint16)  # a frozen or lens-capped thermal frame keeps its level
    assert np.array_equal(read_image(_write(tmp_path / "k.png", constant)), np.full((8, 9), 30000 >> 8, np.uint8))


def test_float_images_constant_and_non_finite(tmp_path):
    flat = np.full((6, 7), 0.5, np.float32)
    assert np.array_equal(read_image(_write(tmp_path / "f.tif", flat)), np.full((6, 7), 128, np.uint8))
    hot = np.full((6, 7), 40.0, np.float32)  # constant outside [0, 1]: clipped, not stretched to black
    assert np.array_equal(read_image(_write(tmp_path / "h.tif", hot)), np.full((6, 7), 255, np.uint8))
    nan = flat.copy()
    nan[2, 3] = np.nan
    with pytest.raises(DataError, match="NaN"):
        read_image(_write(tmp_path / "nan.tif", nan))


def test_read_image_errors_name_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match="broken.png"):
        read_image(bad)
    with pytest.raises(DataError, match="missing.jpg"):
        read_image(tmp_path / "missing.jpg")


def test_find_pairs_ir_vi_mixed_extensions(tmp_path):
    img = RNG.integers(0, 256, (6, 6)).astype(np.uint8)
    for stem in ("10", "2", "1"):
        _write(tmp_path / "ir" / f"{stem}.png", img)
        _write(tmp_path / "vi" / f"{stem}.jpg", img)
    (tmp_path / "vi" / "notes.txt").write_text("ignored")
    pairs = find_pairs(tmp_path)
    assert [n for n, _, _ in pairs] == ["1", "2", "10"]
    assert pairs[0][1].parent.name == "ir" and pairs[0][2].suffix == ".jpg"
    _write(tmp_path / "vi" / "3.png", img)
    with pytest.raises(DataError, match="3.png"):
        find_pairs(tmp_path)


def test_find_pairs_dronevehicle_layout(tmp_path):
    img = RNG.integers(0, 256, (6, 6)).astype(np.uint8)
    _write(tmp_path / "trainimgr" / "00001.jpg", img)
    _write(tmp_path / "trainimg" / "00001.jpg", img)
    [(name, ir, vi)] = find_pairs(tmp_path)
    assert name == "00001" and ir.parent.name == "trainimgr" and vi.parent.name == "trainimg"
    with pytest.raises(DataError, match="no pair folders"):
        find_pairs(tmp_path / "trainimg")


def test_strip_border_synthetic():
    img = _bordered()
    assert detect_border(img) == 10
    assert strip_border(img).shape == (40, 50, 3)
    assert strip_border(img, 3).shape == (54, 64, 3)
    plain = RNG.integers(0, 180, (30, 30)).astype(np.uint8)
    assert strip_border(plain) is plain


def test_load_pair_strips_and_resizes(tmp_path):
    ir = _write(tmp_path / "ir.png", _bordered()[..., 0])
    vi = _write(tmp_path / "vi.png", _bordered())
    a, b = load_pair(ir, vi)
    assert a.shape == (40, 50) and b.shape == (40, 50, 3)
    small = _write(tmp_path / "small.png", RNG.integers(0, 256, (20, 25)).astype(np.uint8))
    a, b = load_pair(small, vi, strip="none")
    assert a.shape == b.shape[:2] == (60, 70)


def test_pair_dataset_crop_flip_pad(tmp_path):
    for stem, (h, w) in {"a": (40, 50), "b": (20, 12)}.items():
        _write(tmp_path / "ir" / f"{stem}.png", RNG.integers(0, 256, (h, w)).astype(np.uint8))
        _write(tmp_path / "vi" / f"{stem}.png", RNG.integers(0, 256, (h, w, 3)).astype(np.uint8))
    torch.manual_seed(0)
    ds = PairDataset(tmp_path, crop=16, train=True)
    assert len(ds) == 2
    for i in range(2):
        item = ds[i]
        assert item["ir"].shape == item["vi"].shape == (1, 16, 16)
        assert item["ir"].dtype == torch.float32 and 0 <= item["vi"].min() and item["vi"].max() <= 1
    assert item["name"] == "b"
    full = PairDataset(tmp_path, crop=None, train=False)[0]
    assert full["ir"].shape == (1, 40, 50)
    centre = PairDataset(tmp_path, crop=16, train=False)
    assert torch.equal(centre[0]["ir"], full["ir"][:, 12:28, 17:33])


@pytest.mark.skipif(shared_data_dir() is None or not (shared_data_dir() / "test/DroneVehicle").is_dir(),
                    reason="shared DroneVehicle test data not present")
def test_real_dronevehicle_border():
    name, ir, vi = find_pairs(shared_data_dir() / "test/DroneVehicle")[0]
    raw = read_image(vi, "color")
    a, b = load_pair(ir, vi)
    assert raw.shape == (712, 840, 3) and a.shape == (512, 640)
    assert np.array_equal(b, raw[100:612, 100:740])
