"""Weights files: safetensors round trip with the config in the metadata; pickles, truncated or
tampered files, missing files and weights of another preset are refused with WeightsError, and a
refused pickle never runs its payload.
"""
from __future__ import annotations

import json
import pickle
import struct

import pytest
import torch
from safetensors.torch import save_file

from diffmf_core.config import DiffMFConfig, get_preset
from diffmf_core.fuser import Fuser
from diffmf_core.models import DiffMF
from diffmf_core.weights import WeightsError, load_model, read_metadata, save_weights


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def live_file(tmp_path):
    torch.manual_seed(0)
    model = DiffMF(get_preset("live")).eval()
    return model, save_weights(model, tmp_path / "live.safetensors", step=12, note="test")


def pair(H=40, W=56):
    gen = torch.Generator().manual_seed(1)
    return torch.rand(1, 1, H, W, generator=gen), torch.rand(1, 1, H, W, generator=gen)


def test_round_trip_rebuilds_same_outputs(live_file):
    model, path = live_file
    loaded = load_model(path, expect_preset="live")
    assert loaded.cfg == model.cfg
    assert not loaded.training
    with torch.inference_mode():
        assert torch.equal(loaded(*pair()), model(*pair()))


def test_config_and_notes_in_metadata(live_file):
    model, path = live_file
    meta = read_metadata(path)
    assert DiffMFConfig.from_json(meta["config"]) == model.cfg
    assert json.loads(meta["config"])["name"] == "live"
    assert meta["step"] == "12" and meta["note"] == "test"
    assert not list(path.parent.glob("*.tmp"))  # atomic write left nothing behind


def test_overrides_that_keep_parameters(live_file):
    _, path = live_file
    assert load_model(path, scan_backend="naive", chunk_size=16).cfg.scan_backend == "naive"


class Payload:
    """Unpickling this creates ``marker`` (pickle calls open(marker, "w"))."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def pickle_files(tmp_path, marker):
    """The same payload as a torch.save zip archive and as raw pickle streams (protocols 0 and 4)."""
    zip_path = tmp_path / "model.pt"
    torch.save({"weight": torch.zeros(2), "evil": Payload(marker)}, zip_path)
    raw4 = tmp_path / "model.pkl"
    raw4.write_bytes(pickle.dumps(Payload(marker), protocol=4))
    raw0 = tmp_path / "model_p0.safetensors"
    raw0.write_bytes(pickle.dumps(Payload(marker), protocol=0))
    return [zip_path, raw4, raw0]


def test_payload_is_armed(tmp_path):
    """Control for the next test: the call unpickling would make really creates the marker."""
    marker = tmp_path / "control_marker"
    func, args = Payload(marker).__reduce__()
    func(*args).close()
    assert marker.exists()


def test_pickles_refused_without_unpickling(tmp_path):
    marker = tmp_path / "pwned"
    for path in pickle_files(tmp_path, marker):
        with pytest.raises(WeightsError) as info:
            load_model(path)
        assert str(path) in str(info.value)
        with pytest.raises(WeightsError):
            Fuser(weights=path, device="cpu")
    assert not marker.exists(), "a refused pickle ran code"
    with pytest.raises(WeightsError, match="pickle"):
        load_model(tmp_path / "model.pt")
    with pytest.raises(WeightsError, match="pickle"):
        load_model(tmp_path / "model.pkl")


def test_truncated_file_refused(live_file, tmp_path):
    _, path = live_file
    data = path.read_bytes()
    for size in (len(data) // 2, len(data) - 1, 100, 9, 3, 0):
        cut = tmp_path / f"cut{size}.safetensors"
        cut.write_bytes(data[:size])
        with pytest.raises(WeightsError):
            load_model(cut)


def header(data: bytes) -> tuple[int, dict]:
    n = struct.unpack("<Q", data[:8])[0]
    return n, json.loads(data[8:8 + n])


def test_tampered_header_refused(live_file, tmp_path):
    _, path = live_file
    data = path.read_bytes()
    n, head = header(data)
    # header length pointing past the end of the file
    bad = tmp_path / "len.safetensors"
    bad.write_bytes(struct.pack("<Q", len(data) * 4) + data[8:])
    with pytest.raises(WeightsError):
        load_model(bad)
    # header that is not JSON
    bad = tmp_path / "json.safetensors"
    bad.write_bytes(data[:8] + b"X" + data[9:])
    with pytest.raises(WeightsError):
        load_model(bad)
    # tensor offsets beyond the data
    name = next(k for k in head if k != "__metadata__")
    head[name]["data_offsets"] = [0, len(data) * 2]
    text = json.dumps(head).encode()
    bad = tmp_path / "offsets.safetensors"
    bad.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n:])
    with pytest.raises(WeightsError):
        load_model(bad)


def test_tampered_config_refused(live_file, tmp_path):
    _, path = live_file
    data = path.read_bytes()
    n, head = header(data)
    cfg = json.loads(head["__metadata__"]["config"])
    for change in ({"embed_dim": 24}, {"unknown_field": 1}, {"guidance": "bogus"}):
        head["__metadata__"]["config"] = json.dumps({**cfg, **change})
        text = json.dumps(head).encode()
        bad = tmp_path / "cfg.safetensors"
        bad.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n:])
        with pytest.raises(WeightsError):
            load_model(bad)


def test_other_preset_refused(tmp_path):
    torch.manual_seed(0)
    path = save_weights(DiffMF(get_preset("paper")), tmp_path / "paper.safetensors")
    with pytest.raises(WeightsError, match="preset 'paper'"):
        load_model(path, expect_preset="live")
    assert load_model(path, expect_preset="paper").cfg.name == "paper"


def test_missing_file_refused(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_model(tmp_path / "nope.safetensors")
    with pytest.raises(WeightsError):
        Fuser(weights=tmp_path / "nope.safetensors", device="cpu")


def test_plain_safetensors_without_metadata_refused(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(3)}, str(path))
    with pytest.raises(WeightsError, match="metadata"):
        load_model(path)
