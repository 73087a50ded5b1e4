"""Reading infrared/visible pairs from disk and the training dataset.

Contract:
- ``read_image(path, mode="unchanged"|"gray"|"color", max_pixels=MAX_PIXELS)``: PNG/JPG/BMP/TIF,
  8- or 16-bit (or float) -> uint8 HxW (gray) or HxWx3 BGR; raises ``DataError`` naming the file
  when it cannot be read, or when its width x height (read from the header before decoding,
  diffmf_core.common.imageheader, which also holds ``MAX_PIXELS`` and the message) exceeds
  ``max_pixels`` (None: no limit).
  16-bit to 8-bit: ``value >> 8`` (full-range linear) when the image spans at least 4096 counts
  or is constant (its level is kept, not stretched to black); otherwise (e.g. raw 14-bit thermal
  counts packed in a narrow band) a linear stretch between the 0.5 and 99.5 percentiles, which
  keeps the scene visible instead of collapsing it to < 16 levels. Float images: [0, 1] (or
  constant) data is scaled by 255 and clipped, any other range is percentile-stretched the same
  way; NaN or infinite values raise ``DataError``. A stretch whose percentiles are closer than
  ``MIN_STRETCH_SPAN`` (a near-constant frame: one hot pixel on a flat scene) is not made: the
  frame is mapped as a constant one, so it keeps its level.
- ``find_pairs(root) -> [(name, ir_path, vi_path)]`` sorted by name: ``ir/`` + ``vi/`` with matching
  stems (extensions may differ), or the DroneVehicle release layout ``trainimgr/`` (infrared) +
  ``trainimg/`` (visible), likewise ``val*`` and ``test*``. Unmatched files raise ``DataError``.
- ``strip_border(img, border=None)``: crop a uniform near-white frame (DroneVehicle: 100 px white
  border, 840x712 -> 640x512 = crop [100:612, 100:740]). ``border`` None/"auto" detects it,
  an int crops exactly that many pixels per side, 0 does nothing.
- ``load_pair(ir_path, vi_path, strip="auto", max_pixels=MAX_PIXELS)`` -> (ir gray u8 HxW, vi BGR u8
  HxWx3) of equal size; the size limit applies to both images.
  Same-size pairs are cropped by the border common to both; if sizes still differ the infrared
  image is resized (bilinear) to the visible image's size (the visible frame is the reference).
- ``write_image(path, img)``: atomic image write (encode, write a temporary file next to the target,
  ``os.replace``; the file gets the user's umask), the format chosen by the suffix; creates parent folders
  (``common.outputs.write_bytes``, which does the same for any bytes: CSV, Markdown).
- ``PairDataset``: torch Dataset of luminance pairs (see its docstring).
"""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from diffmf_core.common.color import bgr_to_ycrcb, to_gray, unit_to_u8
from diffmf_core.common.imageheader import MAX_PIXELS, HeaderError, file_image_size, size_limit_problem
from diffmf_core.common.outputs import write_bytes

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# (infrared folder, visible folder) layouts understood by find_pairs, in priority order.
PAIR_LAYOUTS = (("ir", "vi"), ("trainimgr", "trainimg"), ("valimgr", "valimg"), ("testimgr", "testimg"))
NARROW_RANGE_COUNTS = 4096  # 16-bit images spanning fewer counts are percentile-stretched
MIN_STRETCH_SPAN = {np.dtype(np.uint16): 32.0}  # narrower percentile spans (counts) are not stretched
WHITE_LEVEL = 200  # a border line is "near white" when every pixel on it is >= this
MIN_BORDER = 2


class DataError(Exception):
    """A data file or folder that cannot be used; the message names the offending path(s)."""


