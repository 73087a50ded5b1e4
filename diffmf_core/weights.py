"""DIFF-MF weights files: safetensors only, with the network config in the file's metadata.

A weights file alone rebuilds its network (``load_model``). Nothing here unpickles anything:
files that look like pickles (PyTorch ``.pt``/``.pth`` zip archives or raw pickle streams) are
refused before any parsing, and safetensors itself cannot execute code. Tensors with NaN/Inf
are refused (``check_finite``). Saved files get the user's umask.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from diffmf_core.common.outputs import file_mode
from diffmf_core.config import DiffMFConfig
from diffmf_core.models import DiffMF

FORMAT = "diffmf-safetensors-v1"


class WeightsError(RuntimeError):
    """A weights file is missing, unsafe, corrupt, or does not match the requested network."""


def save_weights(model: DiffMF, path: str | Path, **notes) -> Path:
    """Write ``model``'s parameters and config atomically; ``notes`` (str values) go to the metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "config": model.cfg.to_json(), **{k: str(v) for k, v in notes.items()}}
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(state, tmp, metadata=meta)
        os.chmod(tmp, file_mode())  # mkstemp makes 0600; the file gets the user's umask
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _refuse_pickle(path: Path) -> None:
    """Refuse zip (``torch.save``) and raw pickle files. A safetensors file starts with its header
    length (8 bytes, little-endian), then the JSON header's "{"; only a file without that "{" is
    judged by its first bytes (a header length may itself start with 0x80)."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        raise WeightsError(f"{path}: file too short to be a safetensors file ({len(head)} bytes)")
    if head[8:9] != b"{" and (head[:2] == b"PK" or (head[0] == 0x80 and head[1] <= 5)):
        raise WeightsError(f"{path}: looks like a pickle-based PyTorch file; only safetensors weights are "
                           "accepted (pickles can execute code when loaded)")


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a weights file (raises WeightsError for a missing/unsafe/corrupt file)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    _refuse_pickle(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from exc
    if meta.get("format") != FORMAT or "config" not in meta:
        raise WeightsError(f"{path}: safetensors file without DIFF-MF metadata (format {meta.get('format')!r})")
    return meta


def check_finite(state: dict, path) -> None:
    """WeightsError when a floating-point tensor of ``state`` holds NaN or Inf (it would fuse to black)."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise WeightsError(f"{path}: {len(bad)} tensor(s) contain NaN/Inf values (e.g. {bad[0]!r}); "
                           "the weights are broken (diverged training?)")


def load_model(path: str | Path, device: str | torch.device = "cpu", expect_preset: str | None = None,
               skip: tuple[str, ...] = (), **overrides) -> DiffMF:
    """Rebuild the network stored in ``path`` and load its weights (strict).

    ``expect_preset``: refuse a file trained for another preset. ``skip``: parameter name prefixes
    not loaded (they keep a new network's initial values, whatever the file holds for them).
    ``overrides``: config fields that do not change the parameters (e.g. ``scan_backend``).
    """
    path = Path(path)
    meta = read_metadata(path)
    try:
        cfg = DiffMFConfig.from_json(meta["config"])
    except (ValueError, TypeError) as exc:
        raise WeightsError(f"{path}: invalid config in metadata ({exc})") from exc
    if expect_preset is not None and cfg.name != expect_preset:
        raise WeightsError(f"{path}: weights are for preset {cfg.name!r}, not {expect_preset!r}")
    if overrides:
        cfg = cfg.replace(**overrides)
    model = DiffMF(cfg)
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise WeightsError(f"{path}: weights do not load into a {cfg.name!r} network ({exc})") from exc
    if skip:
        state = {**{k: v for k, v in state.items() if not k.startswith(skip)},
                 **{k: v for k, v in model.state_dict().items() if k.startswith(skip)}}
    check_finite(state, path)
    try:
        model.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise WeightsError(f"{path}: weights do not load into a {cfg.name!r} network ({exc})") from exc
    return model.to(device).eval()