def _percentile_stretch(img: np.ndarray) -> np.ndarray | None:
    """The 0.5-99.5 percentile stretch, or None when the percentiles are closer than the type's
    ``MIN_STRETCH_SPAN`` (the frame is then mapped as a constant one: never divided by ~0)."""
    lo, hi = (float(v) for v in np.percentile(img, (0.5, 99.5)))
    if hi - lo <= MIN_STRETCH_SPAN.get(img.dtype, 0.0):
        return None
    return np.clip(np.rint((img.astype(np.float64) - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def _to_u8(img: np.ndarray, path: Path) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    constant = img.size == 0 or img.min() == img.max()
    if img.dtype == np.uint16:
        stretched = None
        if not constant and int(img.max()) - int(img.min()) < NARROW_RANGE_COUNTS:
            stretched = _percentile_stretch(img)
        return (img >> 8).astype(np.uint8) if stretched is None else stretched
    if img.dtype in (np.float32, np.float64):
        if not np.isfinite(img).all():
            raise DataError(f"{path}: the image holds NaN or infinite values")
        stretched = None
        if not constant and not (img.min() >= 0.0 and img.max() <= 1.0):
            stretched = _percentile_stretch(img)
        return unit_to_u8(img) if stretched is None else stretched
    raise DataError(f"{path}: unsupported pixel type {img.dtype}")


def image_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) of an image file from its header (None for a format whose header is not
    parsed); DataError naming the file when it cannot be read or its header is broken."""
    try:
        return file_image_size(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    except HeaderError as exc:
        raise DataError(f"{path}: not a decodable image ({exc})") from exc


def read_image(path: str | Path, mode: str = "unchanged", max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Read an image as uint8: mode "gray" -> HxW, "color" -> HxWx3 BGR, "unchanged" -> as stored.

    Alpha channels are dropped. Raises DataError naming ``path`` when unreadable or larger than
    ``max_pixels`` (checked from the header before decoding, and on the decoded image).
    """
    if mode not in ("unchanged", "gray", "color"):
        raise ValueError(f"mode must be 'unchanged', 'gray' or 'color', got {mode!r}")
    path = Path(path)
    size = image_size(path)
    problem = size and size_limit_problem(*size, max_pixels)
    if problem:
        raise DataError(f"{path}: {problem}")
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    try:
        img = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED) if raw.size else None
    except cv2.error as exc:  # e.g. a size above OpenCV's own limit in a header not parsed above
        raise DataError(f"{path}: not a decodable image ({str(exc).strip().splitlines()[-1]})") from None
    if img is None:
        raise DataError(f"{path}: not a decodable image (PNG/JPG/BMP/TIF expected)")
    problem = size_limit_problem(img.shape[1], img.shape[0], max_pixels)
    if problem:
        raise DataError(f"{path}: {problem}")
    img = _to_u8(img, path)
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if mode == "gray":
        return to_gray(img)
    if mode == "color" and img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(img)


def write_image(path: str | Path, img: np.ndarray) -> Path:
    """Encode ``img`` by the suffix of ``path`` and write it atomically; returns ``path``."""
    path = Path(path)
    ok, buf = cv2.imencode(path.suffix or ".png", img)
    if not ok:
        raise DataError(f"{path}: cannot encode a {img.dtype} {img.shape} image")
    return write_bytes(path, buf.tobytes())


def _natural_key(name: str) -> list:
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", name)]


def _images_by_stem(folder: Path) -> dict[str, Path]:
    stems: dict[str, Path] = {}
    for p in folder.iterdir():
        if p.name.startswith(".") or p.suffix.lower() not in IMAGE_EXTENSIONS or not p.is_file():
            continue
        if p.stem in stems:
            raise DataError(f"ambiguous images with the same name: {stems[p.stem]} and {p}")
        stems[p.stem] = p
    return stems


def match_by_stem(ir_dir: Path, vi_dir: Path, where: str) -> list[tuple[str, Path, Path]]:
    """(stem, ir_path, vi_path) of the images of two folders with the same file stem (extensions may
    differ), in natural order; an image without a partner raises DataError starting with ``where``."""
    ir_imgs, vi_imgs = _images_by_stem(ir_dir), _images_by_stem(vi_dir)
    unmatched = sorted({str(p) for s, p in ir_imgs.items() if s not in vi_imgs}
                       | {str(p) for s, p in vi_imgs.items() if s not in ir_imgs})
    if unmatched:
        shown = ", ".join(unmatched[:5]) + (f" (+{len(unmatched) - 5} more)" if len(unmatched) > 5 else "")
        raise DataError(f"{where}: {len(unmatched)} image(s) without a partner: {shown}")
    return sorted(((s, ir_imgs[s], vi_imgs[s]) for s in ir_imgs), key=lambda t: _natural_key(t[0]))


def find_pairs(root: str | Path) -> list[tuple[str, Path, Path]]:
    """Sorted (name, ir_path, vi_path) for every pair under ``root`` (ir/+vi/ or DroneVehicle)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    layouts = [(root / ir, root / vi) for ir, vi in PAIR_LAYOUTS if (root / ir).is_dir() and (root / vi).is_dir()]
    if not layouts:
        expected = ", ".join(f"{ir}/+{vi}/" for ir, vi in PAIR_LAYOUTS)
        raise DataError(f"{root}: no pair folders found (expected one of {expected})")
    pairs = []
    for ir_dir, vi_dir in layouts:
        prefix = f"{vi_dir.name}/" if len(layouts) > 1 else ""
        pairs += [(prefix + s, ir, vi) for s, ir, vi in match_by_stem(ir_dir, vi_dir, str(root))]
    if not pairs:
        raise DataError(f"{root}: pair folders contain no images")
    return sorted(pairs, key=lambda t: _natural_key(t[0]))


def detect_border(img: np.ndarray) -> int:
    """Width of a uniform near-white frame around ``img`` (0 if none): the smallest of the four
    sides' runs of lines whose every pixel is >= WHITE_LEVEL, if all four are >= MIN_BORDER."""
    low = img.min(axis=2) if img.ndim == 3 else img
    white_rows = low.min(axis=1) >= WHITE_LEVEL
    white_cols = low.min(axis=0) >= WHITE_LEVEL

    def run(flags: np.ndarray) -> int:
        return int(np.argmin(flags)) if not flags.all() else flags.size

    width = min(run(white_rows), run(white_rows[::-1]), run(white_cols), run(white_cols[::-1]))
    h, w = low.shape
    if width < MIN_BORDER or 2 * width >= min(h, w):
        return 0
    return width


def strip_border(img: np.ndarray, border: int | str | None = None) -> np.ndarray:
    """Crop ``border`` pixels from every side; None or "auto" detects a near-white frame."""
    if border is None or border == "auto":
        border = detect_border(img)
    if not isinstance(border, (int, np.integer)) or border < 0:
        raise ValueError(f"border must be None, 'auto' or a non-negative int, got {border!r}")
    if border == 0:
        return img
    if 2 * border >= min(img.shape[:2]):
        raise ValueError(f"border {border} leaves nothing of a {img.shape[1]}x{img.shape[0]} image")
    return img[border:-border, border:-border]


def load_pair(ir_path: str | Path, vi_path: str | Path, strip: int | str | None = "auto",
              max_pixels: int | None = MAX_PIXELS) -> tuple[np.ndarray, np.ndarray]:
    """(ir gray u8 HxW, vi BGR u8 HxWx3) of the same size; ``strip`` as in strip_border
    ("none" or 0 disables). Same-size pairs get the border common to both images. Either image
    above ``max_pixels`` raises DataError before it is decoded."""
    ir = read_image(ir_path, "gray", max_pixels)
    vi = read_image(vi_path, "color", max_pixels)
    if strip != "none":
        if strip in (None, "auto") and ir.shape == vi.shape[:2]:
            strip = min(detect_border(ir), detect_border(vi))
        ir, vi = strip_border(ir, strip), strip_border(vi, strip)
    if ir.shape != vi.shape[:2]:
        ir = cv2.resize(ir, (vi.shape[1], vi.shape[0]), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(ir), np.ascontiguousarray(vi)


class PairDataset(Dataset):
    """Luminance pairs for training/validation.

    ``root_or_pairs``: a dataset root (see find_pairs) or a list of (name, ir_path, vi_path).
    Items: ``dict(ir=1xHxW float32, vi=1xHxW float32 (visible Y, BT.601), name=str)`` in [0, 1].
    train=True: random ``crop`` x ``crop`` window + random horizontal/vertical flips (torch RNG, so
    DataLoader worker seeding applies). train=False: centre crop, or the whole image if crop=None.
    Images smaller than the crop are reflect-padded. Decoded images are cached in memory per
    process (use persistent_workers=True with a multi-worker DataLoader to keep the cache).
    """

    def __init__(self, root_or_pairs, crop: int | None = 128, train: bool = True,
                 strip: int | str | None = "auto"):
        self.pairs = find_pairs(root_or_pairs) if isinstance(root_or_pairs, (str, Path)) else list(root_or_pairs)
        if not self.pairs:
            raise DataError("PairDataset: no pairs given")
        self.crop, self.train, self.strip = crop, train, strip
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.pairs)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if index not in self._cache:
            _, ir_path, vi_path = self.pairs[index]
            self._cache[index] = load_pair(ir_path, vi_path, self.strip)
        return self._cache[index]

    def _window(self, size: int, crop: int) -> int:
        if self.train:
            return int(torch.randint(0, size - crop + 1, (1,)))
        return (size - crop) // 2

    def __getitem__(self, index: int) -> dict:
        ir, vi = self._load(index)
        if self.crop is not None:
            c = self.crop
            h, w = ir.shape
            ph, pw = max(0, c - h), max(0, c - w)
            if ph or pw:
                ir = cv2.copyMakeBorder(ir, 0, ph, 0, pw, cv2.BORDER_REFLECT_101)
                vi = cv2.copyMakeBorder(vi, 0, ph, 0, pw, cv2.BORDER_REFLECT_101)
                h, w = ir.shape
            top, left = self._window(h, c), self._window(w, c)
            ir, vi = ir[top:top + c, left:left + c], vi[top:top + c, left:left + c]
        ir_y = ir.astype(np.float32) / 255.0
        vi_y = bgr_to_ycrcb(np.ascontiguousarray(vi))[0]
        if self.train:
            flips = torch.rand(2)
            if flips[0] < 0.5:
                ir_y, vi_y = ir_y[:, ::-1], vi_y[:, ::-1]
            if flips[1] < 0.5:
                ir_y, vi_y = ir_y[::-1], vi_y[::-1]
        return {"ir": torch.from_numpy(np.ascontiguousarray(ir_y))[None],
                "vi": torch.from_numpy(np.ascontiguousarray(vi_y))[None],
                "name": self.pairs[index][0]}
